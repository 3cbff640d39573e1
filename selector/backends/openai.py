"""``OpenAIPolicy``: a policy served by any OpenAI-compatible *completions* server.

Works with ``vllm serve``, SGLang, llama.cpp's server and anything else that answers
``POST {base_url}/v1/completions``.

- **Prompts.** The completions endpoint applies no chat template: ``format_prompt`` is
  ``prompt_template.format(question=question)``; pass a template that matches your model
  (e.g. its chat template written out, ending where the assistant's answer begins). Or pass
  ``prompt_format``, an object whose ``format_prompt(question)`` writes the prompt: the
  registry's ``openai:preset=NAME,...`` spec uses the preset's own format (few-shot turns
  through the model's chat template, formatted locally with its tokenizer only), so a served
  model gets byte-identical prompts to the in-process backends, and the preset's id, step
  delimiter, sampling and parameter count.
- **One HTTP request per** :class:`StepRequest`, asking for ``n`` choices with the request's
  seed. Up to ``max_concurrency`` requests are in flight; they are spread round-robin over
  ``base_urls`` (client-side balancing across several servers), and a retry moves on to the
  next URL. Results come back in request order. HTTP goes through ``httpx`` with one pooled
  keep-alive client per server (:mod:`selector.backends.http_client`).
- **Steps.** A step request sends ``stop=[delimiter]`` and vLLM's
  ``include_stop_str_in_output: true``; a choice that stopped on the delimiter (vLLM's
  ``stop_reason``, or text ending with it) gets finish reason ``"delimiter"`` and its text
  always ends with the delimiter (appended if the server stripped it). ``"length"`` maps to
  ``"length"``, any other stop to ``"eos"``. Servers that strip the stop string *and* report
  no ``stop_reason`` cannot be told apart from EOS; such steps come back as ``"eos"``.
  A text holding several steps is cut after the first with :func:`cut_at_delimiter`.
- **Tokens** come from the server's ``usage``: ``prompt_tokens`` is the request's prompt
  tokens; ``completion_tokens`` (the total over the ``n`` choices) is split across the choices
  in proportion to their text length (largest remainder, so the sum is exact; exact per choice
  when ``n == 1``). Asking for per-token logprobs to count exactly is not portable across
  servers. Without ``usage`` the counts fall back to ``ceil(characters / 4)``.
- **Errors.** Connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times
  with exponential backoff (``backoff * 2**attempt`` seconds); other 4xx fail at once. A
  server that rejects ``n > 1`` or returns fewer choices than asked raises
  :class:`OpenAIBackendError` saying so. ``timeout`` is a total deadline per attempt
  (connect, send, wait and read together, in seconds), which a server trickling bytes cannot
  stretch. A response that is not JSON, or whose ``choices`` are not objects with a string
  ``text``, raises :class:`OpenAIBackendError` naming the server, the problem and a fix.
"""
from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from ..errors import EngineError
from ..steps import cut_at_delimiter
from . import http_client
from .base import Continuation, SamplingParams, StepOutput, StepRequest


class OpenAIBackendError(EngineError):
    """A completions server failed, refused a request, or answered something unusable."""


def _looks_like_n_unsupported(message: str) -> bool:
    m = message.lower().replace(" ", "")
    needles = ("n>1", "n=1", "'n'", '"n"', "`n`", "parametern", "fieldn", "nmustbe", "nisnot", "nnotsupported", "multiplechoices", "multiplecompletions")
    return any(s in m for s in needles)


