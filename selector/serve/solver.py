"""What the gateway asks of the router: budgets, forced strategies, and one batch's solve.

``solve(jobs)`` runs in the batcher's worker thread. Jobs with the same seed share one
estimate call and one search (:meth:`Router.solve_decided`), whatever their budgets and
whether their strategy was routed or forced; a different seed is a separate search.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..router import Decision, RoutedResult, Router
from ..search.base import STRATEGIES, make_strategy
from .batching import Job
from .errors import bad_request

FORCED_SOURCE = "forced by the request (tts.strategy / X-TTS-Strategy): routing bypassed, no expectation measured"


class Solver:
    """Validates per-request routing options and solves batches with one :class:`Router`.

    ``budget``: the default budget N (N scored samples' compute); ``average_budget``: instead,
    each difficulty bin gets the budget the table's allocation gives it over the profiled
    prompts' bin mix (so traffic with the table's difficulty mix averages at most that much
    compute, and a request's budget depends on its bin only, never on its batch). Without either, the table's largest budget (8 for a published prior).
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

    def forced(self, name: str, budget: int | None, param: str = "tts.strategy") -> Any:
        """The strategy ``name`` at ``budget`` with the table's tree settings (beam width 4,
        lowered to the budget; n rounded down to a multiple of it)."""
        if name not in STRATEGIES:
            raise bad_request(f"unknown strategy {name!r}: use one of {sorted(STRATEGIES)}", param, "unknown_strategy")
        n = budget if budget is not None else (self.default_budget or self.max_budget)
        params: dict[str, Any] = {"n": n}
        takes = set(STRATEGIES[name].__dataclass_fields__)
        if "m" in takes:
            m = min(4, n)
            # The table's tree settings this strategy takes (adaptive-consistency keys are not beam search's).
            params.update({k: v for k, v in self.router._tree.items() if k in takes}, m=m, n=n - n % m)
        return make_strategy(name, **params)

    def solve(self, jobs: Sequence[Job]) -> list[RoutedResult | BaseException]:
        """Solve a batch: one estimate call and one search per seed among the jobs."""
        out: list[Any] = [None] * len(jobs)
        for seed in sorted({j.seed for j in jobs}):
            idx = [i for i, j in enumerate(jobs) if j.seed == seed]
            routed = [i for i in idx if jobs[i].strategy is None]
            estimates: dict[int, Any] = {}
            if routed:
                for i, e in zip(routed, self.router.estimate_batch([jobs[i].question for i in routed], seed=seed)):
                    estimates[i] = e
            decided, decisions = [], []
            for i in idx:
                job = jobs[i]
                if job.strategy is not None:
                    s = job.strategy
                    decisions.append(Decision(None, {}, s, s.n, job.budget or s.n, math.nan, (math.nan, math.nan),
                                              math.nan, "none (strategy forced)", None, FORCED_SOURCE))
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
