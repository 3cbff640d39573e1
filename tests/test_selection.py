"""Selection at a compute budget (issue 23): the profile pick is always a candidate, a per-bin
allocation of the same compute replaces it only on cross-fitted evidence, and the knapsack that
allocates it is exact."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selector.profiler.config import SelectConfig
from selector.profiler.selection import _frontier, allocate_bins, guard, pick_table, profile_pick, select_tables

SEL = SelectConfig(folds=5, repeats=3, bootstrap=400)


def _world(rng: np.random.Generator, prompts: int, heterogeneous: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts in 3 bins and 5 configurations of cost 1..5. Heterogeneous: easy prompts are
    solved by the cheapest configuration already, hard ones gain with every step of compute;
    otherwise every bin has the same accuracy curve (bins carry no information)."""
    bins = np.repeat([1, 2, 3], prompts // 3)
    cost = np.tile(np.arange(1.0, 6.0), (len(bins), 1))
    if heterogeneous:
        p = np.where(bins[:, None] == 1, 0.97, np.where(bins[:, None] == 2, 0.35 + 0.12 * np.arange(5), 0.05 + 0.1 * np.arange(5)))
    else:
        p = np.tile(0.3 + 0.1 * np.arange(5), (len(bins), 1))
    return (rng.random(p.shape) < p).astype(float), cost, bins


@pytest.mark.parametrize("curve", ["linear", "concave"])
def test_where_reallocating_cannot_help_the_guard_adopts_at_most_at_its_nominal_rate(curve):
    # Bins that carry no information: every bin has the same accuracy curve. Linear: moving compute
    # between bins changes nothing (true gain 0); concave: it loses (true gain < 0). Over 1,000
    # worlds the guard's one-sided 2.5% level must hold within two Monte-Carlo standard errors;
    # a bootstrap over prompts that ignores the folds' shared training sets adopted twice as often.
    rate = {"linear": lambda j: 0.3 + 0.1 * j, "concave": lambda j: 0.3 + 0.4 * np.sqrt(j / 4)}[curve]
    gains, adopted, worlds = [], 0, 1000
    for world in range(worlds):
        rng = np.random.default_rng(100 + world)
        bins = np.repeat([1, 2, 3], 100)
        cost = np.tile(np.arange(1.0, 6.0), (len(bins), 1))
        acc = (rng.random((len(bins), 5)) < rate(np.arange(5.0))).astype(float)
        g = guard(acc, cost, bins, cap=3.0, sel=SEL, rng=np.random.default_rng(world))
        gains.append(g.gain)
        adopted += g.adopt
        assert g.adopt == (g.gain_ci[0] > 0)
    assert abs(np.mean(gains)) < 0.01
    nominal = 0.025
    assert adopted / worlds <= nominal + 2 * np.sqrt(nominal * (1 - nominal) / worlds), adopted


def test_compute_moves_from_easy_to_hard_bins_when_cross_fitting_says_it_pays():
    acc, cost, bins = _world(np.random.default_rng(0), 600, heterogeneous=True)
    pick = profile_pick(acc, cost, cap=3.0)
    assert pick == 2  # the most accurate configuration within 3 samples' compute
    alloc = allocate_bins(acc, cost, bins, cap=3.0, shrinkage=20.0)
    assert alloc[1] == 0 and max(alloc[2], alloc[3]) > pick  # the easy bin gives up compute to a harder one
    spent = np.mean([cost[bins == b, alloc[b]].mean() for b in (1, 2, 3)])
    assert spent <= cost[:, pick].mean() + 1e-9  # never more than the profile pick spends
    g = guard(acc, cost, bins, cap=3.0, sel=SEL, rng=np.random.default_rng(1))
    assert g.adopt and g.gain_ci[0] > 0
    # the held-out (cross-fitted) outcomes say the same thing as the gain
    assert g.held_bins.mean() - g.held_pick.mean() == pytest.approx(g.gain)


def test_nothing_fits_below_the_cheapest_configuration():
    acc, cost, bins = _world(np.random.default_rng(0), 30, heterogeneous=True)
    assert profile_pick(acc, cost, cap=0.5) is None and allocate_bins(acc, cost, bins, 0.5, 20.0) is None


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_bins=st.integers(1, 3), n_configs=st.integers(2, 5), cap=st.floats(1.0, 6.0))
def test_the_knapsack_is_exact_on_the_frontier(seed, n_bins, n_configs, cap):
    rng = np.random.default_rng(seed)
    bins = rng.integers(1, n_bins + 1, size=12)
    acc = rng.random((12, n_configs)).round(1)
    cost = rng.uniform(0.5, 6.0, size=(12, n_configs)).round(2)
    shrinkage = float(rng.choice([0.0, 5.0]))
    pick = profile_pick(acc, cost, cap)
    alloc = allocate_bins(acc, cost, bins, cap, shrinkage)
    if pick is None:
        assert alloc is None
        return
    labels = np.unique(bins)
    budget = cost[:, pick].mean()
    pooled = acc.mean(axis=0)

    def value_cost(choice: dict) -> tuple[float, float]:
        v = c = 0.0
        for b in labels:
            rows = bins == b
            n_b = rows.sum()
            shrunk = (n_b * acc[rows, choice[b]].mean() + shrinkage * pooled[choice[b]]) / (n_b + shrinkage)
            v += n_b / len(bins) * shrunk
            c += n_b / len(bins) * cost[rows, choice[b]].mean()
        return v, c

    got_value, got_cost = value_cost(alloc)
    assert got_cost <= budget * (1 + 1e-9)  # the same compute as the profile pick, or less
    assert got_value >= value_cost({b: pick for b in labels})[0] - 1e-12  # never worse than the pick
    # Brute force over the candidates (the pooled frontier).
    candidates = sorted(set(_frontier(pooled, cost.mean(axis=0))) | {pick})
    best = max(v for v, c in (value_cost(dict(zip(labels, combo)))
                              for combo in itertools.product(candidates, repeat=len(labels)))
               if c <= budget * (1 + 1e-9))
    assert got_value >= best - 1e-12


