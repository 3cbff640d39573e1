"""What the gateway asks of the router: budgets, forced strategies, and one batch's solve.

``solve(jobs)`` runs in the batcher's worker thread. Jobs with the same seed share one
estimate call and one search (:meth:`Router.solve_decided`), whatever their budgets and
whether their strategy was routed or forced; a different seed is a separate search. Every
decision is the router's (:meth:`Router.decide`, :meth:`Router.force`): the gateway only
validates what a request asks for.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..routing import Decision, RoutedResult, Router
from ..search.base import STRATEGIES
from .batching import Job
from .http_errors import bad_request


class Solver:
    """Validates per-request routing options and solves batches with one :class:`Router`.

    ``budget``: the default budget N (N scored samples' compute); ``average_budget``: instead,
    each difficulty bin gets the budget the table's allocation gives it over the profiled
    prompts' bin mix (:meth:`Router.bin_budgets`: traffic with the table's difficulty mix
    averages at most that much compute, and a request's budget depends on its bin only, never
    on its batch). Without either, the table's largest budget (8 for a published prior).
    ``max_budget`` caps budgets of a published prior (it names none of its own).
    """

    def __init__(self, router: Router, *, budget: int | None = None, average_budget: float | None = None,
                 max_budget: int = 64):
        if budget is not None and average_budget is not None:
            raise ValueError("give --budget or --average-budget, not both")
        self.router = router
        self.budgets = router.budgets
        self.max_budget = max(self.budgets) if self.budgets else max_budget
        self.bin_budgets: dict[int, int] | None = None
        if average_budget is not None:
            self.bin_budgets = router.bin_budgets(average_budget)
            self.default_budget = None
        else:
            self.default_budget = budget if budget is not None else (self.max_budget if self.budgets else min(8, max_budget))
            self.check_budget(self.default_budget)

    def check_budget(self, budget: Any, param: str = "tts.budget") -> int:
        """``budget`` as an int within the table's budgets; a 400 naming them otherwise."""
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise bad_request(f"budget must be an integer number of generations per round, got {budget!r}", param)
        low = self.budgets[0] if self.budgets else 1
        if not low <= budget <= self.max_budget:
            which = f"the table's budgets are {self.budgets}" if self.budgets else f"this prior serves budgets 1..{self.max_budget}"
            raise bad_request(f"budget {budget} is outside the table: {which}", param, "budget_out_of_range")
        return budget

    def forced(self, name: str, budget: int | None, param: str = "tts.strategy") -> Decision:
        """The router's decision for strategy ``name`` at ``budget`` (None: the server's
        default); a 400 naming the known strategies for an unknown one."""
        if name not in STRATEGIES:
            raise bad_request(f"unknown strategy {name!r}: use one of {sorted(STRATEGIES)}", param, "unknown_strategy")
        try:
            return self.router.force(name, budget if budget is not None else (self.default_budget or self.max_budget))
        except ValueError as exc:  # e.g. a budget the strategy cannot run at
            raise bad_request(f"cannot run {name}: {exc}", param, "invalid_value") from None

    def solve(self, jobs: Sequence[Job]) -> list[RoutedResult | BaseException]:
        """Solve a batch: one estimate call and one search per seed among the jobs."""
        out: list[Any] = [None] * len(jobs)
        for seed in sorted({j.seed for j in jobs}):
            idx = [i for i, j in enumerate(jobs) if j.seed == seed]
            routed = [i for i in idx if jobs[i].forced is None]
            estimates: dict[int, Any] = {}
            if routed:
                for i, e in zip(routed, self.router.estimate_batch([jobs[i].question for i in routed], seed=seed)):
                    estimates[i] = e
            decided, decisions = [], []
            for i in idx:
                job = jobs[i]
                if job.forced is not None:
                    decisions.append(job.forced)
                else:
                    e = estimates[i]
                    budget = job.budget if job.budget is not None else self._budget_for(e.bin)
                    try:
                        decisions.append(self.router.decide(e, budget))
                    except ValueError as exc:  # e.g. the prompt's bin has no cell at this budget: this job only
                        out[i] = bad_request(f"cannot route this prompt: {exc}", "tts.budget", "no_cell")
                        continue
                decided.append(i)
            if decided:
                results = self.router.solve_decided([jobs[i].question for i in decided], decisions,
                                                    [estimates.get(i) for i in decided], seed=seed)
                for i, r in zip(decided, results):
                    out[i] = r
        return out

    def _budget_for(self, bin_: int | None) -> int:
        if self.bin_budgets is None:
            return int(self.default_budget)
        return self.bin_budgets.get(bin_, min(self.bin_budgets.values())) if bin_ is not None else min(self.bin_budgets.values())
