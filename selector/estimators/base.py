"""What every difficulty estimator returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..types import Candidate, Cost


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
