"""The held-out set-up that ``evaluate``, the learning curve and the router diagnosis share.

A table's held-out prompts were pooled and evaluated like the others (``evaluations.parquet``
holds every configuration's outcome and token counts on them) but never used to select, so a
routing policy is scored on them without generating: :class:`HeldoutSetup` reads the split,
the rows (re-priced under another cost model when asked) and the outcome lookup once;
:func:`route_prompts` scores routing by given bins through given cells; :func:`pilot_routing`
gives the bins and the spend of a ``k``-sample pilot; :func:`select_cells` chooses a router's
cells on given bins, as the profiler does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .binning import assign_bins
from .cost_model import CostModel, sample_cost
from .errors import InputError
from .profiler.difficulty import pilot_values
from .routing import SelectionCells
from .tables import TableDir


@dataclass
class Method:
    """Per-prompt outcomes of one method (a router, the profile pick, a fixed configuration) at
    each budget: accuracy, FLOPs, cost on the table's axis, generations."""

    name: str
    estimator: str | None = None  # routers: the estimator whose selection it uses
    accuracy: dict[int, np.ndarray] = field(default_factory=dict)  # budget -> per-prompt accuracy
    flops: dict[int, np.ndarray] = field(default_factory=dict)
    cost: dict[int, np.ndarray] = field(default_factory=dict)  # on the table's cost axis
    generations: dict[int, np.ndarray] = field(default_factory=dict)
    reported: dict[int, np.ndarray] = field(default_factory=dict)  # routers: the cell's expected accuracy
    reference: bool = False  # routers on bins no deployed router reproduces (oracle, level): not compared
    configs: dict[int, str] = field(default_factory=dict)  # profile pick: its configuration per budget
    chosen: dict[int, list[str]] = field(default_factory=dict)  # routers: each prompt's configuration per budget


@dataclass
class HeldoutSetup:
    """A table's ``split`` prompts (``target``), its profiling prompts (``profile``), every
    evaluation row with its configuration key (``ev``; ``ev_profile`` the profiling prompts'),
    the budgets, and the outcome lookup of the split's prompts. ``model`` is the cost model the
    rows are priced under (``repriced``: another than the table's)."""

    table: TableDir
    split: str
    target: pd.DataFrame
    profile: pd.DataFrame
    ev: pd.DataFrame
    ev_profile: pd.DataFrame
    budgets: list[int]
    lookup: dict
    model: CostModel
    repriced: bool

    @classmethod
    def of(cls, table_dir: str | Path, split: str = "heldout", prefix_cache: str | None = None) -> "HeldoutSetup":
        """Read ``table_dir``'s split; ``prefix_cache`` re-prices the rows under that cost model
        (in memory). An InputError when the split has no prompts."""
        table = TableDir(table_dir)
        prompts = table.prompts()
        target = prompts[prompts["split"] == split].reset_index(drop=True)
        if target.empty:
            raise InputError(f"{table_dir}: no {split!r} prompts to score on; profile with dataset.heldout > 0 to "
                             "reserve some")
        profile = prompts[prompts["split"] == "profile"].reset_index(drop=True)
        meta = table.metadata
        model = CostModel.from_metadata(meta, prefix_cache)
        repriced = (meta.get("cost_model") or {}).get("prefix_cache") != model.prefix_cache
        ev = model.price(table.evaluations()) if repriced else table.evaluations()
        ev = ev.assign(config=[config_key(r) for r in ev.itertuples(index=False)])
        ids = set(target["prompt_id"])
        return cls(table, split, target, profile, ev, ev[ev["prompt_id"].isin(set(profile["prompt_id"]))],
                   sorted(int(b) for b in table.selection()["budget"].unique()),
                   outcome_lookup(ev[ev["prompt_id"].isin(ids)]), model, repriced)

    @property
    def ids(self) -> list[str]:
        """The split's prompt ids, in order."""
        return self.target["prompt_id"].tolist()

    @property
    def meta(self) -> dict[str, Any]:
        return self.table.metadata

    def declared_router(self, router: str | None = None) -> str:
        """``router``, else the table's ``declared_router``; an InputError unless it is a
        deployable estimator (``prompt:<features>`` or ``pilot:<k>``)."""
        declared = router or self.meta.get("declared_router", "prompt:tfidf")
        if not declared.startswith(("prompt:", "pilot:")):
            raise InputError(f"the declared router must be a deployable estimator ('prompt:<features>' or 'pilot:<k>'), "
                             f"got {declared!r}: set evaluate.router in the config or pass --router")
        return declared

    def route(self, name: str, bins: np.ndarray, cells: SelectionCells, extra_flops: np.ndarray | None = None,
              extra_gen: np.ndarray | None = None, allocated: bool = False) -> Method:
        """:func:`route_prompts` over the split's prompts at the table's budgets, on its cost axis."""
        zeros = np.zeros(len(self.target))
        return route_prompts(name, name, self.ids, np.asarray(bins), zeros if extra_flops is None else extra_flops,
                             zeros if extra_gen is None else extra_gen, allocated, self.budgets, cells, self.lookup,
                             self.model.axis)


