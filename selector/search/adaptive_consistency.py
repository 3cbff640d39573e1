"""Adaptive (early-stopping) self-consistency with a budget cap ``n``.

Whole solutions are sampled ``window`` at a time, one batched round per window, until a stop
rule says the vote is settled or ``n`` samples are spent (the last window is cut to fit).
Easy prompts stop after one window; the budget goes where the vote is split. ``n`` is a cap:
the ledger (``Cost.generations``) records what was actually spent.

Stop rules, checked after every window that leaves budget:

- ``unanimous`` (ESC, Li et al. 2024, arXiv 2401.10480): stop when every sample of the last
  window has an answer and all answers are equivalent.
- ``beta`` (Adaptive-Consistency, Aggarwal et al. 2023, arXiv 2305.11860, its Beta criterion):
  with ``v1`` and ``v2`` the counts of the leading and the second answer among all samples so
  far (0 when absent), the leader's share ``p`` of the two has posterior
  ``Beta(v1 + 1, v2 + 1)`` under a uniform prior; stop when ``P(p > 1/2) >= threshold``.
  For integer parameters that is exactly a binomial tail,
  ``P(p > 1/2) = sum_{j=0}^{v1} C(v1 + v2 + 1, j) / 2^(v1 + v2 + 1)``
  (e.g. 4 agreeing samples and no dissent: 31/32 = 0.969 >= 0.95, the paper's threshold).
- ``confidence`` (the ``adaptive_confidence`` strategy): the same criterion on
  confidence-weighted counts, each sample counting its aggregated score (with the
  ``self-confidence`` verifier, the policy's confidence in it) instead of 1, so confident
  agreement stops sooner and hesitant agreement later.

The rules count samples (the statistical model is over i.i.d. samples); the final answer is
voted by ``vote``: ``majority`` (plain self-consistency, no PRM call) or ``weighted`` (sum of
aggregated PRM scores per answer). Answers are grouped by the same canonical keys as
everywhere else (``grading.extract_answer`` and ``grading.group_keys``, as the runner does).
Window ``w``'s seed is ``ctx.seed_for("adaptive", w)``: its samples are the same whatever
happened before, which is what lets the profiler replay the rule on pooled samples.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..grading import extract_answer, group_keys
from .aggregate import aggregate, check_aggregation
from .base import ROOT, Expansion, Node, SearchContext, SearchGenerator, StrategyConfig, parameter
from .best_of_n import AGGREGATION_HELP

STOP_RULES = ("unanimous", "beta", "confidence")
VOTES = ("majority", "weighted")


def beta_confidence(v1: int, v2: int) -> float:
    """Posterior probability that the leader (``v1`` votes) beats the runner-up (``v2``):
    ``P(p > 1/2)`` for ``p ~ Beta(v1 + 1, v2 + 1)``, computed exactly as a binomial tail."""
    total = v1 + v2 + 1
    return math.fsum(math.comb(total, j) for j in range(v1 + 1)) / 2.0**total


def weighted_beta_confidence(w1: float, w2: float) -> float:
    """``P(p > 1/2)`` for ``p ~ Beta(w1 + 1, w2 + 1)`` with real-valued (confidence-weighted)
    counts; equals :func:`beta_confidence` at integers."""
    from scipy.special import betainc

    return float(1.0 - betainc(w1 + 1.0, w2 + 1.0, 0.5))


def should_stop(keys: Sequence[str | None], window: int, rule: str, threshold: float,
                weights: Sequence[float] | None = None) -> bool:
    """Whether the vote over answer ``keys`` (all samples so far, in sample order; None = no
    answer) is settled under ``rule``; ``window`` = how many of them the last window drew;
    ``weights``: each sample's aggregated score (its confidence), for ``rule: confidence``."""
    if rule == "unanimous":
        last = keys[-window:]
        return bool(last) and last[0] is not None and all(k == last[0] for k in last)
    if rule == "beta":
        top = Counter(k for k in keys if k is not None).most_common(2)
        v1 = top[0][1] if top else 0
        v2 = top[1][1] if len(top) > 1 else 0
        return beta_confidence(v1, v2) >= threshold
    if rule == "confidence":
        if weights is None or len(weights) != len(keys):
            raise ValueError("the confidence stop rule needs one score per sample")
        mass: dict[str, float] = {}
        for k, w in zip(keys, weights):
            if k is not None:
                mass[k] = mass.get(k, 0.0) + float(w)
        top = sorted(mass.values(), reverse=True)[:2] + [0.0, 0.0]
        return weighted_beta_confidence(top[0], top[1]) >= threshold
    raise ValueError(f"unknown stop rule {rule!r}; choose one of {list(STOP_RULES)}")


