"""The profiler's entry points: ``run_profile`` (a whole profile, or one ``--shard`` slice),
``merge_profiles`` (join slices and finish) and ``reprice_table`` (re-finish under another cost
model, no generation).

Stages 1 (pool) and 3's real tree runs are checkpointed shard by shard by the executor, so a
profile killed at any point and started again finishes with the same tables, regenerating
nothing that was written; the other stages run in ``finish.py`` from the written shards.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from ..backends.base import PRM, Policy
from ..datasets import JsonlFormat, Problem, load_dataset
from .config import ConfigError, ProfileConfig
from .executors import Executor, make_executor
from .finish import finish_tables, progress_bar
from .manifest import check_manifest, config_from_manifest
from .metadata import base_metadata, metadata_from_rollouts
from .pool import import_pool, plan_shards, select_shards
from .summary import ProfileSummary


def load_problems(cfg: ProfileConfig) -> tuple[list[Problem], str]:
    d = cfg.dataset
    fmt = JsonlFormat(d.problem_field, d.answer_field, d.id_field, d.level_field)
    return load_dataset(cfg.resolve(d.name), size=d.size, seed=d.seed, fmt=fmt)


def _remove_stale_temps(out_dir: Path) -> None:
    """Temp files of writes a kill -9 interrupted (``.tree-shard-*.tmp`` and the like) are never
    renamed into place: a resume removes the stale ones (see tables.remove_stale_temps)."""
    from ..tables import remove_stale_temps

    for sub in (out_dir, out_dir / "state", out_dir / "rollouts"):
        remove_stale_temps(sub)


def run_profile(
    cfg: ProfileConfig,
    out_dir: str | Path,
    *,
    policy: Policy | None = None,
    prm: PRM | None = None,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    force: bool = False,
    executor: Executor | None = None,
) -> ProfileSummary:
    """Run (or resume) a profile into ``out_dir``. Engines default to the config's specs.

    With ``shard=(i, k)`` only shards ``s`` with ``s % k == i`` are generated and the tables
    are not finished (``merge_profiles`` does that once all slices exist). A resume with another
    config or data set is refused; a rerun on a finished table keeps its estimators' records
    unless the bins changed (then refused unless ``force``; see ``manifest.py``). ``executor``
    runs the pool and tree shards (default: the config's ``executor:``, i.e. this process; a
    :class:`RayExecutor` runs them on Ray actors, with the same tables).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise ValueError(f"--shard i/k needs 0 <= i < k, got {shard[0]}/{shard[1]}")
    problems, dataset_sha = load_problems(cfg)
    check_manifest(out_dir, cfg, dataset_sha)
    _remove_stale_temps(out_dir)
    bar = progress_bar(progress)
    shards = select_shards(plan_shards(problems, cfg.shard_size), shard)
    agreement: dict[str, float] = {}
    report = None
    if cfg.pool.source == "generate":
        runner = executor if executor is not None else make_executor(cfg.executor)
        try:
            policy, prm = runner.engines(cfg, policy, prm)
            metadata = base_metadata(cfg, dataset_sha, policy, prm)
            report = runner.run(cfg, shards, out_dir, metadata, bar)
        finally:
            runner.close()
    else:
        metadata = base_metadata(cfg, dataset_sha, policy, prm)
        agreement = import_pool(cfg, shards, out_dir, metadata, bar)
    if shard is not None:
        return ProfileSummary(out_dir, False, seconds=time.perf_counter() - t0, executor=report)
    summary = finish_tables(cfg, out_dir, problems, metadata, progress, force=force)
    summary.grading_agreement = agreement
    summary.executor = report
    summary.seconds = time.perf_counter() - t0
    return summary


def merge_profiles(out_dir: str | Path, sources: list[str | Path], progress: bool = True, force: bool = False) -> ProfileSummary:
    """Join shard directories of one config (``--shard i/k`` runs) into ``out_dir`` and finish."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if not sources:
        raise ValueError("merge needs at least one shard directory")
    cfg = config_from_manifest(Path(sources[0]))
    for src in sources:
        other = config_from_manifest(Path(src))
        if other.config_hash != cfg.config_hash:
            raise ConfigError(f"{src} was profiled with another config than {sources[0]}; only shards of one config merge")
    problems, dataset_sha = load_problems(cfg)
    for src in [*sources, out_dir]:  # every slice and the target were made from this data set
        check_manifest(src, cfg, dataset_sha)
    for src in map(Path, sources):
        if src.resolve() == out_dir.resolve():
            continue
        for sub in ("rollouts", "state"):
            for f in sorted((src / sub).glob("*-*.parquet")):
                target = out_dir / sub / f.name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target.with_suffix(".partial"))
                    target.with_suffix(".partial").replace(target)
    meta = metadata_from_rollouts(out_dir)
    summary = finish_tables(cfg, out_dir, problems, meta, progress, force=force)
    summary.seconds = time.perf_counter() - t0
    return summary


def reprice_table(table_dir: str | Path, *, prefix_cache: str | None = None, shared_prefix_tokens: int | None = None,
                  progress: bool = True) -> ProfileSummary:
    """Re-finish a profiled table from its rollouts and tree runs under another cost model
    (``prefix_cache``; ``shared_prefix_tokens``: S, for tables whose shards predate its
    measurement), without generating: every row re-priced, every router's cells re-selected
    (trained estimators from their recorded out-of-fold bins), in place."""
    t0 = time.perf_counter()
    table_dir = Path(table_dir)
    cfg = config_from_manifest(table_dir)
    changes = {k: v for k, v in (("prefix_cache", prefix_cache), ("shared_prefix_tokens", shared_prefix_tokens))
               if v is not None}
    cfg = dataclasses.replace(cfg, cost=dataclasses.replace(cfg.cost, **changes)).check()
    problems, dataset_sha = load_problems(cfg)
    check_manifest(table_dir, cfg, dataset_sha)
    summary = finish_tables(cfg, table_dir, problems, metadata_from_rollouts(table_dir), progress)
    summary.seconds = time.perf_counter() - t0
    return summary
