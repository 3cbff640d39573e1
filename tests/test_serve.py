"""The OpenAI-compatible gateway (selector/serve/) on the simulator engines, over real HTTP:
a real uvicorn server on loopback, talked to with the real ``openai`` client and httpx."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.routing import Router
from selector.serve import ServeConfig, make_server

from fakes import RecordingPolicy


def sim_prm() -> SimulatedPRM:
    return SimulatedPRM(separation=2.0, noise=1.0, bias=1.0)  # the table's PRM (test_profile.sim_config)


class Running:
    """A gateway served by uvicorn in a background thread on 127.0.0.1 and a free port."""

    def __init__(self, router: Router, config: ServeConfig = ServeConfig()):
        self.router = router
        self.server = make_server(router, config, host="127.0.0.1", port=0, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.batcher = self.server.config.app.state.batcher

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="module")
def gateway(sim_table):
    with Running(Router.load(sim_table)) as g:
        yield g


def test_chat_completion_returns_the_routed_answer_and_the_tts_object(gateway, sim_table):
    q = make_questions([0.3], prefix="serve chat")[0]
    alone = Router.load(sim_table).solve(q, 8)  # the server's default budget: the table's largest
    resp = gateway.client().chat.completions.create(
        model="sim-policy", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": q}])
    tts = resp.model_extra["tts"]
    assert resp.model == "sim-policy" and resp.choices[0].finish_reason == "stop"
    assert tts["answer"] == alone.answer
    assert f"\\boxed{{{alone.answer}}}" in resp.choices[0].message.content
    d = tts["decision"]
    assert (d["bin"], d["strategy"], d["budget"]) == (alone.decision.bin, alone.decision.strategy.name, 8)
    assert d["ci_low"] <= d["expected_accuracy"] <= d["ci_high"] and d["source"].startswith("table ")
    assert tts["cost"]["generations"] == alone.cost.generations > 0 and tts["cost"]["flops"] > 0
    assert [c["answer"] for c in tts["candidates"]] == [c.answer for c in alone.candidates]
    assert resp.usage.prompt_tokens == alone.cost.policy_prompt_tokens
    assert resp.usage.completion_tokens == alone.cost.policy_generated_tokens > 0
    assert tts["forced"] is False and tts["timing"]["batch_size"] >= 1


def test_budget_and_strategy_overrides_by_body_and_headers(gateway, sim_table):
    q = make_questions([0.5], prefix="serve override")[0]
    client = gateway.client()
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                          extra_body={"tts": {"budget": 4}})
    d = resp.model_extra["tts"]["decision"]
    assert d["budget"] == d["requested_budget"] == 4
    assert resp.model_extra["tts"]["answer"] == Router.load(sim_table).solve(q, 4).answer
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                          extra_headers={"X-TTS-Budget": "2", "X-TTS-Strategy": "majority"})
    tts = resp.model_extra["tts"]
    assert tts["forced"] is True and "routing bypassed" in tts["decision"]["source"]
    assert (tts["decision"]["strategy"], tts["decision"]["n"], tts["cost"]["generations"]) == ("majority", 2, 2)
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                          extra_headers={"X-TTS-Budget": "4", "X-TTS-Strategy": "beam_search"})
    d = resp.model_extra["tts"]["decision"]
    assert (d["strategy"], d["n"], d["m"]) == ("beam_search", 4, 4)


def test_completions_streaming_models_health_and_metrics(gateway):
    q = make_questions([0.2], prefix="serve misc")[0]
    client = gateway.client()
    whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}], stream=True))
    assert len(chunks) == 1  # one final chunk: a search knows its answer only when it ends
    assert chunks[0].choices[0].delta.content == whole.choices[0].message.content
    assert chunks[0].model_extra["tts"]["answer"] == whole.model_extra["tts"]["answer"]
    text = client.completions.create(model="m", prompt=[q, q + " again"])
    assert len(text.choices) == 2 and text.choices[0].text == whole.choices[0].message.content
    assert [m.id for m in client.models.list().data] == ["sim-policy"]
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{gateway.url}/metrics")
    assert metrics.status_code == 200
    body = metrics.text
    assert 'tts_requests_total{endpoint="/v1/chat/completions",status="200"}' in body
    assert "tts_request_seconds_bucket" in body and "tts_routing_decisions_total{bin=" in body
    assert 'tts_generations_total{strategy=' in body and "tts_flops_total" in body


def test_api_key_is_required_when_set(sim_table):
    with Running(Router.load(sim_table), ServeConfig(api_key="s3cret")) as g:
        q = make_questions([0.4], prefix="serve auth")[0]
        with pytest.raises(openai.AuthenticationError) as err:
            g.client("wrong").chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
        assert err.value.status_code == 401 and "invalid or missing API key" in err.value.message
        assert httpx.get(f"{g.url}/metrics").status_code == 401
        assert httpx.get(f"{g.url}/health").status_code == 200  # liveness probes need no key
        ok = g.client("s3cret").chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
        assert ok.model_extra["tts"]["answer"] is not None


def test_64_concurrent_requests_share_one_batched_search_and_match_solving_alone(sim_table):
    policy = RecordingPolicy(SimulatedPolicy())
    router = Router.load(sim_table, policy=policy, prm=sim_prm())
    qs = make_questions(list(np.random.default_rng(1).uniform(0.05, 0.95, 64)), prefix="serve concurrent")
    budgets = [8 if i % 2 else 4 for i in range(64)]  # mixed budgets still share the rounds
    reference = Router.load(sim_table)
    alone = [reference.solve(q, b) for q, b in zip(qs, budgets)]
    with Running(router, ServeConfig(batch_window_ms=1000)) as g:  # wide: a loaded machine sends slowly
        client = openai.AsyncOpenAI(base_url=f"{g.url}/v1", api_key="x", max_retries=0, timeout=120)

        async def ask(q, b):
            return await client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                                        extra_body={"tts": {"budget": b}})

        async def ask_all():
            try:
                return await asyncio.gather(*(ask(q, b) for q, b in zip(qs, budgets)))
            finally:
                await client.close()

        responses = asyncio.run(ask_all())
        batches = g.batcher.batches
    one_search = max(len(r.search.rounds) for r in alone)
    assert batches <= 2, batches
    assert len(policy.calls) <= batches * one_search, (len(policy.calls), one_search)  # not 64 searches
    assert sum(len(r.search.rounds) for r in alone) > 10 * len(policy.calls)
    for resp, r, q in zip(responses, alone, qs):
        tts = resp.model_extra["tts"]
        assert tts["answer"] == r.answer  # its own answer, as if sent alone
        assert [(c["answer"], c["score"]) for c in tts["candidates"]] == \
            [(c.answer, c.step_scores[-1] if c.step_scores else None) for c in r.candidates]
        assert tts["cost"]["generations"] == r.cost.generations
    right = sum(resp.model_extra["tts"]["answer"] == problem_for(q).answer for resp, q in zip(responses, qs))
    assert right > 32  # the routed searches are mostly right on these difficulties


def _post(url, payload=None, *, content=None, headers=None):
    return httpx.post(f"{url}/v1/chat/completions", json=payload, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize("kind", ["empty", "too_long", "unknown_strategy", "budget_high", "budget_low", "budget_header",
                                  "malformed_json", "content_type", "not_an_object", "no_messages", "bad_tts_field",
                                  "n", "too_big"])
def test_bad_inputs_get_openai_style_4xx(gateway, kind):
    q = "what is 2 + 2?"
    msg = lambda content: {"model": "m", "messages": [{"role": "user", "content": content}]}  # noqa: E731
    cases = {
        "empty": (lambda: _post(gateway.url, msg("   ")), 400, "the prompt is empty", "messages"),
        "too_long": (lambda: _post(gateway.url, msg("x" * 8001)), 400, "8001 characters; this server accepts at most 8000",
                     "messages"),
        "unknown_strategy": (lambda: _post(gateway.url, msg(q), headers={"X-TTS-Strategy": "tree_of_thought"}), 400,
                             "unknown strategy 'tree_of_thought': use one of", "X-TTS-Strategy"),
        "budget_high": (lambda: _post(gateway.url, {**msg(q), "tts": {"budget": 16}}), 400,
                        "budget 16 is outside the table: the table's budgets are [1, 2, 4, 8]", "tts.budget"),
        "budget_low": (lambda: _post(gateway.url, msg(q), headers={"X-TTS-Budget": "0"}), 400,
                       "budget 0 is outside the table", "X-TTS-Budget"),
        "budget_header": (lambda: _post(gateway.url, msg(q), headers={"X-TTS-Budget": "lots"}), 400,
                          "X-TTS-Budget must be an integer, got 'lots'", "X-TTS-Budget"),
        "malformed_json": (lambda: _post(gateway.url, content=b'{"messages": [', headers={"Content-Type": "application/json"}),
                           400, "malformed JSON body", None),
        "content_type": (lambda: _post(gateway.url, content=b"messages=hi", headers={"Content-Type": "text/plain"}), 415,
                         "Content-Type must be application/json, got 'text/plain'", None),
        "not_an_object": (lambda: _post(gateway.url, [1, 2]), 400, "the body must be a JSON object, got list", None),
        "no_messages": (lambda: _post(gateway.url, {"model": "m"}), 400, "messages: Field required", "messages"),
        "bad_tts_field": (lambda: _post(gateway.url, {**msg(q), "tts": {"bugdet": 4}}), 400, "tts.bugdet: Extra inputs",
                          "tts.bugdet"),
        "n": (lambda: _post(gateway.url, {**msg(q), "n": 3}), 400, "one routed answer per prompt (n=1)", "n"),
        "too_big": (lambda: _post(gateway.url, content=b" " * (2 << 20), headers={"Content-Type": "application/json"}), 413,
                    "the body is over 1048576 bytes", None),
    }
    send, status, message, param = cases[kind]
    resp = send()
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert message in err["message"] and err["param"] == param


def test_unknown_path_and_openai_client_errors(gateway):
    resp = httpx.get(f"{gateway.url}/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(model="m", messages=[{"role": "user", "content": ""}])
    assert "the prompt is empty" in err.value.message


class ExplodingPolicy(SimulatedPolicy):
    """The simulator, except that it fails on any question mentioning 'explode'."""

    def generate_steps(self, requests):
        if any("explode" in r.prefix for r in requests):
            raise RuntimeError("simulated device lost")
        return super().generate_steps(requests)


def test_engine_failure_is_a_5xx_and_the_server_keeps_serving(sim_table):
    with Running(Router.load(sim_table, policy=ExplodingPolicy(), prm=sim_prm())) as g:
        bad = _post(g.url, {"model": "m", "messages": [{"role": "user", "content": "please explode"}]})
        assert bad.status_code == 500
        err = bad.json()["error"]
        assert err["type"] == "engine_error" and "RuntimeError: simulated device lost" in err["message"]
        assert "keeps serving" in err["message"]
        good = _post(g.url, {"model": "m", "messages": [{"role": "user", "content": make_questions([0.3])[0]}]})
        assert good.status_code == 200 and good.json()["tts"]["answer"] is not None


def test_timeout_and_graceful_shutdown(sim_table):
    slow = Router.load(sim_table, policy=SimulatedPolicy(latency=0.4), prm=sim_prm())
    with Running(slow, ServeConfig(timeout_s=0.2)) as g:
        resp = _post(g.url, {"model": "m", "messages": [{"role": "user", "content": make_questions([0.3])[0]}]})
        assert resp.status_code == 504 and "no answer within 0.2 s" in resp.json()["error"]["message"]
    g = Running(slow, ServeConfig(timeout_s=60))
    box = {}
    asker = threading.Thread(target=lambda: box.setdefault("resp", _post(
        g.url, {"model": "m", "messages": [{"role": "user", "content": make_questions([0.6], prefix="late")[0]}]})))
    asker.start()
    deadline = time.monotonic() + 10
    while g.batcher.in_flight == 0:  # the request has reached the batcher
        assert time.monotonic() < deadline
        time.sleep(0.005)
    g.stop()  # what SIGTERM does: stop accepting, finish what is in flight
    asker.join(30)
    assert box["resp"].status_code == 200 and box["resp"].json()["tts"]["answer"] is not None


def test_average_budget_gives_each_bin_a_fixed_budget_within_the_mean(sim_table):
    from selector.serve.solver import Solver
    from selector.tables import TableDir

    router = Router.load(sim_table)
    solver = Solver(router, average_budget=3)
    bins = [int(b) for b in TableDir(sim_table).prompts()["bin"]]
    assert set(solver.bin_budgets) == set(bins) and set(solver.bin_budgets.values()) <= set(router.budgets)
    assert sum(solver.bin_budgets[b] for b in bins) / len(bins) <= 3
    with Running(router, ServeConfig(average_budget=3)) as g:
        q = make_questions([0.5], prefix="serve avg")[0]
        d = g.client().chat.completions.create(model="m", messages=[{"role": "user", "content": q}]).model_extra["tts"]["decision"]
        assert d["budget"] == solver.bin_budgets[d["bin"]]


def test_a_published_prior_serves_budgets_up_to_max_budget():
    from pathlib import Path

    prior = Path(__file__).resolve().parents[1] / "tables" / "prior__liu2025__math"
    router = Router.load(prior, policy="sim", prm="sim:separation=2.0,noise=1.0,bias=1.0", estimator="pilot:4")
    with Running(router, ServeConfig(max_budget=16)) as g:
        q = make_questions([0.4], prefix="serve prior")[0]
        resp = _post(g.url, {"model": "m", "messages": [{"role": "user", "content": q}]})
        assert resp.status_code == 200, resp.text
        d = resp.json()["tts"]["decision"]
        assert d["requested_budget"] == 8 and d["source"].startswith("published prior")
        assert d["expected_accuracy"] is None  # a prior has no measurements
        resp = _post(g.url, {"model": "m", "messages": [{"role": "user", "content": q}], "tts": {"budget": 17}})
        assert resp.status_code == 400 and "this prior serves budgets 1..16" in resp.json()["error"]["message"]


def test_cli_serve_refuses_a_missing_table(tmp_path, capsys):
    from selector.cli import main

    assert main(["serve", "--tables", str(tmp_path / "nothing"), "--policy", "sim", "--prm", "sim"]) == 2
    assert "not a table directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one request never fails another

def _ask_together(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    """POST every body at once (so they share a batch), each from its own client thread."""
    out: list = [None] * len(bodies)

    def send(i: int) -> None:
        out[i] = httpx.post(f"{url}/v1/chat/completions", content=bodies[i], timeout=60,
                            headers={"Content-Type": "application/json"})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return out


def _chat(content: str) -> bytes:
    # json.dumps escapes a lone surrogate as \ud800: valid JSON text that decodes to invalid Unicode.
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


@pytest.mark.parametrize("bad", ["What is 2 + 2? \ud800", "What is 2 + 2? \udcff"])
def test_a_request_that_is_not_valid_utf8_gets_its_own_400_and_its_batch_is_answered(sim_table, bad):
    qs = make_questions([0.3, 0.5, 0.7], prefix="batched with a stranger")
    alone = [Router.load(sim_table).solve(q, 8).answer for q in qs]
    with Running(Router.load(sim_table), ServeConfig(batch_window_ms=200)) as g:
        responses = _ask_together(g.url, [_chat(qs[0]), _chat(bad), _chat(qs[1]), _chat(qs[2])])
    good = [responses[0], responses[2], responses[3]]
    assert [r.status_code for r in good] == [200, 200, 200], [r.text[:300] for r in good]
    assert [r.json()["tts"]["answer"] for r in good] == alone
    assert max(r.json()["tts"]["timing"]["batch_size"] for r in good) > 1  # they did share a batch
    err = responses[1]
    assert err.status_code == 400, err.text
    message = err.json()["error"]["message"]
    assert "not valid UTF-8" in message and "question 3" not in message and "question 1" not in message
    assert err.json()["error"]["param"] == "messages" and err.json()["error"]["code"] == "invalid_prompt"


def test_an_engine_error_fails_only_the_request_it_belongs_to(sim_table):
    qs = make_questions([0.2, 0.6, 0.8], prefix="beside an exploding one")
    alone = [Router.load(sim_table).solve(q, 8).answer for q in qs]
    with Running(Router.load(sim_table, policy=ExplodingPolicy(), prm=sim_prm()), ServeConfig(batch_window_ms=300)) as g:
        responses = _ask_together(g.url, [_chat(qs[0]), _chat(qs[1]), _chat("please explode"), _chat(qs[2])])
        batches = g.batcher.batches
    assert responses[2].status_code == 500 and "simulated device lost" in responses[2].json()["error"]["message"]
    good = [responses[0], responses[1], responses[3]]
    assert [r.status_code for r in good] == [200, 200, 200], [r.text[:300] for r in good]
    assert [r.json()["tts"]["answer"] for r in good] == alone
    assert batches <= 2  # one batch (retried job by job), not one per request from the start


# ----------------------------------------------------------------------------- auth never fails open

def test_an_empty_api_key_is_an_error_not_an_open_gateway(sim_table, monkeypatch, capsys):
    from selector.cli import main
    from selector.errors import InputError
    from selector.serve import create_app

    for key in ("", "   ", "\t"):
        with pytest.raises(InputError, match="empty"):
            create_app(Router.load(sim_table), ServeConfig(api_key=key))
        assert main(["serve", "--tables", str(sim_table), "--port", "0", "--api-key", key]) == 2
        assert "--api-key is empty" in capsys.readouterr().err
        monkeypatch.setenv("TTS_SELECTOR_API_KEY", key)
        assert main(["serve", "--tables", str(sim_table), "--port", "0"]) == 2
        assert "$TTS_SELECTOR_API_KEY is empty" in capsys.readouterr().err
        monkeypatch.delenv("TTS_SELECTOR_API_KEY")


def test_serving_beyond_loopback_without_a_key_says_so_loudly(sim_table, monkeypatch, capsys):
    import uvicorn

    from selector.serve import serve

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: started.append(sockets))  # no real serving
    monkeypatch.delenv("TTS_SELECTOR_API_KEY", raising=False)
    router = Router.load(sim_table)
    serve(router, ServeConfig(), host="0.0.0.0", port=0)
    assert "WARNING" in capsys.readouterr().err and len(started) == 1
    serve(router, ServeConfig(), host="127.0.0.1", port=0)
    serve(router, ServeConfig(api_key="k"), host="0.0.0.0", port=0)
    assert "WARNING" not in capsys.readouterr().err and len(started) == 3


# ----------------------------------------------------------------------------- settings and addresses

def test_settings_that_would_fail_every_request_and_bad_addresses_exit_2(sim_table, capsys):
    import socket

    from selector.cli import main
    from selector.errors import InputError

    for bad in (dict(timeout_s=float("nan")), dict(timeout_s=0), dict(timeout_s=-1), dict(average_budget=float("nan")),
                dict(batch_window_ms=float("inf")), dict(max_batch=0)):
        with pytest.raises(InputError):
            ServeConfig(**bad)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = str(busy.getsockname()[1])
    cases = [(["--timeout", "nan"], "--timeout"), (["--timeout", "0"], "--timeout"), (["--timeout", "-1"], "--timeout"),
             (["--average-budget", "nan"], "--average-budget"), (["--port", "70000"], "--port"),
             (["--port", port], f"cannot listen on 127.0.0.1:{port}"), (["--host", "999.1.2.3"], "--host '999.1.2.3'"),
             (["--host", "no-such-host.invalid"], "--host")]
    try:
        for extra, words in cases:
            argv = ["serve", "--tables", str(sim_table), *(["--port", "0"] if "--port" not in extra else []), *extra]
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's own exit for a bad value
                rc = exc.code
            err = capsys.readouterr().err
            assert rc == 2 and words in err and "Traceback" not in err, (extra, rc, err)
    finally:
        busy.close()


# ----------------------------------------------------------------------------- hostile bodies

def test_a_body_nested_100k_deep_is_a_400(gateway):
    for body in (b"[" * 100_000, b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        resp = _post(gateway.url, content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 400 and "nested too deeply" in resp.json()["error"]["message"], resp.text[:300]


def test_a_client_leaving_mid_body_logs_no_traceback(gateway):
    import logging
    import socket

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        host, port = gateway.url.removeprefix("http://").split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n" + b'{"model": "m", "mess')
            time.sleep(0.3)
        ok = _post(gateway.url, {"model": "m", "messages": [{"role": "user", "content": make_questions([0.4])[0]}]})
    finally:
        logger.removeHandler(handler)
    assert ok.status_code == 200
    assert not [r for r in records if r.exc_info or "Exception" in r.getMessage()], [r.getMessage() for r in records]


def test_the_cli_gateway_answers_every_request_in_flight_on_sigterm(sim_table):
    """`tts-selector serve` end to end (its own bound socket): SIGTERM while 8 slow requests are
    in flight, each still gets its answer, and the process ends."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "selector.cli", "serve", "--tables", str(sim_table), "--port", "0",
                             "--policy", "sim:latency=0.2", "--batch-window-ms", "100"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
            assert line or proc.poll() is None, "the server exited"
        assert port, "no address in the log"
        url = f"http://127.0.0.1:{port}"
        qs = make_questions(list(np.linspace(0.2, 0.8, 8)), prefix="sigterm")
        box: list = [None] * len(qs)
        threads = [threading.Thread(target=lambda i=i: box.__setitem__(i, _post(url, {
            "model": "m", "messages": [{"role": "user", "content": qs[i]}]}))) for i in range(len(qs))]
        for t in threads:
            t.start()
        time.sleep(0.5)  # all in flight: the batch is searching (0.2 s per simulated call)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert [r.status_code for r in box] == [200] * len(qs), [r.text[:200] for r in box if r is not None]
        assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has finished
    finally:
        if proc.poll() is None:
            proc.kill()
