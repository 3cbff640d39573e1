"""The many-machine recipe (README, "Many machines"), end to end on one machine.

Several OpenAI-compatible servers stand in for a fleet of ``vllm serve`` instances (fake
servers: the fleet is outside the unit; the profiler, the sharding and the merge are real). Two
worker processes each run ``tts-selector profile CONFIG --shard i/2`` against all the
endpoints, then ``tts-selector merge`` joins their directories. The merged tables must equal a
single-process run, and every endpoint must have served requests.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from selector.tables import TableDir
from test_openai_backend import FakeState, servers  # noqa: F401  (fixture)

TABLES = ("prompts", "results", "selection", "evaluations")
QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?\s*Answer:\s*$", re.S)


def fleet_script(prompt: str, seed: int, j: int) -> str:
    """A deterministic 'model': right or wrong by (question, seed, j), two steps per solution."""
    head, _, partial = prompt.rpartition("Answer:\n")
    a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", head)[-1])
    wrong = (a * 7 + b + seed + 3 * j) % (2 + a % 4) == 0  # questions differ in difficulty
    total = a + b + (1 if wrong else 0)
    first = f"{a} + {b} = {total}.\n\n"
    last = f"The final answer is \\boxed{{{total}}}."
    return last if partial.startswith(f"{a} + {b} = ") else first + last


def write_config(tmp_path: Path, urls: list[str]) -> Path:
    data = tmp_path / "questions.jsonl"
    with data.open("w") as fh:
        for i in range(12):
            a, b = 3 + 5 * i, 11 + 2 * i
            fh.write(json.dumps({"id": f"q{i}", "problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n")
    spec = (
        "openai:model=fake,base_urls=[" + ",".join(urls) + "],prompt_template=\"Question: {question}\\nAnswer:\\n\","
        "id=fake-fleet,max_concurrency=4"
    )
    cfg = {
        "name": "fleet", "policy": spec, "prm": "arith-check",
        "dataset": {"name": str(data), "id_field": "id", "heldout": 0.25},
        "pool": {"n": 4, "difficulty_samples": 2},
        "grid": {"strategies": ["majority", "best_of_n", "beam_search"], "budgets": [1, 2, 4], "tree_budgets": [4],
                 "beam_widths": [2], "aggregations": ["last"], "max_steps": 4},
        "binning": {"scheme": "quantile", "k": 2},
        "evaluate": {"subsamples": 20}, "select": {"folds": 2, "bootstrap": 50, "pilots": [2]}, "shard_size": 3,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selector.cli", *args], capture_output=True, text=True, timeout=600)


def test_shard_workers_against_several_endpoints_then_merge(tmp_path, servers):  # noqa: F811
    urls, state = servers(3, FakeState(script=fleet_script))
    config = write_config(tmp_path, urls)
    workers = [
        subprocess.Popen([sys.executable, "-m", "selector.cli", "profile", str(config), "--out", str(tmp_path / f"w{i}"),
                          "--shard", f"{i}/2", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for w in workers:  # the two workers run at the same time, as on two machines
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    merged = cli("merge", str(tmp_path / "w0"), str(tmp_path / "w1"), "--out", str(tmp_path / "merged"), "--quiet")
    assert merged.returncode == 0, merged.stderr[-3000:]
    single = cli("profile", str(config), "--out", str(tmp_path / "single"), "--quiet")
    assert single.returncode == 0, single.stderr[-3000:]

    got, want = TableDir(tmp_path / "merged"), TableDir(tmp_path / "single")
    got.validate()
    for kind in TABLES:
        pd.testing.assert_frame_equal(getattr(got, kind)(), getattr(want, kind)())
    assert set(got.selection()["strategy"]) <= {"majority", "best_of_n", "beam_search"}
    assert got.metadata["policy_id"] == "fake-fleet"
    # client-side balancing: every endpoint served requests, from both workers' runs
    ports = {int(u.rsplit(":", 1)[1]) for u in urls}
    assert set(state.ports) == ports
    counts = pd.Series(state.ports).value_counts()
    assert counts.min() > 0.5 * counts.max()
