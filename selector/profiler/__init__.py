"""The offline profiler: pool -> difficulty -> evaluate -> select, into a table directory.

``run_profile(config, out_dir)`` runs every stage (``runs.py``); ``merge_profiles`` joins
``--shard i/k`` slices and finishes the tables (``finish.py``); ``reprice_table`` re-finishes a
table under another cost model without generating. This package face only re-exports.
"""
from .config import ConfigError, ProfileConfig, build_section, load_config
from .executors import Executor, LocalExecutor, RayExecutor
from .finish import finish_tables
from .manifest import config_from_manifest
from .runs import merge_profiles, reprice_table, run_profile
from .summary import ProfileSummary

__all__ = [
    "ConfigError", "Executor", "LocalExecutor", "ProfileConfig", "ProfileSummary", "RayExecutor", "build_section",
    "config_from_manifest", "finish_tables", "load_config", "merge_profiles", "reprice_table", "run_profile",
]
