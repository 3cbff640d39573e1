"""Nothing computed is lost by a rerun, and a resume never mixes two versions of its inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selector.estimators.train import train_on_table
from selector.profiler import load_config, run_profile
from selector.profiler.config import ConfigError
from selector.profiler.manifest import MANIFEST
from selector.routing import Router
from selector.tables import TableDir, read_table, write_table

from test_profile import sim_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def finished(tmp_path):
    cfg = load_config(sim_config(tmp_path, prompts=24))
    run_profile(cfg, tmp_path / "table", progress=False)
    train_on_table(tmp_path / "table", features="tfidf", folds=2)
    (tmp_path / "table" / "evaluation-heldout.json").write_text('{"rows": []}')
    return cfg, tmp_path / "table"


def test_rerunning_profile_on_a_finished_table_keeps_its_estimators_and_reports(finished):
    cfg, table = finished
    before = TableDir(table).metadata["estimators"]
    estimator = (table / before["prompt:tfidf"]["file"]).read_bytes()
    run_profile(cfg, table, progress=False)
    after = TableDir(table).metadata
    assert after["estimators"] == before
    assert (table / before["prompt:tfidf"]["file"]).read_bytes() == estimator
    assert (table / "evaluation-heldout.json").read_text() == '{"rows": []}'
    Router.load(table).route("What is 2 + 3?", 4)  # the default estimator still resolves


def test_a_rerun_that_changes_the_bins_is_refused_unless_forced(finished):
    cfg, table = finished
    # Stand in for code that bins differently: the finished table's bins are not the rerun's.
    prompts, meta = read_table(table / "prompts.parquet", "prompts")
    prompts["bin"] = prompts["bin"].max() + 1 - prompts["bin"]
    write_table(prompts, table / "prompts.parquet", "prompts", meta)
    selection = (table / "selection.parquet").read_bytes()
    with pytest.raises(ConfigError, match=r"other splits or bins.*prompt:tfidf.*new\s+--out.*--force"):
        run_profile(cfg, table, progress=False)
    assert (table / "selection.parquet").read_bytes() == selection  # refused before writing
    run_profile(cfg, table, progress=False, force=True)
    assert "estimators" not in TableDir(table).metadata


def _edit_answers(data: Path) -> None:
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[-1]["answer"] = "not " + str(rows[-1]["answer"])
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("old_manifest", [False, True], ids=["manifest", "pre-hash manifest"])
def test_an_edited_data_set_is_refused_on_resume(tmp_path, old_manifest):
    cfg_path = sim_config(tmp_path, prompts=24)
    cfg = load_config(cfg_path)
    out = tmp_path / "table"
    run_profile(cfg, out, shard=(0, 2), progress=False)  # a partial run, as a kill leaves it
    manifest = json.loads((out / MANIFEST).read_text())
    recorded = manifest["dataset_sha256"]
    if old_manifest:  # directories written before the manifest held the hash: the shards' provenance
        del manifest["dataset_sha256"]
        (out / MANIFEST).write_text(json.dumps(manifest))
    shards = sorted((out / "rollouts").glob("*.parquet"))
    _edit_answers(tmp_path / "questions.jsonl")
    with pytest.raises(ConfigError) as err:
        run_profile(cfg, out, progress=False)
    message = str(err.value)
    from selector.files import file_sha256

    assert recorded in message and file_sha256(tmp_path / "questions.jsonl") in message
    assert "restore the data set" in message and "new --out" in message
    assert sorted((out / "rollouts").glob("*.parquet")) == shards  # nothing more was generated
    assert not (out / "selection.parquet").exists()
    # The CLI says the same with exit 2 and no traceback.
    r = subprocess.run([sys.executable, "-m", "selector.cli", "profile", str(cfg_path), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr and recorded in r.stderr


def test_an_edited_config_is_refused_with_both_hashes(tmp_path):
    cfg = load_config(sim_config(tmp_path, prompts=24))
    out = tmp_path / "table"
    run_profile(cfg, out, shard=(0, 2), progress=False)
    other = load_config(sim_config(tmp_path, prompts=24, pool={"n": 4}, grid={"budgets": [1, 2, 4]}))
    with pytest.raises(ConfigError, match=rf"{cfg.config_hash}.*{other.config_hash}.*restore the config.*new --out"):
        run_profile(other, out, progress=False)


def test_an_edited_data_set_after_a_kill_is_refused_and_nothing_more_is_written(tmp_path):
    import os
    import signal
    import time

    from selector.tables import rollout_shards

    cfg_path = sim_config(tmp_path, prompts=24, latency=0.05)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "selector.cli", "profile", str(cfg_path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and len(rollout_shards(out)) >= 2):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = {p: p.stat().st_mtime_ns for p in rollout_shards(out)}
    assert written and not (out / "selection.parquet").exists()
    _edit_answers(tmp_path / "questions.jsonl")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "dataset sha256" in r.stderr and "restore the data set" in r.stderr and "new --out" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in rollout_shards(out)} == written
    assert not (out / "selection.parquet").exists()


def test_a_truncated_shard_names_the_fix_that_works_and_stale_temp_files_are_removed(tmp_path):
    import os
    import time

    from selector.tables import TableError

    cfg = load_config(sim_config(tmp_path, prompts=12))
    out = tmp_path / "t"
    run_profile(cfg, out, progress=False)
    before = read_table(out / "results.parquet", "results")[0]
    shard = sorted((out / "rollouts").glob("shard-*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[:200])  # a crash or a full disk cut it short
    # What a kill -9 leaves: a temp file that is never renamed; and one fresh from a writer in flight.
    stale = out / "state" / ".tree-shard-00001.parquet.0123456789ab.tmp"
    stale.write_bytes(b"half a shard")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = out / "rollouts" / ".shard-00002.parquet.abcdefabcdef.tmp"
    fresh.write_bytes(b"being written")
    # A resume skips the shard as done, so "re-run profile" alone would repeat the error: say to delete it.
    with pytest.raises(TableError, match=f"delete {shard}.*re-run the same `tts-selector profile` command"):
        run_profile(cfg, out, progress=False)
    assert not stale.exists() and fresh.exists()
    shard.unlink()
    run_profile(cfg, out, progress=False)  # the advice works: that shard is regenerated, the tables finished
    assert shard.is_file()
    assert read_table(out / "results.parquet", "results")[0].equals(before)
