"""Stage 4: per (bin, budget), the results of every configuration and the selected one.

``results`` gives each configuration's mean accuracy over the bin's prompts with a percentile
bootstrap confidence interval (resampling prompts). ``selection`` picks a configuration per
cell with the rule of :func:`choose` (default: the cheapest in computed FLOPs among those not
significantly worse than the most accurate, by a paired bootstrap over the bin's prompts)
and reports its accuracy **held out**: by K-fold
cross-fitting inside the bin, the rule chooses on K-1 folds and is scored on the remaining
fold; the held-out per-prompt outcomes give the reported accuracy and its bootstrap interval
(Snell et al. used 2 folds). The configuration written to the table is the rule's choice on
all of the bin's prompts. A cell with fewer prompts than folds cannot be cross-fitted: its
accuracy is in-sample and ``cross_fitted`` is False.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .config import SelectConfig

CONFIG_KEYS = ["strategy", "n", "m", "aggregation"]


def _opt_int(x) -> int | None:
    return None if x is None or pd.isna(x) else int(x)


def _opt_str(x) -> str | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)


def _config_order(c: tuple) -> tuple:
    strategy, n, m, aggregation = c
    # Series.map turns missing values into NaN, which neither ``or`` nor ``<`` handles.
    return (strategy, n, _opt_int(m) or 0, _opt_str(aggregation) or "")


COST_COLUMNS = ("generations", "tokens", "flops", "flops_no_cache", "policy_cached_tokens")


def _costs(cost: pd.DataFrame, j: int) -> dict[str, float]:
    """Mean costs of configuration ``j``: ``mean_flops`` counts computed tokens (what selection
    compares), ``mean_flops_no_cache`` what the same work costs with no prefix cache."""
    row = cost.iloc[j]
    return {f"mean_{c}": float(row[c]) for c in COST_COLUMNS if c in row.index}


def _bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means over rows (prompts); ``values`` is (prompts,) or (prompts, configs)."""
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[idx].mean(axis=1)


def _interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def choose(acc: np.ndarray, flops: np.ndarray, sel: SelectConfig, rng: np.random.Generator) -> int:
    """Index of the configuration the rule picks from a (prompts x configs) accuracy matrix.

    ``rule: best``: the most accurate (first in grid order on ties). ``rule: cheapest``: the
    cheapest in ``flops`` among the configurations that are not significantly worse than the
    most accurate one beyond ``tolerance``, judged *paired* on the same prompts: the lower
    end of the percentile bootstrap interval (over prompts, ``confidence``) of the mean
    per-prompt deficit ``acc[:, best] - acc[:, j]`` must be at most ``tolerance``. A
    configuration worse on every prompt has a deficit interval away from 0 and is never
    taken, however wide the spread of accuracies across prompts.
    """
    means = acc.mean(axis=0)
    best = int(np.argmax(means))
    if sel.rule == "best":
        return best
    deficit = acc[:, [best]] - acc  # (prompts, configs), paired by prompt
    low = np.quantile(_bootstrap_means(deficit, sel.bootstrap, rng), (1.0 - sel.confidence) / 2.0, axis=0)
    near = np.nonzero(low <= sel.tolerance + 1e-12)[0]
    # cheapest; then more accurate; then grid order (stable)
    return int(min(near, key=lambda j: (flops[j], -means[j], j)))


def select_tables(
    evaluations: pd.DataFrame, bins: pd.Series, sel: SelectConfig, policy: str, prm: str,
    progress: Callable | None = None, estimator: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``results`` and ``selection`` from evaluation rows of the profiling split.

    ``bins`` maps prompt_id -> bin: the bins that ``estimator`` (a router's difficulty
    estimator, written into every selection row) assigns, out of fold, so that a cell's
    accuracy is that of the prompts the router will send there. Configurations are compared
    only among rows with the same budget, across all strategies.
    """
    ev = evaluations.merge(bins.rename("bin"), left_on="prompt_id", right_index=True)
    # One hashable key per configuration (m and aggregation may be missing).
    tuples = list(zip(ev["strategy"], ev["n"].astype(int), ev["m"].astype(object).map(_opt_int),
                      ev["aggregation"].astype(object).map(_opt_str)))
    ev["config"] = ["|".join(map(str, t)) for t in tuples]
    config_of = dict(zip(ev["config"], tuples))
    results, selection = [], []
    cells = sorted(ev.groupby(["bin", "budget"]).groups)
    bar = progress(total=len(cells), desc="select", unit="cell") if progress else None
    for b, budget in cells:
        cell = ev[(ev["bin"] == b) & (ev["budget"] == budget)]
        acc_table = cell.pivot(index="prompt_id", columns="config", values="accuracy")
        acc_table = acc_table.dropna(axis=1, how="any")  # configurations evaluated on every prompt
        ids = sorted(acc_table.columns, key=lambda k: _config_order(config_of[k]))
        acc = acc_table[ids].to_numpy(dtype=float)
        prompts = np.array(acc_table.index)
        cost = cell.groupby("config")[[c for c in COST_COLUMNS if c in cell.columns]].mean().loc[ids]
        flops = cost["flops"].to_numpy()
        configs = [config_of[k] for k in ids]
        rng = np.random.default_rng([sel.seed, int(b), int(budget)])
        boot = _bootstrap_means(acc, sel.bootstrap, rng)
        for j, c in enumerate(configs):
            low, high = _interval(boot[:, j], sel.confidence)
            results.append({
                "bin": int(b), "budget": int(budget), **dict(zip(CONFIG_KEYS, c)),
                "accuracy": float(acc[:, j].mean()), "ci_low": low, "ci_high": high, "n_prompts": len(prompts),
                **_costs(cost, j),
            })
        chosen = choose(acc, flops, sel, rng)
        if len(prompts) >= sel.folds:
            folds = np.random.default_rng([sel.seed, int(b), int(budget), 1]).permutation(len(prompts)) % sel.folds
            held = np.empty(len(prompts))
            agree = 0
            for f in range(sel.folds):
                train, test = folds != f, folds == f
                pick = choose(acc[train], flops, sel, rng)
                held[test] = acc[test, pick]
                agree += pick == chosen
            low, high = _interval(_bootstrap_means(held, sel.bootstrap, rng), sel.confidence)
            accuracy, crossfit = float(held.mean()), True
        else:
            low, high = _interval(_bootstrap_means(acc[:, chosen], sel.bootstrap, rng), sel.confidence)
            accuracy, crossfit, agree = float(acc[:, chosen].mean()), False, 0
        c = configs[chosen]
        selection.append({
            "estimator": estimator, "policy": policy, "prm": prm, "bin": int(b), "budget": int(budget), **dict(zip(CONFIG_KEYS, c)),
            "accuracy": accuracy, "ci_low": low, "ci_high": high, "n_prompts": len(prompts),
            "insample_accuracy": float(acc[:, chosen].mean()),
            **_costs(cost, chosen), "cross_fitted": crossfit,
            "fold_agreement": agree / sel.folds if crossfit else float("nan"),
        })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    res = pd.DataFrame(results)
    out = pd.DataFrame(selection)
    for df in (res, out):
        if not df.empty:
            df["m"] = df["m"].astype("Int64")
    return res, out
