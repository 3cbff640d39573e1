"""``AgreementPilot``: a pilot that needs no PRM: ``k`` samples vote, their agreement decides the bin.

The sibling of :class:`~selector.estimators.pilot.PilotEstimator` for tables binned by
agreement (``difficulty: agreement``) or profiled without scores (``prm: none``, answer-only
pools): it draws ``k`` whole solutions with the policy, unscored (the majority vote's
sampler: the same draws a scored pilot would get for the same seed), and its signal is the
share of their modal answer (:func:`selector.agreement.modal_share`; a sample without an answer
agrees with nothing). The bin is that share thresholded by the edges the profiler fitted on
the profiling prompts' own ``k``-sample agreement (table metadata ``pilots``, ``signal:
agreement``), and ``fit`` calibrates it to pass@1 exactly as the PRM pilot does. Its cost:
``k`` generations and the prompt once; no PRM call.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

from ..agreement import modal_share
from ..search.base import StrategyConfig
from ..search.best_of_n import Majority
from ..records import Candidate
from .pilot import PilotEstimator


class AgreementPilot(PilotEstimator):
    """Estimate difficulty from the agreement of ``k`` pilot samples (see module docstring)."""

    signal: ClassVar[str] = "agreement"

    def sampler(self) -> StrategyConfig:
        # Unscored: agreement reads answers only, so the PRM (if any) is never called.
        return Majority(n=self.k)

    def pilot_value(self, candidates: Sequence[Candidate]) -> float:
        """The share of the modal answer among the pilot's samples (0 for none)."""
        return modal_share([c.answer_key for c in candidates]) if candidates else 0.0