def answer_keys(nodes: Sequence[Node]) -> list[str | None]:
    """Canonical answer keys of whole solutions, grouped as the runner groups candidates."""
    return group_keys([extract_answer("".join(n.steps)) for n in nodes])


@dataclass(frozen=True)
class AdaptiveConsistency(StrategyConfig):
    """Self-consistency sampled ``window`` at a time, stopped early by ``rule``; ``n`` caps it."""

    name: ClassVar[str] = "adaptive_consistency"
    kind: ClassVar[str] = "replayed"  # whole solutions: replayed on the pool's samples in order
    label: ClassVar[str] = "adaptive consistency"
    window: int = parameter(4, "adaptive_consistency: samples per window (default 4)")
    rule: str = parameter("beta", "adaptive_consistency stop rule: beta (default) | unanimous | confidence")
    threshold: float = parameter(0.95, "adaptive_consistency: beta rule's posterior threshold (default 0.95)")
    vote: str = parameter("majority", "adaptive_consistency final vote: majority (default) | weighted")
    aggregation: str = parameter("last", AGGREGATION_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"{self.name}: window must be a positive integer, got {self.window!r}")
        if self.rule not in STOP_RULES:
            raise ValueError(f"{self.name}: rule must be one of {list(STOP_RULES)}, got {self.rule!r}")
        if not isinstance(self.threshold, (int, float)) or not 0.5 < self.threshold < 1:
            raise ValueError(f"{self.name}: threshold is a probability in (0.5, 1), got {self.threshold!r}")
        if self.vote not in VOTES:
            raise ValueError(f"{self.name}: vote must be one of {list(VOTES)}, got {self.vote!r}")
        check_aggregation(self.aggregation)

    @property  # type: ignore[override]  # a class constant elsewhere, decided by ``vote`` here
    def answer_rule(self) -> str:
        return "majority" if self.vote == "majority" else "weighted"

    @property
    def m(self) -> int | None:
        # In tables the window takes the m column (the secondary size, as beam width does).
        return self.window

    @classmethod
    def from_table_row(cls, n, m, aggregation, settings):
        # Table rows hold the window in m and the vote in aggregation (None = plain majority);
        # the stop rule is the profile's (grid.adaptive_rule / adaptive_threshold).
        rule = {k: settings[f"adaptive_{k}"] for k in ("rule", "threshold") if f"adaptive_{k}" in settings}
        vote = {"vote": "majority"} if aggregation is None else {"vote": "weighted", "aggregation": aggregation}
        return cls(n=n, **({} if m is None else {"window": m}), **rule, **vote)

    def search(self, ctx: SearchContext) -> SearchGenerator:
        nodes: list[Node] = []
        w = 0
        score = self.vote == "weighted" or self.rule == "confidence"
        while len(nodes) < self.n:
            k = min(self.window, self.n - len(nodes))
            nodes.extend((yield [Expansion(ROOT, k, ctx.seed_for("adaptive", w), to_completion=True, score=score)])[0])
            w += 1
            weights = [aggregate(n.scores, self.aggregation) if n.scores else 0.0 for n in nodes] if score else None
            if len(nodes) < self.n and should_stop(answer_keys(nodes), k, self.rule, self.threshold, weights):
                break
        return nodes


@dataclass(frozen=True)
class AdaptiveConfidence(AdaptiveConsistency):
    """Adaptive consistency that stops on confidence-weighted agreement (rule ``confidence``)
    and votes by confidence; its own strategy so a table can hold it beside the counting rule
    and let selection choose."""

    name: ClassVar[str] = "adaptive_confidence"
    label: ClassVar[str] = "adaptive consistency stopping on confidence"
    rule: str = parameter("confidence", "adaptive_confidence: its stop rule (confidence only)")
    vote: str = parameter("weighted", "adaptive_confidence: its vote (weighted only)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rule != "confidence" or self.vote != "weighted":
            raise ValueError(f"{self.name} stops on confidence and votes by it; use adaptive_consistency for other rules")

    @classmethod
    def from_table_row(cls, n, m, aggregation, settings):
        # Its rule is its own; only the threshold is the profile's.
        threshold = {"threshold": settings["adaptive_threshold"]} if "adaptive_threshold" in settings else {}
        return cls(n=n, **({} if m is None else {"window": m}), **threshold,
                   **({} if aggregation is None else {"aggregation": aggregation}))
