"""The online router: estimate a prompt's bin, look up the table, run the chosen search.

``Router.load(table_dir)`` checks that the table's policy and PRM match the engines it will
drive, loads the selection table and a hash-checked estimator; ``route`` decides without any
generation (unless the estimator pilots); ``solve`` routes and searches, and its ledger
includes the estimation cost; ``solve_batch`` sends all prompts, whatever strategy each
was routed to, through the same batched rounds, and with ``average_budget`` allocates budgets
per prompt to maximise the table's expected accuracy at a mean budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .backends.base import PRM, Policy, SamplingParams
from .estimators import Estimate, PilotEstimator, load_estimator
from .search.base import StrategyConfig, make_strategy
from .search.runner import run_search
from .tables import TableDir
from .types import Candidate, Cost, SearchResult

DEFAULT_ESTIMATOR = "prompt:tfidf"


@dataclass(frozen=True)
class Decision:
    """Where a prompt was routed and what the table expects of it.

    ``budget`` is the table cell used (the requested budget, or the nearest lower one when the
    table has no cell for it: ``fallback`` then says so). ``expected_accuracy`` is the cell's
    held-out accuracy with its confidence interval; ``expected_flops`` its mean FLOPs.
    """

    bin: int
    bin_proba: dict[int, float]
    strategy: StrategyConfig
    budget: int
    requested_budget: int
    expected_accuracy: float
    ci: tuple[float, float]
    expected_flops: float
    estimator: str
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bin": self.bin, "bin_proba": {str(k): v for k, v in self.bin_proba.items()},
            "strategy": self.strategy.name, **self.strategy.params(), "budget": self.budget,
            "requested_budget": self.requested_budget, "expected_accuracy": self.expected_accuracy,
            "ci_low": self.ci[0], "ci_high": self.ci[1], "expected_flops": self.expected_flops,
            "estimator": self.estimator, "fallback": self.fallback,
        }


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
    """The selection table as (bin, budget) cells, with the budget fallback rule written once."""

    def __init__(self, selection: pd.DataFrame):
        self.cells: dict[int, dict[int, Any]] = {}
        for row in selection.itertuples(index=False):
            self.cells.setdefault(int(row.bin), {})[int(row.budget)] = row
        self.budgets = sorted({b for cells in self.cells.values() for b in cells})

    def check_budget(self, budget: float) -> None:
        if budget < self.budgets[0]:
            raise ValueError(f"budget {budget} is below the table's smallest budget {self.budgets[0]} (budgets: {self.budgets})")

    def cell(self, bin_: int, budget: int) -> tuple[Any, str | None]:
        """The row for (bin, budget), or for the nearest lower budget with a note saying so."""
        self.check_budget(budget)
        cells = self.cells.get(bin_)
        if not cells:
            raise ValueError(f"the table has no selection for bin {bin_} (bins: {sorted(self.cells)})")
        usable = [b for b in cells if b <= budget]
        if not usable:
            raise ValueError(f"bin {bin_} has no cell at or below budget {budget} (its budgets: {sorted(cells)})")
        chosen = max(usable)
        note = None if chosen == budget else f"no cell for budget {budget} in bin {bin_}: used the nearest lower budget {chosen}"
        return cells[chosen], note


    def allocate(self, bins: Sequence[int], average_budget: float) -> list[int]:
        """Per-prompt budgets with mean <= ``average_budget`` maximising expected accuracy.

        Greedy on marginal gains: every prompt starts at the smallest budget; the upgrade (to
        any higher budget of its bin's curve) with the largest expected-accuracy gain per extra
        generation is applied while the mean allows it. Prompts whose bin gains nothing stay
        at the smallest budget: the hard-bin/easy-bin trade-off.
        """
        self.check_budget(average_budget)
        curves = [sorted((b, float(row.accuracy)) for b, row in self.cells[int(bin_)].items()) for bin_ in bins]
        level = [0] * len(curves)
        total, cap = sum(c[0][0] for c in curves), average_budget * len(curves)
        while True:
            best, best_rate = None, 0.0
            for i, c in enumerate(curves):
                b0, a0 = c[level[i]]
                # Any higher budget, not only the next: accuracy curves need not be monotone.
                for j in range(level[i] + 1, len(c)):
                    extra, gain = c[j][0] - b0, c[j][1] - a0
                    if total + extra <= cap and gain > 0 and gain / extra > best_rate:
                        best, best_rate = (i, j), gain / extra
            if best is None:
                break
            i, j = best
            total += curves[i][j][0] - curves[i][level[i]][0]
            level[i] = j
        return [c[lv][0] for c, lv in zip(curves, level)]


class Router:
    """Route prompts with a table (see module docstring). Build it with :meth:`load`."""

    def __init__(self, table: TableDir, policy: Policy, prm: PRM | None, estimator: Any, estimator_name: str,
                 tree_settings: dict[str, Any], sampling: SamplingParams | None = None):
        self.table = table
        self.policy = policy
        self.prm = prm
        self.estimator = estimator
        self.estimator_name = estimator_name
        self.sampling = sampling
        self._tree = tree_settings
        self._cells = SelectionCells(table.selection())

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(
        cls, table_dir: str | Path, *, policy: str | Policy | None = None, prm: str | PRM | None = None,
        estimator: str | Any = DEFAULT_ESTIMATOR, sampling: SamplingParams | None = None,
    ) -> "Router":
        """Open a table directory; engines default to the specs the table was profiled with.

        ``estimator``: ``"prompt:<features>"`` (trained with ``train-estimator``, loaded only if
        its sha256 matches the table's record), ``"pilot:<k>"`` (fitted on the table's
        predicted pass@1), or an estimator object with ``estimate_batch``.
        """
        from .api import resolve_engines

        table = TableDir(table_dir)
        if not table.exists():
            raise FileNotFoundError(f"{table_dir}: not a table directory (missing {table.missing()}); run `tts-selector profile`")
        meta = table.metadata
        from .profile import manifest_config

        config = manifest_config(table_dir)
        policy_engine, prm_engine = resolve_engines(
            policy if policy is not None else config.get("policy", meta["policy_id"]),
            prm if prm is not None else config.get("prm", meta["prm_id"]),
        )
        for kind, engine, want in (("policy", policy_engine, meta["policy_id"]), ("PRM", prm_engine, meta["prm_id"])):
            have = engine.id if engine is not None else None
            if have != want:
                raise ValueError(
                    f"{table_dir} was profiled with {kind} {want!r}, but the {kind} given is {have!r}: "
                    f"route with the same {kind}, or profile a table for {have!r}"
                )
        est, name = load_table_estimator(table, estimator)
        grid = config.get("grid", {})
        tree = {"max_steps": grid.get("max_steps", 40), "answer_rule": grid.get("answer_rule", "weighted")}
        if sampling is None and config.get("sampling"):
            sampling = policy_engine.default_sampling_params().replace(**config["sampling"])
        return cls(table, policy_engine, prm_engine, est, name, tree, sampling)

    # -- routing ---------------------------------------------------------------------------
    @property
    def budgets(self) -> list[int]:
        return list(self._cells.budgets)

    def _strategy(self, row: Any) -> StrategyConfig:
        params: dict[str, Any] = {"n": int(row.n)}
        if not pd.isna(row.m):
            params["m"] = int(row.m)
            params.update(self._tree)
        if isinstance(row.aggregation, str):
            params["aggregation"] = row.aggregation
        return make_strategy(row.strategy, **params)

    def _decide(self, estimate: Estimate, budget: int) -> Decision:
        row, note = self._cells.cell(estimate.bin, budget)
        return Decision(
            estimate.bin, estimate.bin_proba, self._strategy(row), int(row.budget), budget, float(row.accuracy),
            (float(row.ci_low), float(row.ci_high)), float(row.mean_flops), estimate.source, note,
        )

    def estimate_batch(self, prompts: Sequence[str], seed: int = 0) -> list[Estimate]:
        if getattr(self.estimator, "needs_engines", False):  # pilots sample with our engines
            return self.estimator.estimate_batch(list(prompts), self.policy, self.prm, sampling=self.sampling, seed=seed)
        return self.estimator.estimate_batch(list(prompts), self.policy.num_parameters)

    def route(self, prompt: str, budget: int) -> Decision:
        """The decision for one prompt at ``budget`` (generations per round)."""
        return self.route_batch([prompt], budget)[0]

    def route_batch(self, prompts: Sequence[str], budget: int) -> list[Decision]:
        self._cells.check_budget(budget)  # before estimating: a pilot would spend generations
        return [self._decide(e, budget) for e in self.estimate_batch(prompts)]

    # -- solving ---------------------------------------------------------------------------
    def solve(self, prompt: str, budget: int, *, seed: int = 0) -> RoutedResult:
        return self.solve_batch([prompt], budget=budget, seed=seed)[0]

    def solve_batch(
        self, prompts: Sequence[str], budget: int | None = None, *, average_budget: float | None = None,
        seed: int = 0, progress: bool = False,
    ) -> list[RoutedResult]:
        """Route and solve many prompts in shared batched rounds.

        Give ``budget`` (the same for all) or ``average_budget`` (per-prompt budgets from the
        table's budgets, chosen to maximise the sum of expected accuracies with mean budget
        <= ``average_budget``).
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
        results = run_search(
            [(p, d.strategy) for p, d in zip(prompts, decisions)], self.policy, self.prm,
            sampling=self.sampling, seed=seed, progress=progress, pilots=[e.pilot for e in estimates],
        )
        return [
            RoutedResult(r.answer, d, r.candidates, e.cost + r.cost, e.cost, r)
            for r, d, e in zip(results, decisions, estimates)
        ]

    def allocate(self, estimates: Sequence[Estimate], average_budget: float) -> list[int]:
        """Per-prompt budgets with mean <= ``average_budget`` (see :meth:`SelectionCells.allocate`)."""
        return self._cells.allocate([e.bin for e in estimates], average_budget)


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
        entry = entries[estimator]
        return load_estimator(Path(table.path) / entry["file"], entry["sha256"]), estimator
    if kind == "pilot":
        prompts = table.prompts()
        prompts = prompts[prompts["split"] == "profile"]
        k = int(arg or 4)
        est = PilotEstimator(k=k).fit(prompts["predicted_pass1"], prompts["bin"], prompts["oracle_pass1"])
        return est, estimator
    raise ValueError(f"unknown estimator {estimator!r}: use 'prompt:<features>' or 'pilot:<k>'")
