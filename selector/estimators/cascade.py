"""``CascadeEstimator``: prompt-only first; a pilot only when the prompt estimate is unsure."""
from __future__ import annotations

from typing import Sequence

from sklearn.base import BaseEstimator

from .base import Estimate, EstimateContext
from .pilot import PilotEstimator
from .prompt import PromptEstimator


class CascadeEstimator(BaseEstimator):
    """Run ``prompt`` (zero generations); when its top bin's probability is below
    ``threshold``, also run ``pilot`` and use its estimate. The cost of both stages is counted,
    each priced with the same context (a ``hidden``-feature prompt stage is charged the
    policy's FLOPs)."""

    def __init__(self, prompt: PromptEstimator, pilot: PilotEstimator, threshold: float = 0.6):
        self.prompt = prompt
        self.pilot = pilot
        self.threshold = threshold

    def estimate_batch(self, prompts: Sequence[str], ctx: EstimateContext = EstimateContext()) -> list[Estimate]:
        first = self.prompt.estimate_batch(prompts, ctx)
        unsure = [i for i, e in enumerate(first) if e.confidence < self.threshold]
        out = list(first)
        if unsure:
            second = self.pilot.estimate_batch([prompts[i] for i in unsure], ctx)
            for i, e in zip(unsure, second):
                out[i] = Estimate(e.pass1, e.bin, e.bin_proba, first[i].cost + e.cost, f"cascade>{e.source}", e.pilot)
        return out
