"""tts-selector: compute-optimal test-time scaling, profiled per (policy, PRM) pair and routed per prompt."""
from .api import solve, solve_batch
from .backends.base import SamplingParams
from .search import DVTS, BeamSearch, BestOfN, Majority, WeightedBestOfN, make_strategy
from .types import Candidate, Cost, SearchResult

__version__ = "0.1.0"

__all__ = [
    "DVTS", "BeamSearch", "BestOfN", "Candidate", "Cost", "Majority", "SamplingParams", "SearchResult",
    "WeightedBestOfN", "make_strategy", "solve", "solve_batch",
]
