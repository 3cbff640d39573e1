"""``PilotEstimator``: a few real rollouts decide the bin.

It draws ``k`` whole solutions with the policy, scores them with the PRM, and takes the mean
final-step score as the model-predicted pass@1 (Snell et al.'s predicted difficulty). The bin
is that score thresholded by ``edges``: the edges the profiler fitted on the profiling prompts'
own k-sample pilot scores (table metadata ``pilots``), so the router bins exactly as the
table's ``pilot:<k>`` cells were selected and scored. ``fit`` learns, on those prompts, how a
mean of ``k`` scores (as noisy as the router will see it) maps to graded pass@1 (isotonic
regression), for the estimate's ``pass1``.

The pilot rollouts are returned in the estimate for inspection; the router does not count them
as samples of the chosen strategy, since samples that decided a prompt's bin would then also
score it (and the table's cells were measured without such reuse). Their cost is the
estimate's: ``k`` generations, the prompt once, ``k`` PRM scorings.

Subclasses keep this protocol and change the sampler and the signal (:meth:`sampler`,
:meth:`pilot_value`): :class:`~selector.estimators.agreement.AgreementPilot` votes instead of
scoring, for tables without a PRM.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression

from ..binning import assign_bins
from ..search.aggregate import aggregate
from ..search.base import StrategyConfig
from ..search.best_of_n import BestOfN
from ..search.runner import run_search
from ..records import Candidate
from ..seeds import derive_seed
from .base import Estimate, EstimateContext, proba_dict


class PilotEstimator(BaseEstimator):
    """Estimate difficulty from ``k`` pilot rollouts (see module docstring).

    ``edges``: inner bin edges on the pilot's mean final-step score (ascending; bin 1 =
    highest scores). ``fit(pilot_scores, oracle_pass1)`` calibrates ``pass1``; without it
    (or with ``oracle_pass1=None``) the mean score is taken as pass@1 as is (uncalibrated).
    """

    # What it bins by (a table's pilot record says which: selector.profiler.difficulty.PILOT_SIGNALS);
    # subclasses change the sampler and the signal, nothing else (estimators.PILOT_ESTIMATORS).
    signal: ClassVar[str] = "prm_mean"

    def __init__(self, k: int = 4, edges: Sequence[float] = (), name: str | None = None):
        self.k = k
        self.edges = edges
        self.name = name or f"pilot:{k}"  # what its estimates say they came from (a table's router name)

    @property
    def classes_(self) -> np.ndarray:  # bins 1 (easiest) .. len(edges) + 1
        return np.arange(1, len(self.edges) + 2)

    @property
    def calibrated(self) -> bool:
        return getattr(self, "calibration_", None) is not None

    def fit(self, pilot_scores: Sequence[float], oracle_pass1: Sequence[float] | None = None) -> "PilotEstimator":
        if self.k < 1:
            raise ValueError(f"PilotEstimator needs k >= 1 pilot rollouts, got {self.k}")
        self.calibration_ = None
        if oracle_pass1 is not None:
            x = np.asarray(pilot_scores, dtype=float)
            self.calibration_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                x, np.asarray(oracle_pass1, dtype=float))
        return self

    def from_scores(self, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pass@1, one-hot bin probabilities) for mean pilot scores."""
        x = np.clip(np.asarray(predicted, dtype=float), 0.0, 1.0)
        pass1 = self.calibration_.predict(x) if self.calibrated else x
        proba = np.zeros((len(x), len(self.classes_)))
        proba[np.arange(len(x)), assign_bins(x, self.edges) - 1] = 1.0
        return pass1, proba

    def sampler(self) -> StrategyConfig:
        """The search that draws the ``k`` pilot samples (here scored by the PRM)."""
        return BestOfN(n=self.k)

    def pilot_value(self, candidates: Sequence[Candidate]) -> float:
        """The pilot's signal from its samples: the mean final-step score, as the profiler scored
        the difficulty samples the edges were fitted on (an empty solution counts 0)."""
        if not candidates:
            return 0.0
        return float(np.mean([aggregate(c.step_scores, "last") if c.step_scores else 0.0 for c in candidates]))

    def estimate_batch(self, prompts: Sequence[str], ctx: EstimateContext = EstimateContext()) -> list[Estimate]:
        """Draw the pilots for all prompts in one batched search with ``ctx``'s engines and
        estimate each prompt."""
        policy, prm, sampling = ctx.sampling_engines()
        # Its own seed: the chosen strategy, run with ``seed``, must not redraw these very samples.
        results = run_search([(p, self.sampler()) for p in prompts], policy, prm, sampling=sampling,
                             seed=derive_seed(ctx.seed, "pilot"))
        predicted = np.array([self.pilot_value(r.candidates) for r in results])
        pass1, proba = self.from_scores(predicted)
        out = []
        for r, p, pr in zip(results, pass1, proba):
            # The pilot's ledger is its search's own (generations, tokens, FLOPs, seconds).
            out.append(Estimate(float(p), int(self.classes_[int(np.argmax(pr))]), proba_dict(self.classes_, pr),
                                r.cost, self.name, tuple(r.candidates)))
        return out

    def estimate(self, prompt: str, ctx: EstimateContext = EstimateContext()) -> Estimate:
        return self.estimate_batch([prompt], ctx)[0]
