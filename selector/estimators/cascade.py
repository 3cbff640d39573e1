"""``CascadeEstimator``: prompt-only first; a pilot only when the prompt estimate is unsure."""
from __future__ import annotations

from typing import ClassVar, Sequence

from sklearn.base import BaseEstimator

from ..backends.base import PRM, Policy, SamplingParams
from .base import Estimate
from .pilot import PilotEstimator
from .prompt import PromptEstimator


class CascadeEstimator(BaseEstimator):
    """Run ``prompt`` (zero generations); when its top bin's probability is below
    ``threshold``, also run ``pilot`` and use its estimate. The cost of both stages is counted."""

    needs_engines: ClassVar[bool] = True

    def __init__(self, prompt: PromptEstimator, pilot: PilotEstimator, threshold: float = 0.6):
        self.prompt = prompt
        self.pilot = pilot
        self.threshold = threshold

    def estimate_batch(
        self, prompts: Sequence[str], policy: Policy, prm: PRM, *, sampling: SamplingParams | None = None,
        seed: int = 0, policy_params: int = 0,
    ) -> list[Estimate]:
        first = self.prompt.estimate_batch(prompts, policy_params)
        unsure = [i for i, e in enumerate(first) if e.confidence < self.threshold]
        out = list(first)
        if unsure:
            second = self.pilot.estimate_batch([prompts[i] for i in unsure], policy, prm, sampling=sampling, seed=seed)
            for i, e in zip(unsure, second):
                out[i] = Estimate(e.pass1, e.bin, e.bin_proba, first[i].cost + e.cost, f"cascade>{e.source}", e.pilot)
        return out
