"""Tests of selector.backends.hf_prm.HFPRM on tiny random models (no network).

Each test model is a 2-layer Llama (hidden 32) built from a config and saved with
``save_pretrained``; the tokenizer is a word-level ``tokenizers`` tokenizer with the special
tokens the protocols need and a small chat template. Expected scores are computed here
independently, in the way each PRM's reference code does (one forward pass per solution, or per
step for RLHFlow), and compared with HFPRM's batched single-pass scores.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selector.backends.base import PRM, ScoreOutput, ScoreRequest
from selector.backends.hf_prm import HFPRM, PROTOCOLS

WORDS = (
    "what is the sum of two and three so we add them first then answer five four six seven "
    "eight nine one zero x y z get step result check it final thus double half minus plus"
).split()
assert len(set(WORDS)) == len(WORDS)
SPECIALS = ["[PAD]", "[UNK]", "<s>", "<extra_0>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
STEPS7 = (
    "first we add two and three",
    "then we get five",
    "check it five minus two is three\n\n",
    "  so the sum is five",
    "double it we get x",
    "half of x is five",
    "thus the final answer is five",
)
QUESTION = "what is the sum of two and three"


def make_tokenizer(extra: tuple[str, ...] = ("ки", "+", "-"), template: str | None = TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(WORDS) + list(extra))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
        additional_special_tokens=[t for t in SPECIALS[3:] if t in vocab],
    )
    if template is not None:
        tok.chat_template = template
    return tok


def save_model(folder: Path, tokenizer, kind: str, tie: bool = True) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2,
        tie_word_embeddings=tie, pad_token_id=tokenizer.pad_token_id, num_labels=2,
    )
    model = LlamaForCausalLM(config) if kind == "causal_lm" else LlamaForTokenClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    tok = make_tokenizer()
    root = tmp_path_factory.mktemp("prms")
    causal = save_model(root / "causal", tok, "causal_lm")
    tokcls = save_model(root / "tokcls", tok, "token_classification")
    return {"qwen25-math-prm": tokcls, "math-shepherd": causal, "rlhflow": causal}


@pytest.fixture(scope="module")
def prms(dirs) -> dict[str, HFPRM]:
    return {name: HFPRM(str(d), name, max_batch_size=3) for name, d in dirs.items()}


def _reference_scores(prm: HFPRM, question: str, steps: tuple[str, ...]) -> list[float]:
    """Scores computed the way each PRM's reference code does, independent of HFPRM's builders."""
    tok, model = prm.tokenizer, prm.model
    clean = [s.strip() for s in steps]
    vocab = tok.get_vocab()
    plus, minus = vocab["+"], vocab["-"]
    with torch.no_grad():
        if prm.protocol.name == "qwen25-math-prm":
            messages = [
                {"role": "system", "content": prm.protocol.system_prompt},
                {"role": "user", "content": question},
                {"role": "assistant", "content": "<extra_0>".join(clean) + "<extra_0>"},
            ]
            text = tok.apply_chat_template(messages, tokenize=False)
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            probs = model(input_ids=ids).logits.softmax(-1)[..., 1]
            return probs[ids == vocab["<extra_0>"]].tolist()
        if prm.protocol.name == "math-shepherd":
            text = f"{question} " + "\n".join(f"{s} ки" for s in clean)
            ids = torch.tensor([tok(text)["input_ids"]])
            logits = model(input_ids=ids).logits[..., [plus, minus]]
            return logits.softmax(-1)[..., 0][ids == vocab["ки"]].tolist()
        # rlhflow: one pass per step over the conversation so far, read at -3 (predicts '+')
        out, conversation = [], []
        for k, s in enumerate(clean):
            conversation.append({"role": "user", "content": f"{question} {s}" if k == 0 else s})
            conversation.append({"role": "assistant", "content": "+"})
            text = tok.apply_chat_template(conversation, tokenize=False)
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
            assert ids[0, -2] == plus
            logits = model(input_ids=ids).logits[0, -3, [plus, minus]]
            out.append(logits.softmax(-1)[0].item())
        return out


ALL = sorted(PROTOCOLS)


def test_registry_entries():
    assert set(PROTOCOLS) == {"qwen25-math-prm", "math-shepherd", "rlhflow"}
    assert PROTOCOLS["qwen25-math-prm"].separator == "<extra_0>"
    assert PROTOCOLS["math-shepherd"].separator == "ки"
    assert PROTOCOLS["qwen25-math-prm"].model_kind == "token_classification"


@pytest.mark.parametrize("protocol", ALL)
@pytest.mark.parametrize("n_steps", [1, 3, 7])
def test_scores_match_reference(prms, protocol, n_steps):
    prm = prms[protocol]
    steps = STEPS7[:n_steps]
    (out,) = prm.score([ScoreRequest(QUESTION, steps)])
    assert isinstance(out, ScoreOutput)
    assert len(out.step_scores) == n_steps
    assert all(0.0 <= s <= 1.0 for s in out.step_scores)
    assert out.step_scores == pytest.approx(_reference_scores(prm, QUESTION, steps), abs=1e-5)
    ids, positions = prm.build_inputs(ScoreRequest(QUESTION, steps))
    assert out.num_tokens == len(ids)
    assert len(positions) == n_steps and positions == sorted(positions)


@pytest.mark.parametrize("protocol", ALL)
def test_score_positions(prms, protocol):
    prm = prms[protocol]
    vocab = prm.tokenizer.get_vocab()
    ids, positions = prm.build_inputs(ScoreRequest(QUESTION, STEPS7[:3]))
    if protocol == "qwen25-math-prm":
        assert [ids[p] for p in positions] == [vocab["<extra_0>"]] * 3
    elif protocol == "math-shepherd":
        assert [ids[p] for p in positions] == [vocab["ки"]] * 3
        assert ids[0] == vocab["<s>"]
    else:  # the next token is the assistant's '+', the one before is the assistant header
        assert [ids[p + 1] for p in positions] == [vocab["+"]] * 3
        assert [ids[p] for p in positions] == [vocab["<|assistant|>"]] * 3


@pytest.mark.parametrize("protocol", ALL)
def test_later_text_does_not_change_earlier_scores(prms, protocol):
    # All three test models are causal (Llama), so step k's score sees only what precedes it.
    prm = prms[protocol]
    a, b = prm.score([
        ScoreRequest(QUESTION, STEPS7[:5]),
        ScoreRequest(QUESTION, STEPS7[:2] + ("half of zero is zero nine", "x y z", "one")),
    ])
    assert a.step_scores[:2] == pytest.approx(b.step_scores[:2], abs=1e-5)
    assert a.step_scores[2:] != pytest.approx(b.step_scores[2:], abs=1e-5)


@pytest.mark.parametrize("protocol", ALL)
def test_batched_equals_one_by_one(prms, protocol):
    prm = prms[protocol]  # max_batch_size=3: 7 requests make 3 chunks with padding
    requests = [ScoreRequest(QUESTION if k % 2 else "what is x", STEPS7[: 1 + (k * 3) % 7]) for k in range(7)]
    batched = prm.score(requests)
    single = [prm.score([r])[0] for r in requests]
    for b, s, r in zip(batched, single, requests):
        assert len(b.step_scores) == len(r.steps)
        assert b.step_scores == pytest.approx(s.step_scores, abs=1e-5)
        assert b.num_tokens == s.num_tokens


def test_empty_steps_and_protocol_conformance(prms):
    prm = prms["math-shepherd"]
    assert isinstance(prm, PRM)
    out = prm.score([ScoreRequest(QUESTION, ()), ScoreRequest(QUESTION, ("one",))])
    assert out[0] == ScoreOutput((), 0) and len(out[1].step_scores) == 1
    assert prm.score([]) == []


def test_num_parameters_counts_tied_once(dirs):
    from transformers import AutoModelForCausalLM

    lazy = HFPRM(str(dirs["math-shepherd"]), "math-shepherd")
    count = lazy.num_parameters  # from the config, before loading
    assert not lazy.is_loaded
    model = AutoModelForCausalLM.from_pretrained(str(dirs["math-shepherd"]))
    assert count == sum(p.numel() for p in model.parameters())
    assert count < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert lazy.load().num_parameters == count
    assert lazy.id == "causal"
    assert HFPRM(str(dirs["math-shepherd"]), "math-shepherd", id="shep").id == "shep"


def test_unknown_protocol_lists_known(dirs):
    with pytest.raises(ValueError, match="known protocols.*math-shepherd.*qwen25-math-prm.*rlhflow"):
        HFPRM(str(dirs["rlhflow"]), "qwen-prm")


@pytest.mark.parametrize(
    "protocol, missing, extra",
    [("qwen25-math-prm", "<extra_0>", ("ки", "+", "-")), ("math-shepherd", "ки", ("+", "-"))],
)
def test_missing_separator_names_it(tmp_path, protocol, missing, extra):
    tok = make_tokenizer(extra=extra)
    if missing == "<extra_0>":  # drop it from the vocab entirely
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {t: i for i, t in enumerate([s for s in SPECIALS if s != "<extra_0>"] + WORDS + list(extra))}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        core.pre_tokenizer = pre_tokenizers.Whitespace()
        tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
        tok.chat_template = TEMPLATE
    kind = PROTOCOLS[protocol].model_kind
    folder = save_model(tmp_path / "m", tok, kind)
    prm = HFPRM(str(folder), protocol)
    with pytest.raises(ValueError, match=f"no token '{missing}'|no separator token '{missing}'"):
        prm.score([ScoreRequest(QUESTION, ("one",))])


def test_missing_candidate_token_and_chat_template(tmp_path):
    tok = make_tokenizer(extra=("ки", "+"))  # no '-'
    folder = save_model(tmp_path / "a", tok, "causal_lm")
    with pytest.raises(ValueError, match="no token '-'.*minus_token"):
        HFPRM(str(folder), "math-shepherd").load()
    tok = make_tokenizer(template=None)
    folder = save_model(tmp_path / "b", tok, "causal_lm")
    with pytest.raises(ValueError, match="needs a chat template"):
        HFPRM(str(folder), "rlhflow").load()
    # Configurable candidate tokens: any two vocabulary entries.
    prm = HFPRM(str(folder), "math-shepherd", plus_token="plus", minus_token="minus")
    (out,) = prm.score([ScoreRequest(QUESTION, STEPS7[:2])])
    assert len(out.step_scores) == 2


def test_argument_validation(dirs, tmp_path):
    d = str(dirs["math-shepherd"])
    with pytest.raises(FileNotFoundError, match="never downloads"):
        HFPRM(str(tmp_path / "nope"), "math-shepherd")
    with pytest.raises(ValueError, match="max_batch_size"):
        HFPRM(d, "math-shepherd", max_batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        HFPRM(d, "math-shepherd", dtype="int8")
    with pytest.raises(ValueError, match="must differ"):
        HFPRM(d, "math-shepherd", plus_token="+", minus_token="+")
    assert not HFPRM(d, "math-shepherd").is_loaded  # lazy


def test_separator_inside_step_is_rejected(prms):
    with pytest.raises(ValueError, match="contains the separator"):
        prms["qwen25-math-prm"].score([ScoreRequest(QUESTION, ("one <extra_0> two",))])


def test_registry_builds_an_hf_prm_from_a_spec(tmp_path, dirs, prms):
    from selector.backends import make_prm
    from selector.backends.base import ScoreRequest

    protocol = next(iter(prms))
    spec_prm = make_prm(f"hf-prm:model={dirs[protocol]},protocol={protocol}")
    assert isinstance(spec_prm, HFPRM)
    req = [ScoreRequest("q", ("a b", "c d"))]
    assert spec_prm.score(req)[0].step_scores == pytest.approx(prms[protocol].score(req)[0].step_scores)

    with pytest.raises(ValueError, match="needs model and protocol"):
        make_prm("hf-prm:protocol=math-shepherd")
    with pytest.raises(Exception, match="unknown protocol|choose one of|known"):
        make_prm(f"hf-prm:model={tmp_path},protocol=bogus")


def test_a_checkpoint_missing_the_protocols_head_is_refused_not_scored_at_random(dirs):
    # A causal-LM checkpoint has no token-classification `score` head: transformers would
    # initialise one at random with only a warning.
    prm = HFPRM(str(dirs["math-shepherd"]), "qwen25-math-prm")
    with pytest.raises(ValueError, match=r"would be random.*score.*trust_remote_code=True"):
        prm.score([ScoreRequest(QUESTION, STEPS7[:2])])
