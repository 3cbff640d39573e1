"""Reading and writing table directories: the contract between the offline profiler and the router.

This is the only module that touches table files. A table directory, e.g.
``tables/smollm2-135m__arith-check__arithmetic/``, holds:

``prompts.parquet``
    One row per prompt: ``prompt_id, text_sha256, split ("profile"|"heldout"),
    oracle_pass1, predicted_pass1, bin`` (bins count from 1 = easiest).
``results.parquet``
    One row per (bin, budget, configuration): ``bin, budget, strategy, n, m (nullable),
    aggregation (nullable), accuracy, ci_low, ci_high, n_prompts, mean_generations,
    mean_tokens, mean_flops``.
``selection.parquet``
    The winning configuration per (policy, prm, bin, budget): ``policy, prm, bin, budget,
    strategy, n, m, aggregation, accuracy, ci_low, ci_high, n_prompts, mean_flops``.
``evaluations.parquet``
    One row per (prompt, configuration, budget): ``prompt_id, strategy, n, m, aggregation,
    budget, accuracy, accuracy_std, generations, tokens, flops``.
``rollouts/shard-00000.parquet, ...``
    The sampled pool, written shard by shard: ``prompt_id, sample_id, steps (list<str>),
    step_scores (list<float64>), answer (nullable), answer_key (nullable), correct, tokens``.

Columns beyond :data:`REQUIRED_COLUMNS` are kept. Anything else in the directory (``state/``
checkpoints, hidden ``.*.tmp`` files left by a killed writer) is ignored by the reader.

Every Parquet file carries a JSON object under the schema key-value metadata key
``b"tts_selector"``. Its keys (the metadata schema):

===================  ==========================================================================
``schema_version``   int; added by :func:`write_table`. Readers refuse versions newer than
                     :data:`SCHEMA_VERSION`.
``kind``             one of :data:`REQUIRED_COLUMNS`' keys; added by :func:`write_table`.
``policy_id``        policy model identifier.
``policy_params``    int, the policy's parameter count (for FLOPs).
``prm_id``           process reward model identifier.
``prm_params``       int, the PRM's parameter count (0 for programs).
``dataset``          dataset name.
``dataset_family``   the family the table answers for in a catalog (selector/catalog.py), e.g.
                     ``math`` for ``math500`` or a JSONL file of MATH problems; from the
                     config's ``dataset.family``, else the built-in's registered family
                     (selector/datasets.py ``FAMILIES``), else the data set's name. Tables
                     written before this key fall back to the registered family of ``dataset``.
``dataset_family_note``  optional; why the family defaulted to the data set's name.
``dataset_sha256``   hash of the dataset contents the profile was measured on.
``grader``           answer grader name; ``grader_version`` its version.
``binning_scheme``   how prompts were binned; ``bin_edges`` the inner pass@1 edges
                     (ascending); ``difficulty`` which pass@1 they bin (oracle|predicted).
``n_pool``           rollouts sampled per prompt for the pool.
``config_hash``      hash of the whole profiling configuration; every file of one directory
                     must carry the same value (:meth:`TableDir.validate` checks).
``package_version``  tts-selector version that wrote the file.
``created_at``       ISO-8601 UTC timestamp.
``prior``            optional bool; true for a published-prior table written by
                     ``scripts/build_prior_table.py`` (not interpreted here). A prior's
                     selection rows carry ``policy_params_min`` / ``policy_params_max`` (the
                     policy size range they apply to, max null = unbounded) and null budget,
                     n, m, aggregation, accuracy, CI and FLOPs; its prompts, results and
                     evaluations files hold zero rows with the contract's columns, so
                     :meth:`TableDir.validate` accepts it unchanged. Its metadata adds
                     ``citation``, ``citation_short``, ``url``, ``rules`` (in words), ``note``,
                     ``prms_in_paper``, ``not_found_in_paper`` and ``router_defaults``.
===================  ==========================================================================

Only ``schema_version`` and ``kind`` are mandatory at this layer; the profiler supplies the rest.
All writes are atomic (temp file in the same directory, fsync, ``os.replace``), so a reader
sees either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import TTSError
from .files import fsync_dir

__all__ = [
    "REQUIRED_COLUMNS", "SCHEMA_VERSION", "TableDir", "TableError", "atomic_write_bytes", "atomic_write_text",
    "read_metadata", "read_rollouts", "read_table", "remove_stale_temps", "rollout_shards", "write_rollout_shard",
    "write_table",
]

SCHEMA_VERSION = 2
"""Version of the on-disk format this module writes and the only one it reads.

