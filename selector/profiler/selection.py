"""Stage 4: per router and budget, the configuration each bin is sent to; per bin, every
configuration's results.

A **budget** B is an amount of compute: B times one scored sample's mean cost
(:func:`selector.cost_model.sample_cost`), on the table's one cost axis. Any configuration, of
any strategy and any (N, M), whose cost fits may serve it.

At each budget the selection is one *policy*, a configuration per bin, chosen on the
profiling prompts (``select.method``):

- the **profile pick**: the one configuration most accurate over all profiling prompts among
  those whose mean cost is within the budget (ties: the cheaper). It is what a user would
  deploy without a router, and it is always a candidate: every bin routed to it is a valid
  policy;
- the **per-bin allocation**: the configuration per bin that maximises expected accuracy with
  the mean cost over the bins (weighted by their shares of prompts) no higher than the profile
  pick's: the same compute, moved between bins (an exact multiple-choice knapsack over the
  bins' accuracy-cost curves). Its candidates are the pooled accuracy-cost frontier, so a bin
  decides how much compute to take, not which of ~100 near-equal configurations won on it. A bin's accuracy of a
  configuration is shrunk toward its pooled accuracy (``select.shrinkage`` prompts of weight),
  so ~100 configurations compared on 40-70 prompts do not overfit. Easy bins may take cheap
  configurations and pass the compute to hard ones;
- ``guarded`` (default): the per-bin allocation replaces the profile pick only when
  **repeated cross-fitting** says it is better: ``repeats`` times, the profiling prompts are
  split in ``folds`` (stratified by bin); both procedures are fitted on the other folds and
  scored on each fold's prompts; the gain, averaged over repeats, must have a CI whose lower
  end is above 0: the corrected resampled t interval of Nadeau & Bengio (2003), since folds
  that share training prompts are not independent. The CI's level is family-wise over the
  router's budgets (Bonferroni: ``1 - (1 - confidence) / budgets``), so the chance that a
  router adopts, at any budget, an allocation that is no better is at most ``(1 -
  confidence) / 2``. Otherwise every bin gets the profile pick, and the router is exactly the
  profile pick at that budget.

Each cell reports its accuracy **held out**: the mean, over the bin's prompts, of the
cross-fitted outcome of the adopted procedure (chosen without the prompt), with a percentile
bootstrap CI over prompts; ``insample_accuracy`` is the chosen configuration's plain mean.
``gain`` / ``gain_ci_*`` record the guard's evidence, ``choice`` which procedure was adopted,
``cap`` the budget's compute (on the cost axis).

``results`` gives every configuration's mean accuracy per bin with a bootstrap CI and its
mean costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..cost_model import sample_cost
from ..stats import bootstrap_means, interval
from .config import SelectConfig

CONFIG_KEYS = ["strategy", "n", "m", "aggregation"]
COST_COLUMNS = ("generations", "tokens", "flops", "flops_no_cache", "policy_cached_tokens", "cost")
PROFILE_PICK, PER_BIN = "profile_pick", "per_bin"


def _opt_int(x) -> int | None:
    return None if x is None or pd.isna(x) else int(x)


def _opt_str(x) -> str | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)


def _config_order(c: tuple) -> tuple:
    strategy, n, m, aggregation = c
    # Series.map turns missing values into NaN, which neither ``or`` nor ``<`` handles.
    return (strategy, n, _opt_int(m) or 0, _opt_str(aggregation) or "")


def config_tuples(ev: pd.DataFrame) -> list[tuple]:
    """(strategy, n, m, aggregation) of each evaluation row, missing values as None."""
    # Not Series.map: it turns None back into NaN.
    return list(zip(ev["strategy"], (int(n) for n in ev["n"]), (_opt_int(m) for m in ev["m"]),
                    (_opt_str(a) for a in ev["aggregation"])))


@dataclass
class Outcomes:
    """Every configuration evaluated on every one of ``prompts``: per-prompt accuracy and costs
    (prompts x configurations), configurations in grid order."""

    prompts: np.ndarray
    configs: list[tuple]
    budgets: np.ndarray  # each configuration's evaluation budget (its n)
    acc: np.ndarray
    costs: dict[str, np.ndarray]

    @property
    def cost(self) -> np.ndarray:
        return self.costs["cost"]

    @classmethod
    def from_evaluations(cls, evaluations: pd.DataFrame, prompt_ids=None) -> "Outcomes":
        ev = evaluations if prompt_ids is None else evaluations[evaluations["prompt_id"].isin(set(prompt_ids))]
        ev = ev.assign(config=["|".join(map(str, t)) for t in config_tuples(ev)])
        config_of = dict(zip(ev["config"], config_tuples(ev)))
        acc = ev.pivot_table(index="prompt_id", columns="config", values="accuracy", aggfunc="first", dropna=False)
        acc = acc.dropna(axis=1, how="any")  # configurations evaluated on every prompt
        if prompt_ids is not None:
            acc = acc.reindex([p for p in prompt_ids if p in acc.index])
        ids = sorted(acc.columns, key=lambda k: _config_order(config_of[k]))
        costs = {c: ev.pivot_table(index="prompt_id", columns="config", values=c, aggfunc="first", dropna=False)
                 .reindex(index=acc.index, columns=ids).to_numpy(dtype=float)
                 for c in COST_COLUMNS if c in ev.columns}
        budget_of = ev.groupby("config")["budget"].first()
        return cls(np.array(acc.index), [config_of[k] for k in ids], budget_of.loc[ids].to_numpy(dtype=int),
                   acc[ids].to_numpy(dtype=float), costs)


def profile_pick(acc: np.ndarray, cost: np.ndarray, cap: float) -> int | None:
    """Index of the most accurate configuration (mean over prompts) whose mean cost is within
    ``cap``; ties go to the cheaper, then to grid order. None when none fits."""
    mean_cost = cost.mean(axis=0)
    fits = np.nonzero(mean_cost <= cap * (1 + 1e-9))[0]
    if len(fits) == 0:
        return None
    means = acc.mean(axis=0)
    return int(min(fits, key=lambda j: (-round(means[j], 12), mean_cost[j], j)))


def allocate_bins(acc: np.ndarray, cost: np.ndarray, bins: np.ndarray, cap: float, shrinkage: float) -> dict[int, int] | None:
    """The configuration per bin maximising the (shrunk) expected accuracy with the mean cost
    over the prompts no higher than the profile pick's (itself within ``cap``): the same compute,
    reallocated between bins. A multiple-choice knapsack over the bins, solved exactly (Pareto
    sets of partial allocations, no cost rounding). The profile pick (every bin alike) is a
    candidate too and wins ties. None when nothing fits ``cap``."""
    pick = profile_pick(acc, cost, cap)
    if pick is None:
        return None
    cap = float(cost[:, pick].mean())  # compute-matched: the router never spends more than the pick
    labels = np.unique(bins)
    pooled = acc.mean(axis=0)
    # Candidates: the pooled accuracy-cost frontier (each more accurate over all prompts than
    # every cheaper one). A bin chooses how far along it to go, not which of ~100 near-equal
    # configurations its 40-70 prompts happen to favour.
    candidates = np.array(sorted(set(_frontier(pooled, cost.mean(axis=0))) | {pick}))
    total = len(bins)
    values, weights = [], []
    for b in labels:
        rows = bins == b
        n_b = int(rows.sum())
        shrunk = (n_b * acc[rows][:, candidates].mean(axis=0) + shrinkage * pooled[candidates]) / (n_b + shrinkage)
        values.append(n_b / total * shrunk)
        weights.append(n_b / total * cost[rows][:, candidates].mean(axis=0))
    uniform = {int(b): pick for b in labels}
    pick_at = int(np.nonzero(candidates == pick)[0][0])
    uniform_value = sum(v[pick_at] for v in values)
    # Exact multiple-choice knapsack: bin by bin, keep the Pareto set of partial allocations
    # (each more valuable than every cheaper one) within the compute; no cost rounding.
    limit = cap * (1 + 1e-9)
    state_cost, state_value = np.zeros(1), np.zeros(1)
    trail: list[tuple[np.ndarray, np.ndarray]] = []  # per bin: (parent state, candidate) of each state
    for v, w in zip(values, weights):
        c = (state_cost[:, None] + w[None, :]).ravel()
        val = (state_value[:, None] + v[None, :]).ravel()
        parent, choice = np.divmod(np.arange(c.size), len(w))
        keep = np.nonzero(c <= limit)[0]
        order = keep[np.lexsort((-val[keep], c[keep]))]  # cheapest first, then most valuable
        running = np.maximum.accumulate(val[order])
        better = np.concatenate(([True], val[order][1:] > running[:-1] + 1e-15))
        order = order[better]
        state_cost, state_value = c[order], val[order]
        trail.append((parent[order], choice[order]))
    if state_value.size == 0 or state_value.max() <= uniform_value + 1e-12:
        return uniform
    out, state = {}, int(np.argmax(state_value))
    for b, (parent, choice) in zip(reversed(labels), reversed(trail)):
        out[int(b)] = int(candidates[choice[state]])
        state = int(parent[state])
    return out


def _frontier(values: np.ndarray, costs: np.ndarray) -> list[int]:
    """Indices not dominated by one at most as costly and at least as valuable, cheapest first
    (ties in cost: the more valuable, then grid order)."""
    out, best = [], -np.inf
    for j in np.lexsort((np.arange(len(values)), -values, costs)):
        if values[j] > best + 1e-12:
            out.append(int(j))
            best = values[j]
    return out


@dataclass
class Guard:
    """The cross-fitted comparison of the per-bin allocation with the profile pick at one budget."""

    adopt: bool
    gain: float
    gain_ci: tuple[float, float]
    held_pick: np.ndarray  # per prompt: cross-fitted accuracy of the profile pick (mean over repeats)
    held_bins: np.ndarray  # ... of the per-bin allocation
    agreement: dict[int, tuple[int, ...]]  # bin -> the configuration each fit chose for it (adopted procedure)


def _folds(bins: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each prompt, stratified by bin (each bin's prompts dealt round-robin in random order)."""
    out = np.empty(len(bins), dtype=np.int64)
    start = int(rng.integers(folds))
    for b in np.unique(bins):
        idx = np.nonzero(bins == b)[0]
        out[rng.permutation(idx)] = (np.arange(len(idx)) + start) % folds
        start = (start + len(idx)) % folds
    return out


