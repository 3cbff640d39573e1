"""Step-level beam search with budget ``n`` and beam width ``m`` (Snell et al. 2024).

Round 1 samples ``n`` first steps. Every later round keeps the top ``n / m`` unfinished
partial solutions by aggregated PRM score and expands each with ``m`` continuations, so no
round spends more than ``n`` generations. A path that reaches EOS or a final answer leaves
the frontier as a finished candidate. The search stops after ``max_steps`` rounds, when
``n`` candidates are finished, or when nothing is left to expand. The last allowed round
(round ``max_steps``) samples each expansion to the end of the solution (EOS, a final answer
or ``max_tokens``), as search-and-learn does, so no path that was paid for is dropped
unfinished: every generation of that round yields a candidate. At most ``n`` candidates
are returned (the best ``n`` finished ones by aggregated score), never more: a popular
implementation returns every finished beam and can exceed its budget's candidate count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .aggregate import check_aggregation, check_answer_rule
from .base import (DEFAULT_MAX_STEPS, DEFAULT_TREE_ANSWER_RULE, DEFAULT_WIDTH, ROOT, Expansion, Node, SearchContext,
                   SearchGenerator, StrategyConfig, parameter, top_k)
from .best_of_n import AGGREGATION_HELP

MAX_STEPS_HELP = "max search rounds"
ANSWER_RULE_HELP = "final-answer rule: weighted | best | majority"


@dataclass(frozen=True)
class _TreeSearch(StrategyConfig):
    m: int = parameter(DEFAULT_WIDTH, "beam width M; N must be a multiple")
    aggregation: str = parameter("last", AGGREGATION_HELP)
    max_steps: int = parameter(DEFAULT_MAX_STEPS, MAX_STEPS_HELP)
    # a field here, a class constant elsewhere
    answer_rule: str = parameter(DEFAULT_TREE_ANSWER_RULE, ANSWER_RULE_HELP)  # type: ignore[misc]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"{self.name}: beam width m must be a positive integer, got {self.m!r}")
        if self.n % self.m:
            lower, upper = self.n - self.n % self.m, self.n + self.m - self.n % self.m
            raise ValueError(
                f"{self.name}: budget n={self.n} must be a multiple of beam width m={self.m} "
                f"(n/m paths each expanded m ways); try n={lower or upper} or n={upper}, or m dividing {self.n}"
            )
        if self.max_steps < 1:
            raise ValueError(f"{self.name}: max_steps must be >= 1, got {self.max_steps}")
        check_aggregation(self.aggregation)
        check_answer_rule(self.answer_rule)


@dataclass(frozen=True)
class BeamSearch(_TreeSearch):
    """Beam search: keep the top ``n/m`` paths per round, expand each ``m`` ways."""

    name: ClassVar[str] = "beam_search"
    label: ClassVar[str] = "beam search"

    def search(self, ctx: SearchContext) -> SearchGenerator:
        keep = self.n // self.m
        finished: list[Node] = []
        children = (yield [Expansion(ROOT, self.n, ctx.seed_for("beam", 0, 0), to_completion=self.max_steps == 1)])[0]
        rounds = 1
        while True:
            finished.extend(c for c in children if c.finished)
            live = [c for c in children if not c.finished]
            if rounds >= self.max_steps:
                # The last round completed every path; one cut by the token cap is still a candidate.
                finished.extend(live)
                break
            if len(finished) >= self.n or not live:
                break
            beams = top_k(live, keep, self.aggregation)
            last = rounds + 1 >= self.max_steps
            expanded = yield [
                Expansion(b, self.m, ctx.seed_for("beam", rounds, i), to_completion=last) for i, b in enumerate(beams)
            ]
            children = [c for group in expanded for c in group]
            rounds += 1
        return top_k(finished, self.n, self.aggregation)
