"""A table's cells as the router reads them: (bin, budget) -> configuration, with the budget
fallback rule and the compute-trading allocation written once.

:class:`SelectionCells` holds a profiled table's selection for one router (estimator);
:class:`PriorCells` a published prior's rules for one policy size, behind the same interface.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from ..binning import assign_bins
from ..catalog import format_params, rows_for_size
from ..estimators import Estimate
from ..search.base import STRATEGIES
from ..tables import TableDir


class SelectionCells:
    """The selection table as (bin, budget) cells, with the budget fallback rule written once.

    ``unit``: one budget step's compute on the table's cost axis (its ``cost_model``'s
    ``sample_cost``), so that :meth:`allocate` trades compute, not nominal budgets; None for
    tables without one (each cell then costs its budget)."""

    def __init__(self, selection: pd.DataFrame, unit: float | None = None):
        self.cells: dict[int, dict[int, Any]] = {}
        for row in selection.itertuples(index=False):
            self.cells.setdefault(int(row.bin), {})[int(row.budget)] = row
        self.budgets = sorted({b for cells in self.cells.values() for b in cells})
        self.unit = float(unit) if unit else None

    @classmethod
    def of(cls, table: TableDir, estimator: str | None = None) -> "SelectionCells":
        """The cells of ``estimator``'s selection in ``table`` (None: the table's default), with
        the table's budget unit."""
        return cls(table.selection(estimator), (table.metadata.get("cost_model") or {}).get("sample_cost"))

    def cell_cost(self, row: Any) -> float:
        """A cell's mean cost on the allocation's axis: its mean cost over its bin's profiling
        prompts in budget units, or its nominal budget for a table without a unit."""
        cost = getattr(row, "mean_cost", None)
        if self.unit is None or cost is None or pd.isna(cost):
            return float(row.budget)
        return float(cost) / self.unit

    def check_budget(self, budget: float) -> None:
        if budget < self.budgets[0]:
            raise ValueError(f"budget {budget} is below the table's smallest budget {self.budgets[0]} (budgets: {self.budgets})")

    def assign(self, estimate: Estimate) -> tuple[int | None, dict[int, float]]:
        """The bin (and its probabilities) a prompt is routed by: the estimator's own, since it
        was trained on this table's bins."""
        return estimate.bin, estimate.bin_proba

    def describe(self, row: Any) -> str | None:
        """Per-cell source text (None: the router's table source says it all)."""
        return None

    def nearest_bin(self, bin_: int) -> tuple[int, str | None]:
        """``bin_``, or the nearest bin with cells when it has none (an estimator fitted on all
        profiling prompts can predict a bin its out-of-fold predictions never gave), with a note."""
        if bin_ in self.cells:
            return bin_, None
        if not self.cells:
            raise ValueError("the table has no selection cells for this estimator")
        near = min(self.cells, key=lambda b: (abs(b - bin_), b))
        return near, f"bin {bin_} has no cells for this estimator: used the nearest bin {near}"

    def cell(self, bin_: int, budget: int) -> tuple[Any, str | None]:
        """The row for (bin, budget), or for the nearest lower budget with a note saying so."""
        self.check_budget(budget)
        bin_, moved = self.nearest_bin(int(bin_))
        cells = self.cells[bin_]
        usable = [b for b in cells if b <= budget]
        if not usable:
            raise ValueError(f"bin {bin_} has no cell at or below budget {budget} (its budgets: {sorted(cells)})")
        chosen = max(usable)
        note = None if chosen == budget else f"no cell for budget {budget} in bin {bin_}: used the nearest lower budget {chosen}"
        notes = "; ".join(n for n in (moved, note) if n)
        return cells[chosen], notes or None

    def allocate(self, bins: Sequence[int], average_budget: float) -> list[int]:
        """Per-prompt budgets (cells) whose mean compute is at most ``average_budget`` budget
        units (samples' compute) and that maximise the sum of expected accuracies.

        Greedy on marginal gains per unit of compute: every prompt starts at its bin's cheapest
        cell; the upgrade (to any other cell of its bin) with the largest expected-accuracy gain
        per extra compute is applied while the mean allows it. A cell's compute is its mean cost
        over its bin's profiling prompts (:meth:`cell_cost`), so a budget's tree search that
        spends twice its nominal samples is charged twice. Prompts whose bin gains nothing stay
        cheap: the hard-bin/easy-bin trade-off.
        """
        self.check_budget(average_budget)
        curves = [sorted(((self.cell_cost(row), b, float(row.accuracy))
                          for b, row in self.cells[self.nearest_bin(int(bin_))[0]].items()), key=lambda x: (x[0], x[1]))
                  for bin_ in bins]
        level = [0] * len(curves)
        total, cap = sum(c[0][0] for c in curves), average_budget * len(curves) * (1 + 1e-9)
        while True:
            best, best_rate = None, 0.0
            for i, c in enumerate(curves):
                c0, _, a0 = c[level[i]]
                # Any costlier cell, not only the next: accuracy curves need not be monotone.
                for j in range(level[i] + 1, len(c)):
                    extra, gain = c[j][0] - c0, c[j][2] - a0
                    rate = gain / extra if extra > 0 else (np.inf if gain > 0 else 0.0)
                    if total + extra <= cap and gain > 0 and rate > best_rate:
                        best, best_rate = (i, j), rate
            if best is None:
                break
            i, j = best
            total += curves[i][j][0] - curves[i][level[i]][0]
            level[i] = j
        return [c[lv][1] for c, lv in zip(curves, level)]


