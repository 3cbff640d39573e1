"""The best-of-N family: N whole solutions sampled independently in one round.

- ``majority``: self-consistency, the most frequent answer (no PRM call);
- ``best_of_n``: the answer of the solution with the highest aggregated PRM score;
- ``weighted_best_of_n``: the answer with the largest sum of aggregated scores;
- ``filtered_vote``: the weighted vote among the ``filter_keep`` share of the samples with the highest
  aggregated score (confidence-filtered voting, DeepConf's offline filter; with the
  ``self-confidence`` verifier the scores are the policy's own confidence).

Budget ``n`` = ``n`` generations, each a whole solution. Pilot samples handed over in the
search context (``SearchContext.pilot``) count inside that budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

from .aggregate import check_aggregation
from .base import ROOT, Expansion, Node, SearchContext, SearchGenerator, StrategyConfig, parameter, top_k

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


def kept_count(n: int, keep: float) -> int:
    """How many of ``n`` samples a ``keep`` share keeps: rounded up, at least one."""
    return max(1, math.ceil(keep * n - 1e-9))


def keep_top(nodes: Sequence[Node], keep: float, aggregation: str) -> list[Node]:
    """The ``keep`` share of ``nodes`` with the highest aggregated score (ties: the earlier
    sample), in sample order (so a vote among them breaks ties as every vote does)."""
    chosen = {id(node) for node in top_k(list(nodes), kept_count(len(nodes), keep), aggregation)}
    return [node for node in nodes if id(node) in chosen]


@dataclass(frozen=True)
class FilteredVote(BestOfN):
    """Weighted vote among the ``filter_keep`` share (rounded up) of ``n`` samples with the highest
    aggregated score; 1 is weighted best-of-N, a share of one sample best-of-N."""

    name: ClassVar[str] = "filtered_vote"
    label: ClassVar[str] = "confidence-filtered vote"
    answer_rule: ClassVar[str] = "weighted"
    # Named as the profile grid's key, so a table's share reaches its searches as it was profiled.
    filter_keep: float = parameter(0.5, "filtered_vote: share of the samples (highest score first) voted")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.filter_keep, bool) or not isinstance(self.filter_keep, (int, float)) \
                or not 0 < self.filter_keep <= 1:
            raise ValueError(f"{self.name}: filter_keep is the share of samples voted, in (0, 1], got {self.filter_keep!r}")

    def search(self, ctx: SearchContext) -> SearchGenerator:
        nodes = yield from super().search(ctx)
        return keep_top(nodes, self.filter_keep, self.aggregation)
