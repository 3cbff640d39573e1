"""The online router: estimate a prompt's bin, look up the table, run the chosen search.

``Router.load(table_dir)`` checks that the table's policy and PRM match the engines it will
drive, loads the selection table and a hash-checked estimator; ``route`` decides without any
generation (unless the estimator pilots); ``solve`` routes and searches, and its ledger
includes the estimation cost; ``solve_batch`` sends all prompts, whatever strategy each
was routed to, through the same batched rounds, and with ``average_budget`` allocates budgets
per prompt to maximise the table's expected accuracy at a mean budget. ``force`` builds the
decision for a strategy the caller names (with the table's tree settings), so a gateway or a
CLI never rebuilds one itself.

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
the strategy classes' own defaults (:class:`PriorCells`).
"""
from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import pandas as pd

from ..backends.base import PRM, Policy, SamplingParams
from ..catalog import CatalogChoice, TableCatalog, is_catalog, policy_size, table_family
from ..datasets import dataset_family
from ..errors import InputError
from ..estimators import Estimate
from ..prompts import check_questions
from ..search.base import STRATEGIES, StrategyConfig, make_strategy
from ..search.runner import run_search
from ..tables import TableDir
from ..records import Cost
from .cells import PriorCells, SelectionCells, table_cells
from .decision import FORCED_SOURCE, Decision, RoutedResult
from .engines import LazyEngines
from .loading import calibration_table, load_prior_estimator, load_table_estimator, pilot_size, table_spec

DEFAULT_ESTIMATOR = "prompt:tfidf"
# The tree strategies' settings a table's grid fixes for every search the router runs; a key
# the grid does not set is the strategy class's own default.
TREE_SETTING_KEYS = ("max_steps", "answer_rule", "adaptive_rule", "adaptive_threshold", "filter_keep")


