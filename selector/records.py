"""Records shared by every part of the package.

All records are frozen dataclasses. Costs add with ``+`` so a ledger is a sum.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Cost:
    """What a solve (or an estimate, or a whole profile) spent.

    Units: ``generations`` counts sampled continuations (one step, or one whole solution for
    the best-of-N family); token fields count tokens; FLOPs use the usual inference
    approximation ``2 x parameters x tokens`` (policy, PRM and auxiliary models such as a
    difficulty estimator's embedder, separately) over the tokens actually *computed*;
    ``seconds`` is wall-clock time.

    ``policy_prompt_tokens`` counts every prompt (prefix) token the policy read, once per
    request; ``policy_cached_tokens`` the part of them an engine served from its prefix cache
    (vLLM's ``num_cached_tokens``, the transformers backend's KV reuse, a server's
    ``usage.prompt_tokens_details.cached_tokens``), which costs no prefill FLOPs.
    ``cache_unreported_requests`` counts requests whose engine did not say what it served
    from a cache: their prompt tokens are all counted as computed (an upper bound).
    """

    generations: int = 0
    policy_prompt_tokens: int = 0
    policy_cached_tokens: int = 0
    cache_unreported_requests: int = 0
    policy_generated_tokens: int = 0
    prm_tokens: int = 0
    policy_flops: float = 0.0
    prm_flops: float = 0.0
    other_flops: float = 0.0  # auxiliary models, e.g. a difficulty estimator's embedder
    seconds: float = 0.0

    @property
    def policy_tokens(self) -> int:
        """Prompt plus generated tokens the policy processed (cached prompt tokens included)."""
        return self.policy_prompt_tokens + self.policy_generated_tokens

    @property
    def policy_computed_tokens(self) -> int:
        """Tokens the policy actually computed: prompt tokens not served from a cache, plus generated."""
        return self.policy_prompt_tokens - self.policy_cached_tokens + self.policy_generated_tokens

    @property
    def flops(self) -> float:
        """Total inference FLOPs: policy, PRM and auxiliary models."""
        return self.policy_flops + self.prm_flops + self.other_flops

    def __add__(self, other: "Cost") -> "Cost":
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __radd__(self, other: Any) -> "Cost":
        # Lets ``sum(costs)`` work with its integer start value.
        if other == 0:
            return self
        return self.__add__(other)

    def to_dict(self) -> dict[str, float]:
        """Flat JSON-ready view, with the derived totals ``policy_tokens`` and ``flops``."""
        out: dict[str, float] = asdict(self)
        out["policy_tokens"] = self.policy_tokens
        out["policy_computed_tokens"] = self.policy_computed_tokens
        out["flops"] = self.flops
        return out


@dataclass(frozen=True)
class Candidate:
    """One complete (or abandoned) solution that a search returned.

    ``steps`` are the generated steps, each ending with the step delimiter unless it ended the
    solution; ``step_scores`` holds one PRM score in [0, 1] per step (empty when the strategy
    did not ask for scores, e.g. majority vote). ``answer`` is the extracted final answer text,
    ``answer_key`` its canonical key for voting (``None`` when no answer could be extracted).
    ``stop_reason`` is ``"eos"``, ``"answer"`` (a final answer appeared), ``"length"`` (token
    cap) or ``"max_steps"``. ``tokens`` counts the generated tokens of the whole path,
    ``prm_tokens`` the tokens the PRM read to score it (its last scoring).
    """

    steps: tuple[str, ...]
    step_scores: tuple[float, ...]
    answer: str | None
    answer_key: str | None
    finished: bool
    stop_reason: str
    tokens: int
    prm_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "steps": list(self.steps),
            "step_scores": list(self.step_scores),
            "answer": self.answer,
            "answer_key": self.answer_key,
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "tokens": self.tokens,
            "prm_tokens": self.prm_tokens,
        }


@dataclass(frozen=True)
class SearchResult:
    """The outcome of one strategy on one question.

    ``rounds`` lists the number of generations spent in each search round (best-of-N family:
    one round of N; beam search and DVTS: one round per step), which pins budget semantics.
    """

    question: str
    answer: str | None
    answer_key: str | None
    strategy: Any  # a StrategyConfig; typed loosely to keep this module import-light
    candidates: tuple[Candidate, ...]
    cost: Cost
    rounds: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        cfg = self.strategy
        return {
            "question": self.question,
            "answer": self.answer,
            "answer_key": self.answer_key,
            "strategy": cfg.name,
            **cfg.params(),
            "rounds": list(self.rounds),
            "cost": self.cost.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
        }
