"""The difficulty-estimator contract: what every estimator is given and what it returns.

One protocol for every estimator (prompt-only, pilot, cascade, a user's own):
``estimate_batch(prompts, ctx)`` with an :class:`EstimateContext` holding everything beyond
the prompts an estimator may use, as :class:`~selector.search.base.SearchContext` does for
strategies. A prompt-only estimator reads ``policy_params``; one that samples (a pilot) asks
the context for the engines, which are loaded only then, so routing with a prompt estimator
loads no model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from ..records import Candidate, Cost

if TYPE_CHECKING:  # annotations only: the contract imports no engine code
    from ..backends.base import PRM, Policy, SamplingParams

# (policy, PRM, sampling parameters or None for the policy's defaults), loaded.
Engines = tuple["Policy", "PRM | None", "SamplingParams | None"]


@dataclass(frozen=True)
class EstimateContext:
    """What an estimate may use besides the prompts.

    ``policy_params``: the policy's parameter count (parameters), for the FLOPs of features the
    policy itself computes (``hidden``); ``seed``: the run seed (a pilot derives its samples'
    seeds from it); ``engines``: a callable returning the loaded :data:`Engines`, called only
    by estimators that sample."""

    policy_params: int = 0
    seed: int = 0
    engines: Callable[[], Engines] | None = None

    @classmethod
    def with_engines(cls, policy: "Policy", prm: "PRM | None", *, sampling: "SamplingParams | None" = None,
                     seed: int = 0, policy_params: int | None = None) -> "EstimateContext":
        """A context over engines already built (``policy_params`` defaults to the policy's count)."""
        params = policy.num_parameters if policy_params is None else policy_params
        return cls(int(params or 0), seed, lambda: (policy, prm, sampling))

    def sampling_engines(self) -> Engines:
        """The engines to sample with; a ValueError when the context has none."""
        if self.engines is None:
            raise ValueError("this estimator samples with the policy and PRM: give it a context with engines "
                             "(EstimateContext.with_engines(policy, prm))")
        return self.engines()


class DifficultyEstimator(Protocol):
    """What the router, ``evaluate`` and the learning curve call on an estimator."""

    def estimate_batch(self, prompts: Sequence[str], ctx: EstimateContext = ...) -> list["Estimate"]:
        """One estimate per prompt, each with what estimating it cost."""
        ...


@dataclass(frozen=True)
class Estimate:
    """A difficulty estimate for one prompt.

    ``pass1`` is the predicted pass@1 in [0, 1]; ``bin`` the predicted bin (1 = easiest);
    ``bin_proba`` maps each bin to its probability; ``cost`` what estimating spent (pilot
    generations, tokens, FLOPs, seconds); ``pilot`` the pilot rollouts, if any, which the
    chosen strategy reuses as samples so they count inside its budget; ``source`` names the
    estimator that decided.
    """

    pass1: float
    bin: int
    bin_proba: dict[int, float]
    cost: Cost
    source: str
    pilot: tuple[Candidate, ...] = field(default=())

    @property
    def confidence(self) -> float:
        return float(self.bin_proba.get(self.bin, 0.0))


def proba_dict(classes: np.ndarray, proba: np.ndarray) -> dict[int, float]:
    return {int(c): float(p) for c, p in zip(classes, proba)}
