"""The online router: estimate a prompt's bin, look up the table, run the chosen search.

``Router.load(table_dir)`` checks that the table's policy and PRM match the engines it will
drive, loads the selection table and a hash-checked estimator; ``route`` decides without any
generation (unless the estimator pilots); ``solve`` routes and searches, and its ledger
includes the estimation cost; ``solve_batch`` sends all prompts, whatever strategy each
was routed to, through the same batched rounds, and with ``average_budget`` allocates budgets
per prompt to maximise the table's expected accuracy at a mean budget.

``Router.load`` also takes a catalog (a directory of table directories, e.g. ``tables/``) with
the policy, PRM and ``dataset=``: it picks the table with ``TableCatalog.best_for`` (exact match,
else nearest policy size with the same PRM, else the published prior) and records the choice.
Every :class:`Decision` says where it came from (``source``).

With a published-prior table (``prior: true``, e.g. ``tables/prior__liu2025__math``) the
policy-id check is replaced by a size-range check: the rows for the policy's parameter count
are used, and a prompt's estimated pass@1 is binned with the prior's absolute thresholds (the
prior has no prompts to fit an estimator on). ``pilot:<k>`` then needs no fitting: the pilot's
mean final-step PRM score, calibrated to pass@1 on a profiled table of the catalog with the same
PRM when there is one and said to be uncalibrated otherwise, is the pass@1 estimate; an estimator object
works as long as its estimates carry ``pass1``. When every bin of the size range has the same
strategy no estimate is made at all, and the decision says so. Values the prior leaves null are
filled with the search package's defaults: ``n`` = the budget, beam width ``m`` = 4 (lowered to
the budget when smaller, ``n`` rounded down to a multiple of ``m``), aggregation ``last``,
tree answer rule ``weighted``, 40 steps (the ``BeamSearch`` / ``DVTS`` / ``BestOfN`` defaults).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from .backends.base import PRM, Policy, SamplingParams
from .binning import assign_bins
from .prompts import check_questions
from .catalog import CatalogChoice, TableCatalog, format_params, is_catalog, policy_size, rows_for_size, table_family
from .datasets import dataset_family
from .errors import InputError
from .estimators import PILOT_ESTIMATORS, Estimate, PilotEstimator, load_estimator
from .search.base import STRATEGIES, StrategyConfig, make_strategy
from .search.runner import run_search
from .tables import TableDir
from .types import Candidate, Cost, SearchResult

DEFAULT_ESTIMATOR = "prompt:tfidf"


@dataclass(frozen=True)
class Decision:
    """Where a prompt was routed and what the table expects of it.

    ``budget`` is the table cell used (the requested budget, or the nearest lower one when the
    table has no cell for it: ``fallback`` then says so). ``expected_accuracy`` is the cell's
    held-out accuracy with its confidence interval; ``expected_flops`` its mean FLOPs (all NaN
    for a published prior, which has no measurements; ``to_dict`` writes them as null).
    ``source`` says which table (and how the catalog matched it) or which published rule
    decided. ``bin`` is None when no estimate was needed (every bin routes alike); ``pass1`` is
    the estimated pass@1 when the estimator gave one.
    """

    bin: int | None
    bin_proba: dict[int, float]
    strategy: StrategyConfig
    budget: int
    requested_budget: int
    expected_accuracy: float
    ci: tuple[float, float]
    expected_flops: float
    estimator: str
    fallback: str | None = None
    source: str = ""
    pass1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bin": self.bin, "bin_proba": {str(k): v for k, v in self.bin_proba.items()},
            "strategy": self.strategy.name, **self.strategy.params(), "budget": self.budget,
            "requested_budget": self.requested_budget, "expected_accuracy": _finite(self.expected_accuracy),
            "ci_low": _finite(self.ci[0]), "ci_high": _finite(self.ci[1]), "expected_flops": _finite(self.expected_flops),
            "estimator": self.estimator, "fallback": self.fallback, "source": self.source, "pass1": self.pass1,
        }

    def expectation(self) -> str:
        """'expected accuracy 0.80 [0.70, 0.90], 1.2e+11 FLOPs', or why there is none (a prior)."""
        if math.isnan(self.expected_accuracy):
            return "no expected accuracy (a published prior has no measurements)"
        lo, hi = self.ci
        return f"expected accuracy {self.expected_accuracy:.2f} [{lo:.2f}, {hi:.2f}], {self.expected_flops:.3g} FLOPs"


def _finite(x: float) -> float | None:
    # A prior's cells have no measurements (NaN); JSON has no NaN (nor Infinity), so they are written as null.
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


@dataclass(frozen=True)
class RoutedResult:
    """A routed solve: the answer, the decision, the search's candidates, and the total cost
    (estimation + search)."""

    answer: str | None
    decision: Decision
    candidates: tuple[Candidate, ...]
    cost: Cost
    estimate_cost: Cost
    search: SearchResult = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "decision": self.decision.to_dict(), "cost": self.cost.to_dict(),
                "estimate_cost": self.estimate_cost.to_dict(), "candidates": [c.to_dict() for c in self.candidates]}


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


# Words for the decision's source text.
_STRATEGY_WORDS = {"beam_search": "beam search", "dvts": "DVTS", "best_of_n": "best-of-N",
                   "weighted_best_of_n": "weighted best-of-N", "majority": "majority vote",
                   "filtered_vote": "confidence-filtered vote"}


def _default(strategy: str, name: str) -> Any:
    """A strategy class's default for a hyperparameter (what a search runs when it is not set)."""
    return {f.name: f.default for f in fields(STRATEGIES[strategy])}[name]