def select_cells(ev: pd.DataFrame, bins: pd.Series, sel: Any, meta: dict, name: str) -> SelectionCells:
    """The cells a router with these ``bins`` (prompt_id -> bin) gets when its selection is made
    on ``ev`` (those prompts' rows) with select settings ``sel``, priced in the rows' own budget
    unit, as a table profiled on those prompts would have them."""
    from .profiler.selection import select_tables

    unit = sample_cost(ev)
    _, rows = select_tables(ev, bins, sel, meta["policy_id"], meta["prm_id"], estimator=name, unit=unit)
    return SelectionCells(rows, unit)


def outcome_lookup(ev: pd.DataFrame) -> dict[tuple[str, str], tuple[float, float, float, float]]:
    """``(prompt_id, config key) -> (accuracy, FLOPs, generations, cost on the axis)`` from
    evaluation rows that carry a ``config`` column (:func:`config_key`)."""
    return _Outcomes({(pid, cfg): (acc, fl, g, c) for pid, cfg, acc, fl, g, c in
                      ev[["prompt_id", "config", "accuracy", "flops", "generations", "cost"]].itertuples(index=False)})


class _Outcomes(dict):
    """The outcome lookup; a selected cell the evaluations lack is a broken table, not a bug."""

    def __missing__(self, key: tuple) -> Any:
        from .tables import TableError

        pid, cfg = key
        raise TableError(f"evaluations.parquet has no row for prompt {str(pid)[:80]!r}, configuration {cfg}, which "
                         "selection.parquet selects: the table's files do not belong together (tampered with or mixed "
                         "from different runs); restore it, or rebuild it with `tts-selector profile`")


def route_prompts(name, estimator, ids, bins, extra_flops, extra_gen, allocated, budgets, cells, lookup,
                  axis: str = "flops") -> Method:
    """Per-prompt outcomes of routing each prompt by its bin: at budget B for every prompt, or
    (``allocated``) at per-prompt cells with mean compute <= B chosen from the table's curves.
    ``axis``: the table's cost axis (the estimate's extra FLOPs or generations are added to it)."""
    m = Method(name, estimator)
    for b in budgets:
        per_prompt = cells.allocate(bins, b) if allocated else [b] * len(ids)
        acc, fl, gen, cost, rep = (np.empty(len(ids)) for _ in range(5))
        m.chosen[b] = []
        for i, (pid, bin_, pb) in enumerate(zip(ids, bins, per_prompt)):
            row, _ = cells.cell(int(bin_), pb)
            key = config_key(row)
            m.chosen[b].append(key)
            a, f, g, c = lookup[(pid, key)]
            acc[i], rep[i] = a, float(row.accuracy)
            gen[i], fl[i] = g + extra_gen[i], f + extra_flops[i]
            cost[i] = c + (extra_flops[i] if axis == "flops" else extra_gen[i])
        m.accuracy[b], m.flops[b], m.generations[b], m.cost[b], m.reported[b] = acc, fl, gen, cost, rep
    return m


def pilot_routing(table: TableDir, target: pd.DataFrame, k: int, edges: list[float],
                  model: CostModel | None = None, signal: str = "prm_mean") -> tuple[np.ndarray, ...]:
    """Bins a ``k``-sample pilot with ``signal`` gives (from each prompt's first ``k`` difficulty
    samples) and what it spends: ``k`` generations and the FLOPs of its samples' tokens and PRM
    scorings (none for an agreement pilot: it never calls the PRM) under the cost model
    (``model``: the table's), whatever strategy follows."""
    model = model or CostModel.from_metadata(table.metadata)
    scores = pilot_values(target, k, signal, table.path).to_numpy(dtype=float)
    bins = assign_bins(scores, edges)
    if "difficulty_tokens" not in target:
        raise InputError(f"{table.path}: its prompts table records no pilot token counts (written before issue 23): "
                         f"re-finish it with `tts-selector reprice {table.path}`")
    tokens = np.array([sum(t[:k]) for t in target["difficulty_tokens"]], dtype=float)
    prm = (np.zeros(len(target)) if signal == "agreement"
           else np.array([sum(t[:k]) for t in target["difficulty_prm_tokens"]], dtype=float))
    flops = model.pilot_flops(target["prompt_tokens"].to_numpy(dtype=float), tokens, prm)
    return bins, flops, np.full(len(target), float(k))


def family_key(row: Any) -> str:
    """A fixed strategy across budgets: strategy, beam width and aggregation (n = the budget)."""
    m = "" if pd.isna(row.m) else f"/m={int(row.m)}"
    agg = f"/{row.aggregation}" if isinstance(row.aggregation, str) else ""
    return f"{row.strategy}{m}{agg}"


def config_key(row: Any) -> str:
    """A configuration as one string, e.g. ``beam_search/8/2/last`` (strategy/n[/m][/aggregation])."""
    m = "" if pd.isna(row.m) else f"/{int(row.m)}"
    agg = f"/{row.aggregation}" if isinstance(row.aggregation, str) else ""
    return f"{row.strategy}/{int(row.n)}{m}{agg}"