def guard(acc: np.ndarray, cost: np.ndarray, bins: np.ndarray, cap: float, sel: SelectConfig,
          rng: np.random.Generator, confidence: float | None = None) -> Guard:
    """Repeated K-fold cross-fitting of both procedures (see the module docstring); the gain's
    CI is at ``confidence`` (default ``sel.confidence``).

    The CI is the corrected resampled t interval of Nadeau & Bengio (2003): the fold gains of
    one split share their training prompts, so treating prompts (or folds) as independent
    understates the variance (Bengio & Grandvalet 2004); the correction multiplies the
    variance of the J = repeats x folds fold gains by (1/J + n_test/n_train). Each fold's fit
    shrinks its bin estimates with ``shrinkage`` scaled to its share of the prompts, so it is
    as strongly regularised, for its size, as the fit on all of them."""
    from scipy.stats import t as student_t

    n = len(bins)
    folds = min(sel.folds, n)
    held_pick, held_bins = np.zeros(n), np.zeros(n)
    fold_gains: list[float] = []
    chose: dict[int, list[int]] = {int(b): [] for b in np.unique(bins)}
    chose_pick: dict[int, list[int]] = {int(b): [] for b in np.unique(bins)}
    for _ in range(sel.repeats):
        fold = _folds(bins, folds, rng)
        for f in range(folds):
            train, test = fold != f, fold == f
            if not test.any() or not train.any():
                continue
            pick = profile_pick(acc[train], cost[train], cap)
            alloc = allocate_bins(acc[train], cost[train], bins[train], cap, sel.shrinkage * train.sum() / n)
            if pick is None or alloc is None:
                pick = pick if pick is not None else int(np.argmin(cost[train].mean(axis=0)))
                alloc = {}
            per_prompt = np.array([alloc.get(int(b), pick) for b in bins[test]])
            rows = np.nonzero(test)[0]
            held_pick[test] += acc[test, pick]
            held_bins[test] += acc[rows, per_prompt]
            fold_gains.append(float((acc[rows, per_prompt] - acc[test, pick]).mean()))
            for b in chose:
                chose[b].append(alloc.get(b, pick))
                chose_pick[b].append(pick)
    held_pick /= sel.repeats
    held_bins /= sel.repeats
    diff = held_bins - held_pick
    gains = np.asarray(fold_gains)
    level = confidence or sel.confidence
    if len(gains) > 1 and gains.var(ddof=1) > 0:
        corrected = (1.0 / len(gains) + 1.0 / (folds - 1)) * gains.var(ddof=1)
        half = float(student_t.ppf(1.0 - (1.0 - level) / 2.0, len(gains) - 1) * np.sqrt(corrected))
    else:  # every fold gained the same: no spread to correct (e.g. both procedures identical)
        half = 0.0
    low, high = float(diff.mean()) - half, float(diff.mean()) + half
    adopt = {"per_bin": True, "profile_pick": False}.get(sel.method, low > 0)
    return Guard(adopt, float(diff.mean()), (low, high), held_pick, held_bins,
                 {b: tuple(v) for b, v in (chose if adopt else chose_pick).items()})


