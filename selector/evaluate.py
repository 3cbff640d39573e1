"""Offline evaluation of the router against fixed strategies on prompts the selection never saw.

Every held-out prompt was pooled and evaluated by the profiler like the others (its
``evaluations.parquet`` rows hold the expected accuracy and cost of every configuration at
every budget), but the selection never used it. So a routing policy is scored on it without
new generation: estimate the prompt's bin, take the table's choice for (bin, budget) *from the
selection made on that estimator's own bins*, and read that prompt's accuracy and cost for
that choice. Compared at each budget, estimation included:

- the router with each estimator: prompt-only estimators add their FLOPs; a ``pilot:k``
  router's bin is read from the prompt's first ``k`` difficulty samples (never its evaluation
  samples) and it pays what a pilot spends: ``k`` generations, the prompt once (one request of
  ``k`` samples), the ``k`` samples' tokens and their ``k`` PRM scorings, whatever strategy
  follows (the router does not reuse pilot samples);
- the router on the table's own bins (``bins:<difficulty>``): a reference;
- each router also ``allocated``: per-prompt budgets with mean <= the column's budget, chosen
  from the table's accuracy curves (exploratory: no headline figure uses it);
- every fixed configuration.

Every accuracy is a mean over prompts with a percentile bootstrap CI (resampling prompts, the
same resamples for every method, so differences are paired). Headline figures are for **one
pre-declared router**: the table's ``declared_router`` (``evaluate.router`` in the profile
config, fixed before the held-out split is looked at), at the table's budgets:

- ``versus_fixed``: at each budget, its margin over the most accurate fixed configuration
  whose mean FLOPs are no higher (equal compute), with a paired bootstrap CI ``margin_ci``.
  That fixed configuration is picked on the held-out prompts themselves, which favours the
  baseline: the margin is conservative. Rows for the other routers are given too;
- ``efficiency``: best-of-N's accuracy at the largest budget (``best_of_n`` with the grid's
  first aggregation, declared, not picked) divided into the compute the router needs to reach
  it (its cheapest budget at least as accurate), with a bootstrap CI ``ratio_ci`` (a resample
  where the router never reaches the target counts as ratio 0);
- ``calibration[estimator]``: the mean expected accuracy the router reports (its cells'
  accuracy) against the mean realized accuracy of the same decisions, pooled over budgets,
  with the bootstrap CI of the realized mean (``ci``) and of the gap (``gap_ci``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .binning import assign_bins
from .errors import InputError
from .profile.difficulty import pilot_scores
from .router import SelectionCells, load_table_estimator
from .tables import TableDir


@dataclass
class Method:
    name: str
    estimator: str | None = None  # routers: the estimator whose selection it uses
    accuracy: dict[int, np.ndarray] = field(default_factory=dict)  # budget -> per-prompt accuracy
    flops: dict[int, np.ndarray] = field(default_factory=dict)
    generations: dict[int, np.ndarray] = field(default_factory=dict)
    reported: dict[int, np.ndarray] = field(default_factory=dict)  # routers: the cell's expected accuracy
    reference: bool = False  # routers on bins no deployed router reproduces (oracle, level): not compared


@dataclass
class EvalReport:
    table: str
    split: str
    n_prompts: int
    budgets: list[int]
    rows: list[dict[str, Any]]
    efficiency: dict[str, Any]
    versus_fixed: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    declared_router: str = ""

    def render(self) -> str:
        lines = [f"{self.table}: {self.n_prompts} {self.split} prompts; accuracy [95% CI] / mean FLOPs per prompt"]
        names = list(dict.fromkeys(r["method"] for r in self.rows))
        lines.append(f"{'method':<34}" + "".join(f"{'N=' + str(b):<30}" for b in self.budgets))
        for name in names:
            cells = []
            for b in self.budgets:
                r = next((r for r in self.rows if r["method"] == name and r["budget"] == b), None)
                cells.append("-".ljust(30) if r is None else
                             f"{r['accuracy']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}] {r['mean_flops']:.2g}".ljust(30))
            lines.append(f"{name[:33]:<34}" + "".join(cells))
        declared = [v for v in self.versus_fixed if v["method"] == self.declared_router]
        if declared:
            lines.append(f"declared router {self.declared_router} against the best fixed strategy using no more FLOPs "
                         f"(margin [95% paired bootstrap CI]):")
            for v in declared:
                if not v["best_fixed"]:
                    lines.append(f"  N={v['budget']:<4}{v['accuracy']:.3f} at {v['mean_flops']:.2g} FLOPs: no fixed strategy "
                                 "is that cheap")
                    continue
                best = f"{v['best_fixed']} N={v['best_fixed_budget']} {v['best_fixed_accuracy']:.3f}"
                lo, hi = v["margin_ci"]
                lines.append(f"  N={v['budget']:<4}{v['accuracy']:.3f} at {v['mean_flops']:.2g} FLOPs vs {best}: "
                             f"{v['margin']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        e = self.efficiency
        if e.get("router_budget") is not None:
            lo, hi = e["ratio_ci"]
            lines.append(
                f"best-of-N's accuracy {e['target_accuracy']:.3f} ({e['reference']} at N={e['reference_budget']}, "
                f"{e['reference_flops']:.3g} FLOPs) is reached by {e['router']} at N={e['router_budget']} with "
                f"{e['router_flops']:.3g} FLOPs: {e['ratio']:.2f}x less compute [95% CI {lo:.2f}, {hi:.2f}]")
        elif e:
            lines.append(f"the declared router ({e.get('router')}) does not reach best-of-N's accuracy "
                         f"{e.get('target_accuracy', float('nan')):.3f} within the table's budgets")
        for name, c in self.calibration.items():
            lo, hi = c["gap_ci"]
            lines.append(f"calibration {name}: reported {c['reported']:.3f}, realized {c['realized']:.3f} "
                         f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}], gap {c['gap']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "split": self.split, "n_prompts": self.n_prompts, "budgets": self.budgets,
                "declared_router": self.declared_router, "rows": self.rows, "versus_fixed": self.versus_fixed,
                "efficiency": self.efficiency, "calibration": self.calibration}

    def to_json(self) -> str:
        from .strict_json import dumps  # NaN/Infinity are not JSON: written as null

        return dumps(self.to_dict(), indent=2, default=float)


def evaluate_router(
    table_dir: str | Path, *, split: str = "heldout", estimators: Sequence[str] | None = None,
    bootstrap: int = 1000, seed: int = 0, router: str | None = None,
) -> EvalReport:
    """Score routing policies and fixed configurations on ``split`` prompts (see module docstring).

    ``estimators``: the routers to score (default: every trained prompt estimator and every
    profiled pilot); ``router``: the declared router of the headline (default: the table's
    ``declared_router``, fixed in the config before the held-out split was looked at; a router
    named here after looking is exploratory). The declared router must be deployable: a
    trained ``prompt:<features>`` or a profiled ``pilot:<k>``."""
    table = TableDir(table_dir)
    prompts = table.prompts()
    target = prompts[prompts["split"] == split].reset_index(drop=True)
    if target.empty:
        raise ValueError(f"{table_dir}: no {split!r} prompts; profile with dataset.heldout > 0 to reserve some")
    meta = table.metadata
    declared = router or meta.get("declared_router", "prompt:tfidf")
    if not declared.startswith(("prompt:", "pilot:")):
        raise InputError(f"the declared router must be a deployable estimator ('prompt:<features>' or 'pilot:<k>'), "
                         f"got {declared!r}: set evaluate.router in the config or pass --router")
    ev = table.evaluations()
    ev = ev[ev["prompt_id"].isin(set(target["prompt_id"]))].copy()
    ev["config"] = [config_key(r) for r in ev.itertuples(index=False)]
    ev["family"] = [family_key(r) for r in ev.itertuples(index=False)]  # the config without its n
    budgets = sorted(int(b) for b in table.selection()["budget"].unique())
    ids = target["prompt_id"].tolist()
    lookup = outcome_lookup(ev)
    methods: list[Method] = []

    # Fixed configurations (every one evaluated on all target prompts at that budget).
    for family, group in ev.groupby("family"):
        m = Method(f"fixed {family}")
        for b, g in group.groupby("budget"):
            g = g.set_index("prompt_id").reindex(ids)
            if g["accuracy"].isna().any():
                continue
            m.accuracy[int(b)], m.flops[int(b)], m.generations[int(b)] = (
                g["accuracy"].to_numpy(), g["flops"].to_numpy(), g["generations"].to_numpy())
        methods.append(m)

    # Routers: (estimator name) -> (bins, extra FLOPs, extra generations) per target prompt.
    own = meta.get("default_selection")
    routed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    k_own = int(meta.get("difficulty_samples", 0))
    if own == "bins:predicted" and k_own:
        # The table's own bins are a K-sample pilot's: priced as one (same bins, same edges).
        routed[own] = pilot_routing(table, target, k_own, meta["bin_edges"])
    elif own:  # oracle or level bins: no router can reproduce them, a reference only
        routed[own] = (target["bin"].to_numpy(), np.zeros(len(ids)), np.zeros(len(ids)))
    pilots = meta.get("pilots", {})
    names = list(estimators) if estimators is not None else list(meta.get("estimators", {})) + sorted(pilots)
    if declared not in names and (declared in meta.get("estimators", {}) or declared in pilots):
        names.append(declared)
    for name in names:
        if name.startswith("pilot:"):
            if name not in pilots:
                raise ValueError(f"{table_dir}: no {name} profiled (have {sorted(pilots)})")
            routed[name] = pilot_routing(table, target, int(pilots[name]["k"]), pilots[name]["edges"])
        else:
            est, _ = load_table_estimator(table, name)
            estimates = est.estimate_batch(target["text"].tolist(), int(meta.get("policy_params", 0)))
            routed[name] = (np.array([e.bin for e in estimates]), np.array([e.cost.flops for e in estimates]),
                            np.zeros(len(ids)))
    for name, (bins, extra_flops, extra_gen) in routed.items():
        cells = SelectionCells(table.selection(name))
        for allocated in (False, True):
            label = f"router ({name}, allocated)" if allocated else f"router ({name})"
            m = route_prompts(label, name, ids, bins, extra_flops, extra_gen, allocated, budgets, cells, lookup)
            m.reference = name in ("bins:oracle", "bins:level")
            methods.append(m)

    boot = bootstrap_indices(len(ids), bootstrap, seed)
    rows = []
    for m in methods:
        for b in budgets:
            if b not in m.accuracy:
                continue
            means = m.accuracy[b][boot].mean(axis=1)
            rows.append({"method": m.name, "budget": b, "accuracy": float(m.accuracy[b].mean()),
                         "ci_low": float(np.quantile(means, 0.025)), "ci_high": float(np.quantile(means, 0.975)),
                         "mean_generations": float(m.generations[b].mean()), "mean_flops": float(m.flops[b].mean())})
    by_name = {m.name: m for m in methods}
    declared_label = f"router ({declared})"
    reference = _reference(meta, by_name, budgets)
    return EvalReport(
        str(table_dir), split, len(ids), budgets, _order(rows),
        _efficiency(by_name.get(declared_label), reference, budgets, boot) if reference else {},
        _versus_fixed(methods, budgets, boot), _calibration(methods, boot), declared_label,
    )


def outcome_lookup(ev: pd.DataFrame) -> dict[tuple[str, str, int], tuple[float, float, float]]:
    """``(prompt_id, config key, budget) -> (accuracy, FLOPs, generations)`` from evaluation rows
    that carry a ``config`` column (:func:`config_key`)."""
    return _Outcomes({(pid, cfg, int(b)): (acc, fl, g) for pid, cfg, b, acc, fl, g in
                      ev[["prompt_id", "config", "budget", "accuracy", "flops", "generations"]].itertuples(index=False)})


class _Outcomes(dict):
    """The outcome lookup; a selected cell the evaluations lack is a broken table, not a bug."""

    def __missing__(self, key: tuple) -> Any:
        from .tables import TableError

        pid, cfg, budget = key
        raise TableError(f"evaluations.parquet has no row for prompt {str(pid)[:80]!r}, configuration {cfg} at budget "
                         f"{budget}, which selection.parquet selects: the table's files do not belong together "
                         "(tampered with or mixed from different runs); restore it, or rebuild it with "
                         "`tts-selector profile`")


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) prompt indices; every method of one report shares them (paired CIs)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def route_prompts(name, estimator, ids, bins, extra_flops, extra_gen, allocated, budgets, cells, lookup) -> Method:
    """Per-prompt outcomes of routing each prompt by its bin: at budget B for every prompt, or
    (``allocated``) at per-prompt budgets with mean <= B chosen from the table's curves."""
    m = Method(name, estimator)
    for b in budgets:
        per_prompt = cells.allocate(bins, b) if allocated else [b] * len(ids)
        acc, fl, gen, rep = (np.empty(len(ids)) for _ in range(4))
        for i, (pid, bin_, pb) in enumerate(zip(ids, bins, per_prompt)):
            row, _ = cells.cell(int(bin_), pb)
            a, f, g = lookup[(pid, config_key(row), int(row.budget))]
            acc[i], rep[i] = a, float(row.accuracy)
            gen[i], fl[i] = g + extra_gen[i], f + extra_flops[i]
        m.accuracy[b], m.flops[b], m.generations[b], m.reported[b] = acc, fl, gen, rep
    return m


