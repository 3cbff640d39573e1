"""Tests for selector.tables: the on-disk contract between the profiler and the router."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selector import tables as T
from selector.tables import (
    REQUIRED_COLUMNS, SCHEMA_VERSION, TableDir, TableError, atomic_write_text, read_metadata,
    read_rollouts, read_table, rollout_shards, write_rollout_shard, write_table,
)

META = {"config_hash": "abc123", "policy_id": "smollm2-135m", "bin_edges": [0.0, 0.5, 1.0]}


def frame(kind: str, rows: int = 3, offset: int = 0) -> pd.DataFrame:
    """A small valid DataFrame of ``kind`` (with one extra column to check extras survive)."""
    r = range(offset, offset + rows)
    cfg = {
        "strategy": ["best_of_n", "beam_search", "majority"][:rows] + ["dvts"] * max(0, rows - 3),
        "n": [4 * (i + 1) for i in r],
        "m": [None if i % 2 == 0 else 2 for i in r],
        "aggregation": [None if i % 2 == 0 else "last" for i in r],
        "budget": [16 * (i + 1) for i in r],
        "accuracy": [0.1 * (i % 10) for i in r],
    }
    cols = {
        "tree_runs": {
            "prompt_id": [f"p{i}" for i in r], "strategy": cfg["strategy"], "n": cfg["n"], "m": cfg["m"],
            "aggregation": cfg["aggregation"], "seed": [i for i in r], "correct": [bool(i % 2) for i in r],
            "generations": [8 * (i + 1) for i in r], "policy_tokens": [100 * (i + 1) for i in r],
            "prm_tokens": [50 * (i + 1) for i in r], "policy_flops": [1e9 * (i + 1) for i in r],
            "prm_flops": [0.0 for i in r],
        },
        "prompts": {
            "prompt_id": [f"p{i}" for i in r], "text_sha256": [f"{i:064x}" for i in r],
            "split": ["profile" if i % 3 else "heldout" for i in r],
            "oracle_pass1": [0.25 * (i % 4) for i in r], "predicted_pass1": [0.2 * (i % 5) for i in r],
            "difficulty_score": [0.2 * (i % 5) for i in r], "bin": [1 + i % 5 for i in r],
        },
        "results": {
            "bin": [1 + i % 5 for i in r], **cfg, "ci_low": [0.0] * rows, "ci_high": [1.0] * rows,
            "n_prompts": [10] * rows, "mean_generations": [4.0] * rows, "mean_tokens": [100.5] * rows,
            "mean_flops": [1e9] * rows,
        },
        "selection": {
            "estimator": ["bins:predicted"] * rows, "policy": ["smollm2-135m"] * rows, "prm": ["arith-check"] * rows,
            "bin": [1 + i % 5 for i in r],
            **cfg, "ci_low": [0.0] * rows, "ci_high": [1.0] * rows, "n_prompts": [10] * rows,
            "mean_flops": [1e9] * rows,
        },
        "evaluations": {
            "prompt_id": [f"p{i}" for i in r], **cfg, "accuracy_std": [0.01] * rows,
            "generations": [4.0] * rows, "tokens": [120.0] * rows, "flops": [2e9] * rows,
        },
        "rollouts": {
            "prompt_id": [f"p{i}" for i in r], "sample_id": list(r),
            "role": ["difficulty" if i == 0 else "evaluation" for i in r],
            "steps": [[f"step {j}" for j in range(i % 3)] for i in r],
            "step_scores": [[0.5] * (i % 3) for i in r],
            "answer": [None if i % 2 else str(i) for i in r],
            "answer_key": [None if i % 2 else str(i) for i in r],
            "correct": [bool(i % 2 == 0) for i in r], "tokens": [10 * (i + 1) for i in r],
        },
    }[kind]
    df = pd.DataFrame(cols)
    df["extra"] = list(r)
    return df


def write_dir(path, meta=META):
    for kind in ("prompts", "results", "selection", "evaluations"):
        write_table(frame(kind), path / f"{kind}.parquet", kind, meta)
    return TableDir(path)


def leftovers(directory):
    return [p.name for p in directory.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("kind", sorted(REQUIRED_COLUMNS))
def test_round_trip_each_kind(tmp_path, kind):
    df = frame(kind)
    path = tmp_path / "sub" / f"{kind}.parquet"  # parent created on demand
    write_table(df, path, kind, META)
    got, meta = read_table(path, kind)

    assert meta == {**META, "schema_version": SCHEMA_VERSION, "kind": kind}
    assert list(got.columns) == list(df.columns)
    assert got["extra"].tolist() == df["extra"].tolist()
    for col in REQUIRED_COLUMNS[kind]:
        want, have = df[col].tolist(), got[col].tolist()
        if col in ("steps", "step_scores"):
            have = [list(x) for x in have]
        elif col == "m":
            assert str(got[col].dtype) == "Int64"
            have = [None if pd.isna(x) else int(x) for x in have]
            want = [None if pd.isna(x) else int(x) for x in want]  # pandas held NaN / 2.0
        elif col in ("aggregation", "answer", "answer_key"):
            # pandas 3's str dtype holds missing strings as NaN on both sides.
            have = [None if pd.isna(x) else x for x in have]
            want = [None if pd.isna(x) else x for x in want]
        assert have == want, col
    # Metadata in the footer is cheap to read and identical.
    assert read_metadata(path) == meta
    assert read_metadata(path, kind) == meta


def test_contract_types_enforced_on_write(tmp_path):
    # m all-null and float-typed, aggregation all None: without casting these would be stored
    # as double / null and the router would see a different schema from file to file.
    df = frame("results")
    df["m"] = np.nan
    df["aggregation"] = None
    df["n"] = df["n"].astype("float64")
    path = tmp_path / "results.parquet"
    write_table(df, path, "results", {})
    schema = pq.read_schema(path)
    assert schema.field("m").type == pa.int64()
    assert schema.field("n").type == pa.int64()
    assert schema.field("aggregation").type == pa.string()
    assert schema.field("strategy").type == pa.string()
    got, _ = read_table(path, "results")
    assert got["m"].isna().all() and str(got["m"].dtype) == "Int64"


def test_uncastable_column_raises_value_error(tmp_path):
    df = frame("results")
    df["n"] = [1.5, 2.0, 3.0]
    with pytest.raises(ValueError, match="'n'"):
        write_table(df, tmp_path / "results.parquet", "results", {})
    assert not (tmp_path / "results.parquet").exists()
    assert leftovers(tmp_path) == []


def test_empty_frame_round_trips_with_contract_types(tmp_path):
    df = pd.DataFrame({c: pd.Series([], dtype=object) for c in REQUIRED_COLUMNS["selection"]})
    write_table(df, tmp_path / "selection.parquet", "selection", {})
    got, _ = read_table(tmp_path / "selection.parquet", "selection")
    assert len(got) == 0
    assert pq.read_schema(tmp_path / "selection.parquet").field("accuracy").type == pa.float64()


def test_metadata_overrides_and_numpy(tmp_path):
    meta = {"kind": "selection", "schema_version": 99, "bin_edges": np.array([0.0, 0.5]),
            "n_pool": np.int64(16), "prior": True}
    write_table(frame("results"), tmp_path / "r.parquet", "results", meta)
    got = read_metadata(tmp_path / "r.parquet")
    assert got["kind"] == "results" and got["schema_version"] == SCHEMA_VERSION
    assert got["bin_edges"] == [0.0, 0.5] and got["n_pool"] == 16 and got["prior"] is True


def test_metadata_not_serializable_raises(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        write_table(frame("results"), tmp_path / "r.parquet", "results", {"x": object()})
    assert not (tmp_path / "r.parquet").exists()


def test_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown table kind"):
        write_table(frame("results"), tmp_path / "r.parquet", "nope", {})


def test_read_table_columns_subset(tmp_path):
    write_table(frame("results"), tmp_path / "r.parquet", "results", {})
    got, _ = read_table(tmp_path / "r.parquet", "results", columns=["bin", "accuracy"])
    assert list(got.columns) == ["bin", "accuracy"]
    with pytest.raises(TableError, match="nope"):
        read_table(tmp_path / "r.parquet", "results", columns=["nope"])


# ----------------------------------------------------------------------------- atomicity

def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "results.parquet"
    write_table(frame("results"), path, "results", META)
    write_table(frame("results", rows=2), path, "results", META)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]
    assert len(read_table(path, "results")[0]) == 2


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.parquet"
    write_table(frame("results", rows=3), path, "results", {**META, "created_at": "old"})
    before = path.read_bytes()
    seen = []

    def dying_replace(src, dst):
        seen.append(os.path.getsize(src))  # the temp file was fully written
        raise OSError("killed")

    monkeypatch.setattr(T.os, "replace", dying_replace)
    with pytest.raises(OSError, match="killed"):
        write_table(frame("results", rows=1), path, "results", {**META, "created_at": "new"})
    monkeypatch.undo()

    assert seen and seen[0] > 0
    assert path.read_bytes() == before
    df, meta = read_table(path, "results")
    assert len(df) == 3 and meta["created_at"] == "old"
    assert leftovers(tmp_path) == []


def test_interrupted_text_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state" / "checkpoint.json"
    atomic_write_text(path, json.dumps({"done": 1}))
    assert json.loads(path.read_text()) == {"done": 1}
    monkeypatch.setattr(T.os, "replace", lambda s, d: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        atomic_write_text(path, json.dumps({"done": 2}))
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"done": 1}
    assert leftovers(tmp_path) == []
    atomic_write_text(path, "überschrieben")
    assert path.read_text(encoding="utf-8") == "überschrieben"


def test_written_file_has_normal_permissions(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "x.json"
    atomic_write_text(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- read errors

def test_missing_file(tmp_path):
    with pytest.raises(TableError, match="not found"):
        read_table(tmp_path / "results.parquet", "results")
    with pytest.raises(TableError, match="not found"):
        read_metadata(tmp_path / "results.parquet")


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty", "flip_data"])
def test_corrupted_file(tmp_path, damage):
    path = tmp_path / "results.parquet"
    write_table(frame("results", rows=200), path, "results", META)
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"this is not parquet" * 10)
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        # A byte inside the first column's data page (after the 4-byte magic and page header):
        # the footer stays valid, so only the page checksum can notice.
        col = pq.ParquetFile(path).metadata.row_group(0).column(0)
        pos = col.data_page_offset + col.total_compressed_size - 2
        data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TableError, match="corrupted") as err:
        read_table(path, "results")
    assert str(path) in str(err.value) and "tts-selector profile" in str(err.value)


def test_newer_schema_version(tmp_path, monkeypatch):
    path = tmp_path / "results.parquet"
    monkeypatch.setattr(T, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    write_table(frame("results"), path, "results", META)
    monkeypatch.undo()
    for read in (lambda: read_table(path, "results"), lambda: read_metadata(path)):
        with pytest.raises(TableError, match="upgrade") as err:
            read()
        assert f"schema version {SCHEMA_VERSION + 1}" in str(err.value)
        assert "pip install -U tts-selector" in str(err.value)


def test_older_schema_version_is_refused_with_the_regenerate_command(tmp_path, monkeypatch):
    # Version-1 tables were binned on the samples their cells were scored on: never read.
    path = tmp_path / "results.parquet"
    monkeypatch.setattr(T, "SCHEMA_VERSION", 1)
    write_table(frame("results"), path, "results", META)
    monkeypatch.undo()
    for read in (lambda: read_table(path, "results"), lambda: read_metadata(path)):
        with pytest.raises(TableError, match="schema version 1") as err:
            read()
        assert "tts-selector profile CONFIG --out NEW_DIR" in str(err.value)


def _write_with_raw_metadata(path, raw: bytes | None):
    table = pa.Table.from_pandas(frame("results"), preserve_index=False)
    table = table.replace_schema_metadata(None if raw is None else {b"tts_selector": raw})
    pq.write_table(table, path)


@pytest.mark.parametrize("raw, match", [
    (b'{"schema_version": "1", "kind": "results"}', "invalid schema version"),
    (b'{"schema_version": true, "kind": "results"}', "invalid schema version"),
    (b'{"kind": "results"}', "invalid schema version"),
    (b"{not json", "metadata is corrupted"),
    (b"[1, 2]", "metadata is corrupted"),
])
def test_bad_metadata(tmp_path, raw, match):
    path = tmp_path / "results.parquet"
    _write_with_raw_metadata(path, raw)
    with pytest.raises(TableError, match=match):
        read_table(path, "results")


def test_plain_parquet_is_not_ours(tmp_path):
    path = tmp_path / "results.parquet"
    frame("results").to_parquet(path)
    with pytest.raises(TableError, match="not a tts-selector table"):
        read_table(path, "results")
    with pytest.raises(TableError, match="not a tts-selector table"):
        read_metadata(path)


def test_kind_mismatch(tmp_path):
    path = tmp_path / "results.parquet"
    write_table(frame("selection"), path, "selection", META)
    with pytest.raises(TableError, match="'selection' table, expected 'results'"):
        read_table(path, "results")
    with pytest.raises(TableError, match="expected 'results'"):
        read_metadata(path, "results")


def test_missing_columns_on_write(tmp_path):
    with pytest.raises(ValueError, match=r"missing columns \['ci_low', 'mean_flops'\]") as err:
        write_table(frame("results").drop(columns=["ci_low", "mean_flops"]),
                    tmp_path / "results.parquet", "results", META)
    assert not isinstance(err.value, TableError)
    assert not (tmp_path / "results.parquet").exists()


def test_missing_columns_on_read(tmp_path):
    path = tmp_path / "results.parquet"
    table = pa.Table.from_pandas(frame("results").drop(columns=["ci_low"]), preserve_index=False)
    meta = json.dumps({"schema_version": SCHEMA_VERSION, "kind": "results"}).encode()
    pq.write_table(table.replace_schema_metadata({b"tts_selector": meta}), path)
    with pytest.raises(TableError, match=r"missing columns \['ci_low'\]") as err:
        read_table(path, "results")
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- rollouts

def test_rollout_shards_out_of_order(tmp_path):
    for idx in (2, 0, 1):
        p = write_rollout_shard(frame("rollouts", rows=2, offset=10 * idx), tmp_path, idx, META)
        assert p == tmp_path / "rollouts" / f"shard-{idx:05d}.parquet"
    # A killed writer's temp file and unrelated files are ignored.
    (tmp_path / "rollouts" / ".shard-00003.parquet.deadbeef.tmp").write_bytes(b"half")
    (tmp_path / "rollouts" / "notes.txt").write_text("x")

    assert [p.name for p in rollout_shards(tmp_path)] == [
        "shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    df = read_rollouts(tmp_path)
    assert df["sample_id"].tolist() == [0, 1, 10, 11, 20, 21]
    assert [list(s) for s in df["steps"]] == [[], ["step 0"], ["step 0"], ["step 0", "step 1"],
                                             ["step 0", "step 1"], []]
    assert df["correct"].dtype == bool
    assert list(read_rollouts(tmp_path, columns=["prompt_id", "correct"]).columns) == ["prompt_id", "correct"]


def test_rollout_shards_sorted_numerically(tmp_path):
    write_rollout_shard(frame("rollouts", rows=1, offset=1), tmp_path, 100000, {})
    write_rollout_shard(frame("rollouts", rows=1, offset=0), tmp_path, 99999, {})
    assert [p.name for p in rollout_shards(tmp_path)] == ["shard-99999.parquet", "shard-100000.parquet"]
    assert read_rollouts(tmp_path)["sample_id"].tolist() == [0, 1]


def test_rollouts_errors(tmp_path):
    assert rollout_shards(tmp_path) == []
    with pytest.raises(TableError, match="no rollout shards"):
        read_rollouts(tmp_path)
    with pytest.raises(ValueError):
        write_rollout_shard(frame("rollouts"), tmp_path, -1, {})
    write_rollout_shard(frame("rollouts"), tmp_path, 0, {"config_hash": "a"})
    write_rollout_shard(frame("rollouts"), tmp_path, 1, {"config_hash": "b"})
    with pytest.raises(TableError, match="config_hash"):
        read_rollouts(tmp_path)
    (tmp_path / "rollouts" / "shard-00001.parquet").write_bytes(b"junk")
    with pytest.raises(TableError, match="shard-00001.parquet: not a Parquet file or corrupted"):
        read_rollouts(tmp_path)


# ----------------------------------------------------------------------------- TableDir

def test_tabledir_lazy_and_cached(tmp_path, monkeypatch):
    td = TableDir(tmp_path / "nowhere")  # no I/O, no error
    assert repr(td) == f"TableDir({str(tmp_path / 'nowhere')!r})"
    assert not td.exists()
    with pytest.raises(TableError, match="not found"):
        td.prompts()

    td = write_dir(tmp_path / "t")
    assert td.exists() and td.missing() == []
    assert td.metadata["config_hash"] == "abc123" and td.metadata["kind"] == "selection"
    first = td.results()
    assert len(first) == 3

    calls = []
    monkeypatch.setattr(T, "read_table", lambda *a, **k: calls.append(a))
    again = td.results()
    assert calls == []  # served from cache
    again.loc[0, "accuracy"] = -1.0
    assert td.results().loc[0, "accuracy"] != -1.0  # callers cannot corrupt the cache
    monkeypatch.undo()
    for get in (td.prompts, td.selection, td.evaluations):
        assert len(get()) == 3


def test_tabledir_validate(tmp_path):
    td = write_dir(tmp_path / "t")
    write_rollout_shard(frame("rollouts"), td.path, 0, META)
    (td.path / "state").mkdir()
    (td.path / "state" / "checkpoint.json").write_text("{}")  # ignored
    td.validate()
    assert len(td.rollouts()) == 3

    write_rollout_shard(frame("rollouts"), td.path, 1, {**META, "config_hash": "zzz"})
    with pytest.raises(TableError, match="config_hash.*zzz"):
        TableDir(td.path).validate()
    TableDir(td.path).validate(rollouts=False)

    write_table(frame("results"), td.path / "results.parquet", "results", {**META, "config_hash": "other"})
    with pytest.raises(TableError, match="different profiling runs") as err:
        TableDir(td.path).validate(rollouts=False)
    assert "results.parquet='other'" in str(err.value)


def test_tabledir_validate_missing_and_corrupt(tmp_path):
    td = write_dir(tmp_path / "t")
    (td.path / "evaluations.parquet").unlink()
    assert not td.exists()
    with pytest.raises(TableError, match=r"missing \['evaluations.parquet'\]"):
        td.validate()
    write_table(frame("evaluations"), td.path / "evaluations.parquet", "evaluations", META)
    (td.path / "prompts.parquet").write_bytes(b"PAR1garbagePAR1")
    with pytest.raises(TableError, match="prompts.parquet: not a Parquet file or corrupted"):
        TableDir(td.path).validate()
