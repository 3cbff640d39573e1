"""A profile directory's manifest (``state/manifest.json``) and what a rerun must keep.

The manifest records the config (and its hash) and the sha256 of the data set a profile was
started with. A resume, a ``--shard`` slice or a ``merge`` into the directory is refused when
either differs, so a table is never built from two versions of its inputs. Rerunning
``profile`` on a finished table keeps what it does not recompute: the trained estimators'
records in ``selection.parquet`` (their files and the ``evaluation-*.json`` reports are never
touched), as long as the new tables give every prompt the same split and bin; otherwise the
estimators were trained on other bins, and the rerun is refused unless ``--force`` (which
drops their records: retrain them).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..table_checks import MANIFEST, MANIFEST_MAX_BYTES
from ..tables import atomic_write_text
from .config import ConfigError, ProfileConfig, build_section

KEPT_KEYS = ("estimators",)  # selection.parquet metadata written by later commands (train-estimator)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of ``out_dir`` ({} when there is none); a corrupt one is a ConfigError."""
    from ..files import read_regular_file

    path = Path(out_dir) / MANIFEST
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        # A regular file of bounded size: a FIFO or a link to /dev/zero must not wedge a resume.
        manifest = json.loads(read_regular_file(path, max_bytes=MANIFEST_MAX_BYTES, error=ConfigError,
                                                what="manifest").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, ConfigError):
            raise ConfigError(f"{exc}; or profile into a new --out") from None
        raise ConfigError(f"{path}: unreadable manifest ({str(exc)[:200]}): restore it, or profile into a new --out") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path}: a manifest is a JSON object: restore it, or profile into a new --out")
    return manifest


def _recorded_dataset_sha(out_dir: Path, manifest: dict[str, Any]) -> str | None:
    """The data set hash the directory was started with: the manifest's, or (for directories
    written before the manifest held it) the first rollout shard's provenance."""
    if manifest.get("dataset_sha256"):
        return str(manifest["dataset_sha256"])
    from ..tables import read_metadata, rollout_shards

    shards = rollout_shards(out_dir)
    return read_metadata(shards[0]).get("dataset_sha256") if shards else None


def check_manifest(out_dir: str | Path, cfg: ProfileConfig, dataset_sha: str) -> None:
    """Refuse to add to ``out_dir`` with another config or data set than it was started with
    (the message names both hashes and the two fixes); write the manifest when there is none."""
    out_dir = Path(out_dir)
    blocked = next((p for p in (out_dir, *out_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(f"--out {out_dir}: {blocked} is a file, not a directory: give --out a directory path "
                          "(it is created if missing)")
    manifest = read_manifest(out_dir)
    if not manifest:
        atomic_write_text(out_dir / MANIFEST, json.dumps(
            {"config_hash": cfg.config_hash, "dataset_sha256": dataset_sha, "config": cfg.to_dict(),
             "base_dir": cfg.base_dir}, indent=2, default=list))
        return
    recorded = manifest.get("config_hash", "?")
    if recorded != cfg.config_hash:
        raise ConfigError(
            f"{out_dir} holds a profile of a different config (recorded config hash {recorded}, this config's "
            f"{cfg.config_hash}): restore the config it was started with to resume, or profile into a new --out "
            "(or delete that directory to start over)"
        )
    had = _recorded_dataset_sha(out_dir, manifest)
    if had is not None and had != dataset_sha:
        raise ConfigError(
            f"{out_dir} was started on another version of data set {cfg.dataset.name!r} (recorded dataset sha256 "
            f"{had}, the file now has {dataset_sha}); resuming would grade some shards against the old data and "
            "some against the new: restore the data set it was started with, or profile into a new --out"
        )


def kept_metadata(out_dir: str | Path, prompts: pd.DataFrame, force: bool = False) -> dict[str, Any]:
    """The metadata of an existing finished table in ``out_dir`` that a rerun must carry over
    (see the module docstring); {} when there is no finished table or nothing to keep.

    ``prompts`` is the new prompts table. Raises ConfigError when the old table recorded
    estimators trained on other splits or bins, unless ``force`` (then nothing is kept)."""
    from ..tables import TableDir, TableError, read_table

    table = TableDir(out_dir)
    selection = table.file("selection")
    if not selection.is_file():
        return {}
    try:
        meta = table.metadata
        old, _ = read_table(table.file("prompts"), "prompts", columns=["prompt_id", "split", "bin"])
    except TableError:
        return {}  # an unreadable old table has nothing trustworthy to keep
    kept = {k: meta[k] for k in KEPT_KEYS if meta.get(k)}
    if not kept:
        return {}
    key = ["prompt_id", "split", "bin"]
    same = old[key].sort_values("prompt_id").reset_index(drop=True).astype(str).equals(
        prompts[key].sort_values("prompt_id").reset_index(drop=True).astype(str))
    if same:
        return kept
    if force:
        return {}
    raise ConfigError(
        f"{out_dir}: this rerun assigns other splits or bins than the finished table, whose estimators "
        f"{sorted(kept.get('estimators', {}))} were trained on the old ones; nothing was written. Profile into a new "
        "--out to keep both, or pass --force to rewrite the tables and drop those estimators' records (then retrain "
        "them with `tts-selector train-estimator`)"
    )


def profiled_settings(out_dir: str | Path):
    """The binning and select settings a table was profiled with (its manifest's config), for
    re-selecting its cells without generating (learning curves, re-pricing)."""
    from ..errors import InputError
    from .config import BinningConfig, SelectConfig, build_section

    from ..tables import TableDir

    raw = TableDir(out_dir).config  # the one checked read of a table's manifest (selector/table_checks.py)
    if not raw:
        raise InputError(f"{out_dir}: no state/manifest.json recording the profile config; re-selecting a table's "
                         "cells needs its binning and select settings")
    where = f"{Path(out_dir) / MANIFEST}"
    return (build_section(BinningConfig, raw.get("binning", {}), f"{where} binning"),
            build_section(SelectConfig, raw.get("select", {}), f"{where} select"))


def config_from_manifest(out_dir: str | Path) -> ProfileConfig:
    """The validated profile config a table directory's manifest records."""
    out_dir = Path(out_dir)
    path = out_dir / MANIFEST
    manifest = read_manifest(out_dir)
    if not manifest:
        raise ConfigError(f"{out_dir}: no {MANIFEST} (or an empty one); is this a profile output directory? Merge the "
                          "directories `tts-selector profile --shard i/k` wrote")
    if not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("base_dir"), str):
        raise ConfigError(f"{path}: the manifest needs a 'config' object and a 'base_dir' string: restore it, or "
                          "re-run that --shard slice into a new --out")
    cfg = build_section(ProfileConfig, manifest["config"], str(path))
    return dataclasses.replace(cfg, base_dir=manifest["base_dir"]).check()
