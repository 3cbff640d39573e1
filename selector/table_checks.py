"""Validating a table directory at load: a table is data from anyone, checked before it is used.

A table directory may come from a colleague, a download or an attacker. Everything read from it
is checked here before the router, ``evaluate``, ``inspect`` or ``serve`` act on it:

- files: only regular files inside the table, with a size cap (:func:`selector.files.read_regular_file`;
  a FIFO would block, ``/dev/zero`` never ends, a link may point anywhere);
- ``state/manifest.json``: a JSON object whose ``config`` (what the router reads of it: engines,
  sampling, the strategy grid) has the profile config's types and sane ranges;
- the Parquet metadata: types of every key the package reads (``estimators``, ``pilots``,
  ``policy_params``, ``ledger``, ...), string lengths, estimator files that stay inside the table;
- the Parquet columns: types, finite values, ranges (0 <= accuracy <= 1, bins within the
  table's k, budgets within the grid the manifest declares and ``n`` within its largest
  strategy budget), unique cells, string lengths.

Every failure is a :class:`~selector.tables.TableError` naming the file, the field and the fix, so
the CLI exits 2 and ``serve`` refuses to start. Columns beyond the contract are left alone (newer
writers add some). Which engines a table may name is decided in
:func:`selector.backends.registry.require_package_spec`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .files import read_regular_file
from .tables import TableError
from .typed_values import fits

__all__ = [
    "MAX_BUDGET", "Grid", "check_frame", "check_grid", "check_identity", "check_report", "check_manifest", "check_metadata", "check_table_dir",
    "estimator_path", "read_report", "read_table_json", "read_table_manifest", "table_grid",
]

MAX_BUDGET = 4096  # generations per round: far beyond any profiled grid, far below a hang
MAX_STEPS = 1000  # search rounds of a tree strategy
MAX_BINS = 1000
MAX_TOKENS = 1 << 20  # sampling caps (tokens per step / solution)
MAX_NAME = 256  # identifiers: strategy, aggregation, estimator, engine ids, split
MAX_ID = 4096  # prompt ids, data set names and paths, engine specs
MAX_TEXT = 1 << 16  # free text in metadata (a prior's citation, rules, notes)
MAX_DEPTH = 16  # nesting of JSON values in metadata and manifests
MANIFEST_MAX_BYTES = 4 << 20
REPORT_MAX_BYTES = 64 << 20
MANIFEST = Path("state") / "manifest.json"

_FIX = ("the table was tampered with or corrupted: restore it from its source, or rebuild it with "
        "`tts-selector profile`")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile value must not flood the terminal."""
    text = repr(value) if not isinstance(value, str) or len(value) <= limit else repr(value[:limit])
    return text if len(text) <= limit + 20 else text[:limit] + f"... ({len(text)} characters)"


def _error(path: Any, field: str, problem: str) -> TableError:
    return TableError(f"{path}: {field}: {problem}; {_FIX}")


# ----------------------------------------------------------------------------- files

def read_table_json(table_dir: str | Path, relative: str | Path, max_bytes: int = REPORT_MAX_BYTES) -> Any:
    """The JSON value of ``table_dir/relative``: a regular file inside the table, at most
    ``max_bytes``, valid JSON (nesting a parser can take)."""
    path = Path(table_dir) / relative
    data = read_regular_file(path, max_bytes=max_bytes, root=table_dir, error=TableError)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TableError(f"{path}: not valid JSON ({_short(str(exc), 120)}); {_FIX}") from None


def read_report(path: str | Path) -> dict:
    """An ``evaluation-*.json`` report beside its table: read as :func:`read_table_json` reads a
    table's files, then checked (:func:`check_report`)."""
    path = Path(path)
    report = read_table_json(path.parent, path.name)
    check_report(path, report)
    return report


def read_table_manifest(table_dir: str | Path) -> dict[str, Any]:
    """The validated ``config`` of a table's ``state/manifest.json`` ({} when it has none)."""
    path = Path(table_dir) / MANIFEST
    if not path.exists() and not path.is_symlink():
        return {}
    return check_manifest(read_table_json(table_dir, MANIFEST, MANIFEST_MAX_BYTES), path)