class PriorRow(NamedTuple):
    """A published-prior cell made concrete for one budget (the fields ``Router`` reads from a
    selection row); measurements are NaN: the prior has none."""

    strategy: str
    n: int
    m: int | None
    aggregation: str | None
    budget: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_flops: float
    rule: Any  # the prior's selection row


class PriorCells:
    """A published prior's rules for one policy size, with the interface of
    :class:`SelectionCells`.

    ``selection`` is the prior's selection table; only the rows whose size range holds
    ``policy_params`` are kept. Raises ValueError when no row covers that size. Values the
    prior leaves null are the strategy's own defaults (:meth:`StrategyConfig.at_budget`:
    beam width lowered to the budget when smaller, ``n`` rounded down to a multiple of it;
    the class's aggregation), and the decision's note says which.
    """

    def __init__(self, selection: pd.DataFrame, policy_params: int, metadata: dict, where: str | Path = "prior"):
        rows = rows_for_size(selection, policy_params)
        if rows.empty:
            raise ValueError(f"{where}: the published prior has no rule for a policy of {format_params(policy_params)} "
                             f"parameters; pass policy_params= with the policy's size")
        self.policy_params = int(policy_params)
        self.edges = [float(e) for e in metadata.get("bin_edges", [])]
        self.citation = metadata.get("citation_short") or metadata.get("citation", "published prior")
        self.rows = {int(r.bin): r for r in rows.itertuples(index=False)}
        self.budgets: list[int] = []  # the prior names no budgets: any budget >= 1 is routed
        # Every bin of this size range with one strategy: the estimate would change nothing.
        self.uniform = len({r.strategy for r in self.rows.values()}) == 1

    def check_budget(self, budget: float) -> None:
        if budget < 1:
            raise ValueError(f"budget {budget} is below 1 generation per round")

    def assign(self, estimate: Estimate) -> tuple[int | None, dict[int, float]]:
        """None when no estimate is needed; else the bin of the estimate's pass@1 under the
        prior's absolute thresholds (the estimator's own bins belong to another table)."""
        if self.uniform:
            return None, {}
        if estimate.pass1 is None or math.isnan(estimate.pass1):
            raise ValueError(f"estimator {estimate.source!r} gave no pass@1: the published prior bins a predicted pass@1 "
                             f"by its absolute thresholds {self.edges}")
        bin_ = int(assign_bins(estimate.pass1, self.edges)[0])
        return bin_, {bin_: 1.0}

    def cell(self, bin_: int | None, budget: int) -> tuple[PriorRow, str | None]:
        """The prior's rule for (bin, budget) with the strategy's defaults filled in, and a note
        saying which values were defaulted or adjusted."""
        self.check_budget(budget)
        budget = int(budget)
        rule = self.rows[min(self.rows)] if bin_ is None else self.rows[bin_]
        cls = STRATEGIES[str(rule.strategy)]
        aggregation = rule.aggregation if isinstance(rule.aggregation, str) else None
        config = cls.at_budget(budget, m=None if pd.isna(rule.m) else int(rule.m), aggregation=aggregation)
        defaulted: dict[str, Any] = {}
        if "m" in cls.takes() and pd.isna(rule.m):
            defaulted["m"] = config.m
        if aggregation is None and "aggregation" in cls.takes():
            defaulted["aggregation"] = cls.default("aggregation")  # the strategy applies it itself
        notes = []
        if defaulted:
            notes.append(f"the prior leaves {' and '.join(defaulted)} unset (not found in the paper): used the package "
                         f"default {', '.join(f'{k}={v!r}' for k, v in defaulted.items())}")
        if config.n != budget:
            notes.append(f"budget {budget} is not a multiple of m={config.m}: used n={config.n}")
        m = config.m if "m" in cls.takes() else None
        return (PriorRow(cls.name, config.n, m, aggregation, config.n, math.nan, math.nan, math.nan, math.nan, rule),
                "; ".join(notes) or None)

    def describe(self, row: PriorRow) -> str:
        """E.g. 'published prior: Liu et al. 2025 (arXiv 2502.06703): policy 1.5B < 7B → beam search'."""
        rule, size = row.rule, format_params(self.policy_params)
        lo, hi = int(rule.policy_params_min), rule.policy_params_max
        if lo == 0:
            where = f"{size} < {format_params(hi)}"
        elif pd.isna(hi):
            where = f"{size} >= {format_params(lo)}"
        else:
            where = f"{format_params(lo)} <= {size} < {format_params(hi)}"
        what = STRATEGIES[row.strategy].words()
        if not self.uniform:
            what += f" on {rule.difficulty} prompts ({rule.pass1_range})"
        return f"published prior: {self.citation}: policy {where} → {what} (rules applied to any PRM)"

    def allocate(self, bins: Sequence[int], average_budget: float) -> list[int]:
        raise ValueError(
            "the published prior has no accuracies to trade budgets between prompts: give budget= (one budget for "
            "all prompts), or profile a table (`tts-selector profile`) for average_budget="
        )


def table_cells(table: TableDir, estimator_name: str) -> tuple[SelectionCells, str | None]:
    """The selection cells a router with ``estimator_name`` uses: the ones chosen and scored on
    that estimator's own bins, so a cell's expected accuracy is what this router will see. An
    estimator object with no cells of its own gets the table's default cells, with a note."""
    rows = table.selection(estimator_name)
    unit = (table.metadata.get("cost_model") or {}).get("sample_cost")
    if not rows.empty:
        return SelectionCells(rows, unit), None
    if estimator_name.startswith(("prompt:", "pilot:")):
        have = table.selection_estimators()
        raise ValueError(
            f"{table.path}: no selection for estimator {estimator_name!r} (have {have}); "
            + (f"train it with `tts-selector train-estimator {table.path} --features {estimator_name.split(':')[1]}`"
               if estimator_name.startswith("prompt:") else "profile with that pilot size in select.pilots")
        )
    default = table.metadata.get("default_selection")
    return SelectionCells(table.selection(), unit), (
        f"estimator {estimator_name} has no cells of its own: expected accuracies are those of the table's "
        f"{default} bins, not of this estimator's")
