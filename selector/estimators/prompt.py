"""``PromptEstimator``: predicts pass@1 and bin probabilities from the prompt text alone."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge

from ..records import Cost
from .base import Estimate, EstimateContext, proba_dict
from .features import FEATURE_PARAMETERS, make_features


class PromptEstimator(BaseEstimator):
    """Zero-generation difficulty estimator (scikit-learn contract).

    ``fit(prompts, pass1, bins)`` learns a ridge regression of pass@1 and a multinomial
    logistic regression over bins on prompt features (``features``: ``tfidf`` | ``minilm`` |
    ``hidden``, see ``features.py``). ``predict`` returns bins (1 = easiest),
    ``predict_proba`` their probabilities (columns in ``classes_`` order), ``predict_pass1``
    the regression clipped to [0, 1].
    """

    def __init__(self, features: str = "tfidf", alpha: float = 1.0, C: float = 1.0, policy: str = "smollm2-135m"):
        self.features = features
        self.alpha = alpha
        self.C = C
        self.policy = policy

    def fit(self, prompts: Sequence[str], pass1: Sequence[float], bins: Sequence[int]) -> "PromptEstimator":
        prompts, pass1, bins = list(prompts), np.asarray(pass1, dtype=float), np.asarray(bins, dtype=int)
        if not (len(prompts) == len(pass1) == len(bins)) or len(prompts) < 2:
            raise ValueError(f"fit needs >= 2 prompts with one pass@1 and one bin each, got {len(prompts)}/{len(pass1)}/{len(bins)}")
        self.features_ = make_features(self.features, self.policy).fit(prompts)
        X = self.features_.transform(prompts)
        self.regressor_ = Ridge(alpha=self.alpha).fit(X, pass1)
        self.classes_ = np.unique(bins)
        self.classifier_ = (
            LogisticRegression(C=self.C, max_iter=5000).fit(X, bins) if len(self.classes_) > 1 else None
        )
        return self

    def _X(self, prompts: Sequence[str]):
        return self.features_.transform(list(prompts))

    def predict_pass1(self, prompts: Sequence[str]) -> np.ndarray:
        return np.clip(self.regressor_.predict(self._X(prompts)), 0.0, 1.0)

    def predict_proba(self, prompts: Sequence[str]) -> np.ndarray:
        if self.classifier_ is None:
            return np.ones((len(prompts), 1))
        return self.classifier_.predict_proba(self._X(prompts))

    def predict(self, prompts: Sequence[str]) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(prompts), axis=1)]

    def estimate_batch(self, prompts: Sequence[str], ctx: EstimateContext = EstimateContext()) -> list[Estimate]:
        """Estimates with their cost: seconds shared evenly, FLOPs of the feature model (for
        ``hidden`` features, the policy's: ``ctx.policy_params`` parameters)."""
        t0 = time.perf_counter()
        X = self._X(prompts)
        pass1 = np.clip(self.regressor_.predict(X), 0.0, 1.0)
        proba = self.classifier_.predict_proba(X) if self.classifier_ is not None else np.ones((len(prompts), 1))
        seconds = (time.perf_counter() - t0) / max(len(prompts), 1)
        params = ctx.policy_params if self.features == "hidden" else FEATURE_PARAMETERS.get(self.features, 0)
        out = []
        for text, p, pr in zip(prompts, pass1, proba):
            # Token count for FLOPs: words are a lower bound of subword tokens; only neural
            # features (minilm, hidden) spend FLOPs at all.
            flops = 2.0 * params * len(text.split()) if params else 0.0
            out.append(Estimate(float(p), int(self.classes_[int(np.argmax(pr))]), proba_dict(self.classes_, pr),
                                Cost(other_flops=flops, seconds=seconds), f"prompt:{self.features}"))
        return out

    def estimate(self, prompt: str, ctx: EstimateContext = EstimateContext()) -> Estimate:
        return self.estimate_batch([prompt], ctx)[0]
