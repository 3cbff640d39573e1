"""Honest tables (issue 12): bins from samples no strategy is scored on, paired selection.

The bias test profiles 400 simulated prompts whose latent pass@1 is known and compares every
within-bin accuracy of best-of-N and majority vote with an independent fresh pool of the same
prompts: the profile's numbers agree within two standard errors, while the same numbers with
bins read from the scored samples themselves (the old way) do not.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.binning import assign_bins, bin_edges
from selector.datasets import Problem
from selector.profiler import load_config, run_profile
from selector.profiler.difficulty import final_scores
from selector.profiler.outcomes import best_of_n_family_rows
from selector.profiler.pool import _rollout_rows
from selector.profiler.selection import allocate_bins, profile_pick
from selector.search.best_of_n import BestOfN
from selector.search.runner import run_search
from selector.tables import TableDir

PRM_SPEC = "sim:separation=2.0,noise=1.0"
BUDGETS = [1, 2, 4, 8, 16]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bias")
    questions = make_questions(list(np.random.default_rng(0).beta(1.0, 1.0, 400)))
    with (tmp / "q.jsonl").open("w") as fh:
        for i, q in enumerate(questions):
            fh.write(json.dumps({"id": f"s{i}", "problem": q, "answer": problem_for(q).answer}) + "\n")
    cfg = {"name": "bias", "policy": "sim", "prm": PRM_SPEC, "dataset": {"name": "q.jsonl", "id_field": "id"},
           "pool": {"n": 16, "difficulty_samples": 8},
           "grid": {"strategies": ["majority", "best_of_n"], "budgets": BUDGETS, "aggregations": ["last"]},
           "binning": {"scheme": "quantile", "k": 5}, "evaluate": {"subsamples": 50},
           "select": {"bootstrap": 10, "pilots": []}, "shard_size": 100}
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(tmp / "c.yaml")
    run_profile(config, tmp / "out", progress=False)
    table = TableDir(tmp / "out")
    # An independent fresh pool of the same prompts (another seed), scored the same way.
    results = run_search([(q, BestOfN(n=16)) for q in questions], SimulatedPolicy(), SimulatedPRM(separation=2.0, noise=1.0),
                         seed=12345)
    rows = []
    for i, (q, r) in enumerate(zip(questions, results)):
        rows += _rollout_rows(Problem(f"s{i}", q, problem_for(q).answer), r.candidates, r.cost.policy_prompt_tokens, 0)
    fresh = best_of_n_family_rows(config, pd.DataFrame(rows))
    return table, fresh


def _z_scores(ev: pd.DataFrame, fresh: pd.DataFrame, bins: pd.Series) -> list[tuple]:
    """(strategy, n, bin, z) of the within-bin mean accuracy: profile minus fresh pool, over the
    standard error of that difference (two independent estimates over the bin's prompts)."""
    out = []
    for strategy in ("best_of_n", "majority"):
        for n in BUDGETS:
            a = ev[(ev["strategy"] == strategy) & (ev["n"] == n)].set_index("prompt_id")["accuracy"]
            b = fresh[(fresh["strategy"] == strategy) & (fresh["n"] == n)].set_index("prompt_id")["accuracy"]
            for bin_ in sorted(set(bins)):
                ids = bins.index[bins == bin_]
                se = np.sqrt(a.loc[ids].var(ddof=1) / len(ids) + b.loc[ids].var(ddof=1) / len(ids))
                diff = a.loc[ids].mean() - b.loc[ids].mean()
                out.append((strategy, n, int(bin_), diff / se if se > 0 else 0.0))
    return out


def test_within_bin_accuracy_agrees_with_a_fresh_pool(profiled):
    table, fresh = profiled
    z = _z_scores(table.evaluations(), fresh, table.prompts().set_index("prompt_id")["bin"])
    assert len(z) == 2 * len(BUDGETS) * 5
    worst = max(z, key=lambda r: abs(r[3]))
    assert abs(worst[3]) <= 2.0, worst


def test_bins_from_the_scored_samples_fail_the_same_check(profiled):
    # The old way: a prompt's bin from the very samples its best-of-N cells are scored on.
    table, fresh = profiled
    rollouts = table.rollouts()
    scored = rollouts[rollouts["role"] == "evaluation"].sort_values("sample_id")
    predicted = scored.groupby("prompt_id")["step_scores"].apply(lambda s: float(np.mean(final_scores(s))))
    old_bins = pd.Series(assign_bins(predicted.to_numpy(), bin_edges(predicted.to_numpy(), "quantile", 5)),
                         index=predicted.index)
    z = _z_scores(table.evaluations(), fresh, old_bins)
    assert max(abs(r[3]) for r in z) > 3.0  # the check catches the bias


def test_selection_never_takes_a_cheaper_configuration_worse_on_every_prompt():
    best = np.array([1.0, 0.15, 1.0, 1.0, 0.15, 1.0, 0.15, 1.0, 1.0, 0.15, 1.0, 0.15, 1.0])  # 13 prompts
    acc = np.stack([best, best - 0.15], axis=1)  # config 1: 0.15 worse on every prompt, and cheaper
    cost = np.tile([10.0, 1.0], (13, 1))
    # The old rule (cheapest not significantly worse, within the best's interval over prompts) took it.
    boot = best[np.random.default_rng(1).integers(0, 13, (1000, 13))].mean(axis=1)
    assert acc[:, 1].mean() >= np.quantile(boot, 0.025)
    assert profile_pick(acc, cost, cap=10.0) == 0
    bins = np.array([1] * 6 + [2] * 7)
    assert allocate_bins(acc, cost, bins, cap=10.0, shrinkage=0.0) == {1: 0, 2: 0}
    equal = np.stack([best, best], axis=1)  # as accurate on every prompt, and cheaper: taken
    assert profile_pick(equal, cost, cap=10.0) == 1
    assert profile_pick(acc, cost, cap=5.0) == 1  # the better one does not fit the budget's compute
