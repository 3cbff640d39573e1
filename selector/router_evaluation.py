"""Offline evaluation of the router on prompts the selection never saw.

Every held-out prompt was pooled and evaluated by the profiler like the others (its
``evaluations.parquet`` rows hold the expected accuracy and token counts of every
configuration), but the selection never used it. So a routing policy is scored on it without
new generation: estimate the prompt's bin, take the table's cell for (bin, budget) *from the
selection made on that estimator's own bins*, and read that prompt's accuracy and cost for
that cell's configuration. A budget B is B scored samples' compute (``selector/cost_model.py``);
every cost is on the table's one cost axis, under its declared cost model, or under another
one with ``prefix_cache=`` (the rows are re-priced from their token counts and every router's
cells re-selected, without generating). Compared at each budget, estimation included:

- the router with each estimator: prompt-only estimators add their FLOPs; a ``pilot:k``
  router's bin is read from the prompt's first ``k`` difficulty samples (never its evaluation
  samples; their mean final-step score, or their answers' agreement for an agreement pilot)
  and it pays what a pilot spends (its samples' tokens and PRM scorings, none for an
  agreement pilot, and its prompt when the cost model computes every request's prefix; all in
  ``prompts.parquet``), whatever strategy follows;
- the router on the table's own bins (``bins:<difficulty>``; predicted or agreement bins are
  a K-sample pilot's, priced as one): a reference;
- each router also ``allocated``: per-prompt cells with mean compute <= the column's budget,
  chosen from the table's accuracy curves (exploratory: no headline figure uses it);
- the **profile pick**: at each budget, the one configuration most accurate on the profiling
  prompts within the budget's compute (what a user would deploy without a router);
- every fixed configuration.

Every accuracy is a mean over prompts with a percentile bootstrap CI (resampling prompts, the
same resamples for every method, so differences are paired). Headline figures are for **one
pre-declared router**: the table's ``declared_router`` (``evaluate.router`` in the profile
config, fixed before the held-out split is looked at), at the table's budgets:

- ``versus_profile_pick``: at each budget, its margin over the profile pick with a paired
  bootstrap CI ``margin_ci``, and one ``"budget": "pooled"`` object: the mean margin over the
  budgets (per prompt, then over prompts) with its CI. This is the comparison that matters:
  the alternative a user would deploy;
- ``versus_fixed`` (the **oracle reference**): at each budget, the margin over the most
  accurate fixed configuration whose mean cost is no higher, picked on the held-out prompts
  themselves: an upper reference no deployable choice reaches, never a headline;
- ``efficiency``: the accuracy of the config's ``evaluate.efficiency_reference`` strategy
  (default ``best_of_n``) at the largest budget (with the grid's first aggregation where it
  takes one; declared, not picked) divided into the compute the router needs to reach
  it (its cheapest budget at least as accurate), with a bootstrap CI ``ratio_ci`` (a resample
  where the router never reaches the target counts as ratio 0);
- ``calibration[estimator]``: the mean expected accuracy the router reports (its cells'
  accuracy) against the mean realized accuracy of the same decisions, pooled over budgets,
  with the bootstrap CI of the realized mean (``ci``) and of the gap (``gap_ci``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .binning import assign_bins
from .cost_model import sample_cost
from .errors import InputError
from .estimators import EstimateContext
from .search.base import STRATEGIES
from .heldout import HeldoutSetup, Method, config_key, family_key, pilot_routing, route_prompts
from .profiler.difficulty import own_pilot_signal, pilot_values, record_signal
from .routing import SelectionCells, load_table_estimator
from .stats import boot_means, bootstrap_indices, ci95
from .tables import TableDir

PROFILE_PICK = "profile pick"


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
    versus_profile_pick: list[dict[str, Any]] = field(default_factory=list)
    cost_model: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        axis = self.cost_model.get("axis", "flops")
        lines = [f"{self.table}: {self.n_prompts} {self.split} prompts; accuracy [95% CI] / mean FLOPs per prompt; "
                 f"budget N = N scored samples' compute ({axis}, prefix cache: "
                 f"{self.cost_model.get('prefix_cache', '?')})"]
        if self.versus_profile_pick:
            lines.append(f"declared router {self.declared_router} against the profile pick (the one configuration "
                         "chosen on the profiling prompts; margin [95% paired bootstrap CI]):")
            for v in self.versus_profile_pick:
                lo, hi = v["margin_ci"]
                if v["budget"] == "pooled":
                    lines.append(f"  pooled over budgets: {v['margin']:+.3f} [{lo:+.3f}, {hi:+.3f}] (the router differs "
                                 f"from the pick at N = {', '.join(map(str, v['differs_at'])) or 'none'})")
                    continue
                margin = ("identical (the guard kept the pick)" if v["identical"]
                          else f"{v['margin']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                lines.append(f"  N={v['budget']:<4}{v['router_accuracy']:.3f} ({v['router_flops']:.2g} FLOPs) vs "
                             f"{v['fixed']} {v['fixed_accuracy']:.3f} ({v['fixed_flops']:.2g} FLOPs): {margin}")
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
            lines.append("oracle reference (not deployable): the best fixed configuration with no more compute, picked on "
                         f"the {self.split} prompts themselves:")
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
                f"the reference's accuracy {e['target_accuracy']:.3f} ({e['reference']} at N={e['reference_budget']}, "
                f"{e['reference_flops']:.3g} FLOPs) is reached by {e['router']} at N={e['router_budget']} with "
                f"{e['router_flops']:.3g} FLOPs: {e['ratio']:.2f}x less compute [95% CI {lo:.2f}, {hi:.2f}]")
        elif e:
            lines.append(f"the declared router ({e.get('router')}) does not reach the reference's accuracy "
                         f"{e.get('target_accuracy', float('nan')):.3f} ({e.get('reference')} at N={e.get('reference_budget')}) "
                         "within the table's budgets")
        for name, c in self.calibration.items():
            lo, hi = c["gap_ci"]
            lines.append(f"calibration {name}: reported {c['reported']:.3f}, realized {c['realized']:.3f} "
                         f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}], gap {c['gap']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "split": self.split, "n_prompts": self.n_prompts, "budgets": self.budgets,
                "declared_router": self.declared_router, "cost_model": self.cost_model,
                "versus_profile_pick": self.versus_profile_pick, "rows": self.rows,
                "versus_fixed": self.versus_fixed, "versus_fixed_note": (
                    "oracle reference: the fixed configuration is picked on the evaluated prompts themselves"),
                "efficiency": self.efficiency, "calibration": self.calibration}

    def to_json(self) -> str:
        from .strict_json import dumps  # NaN/Infinity are not JSON: written as null

        return dumps(self.to_dict(), indent=2, default=float)


def evaluate_router(
    table_dir: str | Path, *, split: str = "heldout", estimators: Sequence[str] | None = None,
    bootstrap: int = 1000, seed: int = 0, router: str | None = None, prefix_cache: str | None = None,
) -> EvalReport:
    """Score routing policies, the profile pick and fixed configurations on ``split`` prompts
    (see module docstring).

    ``estimators``: the routers to score (default: every trained prompt estimator and every
    profiled pilot); ``router``: the declared router of the headline (default: the table's
    ``declared_router``, fixed in the config before the held-out split was looked at; a router
    named here after looking is exploratory). The declared router must be deployable: a
    trained ``prompt:<features>`` or a profiled ``pilot:<k>``. ``prefix_cache``: re-price the
    table under another cost model (``none`` | ``prompt`` | ``shared``) and re-select every
    router's cells under it, in memory (the table is not changed)."""
    setup = HeldoutSetup.of(table_dir, split, prefix_cache)
    table, meta, target, ids = setup.table, setup.meta, setup.target, setup.ids
    declared = setup.declared_router(router)
    model, repriced, budgets, lookup = setup.model, setup.repriced, setup.budgets, setup.lookup
    ev_profile = setup.ev_profile
    unit = sample_cost(ev_profile)
    ev = setup.ev[setup.ev["prompt_id"].isin(set(ids))].copy()
    ev["family"] = [family_key(r) for r in ev.itertuples(index=False)]  # the config without its n
    methods: list[Method] = []

    # Fixed configurations (every one evaluated on all target prompts at that budget).
    for family, group in ev.groupby("family"):
        m = Method(f"fixed {family}")
        for b, g in group.groupby("budget"):
            g = g.set_index("prompt_id").reindex(ids)
            if g["accuracy"].isna().any():
                continue
            m.accuracy[int(b)], m.flops[int(b)], m.generations[int(b)], m.cost[int(b)] = (
                g["accuracy"].to_numpy(), g["flops"].to_numpy(), g["generations"].to_numpy(), g["cost"].to_numpy())
        methods.append(m)
    pick = profile_pick_method(ev_profile, ids, budgets, unit, lookup)
    methods.append(pick)

    # Routers: (estimator name) -> (bins, extra FLOPs, extra generations) per target prompt.
    own = meta.get("default_selection")
    routed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    k_own = int(meta.get("difficulty_samples", 0))
    if own_pilot_signal(own) and k_own:
        # The table's own bins are a K-sample pilot's: priced as one (same bins, same edges).
        routed[own] = pilot_routing(table, target, k_own, meta["bin_edges"], model, own_pilot_signal(own))
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
            routed[name] = pilot_routing(table, target, int(pilots[name]["k"]), pilots[name]["edges"], model,
                                         record_signal(pilots[name]))
        else:
            est, _ = load_table_estimator(table, name)
            estimates = est.estimate_batch(target["text"].tolist(), EstimateContext(int(meta.get("policy_params", 0))))
            routed[name] = (np.array([e.bin for e in estimates]), np.array([e.cost.flops for e in estimates]),
                            np.zeros(len(ids)))
    axis = model.axis
    for name, (bins, extra_flops, extra_gen) in routed.items():
        cells = (SelectionCells(reselect(table, name, ev_profile, unit), unit) if repriced
                 else SelectionCells.of(table, name))
        for allocated in (False, True):
            label = f"router ({name}, allocated)" if allocated else f"router ({name})"
            m = route_prompts(label, name, ids, bins, extra_flops, extra_gen, allocated, budgets, cells, lookup, axis)
            m.reference = name in ("bins:oracle", "bins:level")
            methods.append(m)

    boot = bootstrap_indices(len(ids), bootstrap, seed)
    rows = []
    for m in methods:
        for b in budgets:
            if b not in m.accuracy:
                continue
            low, high = ci95(boot_means(m.accuracy[b], boot))
            rows.append({"method": m.name, "budget": b, "accuracy": float(m.accuracy[b].mean()),
                         "ci_low": low, "ci_high": high,
                         "mean_generations": float(m.generations[b].mean()), "mean_flops": float(m.flops[b].mean()),
                         "mean_cost": float(m.cost[b].mean()),
                         **({"config": m.configs[b]} if b in m.configs else {})})
    by_name = {m.name: m for m in methods}
    declared_label = f"router ({declared})"
    reference = _reference(meta, by_name, budgets)
    return EvalReport(
        str(table_dir), split, len(ids), budgets, _order(rows),
        _efficiency(by_name.get(declared_label), reference, budgets, boot) if reference else {},
        _versus_fixed(methods, budgets, boot), _calibration(methods, boot), declared_label,
        _versus_profile_pick(by_name.get(declared_label), pick, budgets, boot),
        {**model.to_dict(), "sample_cost": unit, "repriced": repriced},
    )