def _costs(out: Outcomes, rows: np.ndarray, j: int) -> dict[str, float]:
    """Mean costs of configuration ``j`` over ``rows``' prompts (``mean_flops`` etc.)."""
    return {f"mean_{c}": float(v[rows, j].mean()) for c, v in out.costs.items()}


def pick_table(evaluations: pd.DataFrame, budgets, unit: float) -> dict[int, dict]:
    """The profile pick at each budget (see the module docstring) over ``evaluations``' prompts:
    budget -> {strategy, n, m, aggregation, accuracy (in-sample), mean_cost, cap}."""
    out = Outcomes.from_evaluations(evaluations)
    picks = {}
    for budget in budgets:
        cap = float(budget) * unit
        j = profile_pick(out.acc, out.cost, cap)
        if j is not None:
            picks[int(budget)] = {**dict(zip(CONFIG_KEYS, out.configs[j])), "accuracy": float(out.acc[:, j].mean()),
                                  "mean_cost": float(out.cost[:, j].mean()), "cap": cap}
    return picks


def select_tables(
    evaluations: pd.DataFrame, bins: pd.Series, sel: SelectConfig, policy: str, prm: str,
    progress: Callable | None = None, estimator: str = "", unit: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``results`` and ``selection`` from evaluation rows of the profiling split.

    ``bins`` maps prompt_id -> bin: the bins that ``estimator`` (a router's difficulty
    estimator, written into every selection row) assigns, out of fold, so that a cell's
    accuracy is that of the prompts the router will send there. ``unit``: one budget step's
    compute on the cost axis (default: :func:`sample_cost` of these rows). Budgets are the
    evaluation budgets of the rows; every configuration competes at every budget it fits."""
    ev = evaluations[evaluations["prompt_id"].isin(set(bins.index))]
    unit = sample_cost(ev) if unit is None else float(unit)
    present = set(ev["prompt_id"])
    out = Outcomes.from_evaluations(ev, [p for p in bins.index if p in present])
    b = bins.reindex(out.prompts).to_numpy(dtype=int)
    budgets = sorted(int(x) for x in ev["budget"].unique())
    results, selection = [], []
    labels = sorted(int(x) for x in np.unique(b))
    bar = progress(total=len(budgets), desc="select", unit="budget") if progress else None
    for label in labels:
        rows = b == label
        boot = bootstrap_means(out.acc[rows], sel.bootstrap, np.random.default_rng([sel.seed, label, 0]))
        for j, c in enumerate(out.configs):
            low, high = interval(boot[:, j], sel.confidence)
            results.append({
                "bin": label, "budget": int(out.budgets[j]), **dict(zip(CONFIG_KEYS, c)),
                "accuracy": float(out.acc[rows, j].mean()), "ci_low": low, "ci_high": high,
                "n_prompts": int(rows.sum()), **_costs(out, rows, j),
            })
    # One decision per budget: the guard's level is family-wise over the router's budgets
    # (Bonferroni), so a router adopts an allocation that is no better at any budget with
    # probability at most (1 - confidence) / 2.
    family = 1.0 - (1.0 - sel.confidence) / max(len(budgets), 1)
    for budget in budgets:
        cap = budget * unit
        rng = np.random.default_rng([sel.seed, budget])
        final = allocate_bins(out.acc, out.cost, b, cap, sel.shrinkage)
        if final is None:  # nothing fits this budget's compute
            if bar is not None:
                bar.update(1)
            continue
        g = guard(out.acc, out.cost, b, cap, sel, rng, confidence=family)
        pick = profile_pick(out.acc, out.cost, cap)
        if not g.adopt:
            final = {label: pick for label in labels}
        held = g.held_bins if g.adopt else g.held_pick
        for label in labels:
            rows = b == label
            j = final[label]
            low, high = interval(bootstrap_means(held[rows], sel.bootstrap, rng), sel.confidence)
            fits = g.agreement.get(label, ())
            selection.append({
                "estimator": estimator, "policy": policy, "prm": prm, "bin": label, "budget": int(budget),
                **dict(zip(CONFIG_KEYS, out.configs[j])),
                "accuracy": float(held[rows].mean()), "ci_low": low, "ci_high": high, "n_prompts": int(rows.sum()),
                "insample_accuracy": float(out.acc[rows, j].mean()), **_costs(out, rows, j),
                "cross_fitted": True, "fold_agreement": float(np.mean([f == j for f in fits])) if fits else math.nan,
                "choice": PER_BIN if g.adopt else PROFILE_PICK, "cap": float(cap),
                "gain": g.gain, "gain_ci_low": g.gain_ci[0], "gain_ci_high": g.gain_ci[1], "gain_confidence": family,
            })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    res = pd.DataFrame(results)
    sel_df = pd.DataFrame(selection)
    for df in (res, sel_df):
        if not df.empty:
            df["m"] = df["m"].astype("Int64")
    return res, sel_df
