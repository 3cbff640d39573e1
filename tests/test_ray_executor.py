"""The Ray executor: profile shards as Ray tasks on actors, equal to one process.

One local Ray cluster for the module (``ray.init(num_cpus=2)``, on this machine only). The
reference is a single-process run of ``configs/sim-small.yaml``; every Ray run must give the
same tables, after an actor dies under a shard and after the driver itself is killed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM
from selector.errors import InputError
from selector.profiler import RayExecutor, load_config, run_profile
from selector.profiler import executors
from selector.profiler.config import ConfigError, ExecutorConfig
from selector.profiler.outcomes import read_tree_runs
from selector.tables import TableDir, read_rollouts, rollout_shards

ray = pytest.importorskip("ray", reason="the Ray executor tests need Ray: pip install -e '.[ray]' (CI installs it)")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sim-small.yaml"
TABLES = ("prompts", "results", "selection", "evaluations")
SHARDS = 6  # sim-small: 60 prompts, shard_size 10


def assert_same_tables(got: Path, want: Path) -> None:
    for kind in TABLES:
        pd.testing.assert_frame_equal(getattr(TableDir(got), kind)(), getattr(TableDir(want), kind)())
    pd.testing.assert_frame_equal(read_rollouts(got), read_rollouts(want))
    pd.testing.assert_frame_equal(read_tree_runs(got).drop(columns="seconds"), read_tree_runs(want).drop(columns="seconds"))


@pytest.fixture(scope="module")
def cluster():
    # Workers (also those of a CLI driver joining this cluster) import the package from here.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old] if old else []))
    # The crash-once engine factory below travels to the actors by value (tests/ is no package).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "table"
    summary = run_profile(load_config(CONFIG), out, progress=False)
    assert summary.complete and summary.executor.kind == "local"
    return out


def test_ray_profile_equals_one_process(cluster, reference, tmp_path):
    summary = run_profile(load_config(CONFIG), tmp_path / "ray", progress=False,
                          executor=RayExecutor(ExecutorConfig(kind="ray", num_actors=2)))
    assert summary.complete
    report = summary.executor
    assert (report.kind, report.actors, report.written, report.skipped, report.retried) == ("ray", 2, 2 * SHARDS, 0, 0)
    assert "0 retried" in summary.render()
    assert_same_tables(tmp_path / "ray", reference)


class CrashOnce:
    """A policy whose process dies (``os._exit``) the first time it sees ``marker`` in a
    prompt; ``flag`` (a file) remembers that it already died, across the restart."""

    def __init__(self, inner, flag: str, marker: str) -> None:
        self.inner, self.flag, self.marker = inner, flag, marker
        self.id, self.num_parameters = inner.id, inner.num_parameters

    def format_prompt(self, question):
        return self.inner.format_prompt(question)

    def default_sampling_params(self):
        return self.inner.default_sampling_params()

    def generate_steps(self, requests):
        if not os.path.exists(self.flag) and any(self.marker in r.prefix for r in requests):
            Path(self.flag).touch()
            os._exit(1)  # as an OOM kill or a segfault would: no exception, the process is gone
        return self.inner.generate_steps(requests)


def crash_once_engines(policy_spec: str, prm_spec: str, *, flag: str, marker: str):
    policy, prm = executors.build_engines(policy_spec, prm_spec)
    return CrashOnce(policy, flag, marker), prm


def test_a_dead_actor_is_retried_and_no_shard_is_written_twice(cluster, reference, tmp_path, monkeypatch):
    cfg = load_config(CONFIG)
    problems = [line for line in (ROOT / "configs" / "sim_questions.jsonl").read_text().splitlines() if line.strip()]
    marker = json.loads(problems[34])["problem"]  # a prompt of pool shard 3
    flag = tmp_path / "crashed"
    writes: list[tuple[str, int]] = []
    for stage in ("pool", "tree"):
        real = executors.STAGES[stage]

        def counting(table_dir, index, rows, metadata, seconds, _real=real):
            writes.append((_real.name, index))
            return _real.write(table_dir, index, rows, metadata, seconds)

        monkeypatch.setitem(executors.STAGES, stage, dataclasses.replace(real, write=counting))
    factory = functools.partial(crash_once_engines, flag=str(flag), marker=marker)
    summary = run_profile(cfg, tmp_path / "ray", progress=False,
                          executor=RayExecutor(ExecutorConfig(kind="ray", num_actors=2), engine_factory=factory))
    assert flag.exists(), "the actor never crashed: the test did not test a retry"
    assert summary.executor.retried >= 1 and "retried" in summary.render()
    assert sorted(writes) == sorted({(s, i) for s in ("pool", "tree") for i in range(SHARDS)})  # each exactly once
    assert_same_tables(tmp_path / "ray", reference)


def test_driver_killed_mid_run_resumes_to_the_same_tables(cluster, reference, tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["policy"] = "sim:latency=0.03"  # slow enough to kill between shards; the same samples
    raw["dataset"]["name"] = str(ROOT / "configs" / raw["dataset"]["name"])
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "selector.cli", "profile", str(config), "--out", str(out), "--quiet",
           "--executor", "ray", "--ray-address", cluster]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(rollout_shards(out)) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    written = {p: p.stat().st_mtime_ns for p in rollout_shards(out) + sorted((out / "state").glob("tree-shard-*"))}
    assert written and not (out / "selection.parquet").exists(), "killed too late"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(written)} already on disk" in done.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())  # nothing on disk was recomputed
    assert_same_tables(out, reference)


def test_engine_objects_cannot_go_to_ray_actors(tmp_path):
    with pytest.raises(InputError, match="specs"):
        run_profile(load_config(CONFIG), tmp_path / "x", policy=SimulatedPolicy(), prm=SimulatedPRM(),
                    executor=RayExecutor(), progress=False)


def test_executor_settings_are_checked_and_leave_the_table_identity(tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["dataset"]["name"] = str(ROOT / "configs" / raw["dataset"]["name"])
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(raw))
    raw["executor"] = {"kind": "ray", "num_gpus": 1, "num_actors": 4}
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "ray.yaml")
    assert cfg.executor == ExecutorConfig(kind="ray", num_gpus=1, num_actors=4)
    assert cfg.config_hash == load_config(tmp_path / "plain.yaml").config_hash  # where shards run changes no table
    for bad, message in [({"kind": "dask"}, "executor.kind"), ({"num_actors": 0}, "num_actors"),
                         ({"num_gpus": -1}, "num_gpus"), ({"max_retries": -1}, "max_retries"), ({"gpus": 1}, "unknown")]:
        raw["executor"] = bad
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "bad.yaml")
    out = subprocess.run([sys.executable, "-m", "selector.cli", "profile", str(CONFIG), "--ray-address", "auto",
                          "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--executor ray" in out.stderr and "Traceback" not in out.stderr
