"""tts-selector: compute-optimal test-time scaling, profiled per (policy, PRM) pair and routed per prompt.

``Router`` (and ``TableDir``, ``TableCatalog``) are re-exported lazily (PEP 562): they pull in
pandas and scikit-learn, which ``import selector`` for a single search does not need.
"""
from typing import Any

from .api import solve, solve_batch
from .backends.base import SamplingParams
from .search import DVTS, BeamSearch, BestOfN, Majority, WeightedBestOfN, make_strategy
from .records import Candidate, Cost, SearchResult

__version__ = "0.1.0"

_LAZY = {"Router": "selector.routing", "TableDir": "selector.tables", "TableCatalog": "selector.catalog"}

__all__ = [
    "DVTS", "BeamSearch", "BestOfN", "Candidate", "Cost", "Majority", "Router", "SamplingParams", "SearchResult",
    "TableCatalog", "TableDir", "WeightedBestOfN", "make_strategy", "solve", "solve_batch",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'selector' has no attribute {name!r}")