def profile_pick_method(ev_profile: pd.DataFrame, ids: list[str], budgets: list[int], unit: float,
                        lookup: dict) -> Method:
    """The profile pick at each budget (chosen on ``ev_profile``, the profiling prompts' rows:
    ``selector.profiler.selection.pick_table``), scored on the prompts ``ids``."""
    from .profiler.selection import pick_table

    m = Method(PROFILE_PICK)
    for b, pick in pick_table(ev_profile, budgets, unit).items():
        key = config_key(pd.Series(pick))
        outcomes = np.array([lookup[(pid, key)] for pid in ids])
        m.accuracy[b], m.flops[b], m.generations[b], m.cost[b] = (outcomes[:, i] for i in range(4))
        m.configs[b] = key
    return m


def reselect(table: TableDir, name: str, ev_profile: pd.DataFrame, unit: float) -> pd.DataFrame:
    """The selection rows of router ``name`` chosen again on ``ev_profile`` (re-priced rows of
    the profiling prompts), on the bins that router assigns them: the table's own bins, a
    pilot's bins under its recorded edges, or a prompt estimator's recorded out-of-fold bins."""
    from .profiler.manifest import profiled_settings
    from .profiler.selection import select_tables

    meta = table.metadata
    prompts = table.prompts()
    profile = prompts[prompts["split"] == "profile"]
    if name == meta.get("default_selection"):
        bins = pd.Series(profile["bin"].to_numpy(dtype=int), index=profile["prompt_id"])
    elif name.startswith("pilot:"):
        pilot = meta.get("pilots", {})[name]
        scores = pilot_values(profile, int(pilot["k"]), record_signal(pilot), table.path).to_numpy(dtype=float)
        bins = pd.Series(assign_bins(scores, pilot["edges"]), index=profile["prompt_id"])
    else:
        oof = (meta.get("estimators", {}).get(name) or {}).get("oof_bins")
        if not isinstance(oof, dict):
            raise InputError(f"{table.path}: estimator {name} recorded no out-of-fold bins, so its cells cannot be "
                             f"re-selected under another cost model: retrain it (`tts-selector train-estimator "
                             f"{table.path} --features {name.partition(':')[2]}`)")
        bins = pd.Series(oof).astype(int)
    _, sel = profiled_settings(table.path)
    return select_tables(ev_profile, bins, sel, meta["policy_id"], meta["prm_id"], estimator=name, unit=unit)[1]