2: difficulty from disjoint samples (rollouts' ``role``), one selection per deployable
router (selection's ``estimator``), cache-aware costs. Version-1 tables were binned on the
samples their best-of-N cells were scored on, so they are refused, not read."""

METADATA_KEY = b"tts_selector"

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompt_id", "text_sha256", "split", "oracle_pass1", "predicted_pass1", "difficulty_score", "bin"),
    "results": (
        "bin", "budget", "strategy", "n", "m", "aggregation", "accuracy", "ci_low", "ci_high",
        "n_prompts", "mean_generations", "mean_tokens", "mean_flops",
    ),
    "selection": (
        "estimator", "policy", "prm", "bin", "budget", "strategy", "n", "m", "aggregation", "accuracy",
        "ci_low", "ci_high", "n_prompts", "mean_flops",
    ),
    "evaluations": (
        "prompt_id", "strategy", "n", "m", "aggregation", "budget", "accuracy", "accuracy_std",
        "generations", "tokens", "flops",
    ),
    "rollouts": (
        "prompt_id", "sample_id", "role", "steps", "step_scores", "answer", "answer_key", "correct",
        "tokens",
    ),
    # The profiler's checkpoint of real beam-search / DVTS runs (state/), one row per
    # (prompt, configuration, seed).
    "tree_runs": (
        "prompt_id", "strategy", "n", "m", "aggregation", "seed", "correct", "generations",
        "policy_tokens", "prm_tokens", "policy_flops", "prm_flops",
    ),
}

_STR, _F64, _I64 = pa.string(), pa.float64(), pa.int64()
_COMMON_TYPES: dict[str, pa.DataType] = {
    "prompt_id": _STR, "text_sha256": _STR, "split": _STR, "oracle_pass1": _F64,
    "predicted_pass1": _F64, "bin": _I64, "budget": _I64, "strategy": _STR, "n": _I64, "m": _I64,
    "aggregation": _STR, "accuracy": _F64, "ci_low": _F64, "ci_high": _F64, "n_prompts": _I64,
    "mean_generations": _F64, "mean_tokens": _F64, "mean_flops": _F64, "policy": _STR, "prm": _STR,
    "accuracy_std": _F64, "estimator": _STR, "difficulty_score": _F64, "role": _STR,
}
# Arrow types enforced on write, so every file of a kind has one schema whatever pandas dtypes
# the writer happened to hold (float64 m from NaN, null-typed all-None columns, large_string).
# Evaluations' generations/tokens/flops are left as written: they may be per-prompt means.
_COLUMN_TYPES: dict[str, dict[str, pa.DataType]] = {
    kind: {c: _COMMON_TYPES[c] for c in cols if c in _COMMON_TYPES}
    for kind, cols in REQUIRED_COLUMNS.items()
}
_COLUMN_TYPES["tree_runs"].update(seed=_I64, correct=pa.bool_())
_COLUMN_TYPES["rollouts"].update(
    sample_id=_I64, steps=pa.list_(_STR), step_scores=pa.list_(_F64), answer=_STR,
    answer_key=_STR, correct=pa.bool_(), tokens=_I64,
)
# Integer columns that are null by design; read back as pandas Int64 so the dtype does not
# flip between int64 and float64 depending on whether a file happens to contain a null.
_NULLABLE_INT = frozenset({"m"})

_TABLE_FILES = {kind: f"{kind}.parquet" for kind in ("prompts", "results", "selection", "evaluations")}
_ROLLOUTS_DIR = "rollouts"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")

_FIX_REBUILD = "re-run `tts-selector profile` to rebuild it"
_FIX_UPGRADE = "upgrade tts-selector (pip install -U tts-selector)"


class TableError(TTSError, ValueError):
    """A table file is missing, unreadable, or does not match this version's contract."""


# ----------------------------------------------------------------------------- atomic writes

def _atomic_write(path: str | Path, write: Callable[[Any], None]) -> None:
    """Call ``write(binary_file)`` on a temp file beside ``path``, fsync it, rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden name with a .tmp suffix: ignored by rollout_shards, by pyarrow.dataset (which skips
    # dot-files) and by anyone globbing *.parquet. Created via os.open with 0o666 so the final
    # file gets the usual umask-derived permissions (mkstemp would make it 0600).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: the old file at `path` is untouched; only the temp goes.
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # what _atomic_write names its temp files
STALE_TEMP_SECONDS = 600.0


def remove_stale_temps(directory: str | Path, older_than_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete the temp files a killed writer left in ``directory`` (not recursive); return them.

    Only files named as :func:`_atomic_write` names them and untouched for ``older_than_s``
    seconds: a write in flight (another profile into the same directory) takes seconds from
    creating its temp file to renaming it, so a fresh one may still be about to land."""
    import time

    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed, now = [], time.time()
    for p in directory.iterdir():
        try:
            if _TEMP_RE.match(p.name) and p.is_file() and not p.is_symlink() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                removed.append(p)
        except OSError:  # gone meanwhile (renamed by its writer, or removed by another run)
            continue
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``); creates parents."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode(encoding))


# ----------------------------------------------------------------------------- writing

def _json_default(obj: Any) -> Any:
    # Provenance often carries numpy scalars/arrays (bin_edges); store them as plain JSON.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def _check_kind(kind: str) -> None:
    if kind not in REQUIRED_COLUMNS:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {sorted(REQUIRED_COLUMNS)}")


def _to_arrow(df: pd.DataFrame, kind: str, where: str) -> pa.Table:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: {kind} table is missing columns {missing}")
    table = pa.Table.from_pandas(df, preserve_index=False)
    for name, typ in _COLUMN_TYPES[kind].items():
        i = table.schema.get_field_index(name)
        if table.schema.field(i).type == typ:
            continue
        try:
            table = table.set_column(i, pa.field(name, typ), table.column(i).cast(typ))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"{where}: column {name!r} of type {table.schema.field(i).type} cannot be "
                f"stored as {typ}: {exc}"
            ) from exc
    # Drop pandas' own metadata: the file's Arrow schema is the contract, and readers convert
    # from it alone rather than re-creating the writer's pandas dtypes and index.
    return table.replace_schema_metadata(None)