class PriorCells:
    """A published prior's rules for one policy size, with the interface of
    :class:`SelectionCells` (see the module docstring for the defaults it fills in).

    ``selection`` is the prior's selection table; only the rows whose size range holds
    ``policy_params`` are kept. Raises ValueError when no row covers that size.
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
        """The prior's rule for (bin, budget) with the package defaults filled in, and a note
        saying which values were defaulted or adjusted."""
        self.check_budget(budget)
        budget = int(budget)
        rule = self.rows[min(self.rows)] if bin_ is None else self.rows[bin_]
        strategy = str(rule.strategy)
        takes = {f.name for f in fields(STRATEGIES[strategy])}
        defaulted: dict[str, Any] = {}
        m = None
        if "m" in takes:
            if pd.isna(rule.m):
                m = defaulted["m"] = min(int(_default(strategy, "m")), budget)
            else:
                m = int(rule.m)
        aggregation = rule.aggregation if isinstance(rule.aggregation, str) else None
        if aggregation is None and "aggregation" in takes:
            defaulted["aggregation"] = _default(strategy, "aggregation")  # the strategy applies it itself
        n = budget - budget % m if m else budget
        notes = []
        if defaulted:
            notes.append(f"the prior leaves {' and '.join(defaulted)} unset (not found in the paper): used the package "
                         f"default {', '.join(f'{k}={v!r}' for k, v in defaulted.items())}")
        if n != budget:
            notes.append(f"budget {budget} is not a multiple of m={m}: used n={n}")
        return PriorRow(strategy, n, m, aggregation, n, math.nan, math.nan, math.nan, math.nan, rule), ("; ".join(notes) or None)

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
        what = _STRATEGY_WORDS.get(row.strategy, row.strategy)
        if not self.uniform:
            what += f" on {rule.difficulty} prompts ({rule.pass1_range})"
        return f"published prior: {self.citation}: policy {where} → {what} (rules applied to any PRM)"

    def allocate(self, bins: Sequence[int], average_budget: float) -> list[int]:
        raise ValueError(
            "the published prior has no accuracies to trade budgets between prompts: give budget= (one budget for "
            "all prompts), or profile a table (`tts-selector profile`) for average_budget="
        )


class _NoEstimator:
    """Stands in for an estimator when every bin routes alike: makes no estimate, spends nothing."""

    needs_engines = False

    def __init__(self, reason: str):
        self.reason = reason

    def estimate_batch(self, prompts: Sequence[str], policy_params: int = 0) -> list[Estimate]:
        return [Estimate(math.nan, 0, {}, Cost(), self.reason) for _ in prompts]


class LazyEngines:
    """A router's policy and PRM, loaded on first use: routing with a prompt estimator needs
    neither, so ``route`` loads no weights; ``solve`` loads them once (``api.resolve_engines``
    caches them per spec). ``check`` runs once on the loaded engines (e.g. the table's ids)."""

    def __init__(self, policy: str | Policy, prm: str | PRM | None,
                 check: Callable[[Policy, PRM | None], None] | None = None):
        self._specs = (policy, prm)
        self._check = check
        self._engines: tuple[Policy, PRM | None] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engines is not None

    @property
    def specs(self) -> tuple[str | Policy, str | PRM | None]:
        """What the engines are built from (spec strings or engine objects, not yet loaded)."""
        return self._specs

    def get(self) -> tuple[Policy, PRM | None]:
        if self._engines is None:
            with self._lock:
                if self._engines is None:
                    from .api import resolve_engines

                    engines = resolve_engines(*self._specs)
                    if self._check is not None:
                        self._check(*engines)
                    self._engines = engines
        return self._engines


class Router:
    """Route prompts with a table (see module docstring). Build it with :meth:`load`.

    ``policy``/``prm`` are engines, spec strings or a :class:`LazyEngines`; either way they are
    loaded on first use (``router.policy``), not here. ``policy_params`` (parameters) stands
    in for the policy's count until it is loaded (the table's record); ``sampling_overrides``
    are applied to the policy's default sampling parameters when ``sampling`` is None.
    """

    def __init__(self, table: TableDir, policy: Policy | str | LazyEngines, prm: PRM | str | None, estimator: Any,
                 estimator_name: str, tree_settings: dict[str, Any], sampling: SamplingParams | None = None, *,
                 cells: SelectionCells | PriorCells | None = None, source: str | None = None,
                 choice: CatalogChoice | None = None, policy_params: int | None = None,
                 sampling_overrides: dict[str, Any] | None = None):
        self.table = table
        self._engines = policy if isinstance(policy, LazyEngines) else LazyEngines(policy, prm)
        self.estimator = estimator
        self.estimator_name = estimator_name
        self._sampling = sampling
        self._sampling_overrides = sampling_overrides
        self._policy_params = policy_params
        self._tree = tree_settings
        self._cells = cells if cells is not None else SelectionCells.of(table)
        self.source = source if source is not None else f"table {table.path}"
        self.choice = choice  # the catalog's choice (None when loaded from a table directory)

    @property
    def policy(self) -> Policy:
        """The policy engine (loaded now if it was not)."""
        return self._engines.get()[0]

    @property
    def prm(self) -> PRM | None:
        """The PRM engine (loaded now if it was not)."""
        return self._engines.get()[1]

    @property
    def engines_loaded(self) -> bool:
        return self._engines.loaded

    @property
    def sampling(self) -> SamplingParams | None:
        if self._sampling is None and self._sampling_overrides:
            self._sampling = self.policy.default_sampling_params().replace(**self._sampling_overrides)
        return self._sampling

    def _params_for_estimate(self) -> int:
        """The policy's parameter count for an estimate's FLOPs, without loading it if the
        table records it."""
        if not self._engines.loaded:
            if self._policy_params is not None:
                return self._policy_params
            built = self._engines.specs[0]
            if not isinstance(built, str):  # an engine object counts its parameters without loading
                return built.num_parameters
        return self.policy.num_parameters

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(
        cls, table_dir: str | Path, *, policy: str | Policy | None = None, prm: str | PRM | None = None,
        estimator: str | Any = DEFAULT_ESTIMATOR, sampling: SamplingParams | None = None,
        dataset: str | None = None, policy_params: float | None = None,
    ) -> "Router":
        """Open a table directory, or a catalog of them; engines default to the specs the table
        was profiled with.

        ``estimator``: ``"prompt:<features>"`` (trained with ``train-estimator``, loaded only if
        its sha256 matches the table's record), ``"pilot:<k>"`` (binned by the
        table's pilot edges, calibrated on its profiling prompts; see :func:`load_prior_estimator`
        for a published prior), or
        an estimator object with ``estimate_batch``.

        A catalog (``tables/``) needs ``policy`` (spec or engine), ``prm`` and ``dataset`` (a data
        set name such as ``math500``, or a family such as ``math``); ``policy_params``
        (parameters) stands in for the size of an engine that cannot count its own. The chosen
        table is then loaded as below and the choice kept in ``router.choice``. A published prior
        needs ``policy`` and ``prm`` too (it is for any engine). ``dataset`` given with a table
        directory must be of the table's family.
        """
        from .api import build_engines

        if policy_params is not None and not (isinstance(policy_params, (int, float)) and math.isfinite(policy_params)
                                              and policy_params >= 1):
            raise InputError(f"policy_params must be a finite parameter count >= 1 (e.g. 1.5e9), got {policy_params!r}")
        choice = None
        if is_catalog(table_dir):
            if policy is None or prm is None or dataset is None:
                raise ValueError(
                    f"{table_dir} is a catalog of tables: give policy= (spec or engine), prm= and dataset= (e.g. 'math500', "
                    f"or a family such as 'math') so it can pick a table, or pass one table directory"
                )
            policy, prm = build_engines(policy, prm)  # ids and sizes; weights load on first use
            choice = TableCatalog(table_dir).best_for(policy=policy, prm=prm, dataset=dataset, policy_params=policy_params)
            table_dir = choice.path
        table = TableDir(table_dir)
        if not table.exists():
            raise FileNotFoundError(f"{table_dir}: not a table directory (missing {table.missing()}); run `tts-selector profile`")
        meta = table.metadata
        if dataset is not None and dataset_family(dataset) != table_family(meta):
            raise ValueError(
                f"{table_dir} answers for dataset family {table_family(meta)!r}, not {dataset_family(dataset)!r} "
                f"(dataset {dataset!r}): route with a table of that family, or a catalog that has one"
            )
        if meta.get("prior"):
            return cls._load_prior(table, policy, prm, estimator, sampling, policy_params, choice)
        config = table.config  # checked: types, sampling keys, grid ranges (table_checks)
        skip_policy = choice is not None and choice.kind == "nearest_size"  # another policy: that is the point

        def check(policy_engine: Policy, prm_engine: PRM | None) -> None:
            checks = [("policy", policy_engine, meta.get("policy_id")), ("PRM", prm_engine, meta.get("prm_id"))]
            for kind, engine, want in checks[1:] if skip_policy else checks:
                # No engine is the PRM spec "none" (a table profiled without a PRM records that id).
                have = engine.id if engine is not None else ("none" if kind == "PRM" else None)
                if have != want:
                    raise ValueError(
                        f"{table_dir} was profiled with {kind} {want!r}, but the {kind} given is {have!r}: "
                        f"route with the same {kind}, or profile a table for {have!r}"
                    )

        # A table may only name local engines; a server must come from the caller (_table_spec).
        policy_spec = policy if policy is not None else _table_spec(table_dir, config, meta, "policy")
        prm_spec = prm if prm is not None else _table_spec(table_dir, config, meta, "prm")
        if policy is not None or prm is not None:
            check(*build_engines(policy_spec, prm_spec))  # engines the caller chose: check them now (no weights)
        # The table's own engines are built and loaded on first use: `route` needs none.
        engines = LazyEngines(policy_spec, prm_spec, check)
        est, name = load_table_estimator(table, estimator)
        cells, note = table_cells(table, name)
        grid = config.get("grid", {})
        tree = {"max_steps": grid.get("max_steps", 40), "answer_rule": grid.get("answer_rule", "weighted"),
                **{k: v for k, v in grid.items() if k in ("adaptive_rule", "adaptive_threshold")},
                **({"keep": grid["filter_keep"]} if "filter_keep" in grid else {})}
        recorded = meta.get("policy_params")
        params = None if skip_policy or not recorded else int(recorded)
        source = f"table {table.path}" + (f": {choice.summary}" if choice is not None else "")
        if note:
            source += f" ({note})"
        return cls(table, engines, None, est, name, tree, sampling, cells=cells, source=source, choice=choice,
                   policy_params=params, sampling_overrides=config.get("sampling") or None)

    @classmethod
    def _load_prior(
        cls, table: TableDir, policy: str | Policy | None, prm: str | PRM | None, estimator: str | Any,
        sampling: SamplingParams | None, policy_params: float | None, choice: CatalogChoice | None,
    ) -> "Router":
        """A router over a published prior: the size-range check replaces the policy-id check."""
        from .api import build_engines

        if policy is None or prm is None:
            raise ValueError(f"{table.path} is a published prior for any policy and PRM: give policy= and prm= "
                             "(it has no engines of its own to default to)")
        policy_engine, prm_engine = build_engines(policy, prm)  # the size check needs no weights
        if prm_engine is None:
            raise ValueError(f"{table.path}: the published prior's strategies (beam search, DVTS, best-of-N) need a PRM; "
                             "give prm= (a PRM spec or engine)")
        size = policy_size(policy_engine, policy_params)
        if size is None:
            raise ValueError(f"{table.path} is keyed by policy size, but policy {policy_engine.id!r} reports no parameter "
                             "count: pass policy_params= (parameters, e.g. 1.5e9) or --policy-params")
        cells = PriorCells(table.selection(), size, table.metadata, table.path)
        k = pilot_size(estimator) if isinstance(estimator, str) and estimator.startswith("pilot:") else 1
        est, name = load_prior_estimator(cells, estimator, table.path, calibration_table(choice, prm_engine, k))
        source = f"published prior {table.path}" + (f": {choice.reason}" if choice is not None else "")
        # No tree settings: beam search / DVTS run with their class defaults (see module docstring).
        return cls(table, policy_engine, prm_engine, est, name, {}, sampling, cells=cells, source=source, choice=choice)

    # -- routing ---------------------------------------------------------------------------
    @property
    def budgets(self) -> list[int]:
        return list(self._cells.budgets)

    def _strategy(self, row: Any) -> StrategyConfig:
        if row.strategy not in STRATEGIES:
            make_strategy(row.strategy)  # raises, naming the known strategies
        m = None if pd.isna(row.m) else int(row.m)
        aggregation = row.aggregation if isinstance(row.aggregation, str) else None
        return STRATEGIES[row.strategy].from_table_row(int(row.n), m, aggregation, self._tree)

    def _decide(self, estimate: Estimate, budget: int) -> Decision:
        bin_, proba = self._cells.assign(estimate)
        row, note = self._cells.cell(bin_, budget)
        pass1 = None if estimate.pass1 is None or math.isnan(estimate.pass1) else float(estimate.pass1)
        return Decision(
            bin_, proba, self._strategy(row), int(row.budget), budget, float(row.accuracy),
            (float(row.ci_low), float(row.ci_high)), float(row.mean_flops), estimate.source, note,
            self._cells.describe(row) or self.source, pass1,
        )

    def estimate_batch(self, prompts: Sequence[str], seed: int = 0) -> list[Estimate]:
        """The estimator's estimates for ``prompts`` (their cost included)."""
        if getattr(self.estimator, "needs_engines", False):  # pilots sample with our engines
            return self.estimator.estimate_batch(list(prompts), self.policy, self.prm, sampling=self.sampling, seed=seed)
        return self.estimator.estimate_batch(list(prompts), self._params_for_estimate())

    def route(self, prompt: str, budget: int) -> Decision:
        """The decision for one prompt at ``budget``: the compute of ``budget`` scored samples (the
        table's cells at that budget may hold any configuration whose mean cost fits, e.g. a
        tree search at another n)."""
        return self.route_batch([prompt], budget)[0]

    def route_batch(self, prompts: Sequence[str], budget: int) -> list[Decision]:
        self._cells.check_budget(budget)  # before estimating: a pilot would spend generations
        check_questions(prompts)
        return [self._decide(e, budget) for e in self.estimate_batch(prompts)]

    # -- solving ---------------------------------------------------------------------------
    def solve(self, prompt: str, budget: int, *, seed: int = 0) -> RoutedResult:
        return self.solve_batch([prompt], budget=budget, seed=seed)[0]

    def solve_batch(
        self, prompts: Sequence[str], budget: int | None = None, *, average_budget: float | None = None,
        seed: int = 0, progress: bool = False,
    ) -> list[RoutedResult]:
        """Route and solve many prompts in shared batched rounds.

        Give ``budget`` (the same for all) or ``average_budget`` (per-prompt cells from the
        table's budgets, chosen to maximise the sum of expected accuracies with mean compute
        <= ``average_budget`` samples' compute, priced by the cells' measured mean costs).
        """
        if (budget is None) == (average_budget is None):
            raise ValueError("give exactly one of budget= or average_budget=")
        if isinstance(prompts, str):
            raise TypeError("solve_batch takes a list of prompts; use solve() for one")
        self._cells.check_budget(budget if budget is not None else average_budget)
        estimates = self.estimate_batch(prompts, seed=seed)
        if budget is not None:
            decisions = [self._decide(e, budget) for e in estimates]
        else:
            decisions = [self._decide(e, b) for e, b in zip(estimates, self.allocate(estimates, average_budget))]
        return self.solve_decided(prompts, decisions, estimates, seed=seed, progress=progress)

    def decide(self, estimate: Estimate, budget: int) -> Decision:
        """The decision for a prompt with this ``estimate`` at ``budget`` (samples' compute)."""
        return self._decide(estimate, budget)

    def solve_decided(
        self, prompts: Sequence[str], decisions: Sequence[Decision], estimates: Sequence[Estimate | None], *,
        seed: int = 0, progress: bool = False,
    ) -> list[RoutedResult]:
        """Search ``prompts`` with decisions already made (by :meth:`decide`, or a strategy the
        caller forced), all in shared batched rounds. An estimate (None: the prompt was not
        estimated) gives its cost to the ledger; its pilot samples are not reused as the
        strategy's samples: they decided the bin, and the table's cells were scored on samples
        independent of the bin (see estimators/pilot.py). Seeds derive from
        ``seed`` and each prompt's text, so a result does not depend on the rest of the batch."""
        results = run_search(
            [(p, d.strategy) for p, d in zip(prompts, decisions)], self.policy, self.prm,
            sampling=self.sampling, seed=seed, progress=progress,
        )
        return [
            RoutedResult(r.answer, d, r.candidates, (e.cost if e else Cost()) + r.cost, e.cost if e else Cost(), r)
            for r, d, e in zip(results, decisions, estimates)
        ]

    def allocate(self, estimates: Sequence[Estimate], average_budget: float) -> list[int]:
        """Per-prompt budgets with mean compute <= ``average_budget`` (see :meth:`SelectionCells.allocate`)."""
        return self._cells.allocate([e.bin for e in estimates], average_budget)

    def bin_budgets(self, average_budget: float) -> dict[int, int]:
        """A budget per bin from the table's allocation over its profiled prompts' bins at a mean
        compute of ``average_budget`` samples' worth: each bin takes the cheapest cell any of its
        prompts got, so traffic with the table's difficulty mix stays within the average and a
        request's budget depends on its bin only."""
        bins = [int(b) for b in self.table.prompts().query("split == 'profile'")["bin"]]
        out: dict[int, int] = {}
        for b, n in zip(bins, self._cells.allocate(bins, average_budget)):
            cost = self._cells.cell_cost(self._cells.cell(b, n)[0])
            if b not in out or cost < self._cells.cell_cost(self._cells.cell(b, out[b])[0]):
                out[b] = n
        return out


def _table_spec(table_dir: str | Path, config: dict, meta: dict, kind: str) -> str:
    """The engine spec a table was profiled with, for when the user names none; only one of the
    package's own engines is accepted: a table directory must not choose code to run (a model
    path, a preset file, trust_remote_code) nor where the user's prompts are sent."""
    from .backends.registry import require_package_spec

    spec = config.get(kind, meta.get(f"{kind}_id"))
    where = f"{Path(table_dir) / 'state' / 'manifest.json'}" if kind in config else f"{table_dir}'s metadata"
    return require_package_spec(spec, "policy" if kind == "policy" else "PRM", where)


def pilot_size(estimator: str) -> int:
    """``k`` of a ``pilot:<k>`` (or ``pilot:<k>:<signal>``) estimator name (``pilot:`` alone: 4),
    or an InputError."""
    arg = estimator.partition(":")[2].partition(":")[0] or "4"
    if not arg.isdigit() or not 1 <= int(arg) <= 4096:
        raise InputError(f"estimator {estimator[:80]!r}: a pilot's size k is a whole number of samples from 1 to 4096, "
                         "e.g. pilot:4")
    return int(arg)


def load_prior_estimator(cells: PriorCells, estimator: str | Any, where: str | Path = "prior",
                         calibration: TableDir | None = None) -> tuple[Any, str]:
    """The estimator for a published prior and its name: none when every bin of the size range
    routes alike, ``pilot:<k>`` binned by the prior's absolute pass@1 thresholds, or an object as
    is (its estimates' ``pass1`` is binned by the prior's thresholds).

    The prior's thresholds are on true pass@1, and a raw PRM mean is not that: with
    ``calibration`` (a profiled table with the same PRM, e.g. from the same catalog) the pilot's
    mean score is mapped to pass@1 by that table's isotonic calibration; without one the mean is
    taken as pass@1 as is and the estimator's name says it is uncalibrated."""
    if cells.uniform:
        strategy = _STRATEGY_WORDS.get(next(iter(cells.rows.values())).strategy)
        reason = (f"none: every difficulty bin of the prior's size range for a {format_params(cells.policy_params)} "
                  f"policy uses {strategy}, so no estimate was made")
        return _NoEstimator(reason), reason
    if not isinstance(estimator, str):
        return estimator, type(estimator).__name__
    kind, _, arg = estimator.partition(":")
    if kind == "pilot":
        k = pilot_size(estimator)
        if calibration is not None:
            scores, oracle = _pilot_training(calibration, k)
            est = _PassOnePilot(k=k, edges=tuple(cells.edges)).fit(scores, oracle)
            return est, f"pilot:{k} (PRM mean calibrated to pass@1 on {calibration.path})"
        est = _PassOnePilot(k=k, edges=tuple(cells.edges)).fit([], None)
        return est, f"pilot:{k} (uncalibrated: mean final-step PRM score taken as pass@1)"
    raise ValueError(
        f"{where}: a published prior has no profiled prompts, so no trained estimator {estimator!r}: use 'pilot:<k>' "
        f"(e.g. --estimator pilot:4: the pilot's mean final-step PRM score is the pass@1 estimate, binned by the "
        f"prior's thresholds {cells.edges}) or pass an estimator object whose estimates carry pass1"
    )


class _PassOnePilot(PilotEstimator):
    """A pilot for a published prior: bins its (calibrated) pass@1, not its raw mean score, by
    the prior's thresholds on pass@1."""

    def from_scores(self, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pass1, _ = super().from_scores(predicted)
        proba = np.zeros((len(pass1), len(self.classes_)))
        proba[np.arange(len(pass1)), assign_bins(pass1, self.edges) - 1] = 1.0
        return pass1, proba


def calibration_table(choice: CatalogChoice | None, prm: PRM | None, k: int = 1) -> TableDir | None:
    """A profiled table of the catalog with the same PRM and difficulty samples, to calibrate a
    pilot's PRM mean to pass@1 (None when the router was not loaded from a catalog or none fits)."""
    if choice is None or prm is None:
        return None
    for entry in TableCatalog(choice.path.parent).entries():
        if not entry.prior and entry.prm_id == prm.id:
            table = TableDir(entry.path)
            if int(table.metadata.get("difficulty_samples", 0)) >= k:  # a k-sample pilot's scores are there
                return table
    return None


def _pilot_training(table: TableDir, k: int, signal: str = "prm_mean") -> tuple[np.ndarray, np.ndarray]:
    """The ``k``-sample pilot value of a table's profiling prompts (``signal``: the mean of the
    first ``k`` difficulty-sample scores, or their answers' agreement) and the graded pass@1 of
    their evaluation samples: what a ``k``-sample pilot sees, and what it should predict,
    measured on samples the pilot's value was not computed from (a sample's score and its
    correctness are correlated, so a target sharing them would make the fit too steep)."""
    prompts = table.prompts()
    prompts = prompts[prompts["split"] == "profile"]
    have = int(table.metadata.get("difficulty_samples", 0))
    if k > have:
        raise ValueError(f"{table.path}: a pilot:{k} needs {k} difficulty samples per prompt, the table has {have}")
    from .profile.difficulty import pilot_values

    scores = pilot_values(prompts, k, signal, table.path / "prompts.parquet").to_numpy(dtype=float)
    return scores, prompts["evaluation_pass1"].to_numpy(dtype=float)


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


def load_table_estimator(table: TableDir, estimator: str | Any) -> tuple[Any, str]:
    """An estimator for a table and its name: ``prompt:<features>`` (the file the table records,
    sha256-checked), ``pilot:<k>`` (fitted on the table's profiling prompts), or an object as is."""
    if not isinstance(estimator, str):
        return estimator, type(estimator).__name__
    kind, _, arg = estimator.partition(":")
    if kind == "prompt":
        entries = table.metadata.get("estimators", {})
        if estimator not in entries:
            raise ValueError(
                f"{table.path}: no estimator {estimator!r} recorded (have {sorted(entries)}); train it with "
                f"`tts-selector train-estimator {table.path} --features {arg or 'tfidf'}`"
            )
        from .table_checks import estimator_path

        entry = entries[estimator]  # its types were checked with the metadata (table_checks)
        return load_estimator(estimator_path(table.path, entry["file"]), entry["sha256"], features=arg,
                              root=table.path), estimator
    if kind == "pilot":
        k = pilot_size(estimator)
        pilots = table.metadata.get("pilots", {})
        name = estimator if estimator in pilots else f"pilot:{k}"
        if name not in pilots:
            raise ValueError(f"{table.path}: no {estimator} profiled (have {sorted(pilots)}); use one of those, or "
                             f"profile with {k} in select.pilots (and its signal in select.pilot_signals)")
        from .profile.difficulty import record_signal

        record = pilots[name]
        signal = record_signal(record)  # what the table's cells for this pilot were binned by
        scores, oracle = _pilot_training(table, k, signal)
        est = PILOT_ESTIMATORS[signal](k=k, edges=tuple(record["edges"]), name=name).fit(scores, oracle)
        return est, name
    raise ValueError(f"unknown estimator {estimator!r}: use 'prompt:<features>' or 'pilot:<k>'")
