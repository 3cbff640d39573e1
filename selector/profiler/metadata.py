"""The provenance every table file of a profile carries (policy, PRM, data set, grader,
config hash, ...), from the config and engines, or from the written shards when merging."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..backends.base import PRM, Policy
from ..cost_model import measure_shared_prefix
from .config import ConfigError, ProfileConfig


def base_metadata(cfg: ProfileConfig, dataset_sha: str, policy: Policy | None, prm: PRM | None) -> dict[str, Any]:
    import importlib.metadata as md

    try:
        grader_version = md.version("math-verify")
    except md.PackageNotFoundError:  # pragma: no cover
        grader_version = "unknown"
    return {
        "policy_id": policy.id if policy is not None else cfg.policy,
        "policy_params": int(policy.num_parameters) if policy is not None else int(cfg.policy_params or 0),
        "prm_id": (prm.id if prm is not None else cfg.prm),
        "prm_params": int(prm.num_parameters) if prm is not None else int(cfg.prm_params or 0),
        "dataset": cfg.dataset.name, "dataset_sha256": dataset_sha,
        "grader": "selector.grading (math-verify)", "grader_version": grader_version,
        "binning_scheme": cfg.binning.scheme, "difficulty": cfg.difficulty, "n_pool": cfg.pool.n,
        "config_hash": cfg.config_hash, "config_name": cfg.name, "package_version": __version__,
        "pool_source": cfg.pool.source, **family_metadata(cfg),
        # S of the cost model, measured where the policy is here and loaded (None: unknown)
        "shared_prefix_tokens": (measure_shared_prefix(policy)
                                 if policy is not None and getattr(policy, "is_loaded", True) else None),
    }


def family_metadata(cfg: ProfileConfig) -> dict[str, Any]:
    """``dataset_family`` (what catalog lookups match on) and, when it was neither stated nor
    registered, ``dataset_family_note`` saying so."""
    note = cfg.dataset.family_note
    return {"dataset_family": cfg.dataset.family_name, **({"dataset_family_note": note} if note else {})}


def metadata_from_rollouts(out_dir: Path) -> dict[str, Any]:
    from ..tables import read_metadata, rollout_shards

    shards = rollout_shards(out_dir)
    if not shards:
        raise ConfigError(f"{out_dir}: no rollout shards to merge")
    meta = read_metadata(shards[0])
    # a shard's own figures (its seconds, grader timeouts) are not the table's: profiling_cost sums them
    return {k: v for k, v in meta.items()
            if k not in ("kind", "schema_version", "grader_timeouts", "created_at") and not k.startswith("shard_")}


def grader_timeouts(out_dir: Path) -> int:
    """Pool answers graded by the string fallback because the grader ran out of time (sum over
    the rollout shards' metadata)."""
    from ..tables import read_metadata, rollout_shards

    return sum(int(read_metadata(p).get("grader_timeouts", 0)) for p in rollout_shards(out_dir))


def pool_seconds(out_dir: Path) -> float:
    """Wall seconds the pool stage spent, summed over its shards (each records its own)."""
    from ..tables import read_metadata, rollout_shards

    return float(sum(read_metadata(p).get("shard_seconds", 0.0) for p in rollout_shards(out_dir)))
