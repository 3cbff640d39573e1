"""``PilotEstimator``: a few real rollouts decide the bin; the rollouts are then reused.

It draws ``k`` whole solutions with the policy, scores them with the PRM, and takes the mean
final-step score as the model-predicted pass@1 (Snell et al.'s predicted difficulty, the
``predicted_pass1`` the profiler stores for every prompt). ``fit`` learns, on a table's
profiled prompts, how that predicted pass@1 maps to the table's bins (a one-feature
multinomial logistic regression) and to oracle pass@1 (isotonic regression), so the pilot
works whatever the table's difficulty source was. The pilot rollouts are returned in the
estimate: a best-of-N-family strategy counts them as its first ``k`` samples, so a routed
solve with budget ``N`` spends ``N`` generations in all, not ``N + k``.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ..backends.base import PRM, Policy, SamplingParams
from ..search.aggregate import aggregate
from ..search.best_of_n import BestOfN
from ..search.runner import run_search
from .base import Estimate, proba_dict


class PilotEstimator(BaseEstimator):
    """Estimate difficulty from ``k`` pilot rollouts (see module docstring)."""

    needs_engines: ClassVar[bool] = True  # estimate_batch takes the policy and PRM

    def __init__(self, k: int = 4, C: float = 10.0):
        self.k = k
        self.C = C

    def fit(self, predicted_pass1: Sequence[float], bins: Sequence[int], oracle_pass1: Sequence[float] | None = None) -> "PilotEstimator":
        x = np.asarray(predicted_pass1, dtype=float).reshape(-1, 1)
        bins = np.asarray(bins, dtype=int)
        if self.k < 1:
            raise ValueError(f"PilotEstimator needs k >= 1 pilot rollouts, got {self.k}")
        self.classes_ = np.unique(bins)
        self.classifier_ = LogisticRegression(C=self.C, max_iter=5000).fit(x, bins) if len(self.classes_) > 1 else None
        y = np.asarray(oracle_pass1 if oracle_pass1 is not None else predicted_pass1, dtype=float)
        self.calibration_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x.ravel(), y)
        return self

    def from_scores(self, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated pass@1, bin probabilities) for predicted pass@1 values."""
        x = np.asarray(predicted, dtype=float).reshape(-1, 1)
        proba = self.classifier_.predict_proba(x) if self.classifier_ is not None else np.ones((len(x), 1))
        return self.calibration_.predict(x.ravel()), proba

    def estimate_batch(
        self, prompts: Sequence[str], policy: Policy, prm: PRM, *, sampling: SamplingParams | None = None, seed: int = 0,
    ) -> list[Estimate]:
        """Draw the pilots for all prompts in one batched search and estimate each prompt."""
        results = run_search([(p, BestOfN(n=self.k)) for p in prompts], policy, prm, sampling=sampling, seed=seed)
        predicted = np.array([
            np.mean([aggregate(c.step_scores, "last") for c in r.candidates]) if r.candidates else 0.0 for r in results
        ])
        pass1, proba = self.from_scores(predicted)
        out = []
        for r, p, pr in zip(results, pass1, proba):
            # The pilot's ledger is its search's own (generations, tokens, FLOPs, seconds).
            out.append(Estimate(float(p), int(self.classes_[int(np.argmax(pr))]), proba_dict(self.classes_, pr),
                                r.cost, f"pilot:{self.k}", tuple(r.candidates)))
        return out

    def estimate(self, prompt: str, policy: Policy, prm: PRM, *, sampling: SamplingParams | None = None, seed: int = 0) -> Estimate:
        return self.estimate_batch([prompt], policy, prm, sampling=sampling, seed=seed)[0]
