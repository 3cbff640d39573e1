"""Particle filtering over reasoning steps with budget ``n`` (Puri et al. 2025, arXiv 2502.01618).

The search keeps a population of ``n`` particles (partial solutions). Every round each live
particle is extended by one step; each child gets a likelihood weight from its PRM score, and
the live population is resampled *with replacement* in proportion to those weights, so a
strong path is duplicated (its copies then sample different next steps) and a weak one dies
out, instead of being cut off deterministically as in beam search. A child that reaches EOS or
a final answer leaves the frontier as a finished candidate and keeps its slot: the live
population is ``n`` minus the candidates, so no round spends more than ``n`` generations and
at most ``n`` candidates are returned. On the last allowed round (``max_steps``) the live
particles are sampled to the end (``to_completion``), so no paid-for path is wasted.

Likelihood (the paper's choice, as in its reference implementation, its_hub's
``ParticleGibbs._propagate`` / ``infer`` in Red-Hat-AI-Innovation-Team/its_hub): a particle's
log-weight is the logit of the PRM's score of the whole partial solution, and the resampling
probabilities are the softmax of the log-weights, i.e. ``w ∝ (r / (1 - r)) ** (1 / T)``.
Here ``r`` is ``aggregate(scores, aggregation)`` (``last`` = the PRM's score of the path so
far, the paper's choice; ``min``/``prod``/``mean`` are offered too) clipped into
``[1e-7, 1 - 1e-7]``, and ``T = temperature`` (1 = the paper's; larger flattens the weights
towards uniform, smaller sharpens them towards beam search's argmax).

Resampling is ``multinomial`` (``n`` i.i.d. draws) or ``systematic`` (one uniform offset,
``n`` evenly spaced points: lower variance, each particle copied ``floor(n w)`` or
``ceil(n w)`` times). Its random numbers come from ``ctx.seed_for`` of the round, so a
question's search is the same alone or in any batch.
"""
from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import ClassVar, Sequence

from .aggregate import AGGREGATIONS, check_aggregation, check_answer_rule
from .base import (DEFAULT_MAX_STEPS, DEFAULT_TREE_ANSWER_RULE, ROOT, Expansion, Node, SearchContext, SearchGenerator,
                   StrategyConfig, parameter)
from .beam import ANSWER_RULE_HELP, MAX_STEPS_HELP
from .best_of_n import AGGREGATION_HELP

RESAMPLING = ("multinomial", "systematic")
_CLIP = 1e-7
_STEP = 0x9E3779B97F4A7C15  # odd: i -> i * _STEP is a bijection modulo 2^63
_MASK63 = (1 << 63) - 1


def likelihood_weights(scores: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Normalised resampling weights of particles with PRM scores ``scores`` (each in [0, 1]):
    ``softmax(logit(clip(r)) / temperature)``."""
    logits = []
    for r in scores:
        r = min(max(r, _CLIP), 1.0 - _CLIP)
        logits.append(math.log(r / (1.0 - r)) / temperature)
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


def resample(weights: Sequence[float], k: int, scheme: str, seed: int) -> list[int]:
    """``k`` indices drawn with replacement in proportion to ``weights`` (sorted ascending)."""
    rng = random.Random(seed)
    cum = list(accumulate(weights))
    total = cum[-1]
    if scheme == "multinomial":
        points = sorted(rng.random() * total for _ in range(k))
    elif scheme == "systematic":
        u = rng.random() / k
        points = [(u + j / k) * total for j in range(k)]
    else:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose one of {list(RESAMPLING)}")
    last = len(cum) - 1
    return [min(bisect_right(cum, p), last) for p in points]


@dataclass(frozen=True)
class ParticleFiltering(StrategyConfig):
    """Particle filtering: ``n`` particles, one step per round, PRM-likelihood resampling."""

    name: ClassVar[str] = "particle_filtering"
    label: ClassVar[str] = "particle filtering"
    temperature: float = parameter(1.0, "particle_filtering: temperature of the PRM likelihood (default 1)",
                                   flag="pf-temperature")
    resampling: str = parameter("multinomial", "particle_filtering: multinomial (default) | systematic")
    aggregation: str = parameter("last", AGGREGATION_HELP)
    max_steps: int = parameter(DEFAULT_MAX_STEPS, MAX_STEPS_HELP)
    # a field here, a class constant elsewhere
    answer_rule: str = parameter(DEFAULT_TREE_ANSWER_RULE, ANSWER_RULE_HELP)  # type: ignore[misc]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ValueError(f"{self.name}: temperature must be a positive number, got {self.temperature!r}")
        if self.resampling not in RESAMPLING:
            raise ValueError(f"{self.name}: resampling must be one of {list(RESAMPLING)}, got {self.resampling!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"{self.name}: max_steps must be >= 1, got {self.max_steps!r}")
        check_aggregation(self.aggregation)
        check_answer_rule(self.answer_rule)

    def search(self, ctx: SearchContext) -> SearchGenerator:
        agg = AGGREGATIONS[self.aggregation]
        finished: list[Node] = []
        last = self.max_steps == 1
        children = (yield [Expansion(ROOT, self.n, ctx.seed_for("pf", 0, 0), to_completion=last)])[0]
        rounds = 1
        while True:
            finished.extend(c for c in children if c.finished)
            live = [c for c in children if not c.finished]
            slots = self.n - len(finished)
            if not live or slots <= 0 or rounds >= self.max_steps:
                if last:  # sampled to the end but cut by the length limit: still paid-for candidates
                    finished.extend(live)
                break
            weights = likelihood_weights([agg(c.scores) if c.scores else 0.0 for c in live], self.temperature)
            round_seed = ctx.seed_for("pf", rounds)
            picks = resample(weights, slots, self.resampling, round_seed)
            # A particle drawn k times is expanded k ways in one request (k different next steps).
            counts: dict[int, int] = {}
            for i in picks:
                counts[i] = counts.get(i, 0) + 1
            last = rounds + 1 >= self.max_steps
            # Child i's seed: an odd-multiplier step from the round's seed, distinct per i (mod 2^63)
            # and cheaper than hashing each (particle filtering has up to n parents per round).
            expanded = yield [
                Expansion(live[i], k, (round_seed + (i + 1) * _STEP) & _MASK63, to_completion=last)
                for i, k in counts.items()
            ]
            children = [c for group in expanded for c in group]
            rounds += 1
        return finished
