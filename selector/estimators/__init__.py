"""Difficulty estimators: predict a new prompt's bin cheaply, and count what it costs."""
from .agreement import AgreementPilot
from .base import DifficultyEstimator, Estimate, EstimateContext
from .cascade import CascadeEstimator
from .persist import EstimatorIntegrityError, load_estimator, save_estimator
from .pilot import PilotEstimator
from .prompt import PromptEstimator

# The pilot of each signal a table's pilot record may name (selector.profiler.difficulty.PILOT_SIGNALS):
# one protocol (PilotEstimator's), a sampler and a signal each.
PILOT_ESTIMATORS = {"prm_mean": PilotEstimator, "agreement": AgreementPilot}

__all__ = [
    "AgreementPilot", "CascadeEstimator", "DifficultyEstimator", "Estimate", "EstimateContext", "EstimatorIntegrityError",
    "PILOT_ESTIMATORS", "PilotEstimator", "PromptEstimator", "load_estimator", "save_estimator",
]
