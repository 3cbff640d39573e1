"""Offline evaluation of the router against fixed strategies on prompts the selection never saw.

Every held-out prompt was pooled and evaluated by the profiler like the others (its
``evaluations.parquet`` rows hold the expected accuracy and cost of every configuration at
every budget), but the selection never used it. So a routing policy is scored on it without
new generation: estimate the prompt's bin, take the table's choice for (bin, budget), and read
that prompt's accuracy and cost for that choice. Compared at each budget (equal compute per
round), estimation included:

- the router with each estimator (prompt-only estimators add their FLOPs; a ``pilot:k``
  estimator's pilot is read from the prompt's pool, costs k scored samples, and counts
  inside a best-of-N-family budget);
- the router with oracle bins (the prompt's own pass@1: an upper bound);
- each router also ``allocated``: per-prompt budgets with mean <= the column's budget, chosen
  from the table's accuracy curves (spend where it helps, not on hopeless or easy prompts);
- every fixed configuration, plain majority vote among them.

Accuracy is the mean over prompts with a paired bootstrap CI. "At equal compute" compares each
router row with the best fixed configuration whose mean FLOPs are no higher. The efficiency
figure (Snell et al. report about 4x) is best-of-N's top accuracy at the largest budget
divided into the compute the router needs to reach it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .estimators import PilotEstimator
from .router import SelectionCells, load_table_estimator
from .search.aggregate import aggregate
from .tables import TableDir


def _route(name, ids, bins, extra, k, allocated, budgets, cells, lookup, one_sample) -> "Method":
    """Per-prompt outcomes of routing each prompt by its bin: at budget B for every prompt, or
    (``allocated``) at per-prompt budgets with mean <= B chosen from the table's curves."""
    m = Method(name)
    for b in budgets:
        per_prompt = cells.allocate(bins, b) if allocated else [b] * len(ids)
        acc, fl, gen = np.empty(len(ids)), np.empty(len(ids)), np.empty(len(ids))
        for i, (pid, bin_, pb) in enumerate(zip(ids, bins, per_prompt)):
            row, _ = cells.cell(int(bin_), pb)
            a, f, g = lookup[(pid, _config_key(row), int(row.budget))]
            pilot_extra = 0
            if k:  # the pilot counts inside a best-of-N-family budget; otherwise it is extra
                pilot_extra = max(0, k - int(row.n)) if pd.isna(row.m) else k
            acc[i], gen[i] = a, g + pilot_extra
            fl[i] = f + extra[i] + pilot_extra * one_sample[i]
        m.accuracy[b], m.flops[b], m.generations[b] = acc, fl, gen
    return m


@dataclass
class Method:
    name: str
    accuracy: dict[int, np.ndarray] = field(default_factory=dict)  # budget -> per-prompt accuracy
    flops: dict[int, np.ndarray] = field(default_factory=dict)
    generations: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class EvalReport:
    table: str
    split: str
    n_prompts: int
    budgets: list[int]
    rows: list[dict[str, Any]]
    efficiency: dict[str, Any]
    versus_fixed: list[dict[str, Any]] = field(default_factory=list)

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
        if self.versus_fixed:
            lines.append("at equal compute: each router row against the best fixed strategy using no more FLOPs")
            for v in self.versus_fixed:
                best = f"{v['best_fixed']} N={v['best_fixed_budget']} {v['best_fixed_accuracy']:.3f}" if v["best_fixed"] else "none that cheap"
                lines.append(f"  {v['method'][:33]:<34}N={v['budget']:<4}{v['accuracy']:.3f} at {v['mean_flops']:.2g} FLOPs"
                             f" vs {best}: {'+' if v['margin'] >= 0 else ''}{v['margin']:.3f}")
        e = self.efficiency
        if e.get("router_budget") is not None:
            lines.append(
                f"best-of-N's top accuracy {e['target_accuracy']:.3f} ({e['reference']}, {e['reference_flops']:.3g} FLOPs) "
                f"is reached by {e['router']} at N={e['router_budget']} with {e['router_flops']:.3g} FLOPs: "
                f"{e['ratio']:.2f}x less compute")
        else:
            lines.append(f"the router ({e.get('router')}) does not reach best-of-N's top accuracy "
                         f"{e.get('target_accuracy', float('nan')):.3f} within the table's budgets")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"table": self.table, "split": self.split, "n_prompts": self.n_prompts, "budgets": self.budgets,
                           "rows": self.rows, "efficiency": self.efficiency, "versus_fixed": self.versus_fixed},
                          indent=2, default=float)


