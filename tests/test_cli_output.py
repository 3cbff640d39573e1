"""What the CLI prints for a newcomer: words that cannot be misread, counts that match what is
listed, and no progress bars from sub-second loads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from selector.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"


def test_route_names_the_estimators_bin_probability_as_such(capsys):
    assert main(["route", "--tables", str(DEMO), "What is 17 + 25?", "--budget", "8"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    # not "p=0.35", which reads as pass@1 beside bins labelled by pass@1
    assert "chosen by prompt:tfidf, its probability for this bin 0." in first and "p=" not in first


def test_solve_says_how_many_of_its_candidates_it_lists(capsys):
    argv = ["solve", "sim problem 1 (difficulty 0.5)", "--strategy", "best_of_n", "--n", "8", "--policy", "sim",
            "--prm", "sim"]
    assert main([*argv, "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "candidates:  8 (showing 3; --show N for more)" in out
    assert len([line for line in out.splitlines() if line.startswith("  [")]) == 3
    assert main([*argv, "--show", "8"]) == 0
    assert "candidates:  8\n" in capsys.readouterr().out  # all listed: nothing to add


@pytest.mark.slow  # loads the MiniLM embedder
def test_evaluate_prints_no_loading_bar_unless_verbose(tmp_path):
    pytest.importorskip("sentence_transformers")
    cmd = [sys.executable, "-m", "selector.cli", "evaluate", "--tables", str(DEMO), "--estimators", "prompt:minilm",
           "--bootstrap", "20"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Loading weights" not in quiet.stderr and "router (prompt:minilm)" in quiet.stdout
    loud = subprocess.run([cmd[0], "-m", "selector.cli", "--verbose", *cmd[3:]], capture_output=True, text=True,
                          timeout=600, env=env)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr
