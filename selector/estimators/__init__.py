"""Difficulty estimators: predict a new prompt's bin cheaply, and count what it costs."""
from .base import DifficultyEstimator, Estimate, EstimateContext
from .cascade import CascadeEstimator
from .persist import EstimatorIntegrityError, load_estimator, save_estimator
from .pilot import PilotEstimator
from .prompt import PromptEstimator

__all__ = [
    "CascadeEstimator", "DifficultyEstimator", "Estimate", "EstimateContext", "EstimatorIntegrityError", "PilotEstimator", "PromptEstimator",
    "load_estimator", "save_estimator",
]
