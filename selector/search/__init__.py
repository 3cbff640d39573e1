"""Search strategies over reasoning steps; one implementation for every backend."""
from .adaptive_consistency import AdaptiveConfidence, AdaptiveConsistency
from .aggregate import AGGREGATIONS, ANSWER_RULES, aggregate, select_answer
from .base import STRATEGIES, Expansion, Node, SearchContext, StrategyConfig, make_strategy
from .beam import BeamSearch
from .best_of_n import BestOfN, FilteredVote, Majority, WeightedBestOfN
from .dvts import DVTS
from .particle_filtering import ParticleFiltering
from .runner import run_search

__all__ = [
    "AGGREGATIONS", "ANSWER_RULES", "AdaptiveConfidence", "AdaptiveConsistency", "ParticleFiltering", "STRATEGIES", "BeamSearch",
    "BestOfN", "DVTS", "Expansion",
    "FilteredVote", "Majority", "Node", "SearchContext", "StrategyConfig", "WeightedBestOfN", "aggregate",
    "make_strategy", "run_search", "select_answer",
]