def pilot_routing(table: TableDir, target: pd.DataFrame, k: int, edges: list[float]) -> tuple[np.ndarray, ...]:
    """Bins a ``k``-sample pilot gives (from each prompt's first ``k`` difficulty samples) and what
    it spends: ``k`` generations; one request, so the prompt once plus the samples' tokens; and
    the samples' PRM scorings, whatever strategy follows."""
    meta = table.metadata
    scores = pilot_scores(target["difficulty_scores"], k).to_numpy(dtype=float)
    bins = assign_bins(scores, edges)
    rollouts = table.rollouts(["prompt_id", "sample_id", "tokens", "prm_tokens", "prompt_tokens"])
    first = rollouts[rollouts["sample_id"] < k].groupby("prompt_id")
    spent = pd.DataFrame({"tokens": first["tokens"].sum(), "prm": first["prm_tokens"].sum(),
                          "prompt": first["prompt_tokens"].first()}).reindex(target["prompt_id"])
    flops = (2.0 * int(meta.get("policy_params", 0)) * (spent["prompt"] + spent["tokens"])
             + 2.0 * int(meta.get("prm_params", 0)) * spent["prm"])
    return bins, flops.to_numpy(dtype=float), np.full(len(target), float(k))


def _boot_means(values: np.ndarray, boot: np.ndarray) -> np.ndarray:
    return values[boot].mean(axis=1)


