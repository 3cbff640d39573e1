"""The FastAPI app: OpenAI-compatible endpoints over a :class:`Router`, batched dynamically.

Endpoints: ``POST /v1/chat/completions`` (the last user message is the question),
``POST /v1/completions`` (the prompt, or each prompt of a list), ``GET /v1/models`` (the
table's policy id), ``GET /health``, ``GET /metrics`` (Prometheus). The response is a standard
completion whose content is the chosen solution's text (ending in its final answer) plus a
``tts`` object: the decision, the cost ledger, the candidates' answers with scores, and
timing (seconds queued, searching, and the batch size).

Streaming (``stream: true``) sends the whole answer as ONE chunk (with ``usage`` and the
``tts`` object), then ``[DONE]``: a search only knows its answer when it ends, so there are
no partial tokens to stream.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import InputError
from ..prompts import check_question as check_text
from ..grading import has_final_answer
from ..routing import RoutedResult, Router
from .auth import check_bearer, resolve_api_key
from .batching import DynamicBatcher, Job
from .http_errors import APIError, bad_request
from .prometheus import GatewayMetrics
from .schemas import ChatCompletionRequest, CompletionRequest
from .solver import Solver


@dataclass(frozen=True)
class ServeConfig:
    """Gateway settings. Units: ``batch_window_ms`` milliseconds a batch waits for more
    requests after its first; ``timeout_s`` seconds a request may wait for its answer;
    ``max_prompt_chars`` characters; ``max_body_bytes`` bytes; budgets in generations per round."""

    budget: int | None = None
    average_budget: float | None = None
    max_budget: int = 64
    batch_window_ms: float = 5.0
    max_batch: int = 64
    timeout_s: float = 300.0
    max_prompt_chars: int = 8000
    max_body_bytes: int = 1 << 20
    api_key: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse settings that would make every request fail (a NaN or zero timeout answers
        each one 504) with an InputError naming the setting."""
        def number(name: str, value: Any, low: float, *, strict: bool, integer: bool = False) -> None:
            ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
            if not ok or not math.isfinite(value) or value < low or (strict and value == low):
                raise InputError(f"{name} must be a finite {'integer' if integer else 'number'} "
                                 f"{'>' if strict else '>='} {low:g}, got {value!r}")

        number("timeout (--timeout)", self.timeout_s, 0, strict=True)
        number("batch window (--batch-window-ms)", self.batch_window_ms, 0, strict=False)
        number("max batch (--max-batch)", self.max_batch, 1, strict=False, integer=True)
        number("max prompt chars (--max-prompt-chars)", self.max_prompt_chars, 1, strict=False, integer=True)
        number("max body bytes", self.max_body_bytes, 1, strict=False, integer=True)
        number("max budget (--max-budget)", self.max_budget, 1, strict=False, integer=True)
        if self.budget is not None:
            number("budget (--budget)", self.budget, 1, strict=False, integer=True)
        if self.average_budget is not None:
            number("average budget (--average-budget)", self.average_budget, 0, strict=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer, got {self.seed!r}")


_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


class _MetricsMiddleware:
    """Counts every HTTP response by endpoint and status and times it (plain ASGI: no extra task per request)."""

    def __init__(self, app: Any, metrics: GatewayMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def create_app(router: Router, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The gateway app for ``router`` (its engines are driven from one worker thread)."""
    solver = Solver(router, budget=config.budget, average_budget=config.average_budget, max_budget=config.max_budget)
    metrics = GatewayMetrics()
    batcher = DynamicBatcher(solver.solve, window_s=config.batch_window_ms / 1000.0, max_batch=config.max_batch,
                             on_batch=metrics.observe_batch)
    api_key = resolve_api_key(config.api_key)
    model_id = router.policy.id

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()  # uvicorn has already waited for in-flight requests

    app = FastAPI(title="tts-selector gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.solver, app.state.batcher, app.state.metrics = solver, batcher, metrics
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind).body(),
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: still an OpenAI-style body
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").body(),
                            status_code=500)

    async def read_body(request: Request, model: type[BaseModel]) -> Any:
        check_bearer(request.headers.get("authorization"), api_key)
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise APIError(415, f"Content-Type must be application/json, got {ctype or 'none'!r}", param=None,
                           code="unsupported_media_type")
        too_big = APIError(413, f"the body is over {config.max_body_bytes} bytes, the most this server accepts",
                           code="body_too_large")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_bytes:
            raise too_big
        chunks, size = [], 0
        try:
            async for chunk in request.stream():  # read at most the limit: never buffer a huge body
                size += len(chunk)
                if size > config.max_body_bytes:
                    raise too_big
                chunks.append(chunk)
        except ClientDisconnect:  # the client left mid-body: nobody to answer, nothing to log as a bug
            raise APIError(400, "the client disconnected before sending the whole body", code="client_disconnected") from None
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except RecursionError:
            raise bad_request("the JSON body is nested too deeply", code="invalid_json") from None
        except ValueError as exc:
            raise bad_request(f"malformed JSON body: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request(f"the body must be a JSON object, got {type(data).__name__}", code="invalid_json")
        try:
            return model.model_validate(data)
        except RecursionError:
            raise bad_request("the JSON body is nested too deeply", code="invalid_json") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(x) for x in err["loc"]) or None
            raise bad_request(f"{param}: {err['msg']}", param, "invalid_value") from None

    def check_question(question: str, param: str) -> str:
        """This request's question alone, checked before it joins a batch: one bad request gets
        its own 400 and never fails, nor shows anything to, the requests batched with it."""
        try:
            check_text(question, "the prompt")
        except InputError as exc:
            if question.strip():  # not valid UTF-8 (e.g. a lone surrogate escaped in the JSON)
                raise bad_request(f"{exc}".replace(", or pass it with --prompt-file PATH", ""), param,
                                  "invalid_prompt") from None
        if not question.strip():
            raise bad_request(f"the prompt is empty: send the question as {'the last user message' if param == 'messages' else 'prompt'}",
                              param, "empty_prompt")
        if len(question) > config.max_prompt_chars:
            raise bad_request(f"the prompt is {len(question)} characters; this server accepts at most "
                              f"{config.max_prompt_chars} (--max-prompt-chars)", param, "prompt_too_long")
        return question

    def options(request: Request, body: Any) -> tuple[int | None, Any]:
        """(budget, forced strategy) from the body's ``tts`` object, else the X-TTS-* headers."""
        if body.n != 1:
            raise bad_request(f"n={body.n}: the gateway returns one routed answer per prompt (n=1)", "n")
        tts = body.tts
        budget, strategy, bparam, sparam = None, None, "tts.budget", "tts.strategy"
        if tts is not None:
            budget, strategy = tts.budget, tts.strategy
        if budget is None and request.headers.get("x-tts-budget") is not None:
            raw, bparam = request.headers["x-tts-budget"], "X-TTS-Budget"
            try:
                budget = int(raw)
            except ValueError:
                raise bad_request(f"X-TTS-Budget must be an integer, got {raw!r}", bparam) from None
        if strategy is None and request.headers.get("x-tts-strategy"):
            strategy, sparam = request.headers["x-tts-strategy"].strip(), "X-TTS-Strategy"
        if budget is not None:
            solver.check_budget(budget, bparam)
        forced = solver.forced(strategy, budget, sparam) if strategy is not None else None
        return budget, forced

    async def run_job(job: Job) -> RoutedResult:
        try:
            result = await asyncio.wait_for(batcher.submit(job), config.timeout_s)
        except asyncio.TimeoutError:
            raise APIError(504, f"no answer within {config.timeout_s:g} s (--timeout); retry, lower the budget, or "
                                "raise the timeout", "timeout_error", None, "timeout") from None
        except APIError:
            raise
        except InputError as exc:
            raise bad_request(str(exc)) from None
        except Exception as exc:
            raise APIError(500, f"the engine failed while solving this request's batch: {type(exc).__name__}: {exc} "
                                "(the server keeps serving; retry, or check the engine)", "engine_error", None,
                           "engine_error") from None
        metrics.observe_result(result)
        return result

    async def solve_all(request: Request, body: Any, questions: list[str], param: str) -> list[tuple[Job, RoutedResult]]:
        budget, forced = options(request, body)
        seed = config.seed if body.seed is None else body.seed
        jobs = [Job(check_question(q, param), budget, forced, seed) for q in questions]
        results = await asyncio.gather(*(run_job(j) for j in jobs))
        return list(zip(jobs, results))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        body = await read_body(request, ChatCompletionRequest)
        (job, result), = await solve_all(request, body, [body.question()], "messages")
        choice = {"index": 0, "message": {"role": "assistant", "content": _content(result)}, "finish_reason": "stop"}
        out = _envelope("chat.completion", [choice], [(job, result)], model_id, t0)
        if body.stream:
            chunk = dict(out, object="chat.completion.chunk",
                         choices=[{"index": 0, "delta": choice["message"], "finish_reason": "stop"}])
            return _one_chunk_stream(chunk)
        return JSONResponse(out)

    @app.post("/v1/completions")
    async def completions(request: Request):
        t0 = time.perf_counter()
        body = await read_body(request, CompletionRequest)
        questions = body.questions()
        if not 1 <= len(questions) <= config.max_batch:
            raise bad_request(f"prompt: give 1 to {config.max_batch} prompts, got {len(questions)}", "prompt")
        solved = await solve_all(request, body, questions, "prompt")
        choices = [{"index": i, "text": _content(r), "logprobs": None, "finish_reason": "stop"} for i, (_, r) in enumerate(solved)]
        out = _envelope("text_completion", choices, solved, model_id, t0)
        return _one_chunk_stream(out) if body.stream else JSONResponse(out)

    @app.get("/v1/models")
    async def models(request: Request):
        check_bearer(request.headers.get("authorization"), api_key)
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "tts-selector",
                                             "tts": {"source": router.source, "prm": router.prm.id if router.prm else None,
                                                     "budgets": router.budgets, "estimator": router.estimator_name}}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "batches": batcher.batches, "in_flight": batcher.in_flight,
                "search_seconds": batcher.search_seconds, "search_cpu_seconds": batcher.search_cpu_seconds}

    @app.get("/metrics")
    async def prometheus(request: Request):
        check_bearer(request.headers.get("authorization"), api_key)
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def _one_chunk_stream(payload: dict[str, Any]) -> StreamingResponse:
    async def events():
        yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _best_candidate(result: RoutedResult):
    key = result.search.answer_key
    pool = [c for c in result.candidates if c.answer_key == key and key is not None] or list(result.candidates)
    return max(pool, key=lambda c: c.step_scores[-1] if c.step_scores else 0.0) if pool else None


def _content(result: RoutedResult) -> str:
    """The chosen solution's text (the highest-scored candidate with the routed answer), ending in its answer."""
    best = _best_candidate(result)
    text = best.text.strip() if best is not None else ""
    if result.answer is not None and not has_final_answer(text):
        text = f"{text}\n\nFinal answer: \\boxed{{{result.answer}}}".strip()
    return text


def _tts(job: Job, result: RoutedResult, t0: float) -> dict[str, Any]:
    cost, est = result.cost, result.estimate_cost
    share = est.flops / cost.flops if cost.flops > 0 else (est.generations / cost.generations if cost.generations else 0.0)
    done = time.perf_counter()
    queued = max(job.started - job.enqueued, 0.0)
    return {
        "answer": result.answer,
        "forced": result.decision.forced,
        "decision": result.decision.to_dict(),
        "cost": {**cost.to_dict(), "estimation": est.to_dict(), "estimation_share": share},
        "candidates": [{"answer": c.answer, "answer_key": c.answer_key, "score": c.step_scores[-1] if c.step_scores else None,
                        "finished": c.finished, "stop_reason": c.stop_reason, "tokens": c.tokens} for c in result.candidates],
        "timing": {"queued_seconds": queued, "search_seconds": job.search_seconds, "batch_size": job.batch_size,
                   # the gateway's own time: parsing, validation, building this body (not queueing or search)
                   "gateway_seconds": max(done - t0 - queued - job.search_seconds, 0.0),
                   "handler_seconds": done - t0},
    }


def _envelope(obj: str, choices: list, solved: list[tuple[Job, RoutedResult]], model_id: str, t0: float) -> dict[str, Any]:
    prompt = sum(r.cost.policy_prompt_tokens for _, r in solved)
    completion = sum(r.cost.policy_generated_tokens for _, r in solved)
    tts = [_tts(j, r, t0) for j, r in solved]
    return {"id": f"{'chatcmpl' if obj.startswith('chat') else 'cmpl'}-{uuid.uuid4().hex}", "object": obj,
            "created": int(time.time()), "model": model_id, "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "tts": tts[0] if len(tts) == 1 else tts}
