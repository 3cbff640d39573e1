"""Routing at run time: a table's cells, the estimators and engines a router loads, the router."""
from .cells import PriorCells, PriorRow, SelectionCells, table_cells
from .decision import FORCED_SOURCE, Decision, RoutedResult
from .engines import LazyEngines
from .loading import load_prior_estimator, load_table_estimator, pilot_size
from .router import DEFAULT_ESTIMATOR, Router

__all__ = [
    "DEFAULT_ESTIMATOR", "FORCED_SOURCE", "Decision", "LazyEngines", "PriorCells", "PriorRow", "RoutedResult", "Router",
    "SelectionCells", "load_prior_estimator", "load_table_estimator", "pilot_size", "table_cells",
]