def _versus_profile_pick(router: Method | None, pick: Method, budgets: list[int], boot: np.ndarray) -> list[dict[str, Any]]:
    """The declared router against the profile pick at each budget, and pooled over budgets
    (per prompt the mean margin over the budgets both have, then its mean and paired CI)."""
    if router is None:
        return []
    out, margins = [], []
    for b in budgets:
        if b not in router.accuracy or b not in pick.accuracy:
            continue
        diff = router.accuracy[b] - pick.accuracy[b]
        margins.append(diff)
        # The router ran the pick on every prompt: the margin is 0 by construction, not evidence.
        identical = all(key == pick.configs[b] for key in router.chosen.get(b, ()))
        out.append({"budget": b, "identical": identical, "router_accuracy": float(router.accuracy[b].mean()),
                    "fixed": pick.configs[b],
                    "fixed_accuracy": float(pick.accuracy[b].mean()), "router_flops": float(router.flops[b].mean()),
                    "fixed_flops": float(pick.flops[b].mean()), "router_cost": float(router.cost[b].mean()),
                    "fixed_cost": float(pick.cost[b].mean()), "margin": float(diff.mean()),
                    "margin_ci": ci95(boot_means(diff, boot))})
    if margins:
        pooled = np.mean(margins, axis=0)
        out.append({"budget": "pooled", "budgets": [v["budget"] for v in out],
                    "differs_at": [v["budget"] for v in out if not v["identical"]], "margin": float(pooled.mean()),
                    "margin_ci": ci95(boot_means(pooled, boot))})
    return out