class OpenAIPolicy:
    """A :class:`~selector.backends.base.Policy` over OpenAI-compatible completions servers.

    ``base_urls`` are server roots such as ``http://127.0.0.1:8000`` (a trailing ``/v1`` is
    accepted and dropped). ``num_parameters`` is only used for FLOPs estimates (0: unknown).
    """

    def __init__(
        self,
        model: str,
        base_urls: Sequence[str],
        *,
        api_key: str | None = None,
        num_parameters: int = 0,
        max_concurrency: int = 16,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        step_delimiter: str = "\n\n",
        prompt_template: str = "{question}",
        prompt_format: Any = None,
        sampling: dict | None = None,
        id: str | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        urls = []
        for url in base_urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"base_urls must be http(s) URLs, got {url!r}")
            url = url.rstrip("/")
            if url.endswith("/v1"):
                url = url[: -len("/v1")]
            urls.append(url)
        if not urls:
            raise ValueError("base_urls must name at least one server")
        if num_parameters < 0:
            raise ValueError(f"num_parameters must be >= 0, got {num_parameters}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        if not step_delimiter:
            raise ValueError("step_delimiter must be a non-empty string")
        try:
            prompt_template.format(question="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"prompt_template must use only the {{question}} field: {e!r}") from None
        if "{question}" not in prompt_template:
            raise ValueError("prompt_template must contain {question}")
        if prompt_format is not None and not callable(getattr(prompt_format, "format_prompt", None)):
            raise TypeError("prompt_format must have a format_prompt(question) method (e.g. a policy of the same preset)")
        self._default_params = SamplingParams(**{"step_delimiter": step_delimiter, **(sampling or {})})
        self.model = model
        self.base_urls: tuple[str, ...] = tuple(urls)
        self.api_key = api_key
        self.num_parameters = int(num_parameters)
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.step_delimiter = step_delimiter
        self.prompt_template = prompt_template
        self.prompt_format = prompt_format
        self.id = id or f"openai:{model}"
        self._rr = 0
        self._rr_lock = threading.Lock()

    # -- Policy protocol ---------------------------------------------------------------
    def format_prompt(self, question: str) -> str:
        if self.prompt_format is not None:
            return self.prompt_format.format_prompt(question)
        return self.prompt_template.format(question=question)

    def default_sampling_params(self) -> SamplingParams:
        return self._default_params

    def generate_steps(self, requests: Sequence[StepRequest]) -> list[StepOutput]:
        requests = list(requests)
        if not requests:
            return []
        with self._rr_lock:
            start = self._rr
            self._rr = (self._rr + len(requests)) % len(self.base_urls)
        workers = min(self.max_concurrency, len(requests))
        if workers == 1:
            return [self._one(r, start + i) for i, r in enumerate(requests)]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-policy")
        try:
            futures = [pool.submit(self._one, r, start + i) for i, r in enumerate(requests)]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- one request ---------------------------------------------------------------------
    def request_body(self, request: StepRequest) -> dict[str, Any]:
        """The JSON body sent for ``request`` (public for inspection and tests)."""
        p = request.params
        step = not request.to_completion and bool(p.step_delimiter)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prefix,
            "n": int(request.n),
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens if request.to_completion else p.max_step_tokens,
            "seed": int(request.seed),
            "stream": False,
        }
        if p.top_k > 0:
            body["top_k"] = p.top_k  # a vLLM/SGLang extra field
        if step:
            body["stop"] = [p.step_delimiter]
            body["include_stop_str_in_output"] = True  # vLLM extra; others ignore it
        if p.logprobs:
            body["logprobs"] = 1  # completions API: the sampled tokens' log-probabilities (and one alternative)
        return body

    def _one(self, request: StepRequest, slot: int) -> StepOutput:
        if request.n < 1:
            raise ValueError(f"n must be >= 1, got {request.n}")
        payload = json.dumps(self.request_body(request)).encode()
        data, url = self._post(payload, slot, request.n)
        return self._parse(data, request, url)

    def _post(self, payload: bytes, slot: int, n: int) -> tuple[dict, str]:
        def client_error(url: str, code: int, message: str) -> Exception | None:
            if n > 1 and _looks_like_n_unsupported(message):
                return OpenAIBackendError(
                    f"server at {url} does not support n > 1; it answered HTTP {code}: {message}. "
                    "Use a server that samples several choices per request (vLLM, SGLang)."
                )
            return None

        data, base = http_client.post_json(
            self.base_urls, "/v1/completions", payload, slot=slot, timeout=self.timeout, retries=self.retries,
            backoff=self.backoff, api_key=self.api_key, error=OpenAIBackendError, client_error=client_error,
        )
        _validate(data, f"{base}/v1/completions")
        return data, base

    def _parse(self, data: dict, request: StepRequest, base: str) -> StepOutput:
        choices = data["choices"]
        if len(choices) < request.n:
            raise OpenAIBackendError(
                f"server at {base} does not support n > 1; it returned {len(choices)} choices for n={request.n}. "
                "Use a server that samples several choices per request (vLLM, SGLang)."
            )
        if all(isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        choices = choices[: request.n]
        texts = [c["text"] for c in choices]
        usage = data.get("usage") or {}
        completion = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        if isinstance(completion, int) and completion >= 0:
            counts = _apportion(completion, [len(t) for t in texts])
        else:
            counts = [math.ceil(len(t) / 4) for t in texts]
        if not (isinstance(prompt, int) and prompt >= 0):
            prompt = math.ceil(len(request.prefix) / 4)
        delim = request.params.step_delimiter
        step = not request.to_completion and bool(delim)
        conts = []
        for choice, text, tokens in zip(choices, texts, counts):
            reason = choice.get("finish_reason")
            full = text
            if not step:
                finish = "length" if reason == "length" else "eos"
            else:
                cut = cut_at_delimiter(text, delim)
                if cut is not None:  # the text holds a complete step (maybe more): keep one
                    text, finish = cut, "delimiter"
                elif reason == "length":
                    finish = "length"
                elif choice.get("stop_reason") == delim or text.endswith(delim):
                    finish = "delimiter"
                else:
                    finish = "eos"
                if finish == "delimiter" and not text.endswith(delim):
                    text += delim  # the server stripped the stop string: steps keep theirs
            logprob = None
            if request.params.logprobs:
                logprob, kept = _choice_logprob(choice, min(len(text), len(full)), base)
                tokens = kept if kept else tokens
            conts.append(Continuation(text, tokens, finish, logprob))
        # Prefix-cache use, where the server reports it (vLLM with --enable-prompt-tokens-details,
        # OpenAI); None otherwise, and the ledger then counts the whole prompt as computed.
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        cached = min(cached, prompt) if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0 else None
        return StepOutput(tuple(conts), prompt, cached)


def _choice_logprob(choice: dict, chars: int, base: str) -> tuple[float, int]:
    """The sum of the log-probabilities of the tokens that wrote the first ``chars`` characters of
    a choice's text, and how many tokens that is (completions API ``logprobs``: ``tokens`` and
    ``token_logprobs``); an :class:`OpenAIBackendError` when the server returned none."""
    lp = choice.get("logprobs")
    tokens = lp.get("tokens") if isinstance(lp, dict) else None
    values = lp.get("token_logprobs") if isinstance(lp, dict) else None
    if not isinstance(tokens, list) or not isinstance(values, list) or len(tokens) != len(values):
        raise OpenAIBackendError(
            f"server at {base} returned no token log-probabilities (`logprobs` in /v1/completions), which the "
            "self-confidence verifier reads: use a server that returns them (vLLM, SGLang, llama.cpp server), or another PRM"
        )
    total, used, seen = 0.0, 0, 0
    for token, value in zip(tokens, values):
        if seen >= chars:
            break
        if not isinstance(token, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value > 0:
            raise OpenAIBackendError(f"server at {base} returned a malformed token log-probability: {str(value)[:40]!r}")
        total += float(value)
        used += 1
        seen += len(token)
    return total, used


_FIX = "check that the URL is an OpenAI-compatible completions server (vllm serve, SGLang, llama.cpp's server)"


def _validate(data: Any, url: str) -> None:
    """Raise :class:`OpenAIBackendError` unless ``data`` has the completions answer's shape."""

    def bad(problem: str) -> OpenAIBackendError:
        return OpenAIBackendError(f"server at {url} answered {problem}; {_FIX}")

    if not isinstance(data, dict):
        raise bad(f"a JSON {type(data).__name__} instead of an object: {str(data)[:200]}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise bad(f"without a 'choices' list: {str(data)[:200]}")
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            raise bad(f"choice {i} that is not an object: {str(c)[:200]}")
        if not isinstance(c.get("text"), str):
            raise bad(f"choice {i} without a string 'text' field: {str(c)[:200]}")
        for key in ("finish_reason", "stop_reason"):
            if c.get(key) is not None and not isinstance(c[key], (str, int)):
                raise bad(f"choice {i} with a {key!r} that is not a string: {c[key]!r}")
        if "index" in c and not (isinstance(c["index"], int) and not isinstance(c["index"], bool)):
            raise bad(f"choice {i} with an 'index' that is not an integer: {c['index']!r}")
    usage = data.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise bad(f"a 'usage' that is not an object: {str(usage)[:200]}")


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` across ``weights`` proportionally (largest remainder; sums to total)."""
    if not weights:
        return []
    s = sum(weights)
    if s <= 0:
        weights, s = [1] * len(weights), len(weights)
    exact = [total * w / s for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out