def ci95(samples: np.ndarray) -> list[float]:
    return [float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))]


def _versus_fixed(methods: list[Method], budgets: list[int], boot: np.ndarray) -> list[dict[str, Any]]:
    """For every router at every budget: the most accurate fixed configuration whose mean FLOPs
    are no higher (equal compute), the margin over it and its paired bootstrap CI (a margin
    against 0 when no fixed configuration is that cheap)."""
    fixed = [(m, b) for m in methods if m.estimator is None for b in m.accuracy]
    out = []
    for m in methods:
        if m.estimator is None or m.reference:
            continue
        for b in budgets:
            acc, flops = m.accuracy[b], float(m.flops[b].mean())
            cheaper = [(f, fb) for f, fb in fixed if f.flops[fb].mean() <= flops * (1 + 1e-9)]
            best = max(cheaper, key=lambda x: x[0].accuracy[x[1]].mean()) if cheaper else None
            base = best[0].accuracy[best[1]] if best else np.zeros_like(acc)
            out.append({
                "method": m.name, "budget": b, "accuracy": float(acc.mean()), "mean_flops": flops,
                "best_fixed": best[0].name.replace("fixed ", "") if best else None,
                "best_fixed_budget": best[1] if best else None,
                "best_fixed_accuracy": float(base.mean()) if best else None,
                # No fixed configuration that cheap: no margin (not one against 0).
                "margin": float(acc.mean() - base.mean()) if best else None,
                "margin_ci": ci95(_boot_means(acc - base, boot)) if best else None,
            })
    return out