def _versus_fixed(methods: list[Method], budgets: list[int], boot: np.ndarray) -> list[dict[str, Any]]:
    """The oracle reference: for every router at every budget, the most accurate fixed
    configuration (picked on the evaluated prompts) whose mean cost is no higher, the margin
    over it and its paired bootstrap CI."""
    fixed = [(m, b) for m in methods if m.estimator is None and m.name != PROFILE_PICK for b in m.accuracy]
    out = []
    for m in methods:
        if m.estimator is None or m.reference:
            continue
        for b in budgets:
            acc, cost = m.accuracy[b], float(m.cost[b].mean())
            cheaper = [(f, fb) for f, fb in fixed if f.cost[fb].mean() <= cost * (1 + 1e-9)]
            best = max(cheaper, key=lambda x: x[0].accuracy[x[1]].mean()) if cheaper else None
            base = best[0].accuracy[best[1]] if best else np.zeros_like(acc)
            out.append({
                "method": m.name, "budget": b, "accuracy": float(acc.mean()), "mean_flops": float(m.flops[b].mean()),
                "best_fixed": best[0].name.replace("fixed ", "") if best else None,
                "best_fixed_budget": best[1] if best else None,
                "best_fixed_accuracy": float(base.mean()) if best else None,
                # No fixed configuration that cheap: no margin (not one against 0).
                "margin": float(acc.mean() - base.mean()) if best else None,
                "margin_ci": ci95(boot_means(acc - base, boot)) if best else None,
            })
    return out


def _reference(meta: dict, by_name: dict[str, Method], budgets: list[int]) -> tuple[Method, int] | None:
    """The table's ``efficiency_reference`` strategy (default best-of-N) at the largest budget,
    with the grid's first aggregation where it takes one (declared in the config, not picked)."""
    strategy = meta.get("efficiency_reference", "best_of_n")
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise InputError(f"the table's efficiency_reference {strategy!r} is not a strategy ({sorted(STRATEGIES)}): "
                         "re-finish the table from its config")
    aggregations = meta.get("aggregations") or ["last"]
    top = max(budgets)
    names = [f"fixed {strategy}/{aggregations[0]}", f"fixed {strategy}"]
    for name in names + sorted(n for n in by_name if n.startswith(f"fixed {strategy}/")):
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
        reach = [(router.cost[b][rows].mean(), b) for b in budgets if router.accuracy[b][rows].mean() >= target - 1e-12]
        if not reach:
            return 0.0, None, float("nan")
        cost, b = min(reach)
        return (float(ref.cost[top][rows].mean() / cost) if cost > 0 else float("inf")), b, float(router.flops[b][rows].mean())

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
            "ci": ci95(boot_means(realized, boot)), "gap": float(realized.mean() - reported.mean()),
            "gap_ci": ci95(boot_means(realized - reported, boot)),
            "by_budget": {str(b): {"reported": float(m.reported[b].mean()), "realized": float(m.accuracy[b].mean())}
                          for b in budgets},
        }
    return out


def _order(rows: list[dict]) -> list[dict]:
    def key(r):
        name = r["method"]
        group = 0 if name.startswith("router") else 1
        return (group, name, r["budget"])
    return sorted(rows, key=key)
