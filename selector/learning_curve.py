"""How many profiling prompts does a table need? Held-out accuracy against the profiling size.

No new generation: the table's ``evaluations.parquet`` already holds every configuration's
outcome on every prompt. For each size ``n`` (profiling prompts) and each of ``draws``
seeded random subsets of that size, everything that the profiling prompts decide is redone
on the subset alone, exactly as ``profile`` and ``train-estimator`` do it on the whole
profiling split:

- the bin edges (the config's binning scheme, fitted on the subset's difficulty scores, or
  on its ``k``-sample pilot scores for a ``pilot:k`` router);
- ``selection (<the table's own bins>)``: the cells chosen (the config's select rule,
  cross-fitted) on the subset's bins; a held-out prompt is routed by its own difficulty
  samples' bin under the subset's edges (the table's predicted bins are a K-sample pilot);
- ``router (<declared router>)``: for ``prompt:<features>``, the estimator cross-validated and
  fitted on the subset (targets: the subset's bins and oracle pass@1), its cells chosen on
  its out-of-fold bins; for ``pilot:k``, the pilot's edges and cells refitted on the subset;
- ``one strategy``: the single configuration per budget the same rule picks over the whole
  subset (no bins): what routing has to beat when both learn from the same prompts.

Each method is scored on the **same held-out split** as ``tts-selector evaluate``. At each
(size, budget) the reported accuracy is the mean over the draws and the held-out prompts.
Its 95% CI is a two-way percentile bootstrap: each resample redraws the held-out prompts (the
resamples ``evaluate`` uses) and, independently, the subsets (draws, with replacement), so it
covers both the held-out sampling and which profiling prompts a table of that size happened
to get (with few draws, the second part only roughly). The JSON rows also give the draws'
own range (``draw_range``). ``margin`` / ``margin_ci``: router minus one strategy **at the
same budget N**, paired (same prompts, same draws in every resample); the two methods' mean
FLOPs are in the rows (a router's bins may cost extra: a pilot's samples, an embedder).
The largest size is the whole profiling split: one draw (every draw would be the same), so
its CI covers the held-out sampling only, and its router row reproduces ``tts-selector
evaluate``'s (the estimator is re-trained with the folds and seed recorded when it was
trained). A ``selection`` on oracle or level bins is a reference (no deployable router
reproduces those bins), as in ``evaluate``.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from .binning import assign_bins, bin_edges
from .errors import InputError
from .estimators import EstimateContext
from .heldout import HeldoutSetup, pilot_routing, route_prompts, select_cells
from .profiler.difficulty import own_pilot_signal, pilot_values, record_signal
from .profiler.manifest import profiled_settings
from .routing.loading import pilot_size
from .stats import bootstrap_indices, ci95, two_way

DEFAULT_SIZES = (50, 100, 200, 300)
ONE_STRATEGY = "one strategy"


@dataclass
class LearningCurve:
    """Held-out accuracy per (method, profiling size, budget); see the module docstring."""

    table: str
    split: str
    n_heldout: int
    n_profile: int
    sizes: list[int]
    draws: int
    budgets: list[int]
    declared_router: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def render(self) -> str:
        lines = [f"{self.table}: learning curve on {self.n_heldout} {self.split} prompts (never used to select); "
                 f"profiling subsets of {', '.join(map(str, self.sizes))} of {self.n_profile} prompts, {self.draws} "
                 f"seeded draws each (one at the full size); accuracy [95% CI, bootstrap over held-out prompts and "
                 f"draws]"]
        for method in self.methods():
            lines.append(f"{method}:")
            lines.append(f"  {'prompts':<9}" + "".join(f"{'N=' + str(b):<22}" for b in self.budgets))
            for n in self.sizes:
                cells = []
                for b in self.budgets:
                    r = next((r for r in self.rows if r["method"] == method and r["n_profile"] == n and r["budget"] == b), None)
                    cells.append("-".ljust(22) if r is None else
                                 f"{r['accuracy']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]".ljust(22))
                lines.append(f"  {n:<9}" + "".join(cells))
        router = f"router ({self.declared_router})"
        margins = [r for r in self.rows if r["method"] == router and r.get("margin_ci")]
        if margins:
            lines.append(f"{router} minus {ONE_STRATEGY} (chosen on the same prompts) at the same budget N, "
                         f"paired 95% CI:")
            for n in self.sizes:
                cells = [f"{r['margin']:+.3f} [{r['margin_ci'][0]:+.2f},{r['margin_ci'][1]:+.2f}]".ljust(22)
                         for b in self.budgets for r in margins if r["n_profile"] == n and r["budget"] == b]
                lines.append(f"  {n:<9}" + "".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "split": self.split, "n_heldout": self.n_heldout, "n_profile": self.n_profile,
                "sizes": self.sizes, "draws": self.draws, "budgets": self.budgets,
                "declared_router": self.declared_router, "rows": self.rows}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LearningCurve":
        return cls(d["table"], d["split"], int(d["n_heldout"]), int(d["n_profile"]), [int(x) for x in d["sizes"]],
                   int(d["draws"]), [int(b) for b in d["budgets"]], d["declared_router"], list(d["rows"]))


def learning_curve_path(table_dir: str | Path, split: str = "heldout") -> Path:
    """Where ``evaluate --learning-curve`` writes its report by default."""
    return Path(table_dir) / f"learning-curve-{split}.json"


def read_learning_curve(path: str | Path) -> LearningCurve:
    """A report written by :func:`learning_curve` (``to_json``)."""
    try:
        from .table_checks import read_table_json  # a regular file inside the table, size-capped

        return LearningCurve.from_dict(read_table_json(Path(path).parent, Path(path).name))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a learning-curve report ({exc}): rewrite it with "
                         f"`tts-selector evaluate --tables {Path(path).parent} --learning-curve`") from None


def learning_curve(
    table_dir: str | Path, *, sizes: Sequence[int] | None = None, draws: int = 5, split: str = "heldout",
    router: str | None = None, bootstrap: int = 1000, seed: int = 0, progress: Callable | None = None,
) -> LearningCurve:
    """Held-out accuracy of the declared router, the table's own selection and the best single
    strategy, each re-learned from subsets of the profiling prompts (module docstring).

    ``sizes``: numbers of profiling prompts (default 50, 100, 200, 300; sizes at or above the
    profiling split's size are dropped and the full split is always the last); ``draws``:
    random subsets per size; ``router``: default the table's ``declared_router``.

    A ``prompt:<features>`` router is trained on each subset whether or not the table has one
    trained (its record, when present, gives the folds and seed); a ``pilot:<k>`` needs only
    ``k`` difficulty samples per prompt (its edges are refitted on each subset).

    Raises:
        InputError: no prompts in ``split``, a size below 2 x the bin count, a router that is
            neither ``prompt:<features>`` nor ``pilot:<k>`` with ``k`` at most the table's
            difficulty samples, ``draws`` < 1.
    """
    setup = HeldoutSetup.of(table_dir, split)
    table, meta, target, profile = setup.table, setup.meta, setup.target, setup.profile
    if draws < 1:
        raise InputError(f"--draws must be at least 1, got {draws}")
    declared = setup.declared_router(router)
    binning, sel = profiled_settings(table.path)
    n_full = len(profile)
    min_size = 2 * max(binning.k if binning.scheme == "quantile" else len(binning.thresholds) + 1, sel.folds)
    wanted = sorted({int(s) for s in (sizes or DEFAULT_SIZES) if int(s) < n_full} | {n_full})
    if wanted[0] < min_size:
        raise InputError(f"size {wanted[0]} is too small: a subset needs at least {min_size} prompts "
                         f"(2 x max(bins, select folds)); pass larger --sizes")

    axis, budgets, held_ids, lookup, ev_profile = setup.model.axis, setup.budgets, setup.ids, setup.lookup, setup.ev_profile
    own = meta.get("default_selection", "bins:predicted")
    k_own = int(meta.get("difficulty_samples", 0))
    # The table's own bins are priced as the K-sample pilot they are (as in `evaluate`).
    own_spend = (pilot_routing(table, target, k_own, meta["bin_edges"], signal=own_pilot_signal(own))[1:]
                 if own_pilot_signal(own) and k_own else (np.zeros(len(target)), np.zeros(len(target))))
    pilot_k = pilot_size(declared) if declared.startswith("pilot:") else None
    if pilot_k is not None and pilot_k > k_own:
        raise InputError(f"{declared}: the table has {k_own} difficulty samples per prompt; a pilot reads at most that many")

    boot = bootstrap_indices(len(target), bootstrap, seed)
    names = [f"router ({declared})", f"selection ({own})", ONE_STRATEGY]
    rows: list[dict[str, Any]] = []
    bar = progress(total=sum(1 if n == n_full else draws for n in wanted), desc="learning curve", unit="subset") if progress else None
    for n in wanted:
        per_method: dict[str, dict[int, list[np.ndarray]]] = {m: {b: [] for b in budgets} for m in names}
        flops: dict[str, dict[int, list[float]]] = {m: {b: [] for b in budgets} for m in names}
        for d in range(1 if n == n_full else draws):
            rng = np.random.default_rng([seed, n, d])
            sub = profile if n == n_full else profile.iloc[np.sort(rng.choice(n_full, size=n, replace=False))]
            sub_ids = sub["prompt_id"].tolist()
            sub_ev = ev_profile[ev_profile["prompt_id"].isin(set(sub_ids))]
            meth = {
                names[0]: refit_router(declared, pilot_k, sub, target, table, sub_ev, binning, sel, meta),
                names[1]: _own_bins(sub, target, sub_ev, binning, sel, meta) + own_spend,
                names[2]: _one_strategy(sub_ids, target, sub_ev, sel, meta),
            }
            for name, (cells, bins, extra_flops, extra_gen) in meth.items():
                m = route_prompts(name, name, held_ids, bins, extra_flops, extra_gen, False, budgets, cells, lookup,
                                  axis)
                for b in budgets:
                    per_method[name][b].append(m.accuracy[b])
                    flops[name][b].append(float(m.flops[b].mean()))
            if bar is not None:
                bar.update(1)
        n_draws = len(per_method[names[0]][budgets[0]])
        # Two-way bootstrap: every resample redraws the held-out prompts and the subsets.
        draw_boot = np.random.default_rng([seed, n, 2]).integers(0, n_draws, size=(len(boot), n_draws))
        for name in names:
            for b in budgets:
                acc = np.asarray(per_method[name][b])  # (draws, held-out prompts)
                draw_means = acc.mean(axis=1)
                row = {"method": name, "n_profile": n, "budget": b, "accuracy": float(acc.mean()),
                       **dict(zip(("ci_low", "ci_high"), ci95(two_way(acc, draw_boot, boot)))),
                       "draw_range": [float(draw_means.min()), float(draw_means.max())],
                       "mean_flops": float(np.mean(flops[name][b])), "draws": n_draws,
                       "reference": name == names[1] and own in ("bins:oracle", "bins:level")}
                if name == names[0]:
                    diff = acc - np.asarray(per_method[ONE_STRATEGY][b])
                    row.update(margin=float(diff.mean()), margin_ci=ci95(two_way(diff, draw_boot, boot)),
                               one_strategy_mean_flops=float(np.mean(flops[ONE_STRATEGY][b])))
                rows.append(row)
    if bar is not None:
        bar.close()
    return LearningCurve(str(table_dir), split, len(target), n_full, wanted, draws, budgets, declared, rows)


def _edges(scores: np.ndarray, binning) -> list[float]:
    return bin_edges(scores, binning.scheme, binning.k, binning.thresholds)


def _own_bins(sub, target, sub_ev, binning, sel, meta) -> tuple:
    edges = _edges(sub["difficulty_score"].to_numpy(dtype=float), binning)
    bins = pd.Series(assign_bins(sub["difficulty_score"].to_numpy(dtype=float), edges), index=sub["prompt_id"])
    cells = select_cells(sub_ev, bins, sel, meta, meta.get("default_selection", ""))
    return (cells, assign_bins(target["difficulty_score"].to_numpy(dtype=float), edges))


def _one_strategy(sub_ids, target, sub_ev, sel, meta) -> tuple:
    cells = select_cells(sub_ev, pd.Series(1, index=sub_ids), sel, meta, ONE_STRATEGY)
    n = len(target)
    return cells, np.ones(n, dtype=int), np.zeros(n), np.zeros(n)


def refit_router(declared, pilot_k, sub, target, table, sub_ev, binning, sel, meta) -> tuple:
    """Router ``declared`` re-learned from the profiling prompts ``sub`` (rows ``sub_ev``) as
    ``profile`` and ``train-estimator`` would on a table of those prompts, and what it does on
    ``target``: (cells, bins, extra FLOPs, extra generations) per target prompt. A ``pilot:k``
    (``pilot_k``) refits its edges; a ``prompt:<features>`` is cross-validated (its cells
    chosen on its out-of-fold bins) and fitted on ``sub``."""
    n = len(target)
    if pilot_k is not None:
        # The signal the table's pilots bin by (a table profiled without this pilot size: its own bins').
        record = (meta.get("pilots") or {}).get(declared) or {"signal": own_pilot_signal(meta.get("default_selection"))
                                                              or "prm_mean"}
        signal = record_signal(record)
        scores = pilot_values(sub, pilot_k, signal, table.path).to_numpy(dtype=float)
        edges = _edges(scores, binning)
        cells = select_cells(sub_ev, pd.Series(assign_bins(scores, edges), index=sub["prompt_id"]), sel, meta, declared)
        return (cells, *pilot_routing(table, target, pilot_k, edges, signal=signal))
    from .estimators.prompt import PromptEstimator
    from .estimators.train import cross_validate

    features = declared.split(":", 1)[1]
    record = meta.get("estimators", {}).get(declared, {})
    # The subset's table bins (its own edges), as `train-estimator` would see them on that table.
    scores = sub["difficulty_score"].to_numpy(dtype=float)
    bins = assign_bins(scores, _edges(scores, binning))
    texts, pass1 = sub["text"].tolist(), sub["oracle_pass1"].to_numpy(dtype=float)
    with warnings.catch_warnings():  # a small subset's rarest bin may have fewer prompts than folds: expected
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        report = cross_validate(texts, pass1, bins, features=features, folds=int(record.get("folds", 5)),
                                seed=int(record.get("seed", 0)))
    cells = select_cells(sub_ev, pd.Series(report.oof_bins, index=sub["prompt_id"]), sel, meta, declared)
    est = PromptEstimator(features=features).fit(texts, pass1, bins)
    estimates = est.estimate_batch(target["text"].tolist(), EstimateContext(int(meta.get("policy_params", 0))))
    return cells, np.array([e.bin for e in estimates]), np.array([e.cost.flops for e in estimates]), np.zeros(n)
