"""Engines: the Policy and PRM protocols and their implementations."""
from .base import PRM, Continuation, Policy, SamplingParams, ScoreOutput, ScoreRequest, StepOutput, StepRequest
from .registry import DEFAULT_POLICY, DEFAULT_PRM, make_policy, make_prm

__all__ = [
    "DEFAULT_POLICY", "DEFAULT_PRM", "PRM", "Continuation", "Policy", "SamplingParams", "ScoreOutput",
    "ScoreRequest", "StepOutput", "StepRequest", "make_policy", "make_prm",
]