def estimator_path(table_dir: str | Path, file: Any, where: str = "selection.parquet metadata estimators") -> Path:
    """The path of a recorded estimator file: a plain relative name that stays inside the table."""
    if not isinstance(file, str) or not file or len(file) > MAX_NAME:
        raise _error(Path(table_dir) / "selection.parquet", f"{where}: file", f"must be a file name, got {_short(file)}")
    parts = Path(file).parts
    if Path(file).is_absolute() or ".." in parts or "\\" in file:
        raise _error(Path(table_dir) / "selection.parquet", f"{where}: file",
                     f"{_short(file)} points outside the table (an estimator file lies inside the table directory)")
    return Path(table_dir) / file


# ----------------------------------------------------------------------------- JSON values

def _walk(value: Any, path: Any, field: str, depth: int = 0) -> None:
    """Every string in ``value`` at most MAX_TEXT characters, nesting at most MAX_DEPTH, numbers finite."""
    if depth > MAX_DEPTH:
        raise _error(path, field, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _error(path, field, f"a string of {len(value)} characters (at most {MAX_TEXT})")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _error(path, field, f"{value!r} is not a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            if len(k) > MAX_ID:  # JSON keys are strings
                raise _error(path, field, f"a key of {len(k)} characters (at most {MAX_ID}): {_short(k)}")
            _walk(v, path, f"{field}.{_short(k, 40)}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, path, f"{field}[{i}]", depth + 1)


def _is_int(value: Any) -> bool:
    return fits(value, int)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return fits(value, float)


def _want_str(meta: dict, key: str, path: Any, limit: int = MAX_NAME, required: bool = False) -> None:
    value = meta.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or len(value) > limit:
        got = "missing" if key not in meta else _short(value)
        raise _error(path, f"metadata {key}", f"must be a string of at most {limit} characters, got {got}")


def _want_int(meta: dict, key: str, path: Any, lo: int = 0, hi: int | None = None) -> None:
    value = meta.get(key)
    if value is None:
        return
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        raise _error(path, f"metadata {key}", f"must be an integer in [{lo}, {hi if hi is not None else 'inf'}], "
                                              f"got {_short(value)}")


def _want_edges(value: Any, path: Any, field: str) -> None:
    if (not isinstance(value, list) or len(value) > MAX_BINS or not all(_is_number(e) for e in value)
            or any(b < a for a, b in zip(value, value[1:]))):
        raise _error(path, field, f"must be a list of at most {MAX_BINS} ascending finite numbers, got {_short(value)}")


def _want_cost_map(value: Any, path: Any, field: str) -> None:
    """``{stage: {name: number or null}}`` (a table's ``ledger`` and ``profiling_cost``)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise _error(path, f"metadata {field}", f"must be a mapping of stages, got {type(value).__name__}")
    for stage, cost in value.items():
        if not isinstance(cost, dict):
            raise _error(path, f"metadata {field}.{_short(stage, 40)}", f"must be a mapping of figures, got {_short(cost)}")
        for name, v in cost.items():
            if v is not None and not _is_number(v):
                raise _error(path, f"metadata {field}.{_short(stage, 40)}.{_short(name, 40)}",
                             f"must be a finite number or null, got {_short(v)}")


def check_metadata(meta: dict, path: Any) -> None:
    """Types of the metadata keys the package reads (see :mod:`selector.tables` for their meaning)."""
    from .estimators.persist import FEATURE_KINDS

    _walk(meta, path, "metadata")
    prior = meta.get("prior", False)
    if not isinstance(prior, bool):
        raise _error(path, "metadata prior", f"must be true or false, got {_short(prior)}")
    _want_str(meta, "policy_id", path)
    _want_str(meta, "prm_id", path)
    for key in ("dataset", "dataset_family", "binning_scheme", "difficulty", "config_hash", "default_selection",
                "declared_router", "grader", "grader_version", "package_version", "config_name"):
        _want_str(meta, key, path, MAX_ID)
    for key in ("policy_params", "prm_params"):
        _want_int(meta, key, path)
    for key in ("difficulty_samples", "n_pool"):
        _want_int(meta, key, path, 0, MAX_BUDGET * 16)
    _want_int(meta, "grader_timeouts", path)
    if "bin_edges" in meta:
        _want_edges(meta["bin_edges"], path, "metadata bin_edges")
    labels = meta.get("bin_labels")
    if labels is not None and (not isinstance(labels, dict) or len(labels) > MAX_BINS):
        raise _error(path, "metadata bin_labels", f"must be a mapping of at most {MAX_BINS} bins, got {_short(labels)}")
    pilots = meta.get("pilots")
    if pilots is not None:
        if not isinstance(pilots, dict):
            raise _error(path, "metadata pilots", f"must be a mapping of pilot:<k> records, got {type(pilots).__name__}")
        for name, rec in pilots.items():
            field = f"metadata pilots.{_short(name, 40)}"
            if not isinstance(rec, dict) or not _is_int(rec.get("k")) or not 1 <= rec["k"] <= MAX_BUDGET:
                raise _error(path, field, f"must be a record with an integer k in [1, {MAX_BUDGET}], got {_short(rec)}")
            if name not in (f"pilot:{rec['k']}", f"pilot:{rec['k']}:{rec.get('signal')}"):
                raise _error(path, field, f"is named for another k or signal than its k={rec['k']}, "
                                          f"signal={_short(rec.get('signal'))}")
            from .profiler.difficulty import PILOT_SIGNALS

            if rec.get("signal", "prm_mean") not in PILOT_SIGNALS:  # it picks the estimator class the router runs
                raise _error(path, f"{field}.signal", f"must be one of {list(PILOT_SIGNALS)}, got {_short(rec.get('signal'))}")
            _want_edges(rec.get("edges"), path, f"{field}.edges")
    estimators = meta.get("estimators")
    if estimators is not None:
        if not isinstance(estimators, dict):
            raise _error(path, "metadata estimators", f"must be a mapping of prompt:<features> records, got "
                                                      f"{type(estimators).__name__}")
        for name, rec in estimators.items():
            field = f"metadata estimators.{_short(name, 40)}"
            kind, _, features = name.partition(":")
            if kind != "prompt" or features not in FEATURE_KINDS:
                raise _error(path, "metadata estimators", f"unknown estimator {_short(name)} (prompt:<features>, features "
                                                          f"one of {list(FEATURE_KINDS)})")
            if not isinstance(rec, dict):
                raise _error(path, field, f"must be a record with file and sha256, got {_short(rec)}")
            if "file" not in rec:
                raise _error(path, f"{field}.file", "missing (the estimator's file name)")
            estimator_path(Path(path).parent, rec["file"], f"metadata estimators.{name}")
            if not isinstance(rec.get("sha256"), str) or not _SHA256.match(rec["sha256"]):
                raise _error(path, f"{field}.sha256", f"must be 64 hex digits, got {_short(rec.get('sha256'))}")
            if rec.get("features", features) != features:
                raise _error(path, f"{field}.features", f"{_short(rec.get('features'))} is not the {features!r} its name says")
    _want_cost_map(meta.get("ledger"), path, "ledger")
    _want_cost_map(meta.get("profiling_cost"), path, "profiling_cost")
    aggregations = meta.get("aggregations")
    if aggregations is not None and (not isinstance(aggregations, list)
                                     or not all(isinstance(a, str) and len(a) <= MAX_NAME for a in aggregations)):
        raise _error(path, "metadata aggregations", f"must be a list of names, got {_short(aggregations)}")


def check_identity(meta: dict, path: Any) -> None:
    """A profiled table's metadata names the policy it was measured with (the router checks
    engines against it); a published prior is for any policy."""
    if not meta.get("prior"):
        _want_str(meta, "policy_id", path, required=True)


# ----------------------------------------------------------------------------- manifest

@dataclass(frozen=True)
class Grid:
    """What a table's manifest declares about its cells: the budgets profiled and the largest
    number of samples (``n``) any strategy was run with."""

    budgets: frozenset[int]
    max_n: int
    where: str


def check_manifest(manifest: Any, path: Any) -> dict[str, Any]:
    """The ``config`` of a manifest, after checking the parts the router reads: the engine specs
    (strings; which ones a table may name is the router's call), ``sampling`` (SamplingParams
    keys and values) and ``grid`` (the profile config's types, budgets within MAX_BUDGET)."""
    from .backends.base import SamplingParams
    from .errors import TTSError
    from .profiler.config import ConfigError, GridConfig, build_section
    from .search.adaptive_consistency import STOP_RULES
    from .search.aggregate import ANSWER_RULES
    from .search.base import STRATEGIES

    if not isinstance(manifest, dict):
        raise _error(path, "manifest", f"must be a JSON object, got {type(manifest).__name__}")
    _walk(manifest, path, "manifest")
    config = manifest.get("config", {})
    if not isinstance(config, dict):
        raise _error(path, "config", f"must be a JSON object, got {type(config).__name__}")
    for key in ("policy", "prm"):
        if key in config and (not isinstance(config[key], str) or len(config[key]) > MAX_ID):
            raise _error(path, f"config.{key}", f"must be an engine spec string, got {_short(config[key])}")
    sampling = config.get("sampling", {})
    if sampling is not None:
        if not isinstance(sampling, dict):
            raise _error(path, "config.sampling", f"must be a mapping, got {type(sampling).__name__}")
        allowed = {f for f in SamplingParams.__dataclass_fields__}
        unknown = sorted(map(str, set(sampling) - allowed))
        if unknown:
            raise _error(path, "config.sampling", f"unknown key(s) {_short(unknown)}; allowed: {sorted(allowed)}")
        try:
            SamplingParams(**sampling)
        except TTSError as exc:
            raise _error(path, "config.sampling", str(exc)) from None
        for key in ("max_tokens", "max_step_tokens"):
            if sampling.get(key, 0) > MAX_TOKENS:
                raise _error(path, f"config.sampling.{key}", f"{sampling[key]} is over {MAX_TOKENS} tokens")
    grid = config.get("grid")
    if grid is not None:
        if not isinstance(grid, dict):
            raise _error(path, "config.grid", f"must be a mapping, got {type(grid).__name__}")
        try:
            g = build_section(GridConfig, grid, "config.grid")
        except ConfigError as exc:
            raise _error(path, "config.grid", str(exc).replace("fix it in the config", "")) from None
        for key in ("budgets", "tree_budgets", "adaptive_windows"):
            values = getattr(g, key) or ()
            if not all(_is_int(b) and 1 <= b <= MAX_BUDGET for b in values):
                raise _error(path, f"config.grid.{key}", f"must be integers in [1, {MAX_BUDGET}], got {_short(list(values))}")
        if not g.budgets:
            raise _error(path, "config.grid.budgets", "is empty")
        if not _is_int(g.max_steps) or not 1 <= g.max_steps <= MAX_STEPS:
            raise _error(path, "config.grid.max_steps", f"must be an integer in [1, {MAX_STEPS}], got {_short(g.max_steps)}")
        checks = [("strategies", g.strategies, STRATEGIES), ("answer_rule", (g.answer_rule,), ANSWER_RULES),
                  ("adaptive_rule", (g.adaptive_rule,), STOP_RULES)]
        for key, values, known in checks:
            if any(v not in known for v in values):
                raise _error(path, f"config.grid.{key}", f"{_short(list(values))}: use one of {sorted(known)}")
        if not 0.5 < g.adaptive_threshold < 1:
            raise _error(path, "config.grid.adaptive_threshold", f"must be in (0.5, 1), got {_short(g.adaptive_threshold)}")
    return config


def table_grid(config: dict[str, Any], where: Any) -> Grid | None:
    """The budgets and largest ``n`` a checked manifest config declares (None without a grid)."""
    grid = config.get("grid")
    if not grid:
        return None
    budgets = set(grid.get("budgets") or ()) | set(grid.get("tree_budgets") or ())
    if not budgets:
        from .profiler.config import GridConfig

        budgets = set(GridConfig().budgets)
    return Grid(frozenset(int(b) for b in budgets), max(int(b) for b in budgets), str(where))


# ----------------------------------------------------------------------------- columns

def _strings(df: pd.DataFrame, col: str, path: Any, limit: int, nullable: bool, known: Iterable[str] | None = None) -> None:
    s = df[col]
    if s.empty:  # a prior's empty tables have null-typed columns
        return
    values = s.dropna()
    if not nullable and len(values) != len(s):
        raise _error(path, f"column {col}", f"{len(s) - len(values)} missing values")
    if values.empty:
        return
    if not pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s):
        raise _error(path, f"column {col}", f"must hold strings, not {s.dtype}")
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise _error(path, f"column {col}", f"must hold strings, got {_short(bad[0])}")
    lengths = values.str.len()
    if int(lengths.max()) > limit:
        row = int(lengths.to_numpy().argmax())
        raise _error(path, f"column {col}", f"a value of {int(lengths.max())} characters (at most {limit}): "
                                            f"{_short(values.iloc[row])}")
    if known is not None:
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise _error(path, f"column {col}", f"unknown value(s) {_short(unknown)}; known: {sorted(known)}")


def _numbers(df: pd.DataFrame, col: str, path: Any, lo: float, hi: float, nullable: bool, integer: bool) -> None:
    s = df[col]
    if s.empty:
        return
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        if s.isna().all() and nullable:
            return
        raise _error(path, f"column {col}", f"must hold {'integers' if integer else 'numbers'}, not {s.dtype}")
    if integer and not pd.api.types.is_integer_dtype(s):
        raise _error(path, f"column {col}", f"must hold integers, not {s.dtype}")
    values = s.to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(values)
    if missing.any() and not nullable:
        row = int(missing.argmax())
        raise _error(path, f"column {col}", f"row {row} is missing or NaN")
    present = values[~missing]
    if present.size == 0:
        return
    if not np.isfinite(present).all():
        raise _error(path, f"column {col}", f"{_short(float(present[~np.isfinite(present)][0]))} is not finite")
    if integer:  # compare as integers: 10**18 is exact there, not in float64
        ints = s.dropna().to_numpy(dtype=np.int64)
        low, high = int(ints.min()), int(ints.max())
    else:
        low, high = float(present.min()), float(present.max())
    if low < lo or high > hi:
        value = low if low < lo else high
        raise _error(path, f"column {col}", f"{_short(value)} is outside [{lo:g}, {hi:g}]")


def _unique(df: pd.DataFrame, cols: list[str], path: Any) -> None:
    cols = [c for c in cols if c in df.columns]
    if len(cols) and df.duplicated(cols).any():
        row = df[df.duplicated(cols, keep=False)].iloc[0]
        key = ", ".join(f"{c}={_short(getattr(row[c], 'item', lambda: row[c])(), 30)}" for c in cols)
        raise _error(path, "rows", f"the cell ({key}) appears more than once")


_COLUMN_RULES: dict[str, list[tuple]] = {
    # (column, "str", limit, nullable, known) | (column, "int"/"num", lo, hi, nullable)
    "selection": [("estimator", "str", MAX_NAME, False, None), ("policy", "str", MAX_ID, True, None),
                  ("prm", "str", MAX_ID, True, None), ("bin", "int", 1, MAX_BINS, False),
                  ("budget", "int", 1, MAX_BUDGET, False), ("strategy", "str", MAX_NAME, False, "strategies"),
                  ("n", "int", 1, MAX_BUDGET, False), ("m", "int", 1, MAX_BUDGET, True),
                  ("aggregation", "str", MAX_NAME, True, None), ("accuracy", "num", 0, 1, False),
                  ("ci_low", "num", 0, 1, False), ("ci_high", "num", 0, 1, False), ("n_prompts", "int", 0, 1e15, False),
                  ("mean_flops", "num", 0, 1e30, False), ("insample_accuracy", "num", 0, 1, True),
                  ("mean_generations", "num", 0, 1e15, True), ("mean_tokens", "num", 0, 1e15, True)],
    "results": [("bin", "int", 1, MAX_BINS, False), ("budget", "int", 1, MAX_BUDGET, False),
                ("strategy", "str", MAX_NAME, False, None), ("n", "int", 1, MAX_BUDGET, False),
                ("m", "int", 1, MAX_BUDGET, True), ("aggregation", "str", MAX_NAME, True, None),
                ("accuracy", "num", 0, 1, False), ("ci_low", "num", 0, 1, False), ("ci_high", "num", 0, 1, False),
                ("n_prompts", "int", 0, 1e15, False), ("mean_generations", "num", 0, 1e15, False),
                ("mean_tokens", "num", 0, 1e15, False), ("mean_flops", "num", 0, 1e30, False)],
    "evaluations": [("prompt_id", "str", MAX_ID, False, None), ("strategy", "str", MAX_NAME, False, None),
                    ("n", "int", 1, MAX_BUDGET, False), ("m", "int", 1, MAX_BUDGET, True),
                    ("aggregation", "str", MAX_NAME, True, None), ("budget", "int", 1, MAX_BUDGET, False),
                    ("accuracy", "num", 0, 1, False), ("accuracy_std", "num", 0, 1, True),
                    ("generations", "num", 0, 1e15, False), ("tokens", "num", 0, 1e15, False),
                    ("flops", "num", 0, 1e30, False)],
    "prompts": [("prompt_id", "str", MAX_ID, False, None), ("text_sha256", "str", MAX_NAME, True, None),
                ("split", "str", MAX_NAME, False, None), ("oracle_pass1", "num", 0, 1, True),
                ("predicted_pass1", "num", 0, 1, True), ("difficulty_score", "num", -1e15, 1e15, True),
                ("agreement", "num", 0, 1, True),
                ("bin", "int", 1, MAX_BINS, False)],
    "rollouts": [("prompt_id", "str", MAX_ID, False, None), ("sample_id", "int", 0, 1e9, False),
                 ("role", "str", MAX_NAME, True, None), ("tokens", "int", 0, 1e12, True),
                 ("prm_tokens", "int", 0, 1e12, True), ("prompt_tokens", "int", 0, 1e12, True)],
}
# A published prior's selection: rules, no measurements (null budget, n, accuracy; see tables.py).
_PRIOR_SELECTION = [("estimator", "str", MAX_NAME, True, None), ("bin", "int", 1, MAX_BINS, False),
                    ("strategy", "str", MAX_NAME, False, "strategies"), ("budget", "int", 1, MAX_BUDGET, True),
                    ("n", "int", 1, MAX_BUDGET, True), ("m", "int", 1, MAX_BUDGET, True),
                    ("aggregation", "str", MAX_NAME, True, None), ("accuracy", "num", 0, 1, True),
                    ("policy_params_min", "int", 0, 1e18, False), ("policy_params_max", "int", 0, 1e18, True)]
# Only the selection's strategies are run (the router builds them); results and evaluations name
# configurations, whatever they are called.
_CELL_KEYS = {"selection": ["estimator", "bin", "budget"],
              "results": ["bin", "budget", "strategy", "n", "m", "aggregation"],
              "evaluations": ["prompt_id", "strategy", "n", "m", "aggregation", "budget"],
              "prompts": ["prompt_id"]}


def check_frame(kind: str, df: pd.DataFrame, meta: dict, path: Any) -> None:
    """Types, finite values, ranges and string lengths of the contract's columns of a ``kind``
    table (those present: a reader may load a subset) and unique cells. ``meta`` is the table's
    metadata as :func:`selector.tables.read_table` / ``read_metadata`` return it: already
    checked there (:func:`check_metadata`), so not again here."""
    from .search.base import STRATEGIES

    prior = bool(meta.get("prior"))
    rules = _PRIOR_SELECTION if prior and kind == "selection" else _COLUMN_RULES.get(kind, [])
    for col, typ, a, b, c, *rest in ((*r, None) if len(r) == 5 else r for r in rules):
        if col not in df.columns:
            continue
        if typ == "str":
            _strings(df, col, path, a, b, STRATEGIES if c == "strategies" else None)
        else:
            _numbers(df, col, path, a, b, c, typ == "int")
    if {"ci_low", "ci_high"} <= set(df.columns) and not prior:
        lo, hi = df["ci_low"].to_numpy(dtype=float), df["ci_high"].to_numpy(dtype=float)
        if (lo > hi + 1e-12).any():
            raise _error(path, "columns ci_low/ci_high", f"row {int((lo > hi + 1e-12).argmax())}: ci_low above ci_high")
    if prior and kind == "selection":
        _unique(df, ["estimator", "bin", "budget", "policy_params_min"], path)  # those present
    elif kind in _CELL_KEYS and set(_CELL_KEYS[kind]) <= set(df.columns):
        _unique(df, _CELL_KEYS[kind], path)


def _bins_k(meta: dict) -> int:
    """The most bins any of the table's binnings has (its own edges, each pilot's)."""
    edges = [meta.get("bin_edges") or []] + [p.get("edges") or [] for p in (meta.get("pilots") or {}).values()]
    return max(max(len(e) + 1 for e in edges), len(meta.get("bin_labels") or {}))


def check_grid(kind: str, df: pd.DataFrame, meta: dict, path: Any, grid: Grid | None) -> None:
    """Cells within what the table declares: bins within its k, budgets among the manifest's
    grid budgets and ``n``/``m`` within its largest strategy budget (a cell at budget N may hold
    a configuration whose ``n`` is another of the grid's budgets)."""
    if meta.get("prior") or df.empty:
        return
    if "bin" in df.columns and kind in ("selection", "results", "prompts"):
        k = _bins_k(meta)
        high = int(df["bin"].max())
        if high > k:
            raise _error(path, "column bin", f"bin {high} is beyond the table's {k} bins (metadata bin_edges)")
    if grid is None:
        return
    if "budget" in df.columns:
        outside = sorted(set(int(b) for b in df["budget"].dropna().unique()) - grid.budgets)
        if outside:
            raise _error(path, "column budget", f"budget(s) {_short(outside)} are not in the grid {grid.where} declares "
                                                f"({sorted(grid.budgets)})")
    for col in ("n", "m"):
        if col in df.columns and df[col].notna().any() and int(df[col].max()) > grid.max_n:
            raise _error(path, f"column {col}", f"{int(df[col].max())} is above the largest budget the grid "
                                                f"{grid.where} declares ({grid.max_n})")


# ----------------------------------------------------------------------------- the whole directory

def check_report(path: Path, report: Any) -> None:
    """An ``evaluation-<split>.json`` as ``inspect`` reads it: rows of (method, budget, figures)."""
    if not isinstance(report, dict):
        raise _error(path, "report", f"must be a JSON object, got {type(report).__name__}")
    rows, budgets = report.get("rows"), report.get("budgets")
    if not isinstance(rows, list) or not isinstance(budgets, list) or not all(_is_int(b) for b in budgets):
        raise _error(path, "rows/budgets", "must be a list of rows and a list of integer budgets")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("method"), str) or not _is_int(row.get("budget")):
            raise _error(path, f"rows[{i}]", f"needs a string method and an integer budget, got {_short(row)}")
        for key in ("accuracy", "ci_low", "ci_high"):
            if key in row and row[key] is not None and not _is_number(row[key]):
                raise _error(path, f"rows[{i}].{key}", f"must be a finite number, got {_short(row[key])}")


def check_table_dir(path: str | Path) -> None:
    """Check a whole table directory before a command uses it: the manifest, the four core
    tables (with the grid), every recorded estimator and the JSON reports beside them. Rollout
    shards are checked when read (only ``evaluate``'s pilots read them)."""
    from .estimators.persist import load_estimator
    from .tables import TableDir

    table = TableDir(path)
    if not table.exists():
        return  # the command says what is missing (a catalog, an unfinished table)
    table.validate(rollouts=False)
    meta = table.metadata
    for name, rec in (meta.get("estimators") or {}).items():
        load_estimator(estimator_path(table.path, rec["file"]), rec["sha256"], features=name.partition(":")[2],
                       root=table.path)
    for report in sorted(table.path.glob("evaluation-*.json")):
        read_report(report)
    for curve in sorted(table.path.glob("learning-curve-*.json")):
        read_table_json(table.path, curve.name)