def test_select_tables_writes_one_policy_per_budget_with_its_evidence():
    rng = np.random.default_rng(3)
    acc, cost, bins = _world(rng, 1800, heterogeneous=True)
    ids = [f"p{i}" for i in range(len(bins))]
    rows = []
    for j in range(acc.shape[1]):
        for i, pid in enumerate(ids):
            rows.append({"prompt_id": pid, "strategy": "best_of_n", "n": j + 1, "m": None, "aggregation": "last",
                         "budget": j + 1, "accuracy": acc[i, j], "generations": j + 1, "cost": cost[i, j],
                         "flops": cost[i, j], "tokens": cost[i, j]})
    ev = pd.DataFrame(rows)
    results, selection = select_tables(ev, pd.Series(bins, index=ids), SEL, "pol", "prm", estimator="bins:x")
    assert len(results) == 3 * 5 and set(selection["budget"]) == {1, 2, 3, 4, 5}
    assert selection.groupby("budget").size().eq(3).all()
    assert ((selection["accuracy"] >= selection["ci_low"]) & (selection["accuracy"] <= selection["ci_high"])).all()
    for budget, cells in selection.groupby("budget"):
        assert cells["cap"].eq(budget * 1.0).all()  # one scored sample (best_of_n at n=1) costs 1 here
        assert cells["choice"].nunique() == 1 and cells["gain"].nunique() == 1
        share = cells["n_prompts"] / cells["n_prompts"].sum()
        assert (share * cells["mean_cost"]).sum() <= budget + 1e-9
        if (cells["choice"] == "profile_pick").all():
            assert cells["n"].nunique() == 1
    adopted = set(selection.loc[selection["choice"] == "per_bin", "budget"])
    assert adopted and adopted <= {2, 3, 4}  # at 1 and 5 there is no compute to move
    picks = pick_table(ev, [1, 3, 5], 1.0)
    assert {b: p["n"] for b, p in picks.items()} == {1: 1, 3: 3, 5: 5}
    # method profile_pick: every bin gets the pick, whatever the evidence
    _, never = select_tables(ev, pd.Series(bins, index=ids), SelectConfig(folds=5, repeats=2, bootstrap=100,
                                                                           method="profile_pick"), "pol", "prm")
    assert (never["choice"] == "profile_pick").all() and never.groupby("budget")["n"].nunique().eq(1).all()