def _reference(meta: dict, by_name: dict[str, Method], budgets: list[int]) -> tuple[Method, int] | None:
    """Best-of-N at the largest budget, with the grid's first aggregation (declared, not picked)."""
    aggregations = meta.get("aggregations") or ["last"]
    top = max(budgets)
    for name in [f"fixed best_of_n/{aggregations[0]}"] + sorted(n for n in by_name if n.startswith("fixed best_of_n/")):
        m = by_name.get(name)
        if m is not None and top in m.accuracy:
            return m, top
    return None


def _efficiency(router: Method | None, reference: tuple[Method, int], budgets: list[int], boot: np.ndarray) -> dict[str, Any]:
    ref, top = reference
    out: dict[str, Any] = {"reference": ref.name.replace("fixed ", ""), "reference_budget": top,
                           "target_accuracy": float(ref.accuracy[top].mean()),
                           "reference_flops": float(ref.flops[top].mean()),
                           "router": router.name if router else None, "router_budget": None}
    if router is None:
        out["note"] = "the declared router was not evaluated (no such estimator in this table)"
        return out

    def ratio(rows: np.ndarray | slice) -> tuple[float, int | None, float]:
        target = ref.accuracy[top][rows].mean()
        reach = [(router.flops[b][rows].mean(), b) for b in budgets if router.accuracy[b][rows].mean() >= target - 1e-12]
        if not reach:
            return 0.0, None, float("nan")
        flops, b = min(reach)
        return (float(ref.flops[top][rows].mean() / flops) if flops > 0 else float("inf")), b, float(flops)

    point, budget, flops = ratio(slice(None))
    samples = np.array([ratio(rows)[0] for rows in boot])
    out.update(ratio_ci=ci95(samples), reached_share=float(np.mean(samples > 0)))
    if budget is not None:
        out.update(router_budget=budget, router_flops=flops, ratio=point)
    return out