def write_table(df: pd.DataFrame, path: str | Path, kind: str, metadata: dict) -> None:
    """Write ``df`` as a ``kind`` table at ``path``, atomically, with ``metadata`` as provenance.

    ``metadata`` must be JSON-serializable (numpy values are converted). ``schema_version`` and
    ``kind`` are set here and override any such keys in ``metadata`` (so metadata copied from
    another file can be passed through). Required columns are cast to their contract types.

    Raises:
        ValueError: unknown kind, missing required columns, a column that cannot be cast, or
            metadata that is not JSON-serializable.
    """
    _check_kind(kind)
    path = Path(path)
    table = _to_arrow(df, kind, str(path))
    meta = {**dict(metadata), "schema_version": SCHEMA_VERSION, "kind": kind}
    try:
        blob = json.dumps(meta, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: metadata is not JSON-serializable: {exc}") from exc
    table = table.replace_schema_metadata({METADATA_KEY: blob.encode("utf-8")})
    # Page checksums let the reader detect flipped bytes inside data pages, not just a
    # broken footer.
    _atomic_write(path, lambda f: pq.write_table(table, f, write_page_checksum=True))


# ----------------------------------------------------------------------------- reading

def _parse_metadata(path: Path, schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TableError(
            f"{path}: not a tts-selector table (no {METADATA_KEY.decode()!r} metadata): "
            f"point at a table directory written by `tts-selector profile`, or re-run it"
        )
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise TableError(f"{path}: metadata is corrupted ({str(exc)[:200]}): {_FIX_REBUILD}") from None
    if not isinstance(meta, dict):
        raise TableError(f"{path}: metadata is corrupted (not a JSON object): {_FIX_REBUILD}")
    version = meta.get("schema_version")
    # bool is an int subclass; True is not a version.
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TableError(
            f"{path}: invalid schema version {version!r} (expected an integer >= 1): {_FIX_REBUILD}"
        )
    if version > SCHEMA_VERSION:
        raise TableError(
            f"{path}: written by schema version {version}, this tts-selector reads up to "
            f"{SCHEMA_VERSION}: {_FIX_UPGRADE}"
        )
    if version < SCHEMA_VERSION:
        raise TableError(
            f"{path}: written by schema version {version}, before tables binned prompts on samples no strategy is "
            f"scored on; its cells are biased and this tts-selector reads only version {SCHEMA_VERSION}: regenerate it "
            f"with `tts-selector profile CONFIG --out NEW_DIR` (add pool.difficulty_samples to the config)"
        )
    return meta


# The most a table file may hold once decompressed (its footer declares it): a small file
# must not expand into all of memory.
MAX_UNCOMPRESSED_BYTES = 4 << 30


def _fix_for(path: Path) -> str:
    """How to repair a bad file: a checkpoint shard (rollouts/, state/) is skipped by a resumed
    profile as done, so rebuilding means deleting it first."""
    if path.parent.name in (_ROLLOUTS_DIR, "state"):
        return (f"delete {path} and re-run the same `tts-selector profile` command (it regenerates only that shard, "
                f"then finishes the tables)")
    return _FIX_REBUILD


def _check_file(path: Path, root: Path | None = None) -> None:
    """``path`` must be a regular file inside ``root`` (default: its own directory), links
    resolved: a FIFO would block the reader, a device never ends, a link may lead anywhere."""
    if not path.exists():
        if path.is_symlink():
            raise TableError(f"{path}: a link to nothing: restore the file, or {_FIX_REBUILD}")
        raise TableError(f"{path}: not found: run `tts-selector profile` to build it")
    if not path.is_file():
        raise TableError(f"{path}: not a regular file: remove it and {_FIX_REBUILD}")
    if path.is_symlink() or path.parent.is_symlink():
        real, base = os.path.realpath(path), os.path.realpath(root if root is not None else path.parent)
        if os.path.commonpath([real, base]) != base:
            raise TableError(f"{path}: a link to {real}, outside the table {root or path.parent}: a table's files "
                             "must lie inside it; replace the link with the file itself")


def _open(path: Path, root: Path | None = None) -> pq.ParquetFile:
    _check_file(path, root)
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except Exception as exc:  # pyarrow raises assorted types (ArrowInvalid, OSError, ...) on bad bytes
        raise TableError(f"{path}: not a Parquet file or corrupted ({exc}): {_fix_for(path)}") from exc
    size = sum(pf.metadata.row_group(i).total_byte_size for i in range(pf.metadata.num_row_groups))
    if size > MAX_UNCOMPRESSED_BYTES:
        pf.close()
        raise TableError(f"{path}: declares {size} bytes of data, over the {MAX_UNCOMPRESSED_BYTES}-byte limit of a "
                         f"table file: this is not a file tts-selector wrote; {_FIX_REBUILD}")
    return pf


def _check_kind_and_columns(path: Path, meta: dict, schema: pa.Schema, kind: str) -> None:
    if meta.get("kind") != kind:
        raise TableError(
            f"{path}: is a {meta.get('kind')!r} table, expected {kind!r}: "
            f"the file is misplaced or renamed; {_FIX_REBUILD}"
        )
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in schema.names]
    if missing:
        raise TableError(f"{path}: missing columns {missing}: {_FIX_REBUILD}")


def _read_validated(
    path: Path, kind: str, columns: Iterable[str] | None = None, root: Path | None = None
) -> tuple[pa.Table, dict]:
    pf = _open(path, root)
    try:
        schema = pf.schema_arrow
        meta = _parse_metadata(path, schema)
        _check_kind_and_columns(path, meta, schema, kind)
        if columns is not None:
            columns = list(columns)
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise TableError(f"{path}: requested columns {unknown} are not in the file")
        try:
            table = pf.read(columns=columns)
        except Exception as exc:  # see _open: corrupt data pages surface as various pyarrow errors
            raise TableError(f"{path}: not a Parquet file or corrupted ({exc}): {_fix_for(path)}") from exc
    finally:
        pf.close()
    return table, meta


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    df = table.replace_schema_metadata(None).to_pandas()
    for i, field in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_integer(field.type) and (field.name in _NULLABLE_INT or col.null_count):
            # Default conversion turns an int column with nulls into float64.
            df[field.name] = col.to_pandas(types_mapper={field.type: pd.Int64Dtype()}.get)
    return df


def read_metadata(path: str | Path, kind: str | None = None) -> dict:
    """Return a table file's metadata, reading only the Parquet footer.

    Checks the schema version (and ``kind`` if given) but not columns or data.

    Raises:
        TableError: missing, unreadable, not a tts-selector table, or an unsupported version.
    """
    from .table_checks import check_metadata

    path = Path(path)
    pf = _open(path)
    try:
        meta = _parse_metadata(path, pf.schema_arrow)
    finally:
        pf.close()
    if kind is not None and meta.get("kind") != kind:
        raise TableError(
            f"{path}: is a {meta.get('kind')!r} table, expected {kind!r}: "
            f"the file is misplaced or renamed; {_FIX_REBUILD}"
        )
    check_metadata(meta, path)
    return meta


def read_table(
    path: str | Path, kind: str, *, columns: Iterable[str] | None = None, root: str | Path | None = None
) -> tuple[pd.DataFrame, dict]:
    """Read and validate a ``kind`` table; return ``(dataframe, metadata)``.

    ``columns`` restricts which columns are loaded (required columns are still checked to be
    in the file). Integer column ``m`` (and any integer column holding nulls) comes back as
    pandas ``Int64``.

    The file must be a regular file inside ``root`` (default: its directory) and its metadata
    pass :func:`selector.table_checks.check_metadata`; its values are checked by
    :class:`TableDir`, which knows the table's grid.

    Raises:
        TableError: missing, corrupted, not a tts-selector table, wrong kind, schema version
            newer than :data:`SCHEMA_VERSION` or invalid, required columns missing, or values
            outside the contract.
    """
    from .table_checks import check_metadata

    _check_kind(kind)
    path = Path(path)
    table, meta = _read_validated(path, kind, columns, None if root is None else Path(root))
    check_metadata(meta, path)
    return _to_pandas(table), meta


# ----------------------------------------------------------------------------- rollouts

def _shard_path(table_dir: str | Path, shard_index: int) -> Path:
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or shard_index < 0:
        raise ValueError(f"shard_index must be a non-negative int, got {shard_index!r}")
    return Path(table_dir) / _ROLLOUTS_DIR / f"shard-{shard_index:05d}.parquet"


def write_rollout_shard(df: pd.DataFrame, table_dir: str | Path, shard_index: int, metadata: dict) -> Path:
    """Atomically write rollout shard ``shard_index`` under ``table_dir/rollouts/``; return its path.

    Rewriting an existing index replaces that shard (a resumed profiler may redo one).
    """
    path = _shard_path(table_dir, shard_index)
    write_table(df, path, "rollouts", metadata)
    return path


def rollout_shards(table_dir: str | Path) -> list[Path]:
    """Paths of the finished rollout shards, sorted by shard index (temp files are skipped)."""
    directory = Path(table_dir) / _ROLLOUTS_DIR
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _SHARD_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    # Sort numerically: past shard 99999 the name grows a digit and lexical order breaks.
    return [p for _, p in sorted(found)]


def _read_shards(table_dir: Path, columns: Iterable[str] | None) -> list[tuple[Path, pa.Table, dict]]:
    shards = rollout_shards(table_dir)
    if not shards:
        raise TableError(
            f"{table_dir / _ROLLOUTS_DIR}: no rollout shards found: run `tts-selector profile` to build them"
        )
    cols = None if columns is None else list(columns)
    return [(p, *_read_validated(p, "rollouts", cols, table_dir)) for p in shards]


def _check_same_config(items: list[tuple[Path, dict]], where: Path) -> None:
    hashes = {p: meta.get("config_hash") for p, meta in items}
    if len(set(hashes.values())) > 1:
        listing = ", ".join(f"{p.name if p.parent == where else p.relative_to(where)}={h!r}"
                            for p, h in hashes.items())
        raise TableError(
            f"{where}: files come from different profiling runs (config_hash: {listing}): "
            f"delete the directory and {_FIX_REBUILD}"
        )


def read_rollouts(table_dir: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read every rollout shard (each validated like :func:`read_table`) into one DataFrame.

    Rows come in shard-index order. Shards must share one ``config_hash``.

    Raises:
        TableError: no shards, any shard invalid, or shards from different configurations.
    """
    table_dir = Path(table_dir)
    shards = _read_shards(table_dir, columns)
    _check_same_config([(p, meta) for p, _, meta in shards], table_dir)
    # "default" promotion tolerates extra columns present in only some shards (filled with nulls).
    table = pa.concat_tables([t for _, t, _ in shards], promote_options="default")
    df = _to_pandas(table)
    # A sample without an answer is None, as the profiler wrote it: pandas' string dtype reads a
    # null back as NaN, which the vote (profile/evaluate.py) would count as one more answer.
    for col in ("answer", "answer_key"):
        if col in df.columns:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


# ----------------------------------------------------------------------------- TableDir

class TableDir:
    """A table directory. Nothing is read until asked; each table is cached after its first read.

    Returned DataFrames are shallow copies of the cache, so callers may modify them freely
    (pandas copy-on-write keeps the cache intact).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._cache: dict[str, pd.DataFrame] = {}
        self._meta_cache: dict[str, dict] = {}
        self._metadata: dict | None = None
        self._config: dict | None = None

    def file(self, kind: str) -> Path:
        """Path of the ``kind`` table file (prompts, results, selection, evaluations)."""
        if kind not in _TABLE_FILES:
            raise ValueError(f"unknown table {kind!r}; expected one of {sorted(_TABLE_FILES)}")
        return self.path / _TABLE_FILES[kind]

    def _get(self, kind: str) -> pd.DataFrame:
        if kind not in self._cache:
            from .table_checks import check_frame, check_grid

            # Values checked here, where the table's grid is known: types, ranges, unique cells.
            df, meta = read_table(self.file(kind), kind, root=self.path)
            check_frame(kind, df, meta, self.file(kind))
            check_grid(kind, df, meta, self.file(kind), self.grid)
            self._cache[kind], self._meta_cache[kind] = df, meta
        return self._cache[kind].copy(deep=False)

    @property
    def config(self) -> dict:
        """The profile config recorded in ``state/manifest.json``, checked ({} when there is
        none); see :func:`selector.table_checks.read_table_manifest`. Cached."""
        if self._config is None:
            from .table_checks import read_table_manifest

            self._config = read_table_manifest(self.path)
        return dict(self._config)

    @property
    def grid(self):
        """The budgets and largest ``n`` the manifest's grid declares (None without one)."""
        from .table_checks import MANIFEST, table_grid

        return table_grid(self.config, self.path / MANIFEST)

    def prompts(self) -> pd.DataFrame:
        """The prompts table."""
        return self._get("prompts")

    def results(self) -> pd.DataFrame:
        """The results table."""
        return self._get("results")

    def selection(self, estimator: str | None = None) -> pd.DataFrame:
        """The selection rows for the router with difficulty estimator ``estimator`` (e.g.
        ``prompt:tfidf``, ``pilot:4``): cells chosen and scored on the bins that estimator
        assigns. ``None``: the table's default (its own bins, metadata ``default_selection``).
        An estimator with no rows gives an empty frame (see :meth:`selection_estimators`)."""
        df = self._get("selection")
        key = estimator if estimator is not None else self.metadata.get("default_selection")
        if key is None:  # a published prior: one set of rules for any estimate
            return df
        return df[df["estimator"] == key].reset_index(drop=True)

    def selection_estimators(self) -> list[str]:
        """The estimators this table has a selection for."""
        return sorted(self._get("selection")["estimator"].unique())

    def all_selections(self) -> pd.DataFrame:
        """Every router's selection rows (column ``estimator`` names the router), checked."""
        return self._get("selection")

    def evaluations(self) -> pd.DataFrame:
        """The evaluations table."""
        return self._get("evaluations")

    def rollouts(self, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """All rollout shards concatenated (not cached: the pool can be large); the columns
        read are checked like the tables' (selector.table_checks)."""
        from .table_checks import check_frame

        df = read_rollouts(self.path, columns)
        check_frame("rollouts", df, self.metadata, self.path / _ROLLOUTS_DIR)
        return df

    @property
    def metadata(self) -> dict:
        """Provenance of the directory, taken from ``selection.parquet`` (footer only; cached)."""
        if self._metadata is None:
            from .table_checks import check_identity

            meta = self._meta_cache.get("selection")
            meta = meta if meta is not None else read_metadata(self.file("selection"), "selection")
            check_identity(meta, self.file("selection"))
            self._metadata = meta
        return dict(self._metadata)

    def missing(self) -> list[str]:
        """Names of the core table files not present."""
        return [name for name in _TABLE_FILES.values() if not (self.path / name).is_file()]

    def exists(self) -> bool:
        """Whether all four core table files (prompts, results, selection, evaluations) exist."""
        return not self.missing()

    def validate(self, rollouts: bool = True) -> None:
        """Read every file fully and check they share one ``config_hash``.

        Rollout shards are included when ``rollouts`` is true and ``rollouts/`` has any.
        A file without ``config_hash`` counts as a distinct value ``None``.

        Raises:
            TableError: a core file missing, any file invalid, or mismatched ``config_hash``.
        """
        missing = self.missing()
        if missing:
            raise TableError(f"{self.path}: missing {missing}: run `tts-selector profile` to build them")
        items: list[tuple[Path, dict]] = []
        for kind in _TABLE_FILES:
            self._get(kind)
            items.append((self.file(kind), self._meta_cache[kind]))
        if rollouts and rollout_shards(self.path):
            items.extend((p, meta) for p, _, meta in _read_shards(self.path, None))
        _check_same_config(items, self.path)

    def __repr__(self) -> str:
        return f"TableDir({str(self.path)!r})"
