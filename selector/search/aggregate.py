"""Step-score aggregations and the answer-selection (voting) rules, written once.

Aggregations turn a solution's per-step PRM scores into one number:

- ``last``: the score of the last step (the PRM's estimate for the whole solution);
- ``min``: the weakest step;
- ``prod``: the product of step scores (probability that every step is right, if the PRM's
  scores were independent probabilities);
- ``mean``: the arithmetic mean.

Answer rules pick the final answer from candidates that carry an ``answer_key``:

- ``majority``: the most frequent key (self-consistency);
- ``best``: the key of the candidate with the highest aggregated score (best-of-N);
- ``weighted``: the key with the largest sum of aggregated scores (weighted majority).

Candidates without an answer key take no part. Ties go to the key that appears first in
candidate order, so results are deterministic. The profiler's replay of pooled samples and
every strategy call :func:`select_answer`, so offline tables and online search agree.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from ..records import Candidate


def _last(scores: Sequence[float]) -> float:
    return scores[-1]


def _prod(scores: Sequence[float]) -> float:
    return math.prod(scores)


def _mean(scores: Sequence[float]) -> float:
    return math.fsum(scores) / len(scores)


AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": _last,
    "min": min,
    "prod": _prod,
    "mean": _mean,
}


def _check_name(name: str, registry: dict, what: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    return name


def check_aggregation(name: str) -> str:
    return _check_name(name, AGGREGATIONS, "aggregation")


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """Aggregate one solution's step scores (each in [0, 1]) into one score in [0, 1]."""
    if len(scores) == 0:  # also accepts numpy arrays (rollouts read back from Parquet)
        raise ValueError("cannot aggregate an empty list of step scores (was the PRM skipped?)")
    try:
        return AGGREGATIONS[how](scores)
    except KeyError:
        check_aggregation(how)
        raise


def _first_max(totals: dict[str, float]) -> str:
    # dicts keep insertion order = first appearance, and max() returns the first maximum.
    return max(totals, key=totals.__getitem__)


def vote_majority(keys: Iterable[str], weights: Iterable[float] | None = None) -> str:
    """Key with the largest (weighted) count; ties to the first seen."""
    totals: dict[str, float] = {}
    if weights is None:
        for k in keys:
            totals[k] = totals.get(k, 0.0) + 1.0
    else:
        for k, w in zip(keys, weights):
            totals[k] = totals.get(k, 0.0) + w
    if not totals:
        raise ValueError("no answers to vote on")
    return _first_max(totals)


def _rule_majority(keys: list[str], scores: list[float] | None) -> str:
    return vote_majority(keys)


def _rule_best(keys: list[str], scores: list[float] | None) -> str:
    if scores is None:
        raise ValueError("answer rule 'best' needs PRM scores")
    return keys[max(range(len(keys)), key=scores.__getitem__)]


def _rule_weighted(keys: list[str], scores: list[float] | None) -> str:
    if scores is None:
        raise ValueError("answer rule 'weighted' needs PRM scores")
    return vote_majority(keys, scores)


ANSWER_RULES: dict[str, Callable[[list[str], list[float] | None], str]] = {
    "majority": _rule_majority,
    "best": _rule_best,
    "weighted": _rule_weighted,
}


def check_answer_rule(name: str) -> str:
    return _check_name(name, ANSWER_RULES, "answer rule")


def select_answer(
    candidates: Sequence[Candidate], rule: str, aggregation: str = "last"
) -> tuple[str | None, str | None]:
    """Pick ``(answer, answer_key)`` from candidates with a rule (see module docstring).

    Returns ``(None, None)`` when no candidate has an answer. The answer text returned is that
    of the first candidate carrying the winning key.
    """
    rule_fn = ANSWER_RULES[check_answer_rule(rule)]
    answered = [c for c in candidates if c.answer_key is not None]
    if not answered:
        return None, None
    keys = [c.answer_key for c in answered]
    scores = None if rule == "majority" else [aggregate(c.step_scores, aggregation) for c in answered]
    key = rule_fn(keys, scores)
    answer = next(c.answer for c in answered if c.answer_key == key)
    return answer, key