def evaluate_router(
    table_dir: str | Path, *, split: str = "heldout", estimators: Sequence[str] | None = None,
    bootstrap: int = 1000, seed: int = 0,
) -> EvalReport:
    """Score routing policies and fixed configurations on ``split`` prompts (see module docstring)."""
    table = TableDir(table_dir)
    prompts = table.prompts()
    target = prompts[prompts["split"] == split].reset_index(drop=True)
    if target.empty:
        raise ValueError(f"{table_dir}: no {split!r} prompts; profile with dataset.heldout > 0 to reserve some")
    ev = table.evaluations()
    ev = ev[ev["prompt_id"].isin(set(target["prompt_id"]))].copy()
    ev["config"] = [_config_key(r) for r in ev.itertuples(index=False)]
    ev["family"] = [_family_key(r) for r in ev.itertuples(index=False)]  # the config without its n
    budgets = sorted(int(b) for b in table.selection()["budget"].unique())
    ids = target["prompt_id"].tolist()
    lookup = {(pid, cfg, int(b)): (acc, fl, g) for pid, cfg, b, acc, fl, g in
              ev[["prompt_id", "config", "budget", "accuracy", "flops", "generations"]].itertuples(index=False)}
    cells = SelectionCells(table.selection())
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

    # Routers.
    bins_by_estimator: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # name -> (bins, extra flops, pilot k)
    bins_by_estimator["router (oracle bins)"] = (target["bin"].to_numpy(), np.zeros(len(ids)), 0)
    available = list(table.metadata.get("estimators", {}))
    for name in (estimators if estimators is not None else available + ["pilot:4"]):
        if name.startswith("pilot:"):
            k = int(name.split(":")[1])
            bins_by_estimator[f"router ({name})"] = (*_pilot_bins(table, target, k), k)
        else:
            est, _ = load_table_estimator(table, name)
            estimates = est.estimate_batch(target["text"].tolist(), int(table.metadata.get("policy_params", 0)))
            bins_by_estimator[f"router ({name})"] = (
                np.array([e.bin for e in estimates]), np.array([e.cost.flops for e in estimates]), 0)
    one_sample = _one_sample_flops(lookup, ids)
    for name, (bins, extra, k) in list(bins_by_estimator.items()):
        for allocated in (False, True):
            methods.append(_route(f"{name[:-1]}, allocated)" if allocated else name, ids, bins, extra, k, allocated,
                                  budgets, cells, lookup, one_sample))


    rng = np.random.default_rng(seed)
    boot = rng.integers(0, len(ids), size=(bootstrap, len(ids)))
    rows = []
    for m in methods:
        for b in budgets:
            if b not in m.accuracy:
                continue
            means = m.accuracy[b][boot].mean(axis=1)
            rows.append({"method": m.name, "budget": b, "accuracy": float(m.accuracy[b].mean()),
                         "ci_low": float(np.quantile(means, 0.025)), "ci_high": float(np.quantile(means, 0.975)),
                         "mean_generations": float(m.generations[b].mean()), "mean_flops": float(m.flops[b].mean())})
    return EvalReport(str(table_dir), split, len(ids), budgets, _order(rows), _efficiency(rows, budgets),
                      _versus_fixed(rows))