class Router:
    """Route prompts with a table (see module docstring). Build it with :meth:`load`.

    ``engines``: the policy and PRM (loaded on first use, ``router.policy``), with the sampling
    settings; ``estimator`` an object with ``estimate_batch(prompts, ctx)`` named
    ``estimator_name``; ``cells`` the table's cells for that estimator; ``tree_settings`` the
    grid settings every tree search runs with (e.g. ``max_steps``).
    """

    def __init__(self, table: TableDir, engines: LazyEngines, estimator: Any, estimator_name: str,
                 cells: SelectionCells | PriorCells, *, tree_settings: Mapping[str, Any] | None = None,
                 source: str | None = None, choice: CatalogChoice | None = None):
        self.table = table
        self.estimator = estimator
        self.estimator_name = estimator_name
        self.source = source if source is not None else f"table {table.path}"
        self.choice = choice  # the catalog's choice (None when loaded from a table directory)
        self._engines = engines
        self._cells = cells
        self._tree = dict(tree_settings or {})

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
        return self._engines.sampling

    @property
    def tree_settings(self) -> Mapping[str, Any]:
        """The table's settings of the tree strategies (read-only), e.g. ``{"max_steps": 4}``."""
        return MappingProxyType(self._tree)

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
        an estimator object with ``estimate_batch(prompts, ctx)``.

        A catalog (``tables/``) needs ``policy`` (spec or engine), ``prm`` and ``dataset`` (a data
        set name such as ``math500``, or a family such as ``math``); ``policy_params``
        (parameters) stands in for the size of an engine that cannot count its own. The chosen
        table is then loaded as below and the choice kept in ``router.choice``. A published prior
        needs ``policy`` and ``prm`` too (it is for any engine). ``dataset`` given with a table
        directory must be of the table's family.
        """
        from ..api import build_engines

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

        # A table may only name local engines; a server must come from the caller (table_spec).
        policy_spec = policy if policy is not None else table_spec(table_dir, config, meta, "policy")
        prm_spec = prm if prm is not None else table_spec(table_dir, config, meta, "prm")
        if policy is not None or prm is not None:
            check(*build_engines(policy_spec, prm_spec))  # engines the caller chose: check them now (no weights)
        recorded = meta.get("policy_params")
        # The table's own engines are built and loaded on first use: `route` needs none.
        engines = LazyEngines(policy_spec, prm_spec, check, sampling=sampling,
                              sampling_overrides=config.get("sampling") or None,
                              policy_params=None if skip_policy or not recorded else int(recorded))
        est, name = load_table_estimator(table, estimator)
        cells, note = table_cells(table, name)
        grid = config.get("grid", {})
        source = f"table {table.path}" + (f": {choice.summary}" if choice is not None else "")
        if note:
            source += f" ({note})"
        return cls(table, engines, est, name, cells, tree_settings={k: grid[k] for k in TREE_SETTING_KEYS if k in grid},
                   source=source, choice=choice)

    @classmethod
    def _load_prior(
        cls, table: TableDir, policy: str | Policy | None, prm: str | PRM | None, estimator: str | Any,
        sampling: SamplingParams | None, policy_params: float | None, choice: CatalogChoice | None,
    ) -> "Router":
        """A router over a published prior: the size-range check replaces the policy-id check."""
        from ..api import build_engines

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
        return cls(table, LazyEngines(policy_engine, prm_engine, sampling=sampling), est, name, cells, source=source,
                   choice=choice)

    # -- routing ---------------------------------------------------------------------------
    @property
    def budgets(self) -> list[int]:
        """The table's budgets (scored samples' compute); empty for a published prior, which
        routes any budget >= 1."""
        return list(self._cells.budgets)

    def _strategy(self, row: Any) -> StrategyConfig:
        if row.strategy not in STRATEGIES:
            make_strategy(row.strategy)  # raises, naming the known strategies
        m = None if pd.isna(row.m) else int(row.m)
        aggregation = row.aggregation if isinstance(row.aggregation, str) else None
        return STRATEGIES[row.strategy].from_table_row(int(row.n), m, aggregation, self._tree)

    def decide(self, estimate: Estimate, budget: int) -> Decision:
        """The decision for a prompt with this ``estimate`` at ``budget`` (samples' compute)."""
        bin_, proba = self._cells.assign(estimate)
        row, note = self._cells.cell(bin_, budget)
        pass1 = None if estimate.pass1 is None or math.isnan(estimate.pass1) else float(estimate.pass1)
        return Decision(
            bin_, proba, self._strategy(row), int(row.budget), budget, float(row.accuracy),
            (float(row.ci_low), float(row.ci_high)), float(row.mean_flops), estimate.source, note,
            self._cells.describe(row) or self.source, pass1,
        )

    def force(self, strategy: str, budget: int) -> Decision:
        """The decision to run ``strategy`` (a registered name) at ``budget`` generations per
        round, bypassing the table's cells: with the table's tree settings and the strategy's
        own defaults (a beam width lowered to the budget, ``n`` rounded down to a multiple of it;
        :meth:`StrategyConfig.at_budget`). No expectation: the decision says it was forced."""
        if strategy not in STRATEGIES:
            make_strategy(strategy)  # raises ValueError, naming the known strategies
        config = STRATEGIES[strategy].at_budget(budget, self._tree)
        nan = math.nan
        return Decision(None, {}, config, config.n, budget, nan, (nan, nan), nan, "none (strategy forced)",
                        source=FORCED_SOURCE, forced=True)

    def estimate_batch(self, prompts: Sequence[str], seed: int = 0) -> list[Estimate]:
        """The estimator's estimates for ``prompts`` (their cost included)."""
        return self.estimator.estimate_batch(list(prompts), self._engines.context(seed))

    def route(self, prompt: str, budget: int) -> Decision:
        """The decision for one prompt at ``budget``: the compute of ``budget`` scored samples (the
        table's cells at that budget may hold any configuration whose mean cost fits, e.g. a
        tree search at another n)."""
        return self.route_batch([prompt], budget)[0]

    def route_batch(self, prompts: Sequence[str], budget: int) -> list[Decision]:
        """The decisions for ``prompts`` at ``budget``, from one estimate call."""
        self._cells.check_budget(budget)  # before estimating: a pilot would spend generations
        check_questions(prompts)
        return [self.decide(e, budget) for e in self.estimate_batch(prompts)]

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
            decisions = [self.decide(e, budget) for e in estimates]
        else:
            decisions = [self.decide(e, b) for e, b in zip(estimates, self.allocate(estimates, average_budget))]
        return self.solve_decided(prompts, decisions, estimates, seed=seed, progress=progress)

    def solve_decided(
        self, prompts: Sequence[str], decisions: Sequence[Decision], estimates: Sequence[Estimate | None], *,
        seed: int = 0, progress: bool = False,
    ) -> list[RoutedResult]:
        """Search ``prompts`` with decisions already made (by :meth:`decide` or :meth:`force`),
        all in shared batched rounds. An estimate (None: the prompt was not
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