def _calibration(methods: list[Method], boot: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per router estimator (at fixed budgets): mean reported expected accuracy vs realized."""
    out = {}
    for m in methods:
        if m.estimator is None or "allocated" in m.name or not m.reported:
            continue
        budgets = sorted(m.reported)
        realized = np.mean([m.accuracy[b] for b in budgets], axis=0)  # per prompt, averaged over budgets
        reported = np.mean([m.reported[b] for b in budgets], axis=0)
        out[m.estimator] = {
            "reported": float(reported.mean()), "realized": float(realized.mean()),
            "ci": ci95(_boot_means(realized, boot)), "gap": float(realized.mean() - reported.mean()),
            "gap_ci": ci95(_boot_means(realized - reported, boot)),
            "by_budget": {str(b): {"reported": float(m.reported[b].mean()), "realized": float(m.accuracy[b].mean())}
                          for b in budgets},
        }
    return out


def family_key(row: Any) -> str:
    """A fixed strategy across budgets: strategy, beam width and aggregation (n = the budget)."""
    m = "" if pd.isna(row.m) else f"/m={int(row.m)}"
    agg = f"/{row.aggregation}" if isinstance(row.aggregation, str) else ""
    return f"{row.strategy}{m}{agg}"


def config_key(row: Any) -> str:
    m = "" if pd.isna(row.m) else f"/{int(row.m)}"
    agg = f"/{row.aggregation}" if isinstance(row.aggregation, str) else ""
    return f"{row.strategy}/{int(row.n)}{m}{agg}"


def _order(rows: list[dict]) -> list[dict]:
    def key(r):
        name = r["method"]
        group = 0 if name.startswith("router") else 1
        return (group, name, r["budget"])
    return sorted(rows, key=key)