def _versus_fixed(rows: list[dict]) -> list[dict[str, Any]]:
    """For every deployable router row: the best fixed configuration whose mean FLOPs are no
    higher (equal compute), and the router's accuracy margin over it (NaN-free: margin is
    against 0 when no fixed strategy is that cheap)."""
    fixed = [r for r in rows if r["method"].startswith("fixed ")]
    out = []
    for r in rows:
        if not r["method"].startswith("router (") or "oracle" in r["method"]:
            continue
        cheaper = [f for f in fixed if f["mean_flops"] <= r["mean_flops"] * (1 + 1e-9)]
        best = max(cheaper, key=lambda f: f["accuracy"]) if cheaper else None
        out.append({"method": r["method"], "budget": r["budget"], "accuracy": r["accuracy"], "mean_flops": r["mean_flops"],
                    "best_fixed": best["method"].replace("fixed ", "") if best else None,
                    "best_fixed_budget": best["budget"] if best else None,
                    "best_fixed_accuracy": best["accuracy"] if best else None,
                    "margin": r["accuracy"] - (best["accuracy"] if best else 0.0)})
    return out


def _family_key(row: Any) -> str:
    """A fixed strategy across budgets: strategy, beam width and aggregation (n = the budget)."""
    m = "" if pd.isna(row.m) else f"/m={int(row.m)}"
    agg = f"/{row.aggregation}" if isinstance(row.aggregation, str) else ""
    return f"{row.strategy}{m}{agg}"


def _config_key(row: Any) -> str:
    m = "" if pd.isna(row.m) else f"/{int(row.m)}"
    agg = f"/{row.aggregation}" if isinstance(row.aggregation, str) else ""
    return f"{row.strategy}/{int(row.n)}{m}{agg}"


def _one_sample_flops(lookup: dict, ids: list[str]) -> np.ndarray:
    """Cost of one scored sample per prompt (best_of_n at n=1), for pricing pilots."""
    cost: dict[str, float] = {}
    for (pid, cfg, b), (_, fl, _) in lookup.items():
        if b == 1 and cfg.startswith("best_of_n/1"):
            cost.setdefault(pid, fl)
    return np.array([cost.get(pid, 0.0) for pid in ids])


def _pilot_bins(table: TableDir, target: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins a k-sample pilot would give, read from each prompt's first k pooled samples."""
    prompts = table.prompts()
    profile = prompts[prompts["split"] == "profile"]
    pilot = PilotEstimator(k=k).fit(profile["predicted_pass1"], profile["bin"], profile["oracle_pass1"])
    rollouts = table.rollouts(["prompt_id", "sample_id", "step_scores"])
    first = rollouts[rollouts["sample_id"] < k]
    scores = first.groupby("prompt_id")["step_scores"].apply(lambda s: float(np.mean([aggregate(x, "last") for x in s])))
    _, proba = pilot.from_scores(scores.reindex(target["prompt_id"]).to_numpy())
    return pilot.classes_[np.argmax(proba, axis=1)], np.zeros(len(target))


def _order(rows: list[dict]) -> list[dict]:
    def key(r):
        name = r["method"]
        group = 0 if name.startswith("router") else 1
        return (group, name, r["budget"])
    return sorted(rows, key=key)


def _efficiency(rows: list[dict], budgets: list[int]) -> dict[str, Any]:
    top = max(budgets)
    bon = [r for r in rows if r["method"].startswith("fixed best_of_n") and r["budget"] == top]
    if not bon:
        return {}
    ref = max(bon, key=lambda r: r["accuracy"])
    routers = sorted({r["method"] for r in rows if r["method"].startswith("router (") and "oracle" not in r["method"]})
    best = None
    for name in routers:
        hits = [r for r in rows if r["method"] == name and r["accuracy"] >= ref["accuracy"] - 1e-12]
        if hits:
            cheapest = min(hits, key=lambda r: r["mean_flops"])
            if best is None or cheapest["mean_flops"] < best["mean_flops"]:
                best = cheapest
    out = {"reference": ref["method"].replace("fixed ", ""), "target_accuracy": ref["accuracy"],
           "reference_flops": ref["mean_flops"], "router": routers[0] if routers else None, "router_budget": None}
    if best is not None:
        out.update(router=best["method"], router_budget=best["budget"], router_flops=best["mean_flops"],
                   ratio=ref["mean_flops"] / best["mean_flops"] if best["mean_flops"] else float("inf"))
    return out
