"""What a routing decision says and what a routed solve returns."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..search.base import StrategyConfig
from ..records import Candidate, Cost, SearchResult

FORCED_SOURCE = "forced by the caller: routing bypassed, no expectation measured"


@dataclass(frozen=True)
class Decision:
    """Where a prompt was routed and what the table expects of it.

    ``budget`` is the table cell used (the requested budget, or the nearest lower one when the
    table has no cell for it: ``fallback`` then says so), in scored samples' compute.
    ``expected_accuracy`` is the cell's held-out accuracy with its confidence interval;
    ``expected_flops`` its mean FLOPs (all NaN for a published prior, which has no
    measurements, and for a forced strategy; ``to_dict`` writes them as null). ``source`` says
    which table (and how the catalog matched it) or which published rule decided. ``bin`` is
    None when no estimate was needed (every bin routes alike, or the strategy was forced);
    ``pass1`` is the estimated pass@1 when the estimator gave one. ``forced``: the caller named
    the strategy (:meth:`Router.force`), so no table cell decided it.
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
    forced: bool = False

    @property
    def confidence(self) -> float | None:
        """The estimator's probability of the chosen bin (None without a bin)."""
        return None if self.bin is None else float(self.bin_proba.get(self.bin, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "bin": self.bin, "bin_proba": {str(k): v for k, v in self.bin_proba.items()},
            "strategy": self.strategy.name, **self.strategy.params(), "budget": self.budget,
            "requested_budget": self.requested_budget, "expected_accuracy": _finite(self.expected_accuracy),
            "ci_low": _finite(self.ci[0]), "ci_high": _finite(self.ci[1]), "expected_flops": _finite(self.expected_flops),
            "estimator": self.estimator, "fallback": self.fallback, "source": self.source, "pass1": self.pass1,
            "forced": self.forced,
        }

    def expectation(self) -> str:
        """'expected accuracy 0.80 [0.70, 0.90], 1.2e+11 FLOPs', or why there is none."""
        if self.forced:
            return "no expected accuracy (the strategy was forced, not chosen from a table cell)"
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
