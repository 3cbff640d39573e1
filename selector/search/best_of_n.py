"""The best-of-N family: N whole solutions sampled independently in one round.

- ``majority``: self-consistency, the most frequent answer (no PRM call);
- ``best_of_n``: the answer of the solution with the highest aggregated PRM score;
- ``weighted_best_of_n``: the answer with the largest sum of aggregated scores.

Budget ``n`` = ``n`` generations, each a whole solution. Pilot samples handed over in the
search context (``SearchContext.pilot``) count inside that budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .aggregate import check_aggregation
from .base import ROOT, Expansion, SearchContext, SearchGenerator, StrategyConfig, parameter

AGGREGATION_HELP = "step-score aggregation: last | min | prod | mean"


@dataclass(frozen=True)
class _SampleN(StrategyConfig):
    # Pilot samples (e.g. from a difficulty estimator) are i.i.d. whole solutions from the
    # same policy: they count as the first samples of the budget, and only n - k more are drawn.
    reuses_pilot: ClassVar[bool] = True
    kind: ClassVar[str] = "pooled"  # scored from the pool's samples, by the answer rule

    def search(self, ctx: SearchContext) -> SearchGenerator:
        reused = list(ctx.pilot[: self.n])
        need = self.n - len(reused)
        if need == 0:
            return reused
        seed = ctx.seed_for("samples") if not reused else ctx.seed_for("samples-after-pilot", len(reused))
        children = yield [Expansion(ROOT, need, seed, to_completion=True, score=self.needs_prm)]
        return reused + children[0]

    @property
    def needs_prm(self) -> bool:
        return self.answer_rule != "majority"


@dataclass(frozen=True)
class Majority(_SampleN):
    """Self-consistency over ``n`` samples."""

    name: ClassVar[str] = "majority"
    label: ClassVar[str] = "majority vote"
    answer_rule: ClassVar[str] = "majority"


@dataclass(frozen=True)
class BestOfN(_SampleN):
    """Highest aggregated PRM score among ``n`` samples."""

    name: ClassVar[str] = "best_of_n"
    label: ClassVar[str] = "best-of-N"
    answer_rule: ClassVar[str] = "best"
    aggregation: str = parameter("last", AGGREGATION_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_aggregation(self.aggregation)


@dataclass(frozen=True)
class WeightedBestOfN(BestOfN):
    """Sum of aggregated PRM scores per equivalent answer among ``n`` samples."""

    name: ClassVar[str] = "weighted_best_of_n"
    label: ClassVar[str] = "weighted best-of-N"
    answer_rule: ClassVar[str] = "weighted"
