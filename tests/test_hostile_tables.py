"""A tampered table directory fails every command that reads it the same way: exit 2, within
10 s, with a message naming the file and the field. No hang, no traceback, no memory blow-up,
and ``serve`` refuses to start instead of answering every request 500.

Each case copies a simulator table (profiled here, with a trained estimator and an evaluation
report) and tampers with one thing, as an attacker or a broken disk would. One driver process
runs all five commands (route, solve on the table's simulator engines, inspect, evaluate,
serve start-up) on every copy in-process, each in a thread with a 10 s deadline, and reports
exit status, seconds and stderr. ``serve`` gets a fake uvicorn ``run`` (outside the unit): a
command that reaches it "started", which a tampered table must never do.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selector.estimators.train import train_on_table
from selector.router_evaluation import evaluate_router
from selector.profiler import load_config, run_profile
from selector.tables import read_table, write_table

from test_profile import sim_config

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("route", "solve", "inspect", "evaluate", "serve")
DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def sim_table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    table = tmp / "table"
    run_profile(load_config(sim_config(tmp, prompts=24)), table, progress=False)
    train_on_table(table, features="tfidf", folds=2)
    (table / "evaluation-heldout.json").write_text(evaluate_router(table, bootstrap=50).to_json())
    return table


# ----------------------------------------------------------------------------- tamperings

def _edit_selection(t: Path, change) -> None:
    """Rewrite selection.parquet with ``change(df, meta)`` applied (metadata kept, as an attacker can)."""
    df, meta = read_table(t / "selection.parquet", "selection")
    out = change(df, meta)
    df, meta = out if isinstance(out, tuple) else (df, meta)
    write_table(df, t / "selection.parquet", "selection", meta)


def _row(df: pd.DataFrame) -> int:
    """A cell the declared router (prompt:tfidf) uses at budget 4."""
    return int(df.index[(df["estimator"] == "prompt:tfidf") & (df["budget"] == 4)][0])


def _set(col: str, value):
    def change(df, meta):
        if isinstance(value, str) or pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            df[col] = df[col].astype(object)
        df.loc[_row(df), col] = value
    return lambda t: _edit_selection(t, change)


def _meta(**changes):
    def change(df, meta):
        meta = dict(meta)
        for key, value in changes.items():
            if value is _DROP:
                meta.pop(key, None)
            else:
                meta[key] = value(meta) if callable(value) else value
        return df, meta
    return lambda t: _edit_selection(t, change)


_DROP = object()


def _manifest(change):
    def tamper(t: Path) -> None:
        path = t / "state" / "manifest.json"
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps(change(manifest)))
    return tamper


def _manifest_node(kind: str):
    def tamper(t: Path) -> None:
        path = t / "state" / "manifest.json"
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        else:
            path.symlink_to("/dev/zero")
    return tamper


def _report_link(t: Path) -> None:
    (t / "evaluation-heldout.json").unlink()
    (t / "evaluation-heldout.json").symlink_to("/dev/zero")


def _report_rows(t: Path) -> None:
    path = t / "evaluation-heldout.json"
    report = json.loads(path.read_text())
    report["rows"] = [{k: v for k, v in row.items() if k != "method"} for row in report["rows"]]
    path.write_text(json.dumps(report))


def _estimator(change):
    """Rewrite estimator-tfidf.npz's arrays with ``change(arrays)`` and record its new sha256."""
    def tamper(t: Path) -> None:
        path = t / "estimator-tfidf.npz"
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        change(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path.write_bytes(buf.getvalue())
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        _meta(estimators=lambda m: {**m["estimators"], "prompt:tfidf": {**m["estimators"]["prompt:tfidf"], "sha256": sha}})(t)
    return tamper


def _duplicate(t: Path) -> None:
    _edit_selection(t, lambda df, meta: (pd.concat([df, df.iloc[[_row(df)]]], ignore_index=True), meta))


def _drop_evaluations_of_a_selected_cell(t: Path) -> None:
    sel, _ = read_table(t / "selection.parquet", "selection")
    cell = sel.loc[_row(sel)]
    ev, meta = read_table(t / "evaluations.parquet", "evaluations")
    same = (ev["strategy"] == cell["strategy"]) & (ev["n"] == cell["n"]) & (ev["budget"] == cell["budget"])
    write_table(ev[~same].reset_index(drop=True), t / "evaluations.parquet", "evaluations", meta)


ALL = set(COMMANDS)
# (case, tampering, words the message must hold: the file and the field, commands that read it)
CASES = [
    # 4. hangs and memory exhaustion
    ("n 10**9", _set("n", 10**9), ["selection.parquet", "column n", "1000000000"], ALL),
    ("n and budget 10**18", lambda t: (_set("n", 10**18)(t), _set("budget", 10**18)(t)),
     ["selection.parquet", "column", "1000000000000000000"], ALL),
    ("manifest is a FIFO", _manifest_node("fifo"), ["manifest.json", "FIFO"], ALL),
    ("manifest links to /dev/zero", _manifest_node("zero"), ["manifest.json", "/dev/zero", "outside"], ALL),
    ("report links to /dev/zero", _report_link, ["evaluation-heldout.json", "/dev/zero", "outside"], ALL),
    ("5 MB aggregation", _set("aggregation", "last" * 1_250_000), ["selection.parquet", "column aggregation", "5000000"],
     ALL),
    ("bin -5", _set("bin", -5), ["selection.parquet", "column bin", "-5"], ALL),
    ("bin 10**18", _set("bin", 10**18), ["selection.parquet", "column bin"], ALL),
    ("bin beyond k", _set("bin", 7), ["selection.parquet", "column bin", "beyond the table's 3 bins"], ALL),
    ("budget off the grid", _set("budget", 3), ["selection.parquet", "column budget", "[1, 2, 4, 8]"], ALL),
    ("negative accuracy", _set("accuracy", -0.5), ["selection.parquet", "column accuracy", "-0.5"], ALL),
    ("NaN accuracy", _set("accuracy", float("nan")), ["selection.parquet", "column accuracy", "NaN"], ALL),
    ("duplicated cell", _duplicate, ["selection.parquet", "appears more than once"], ALL),
    # 6. broken tables serve used to start on
    ("inf accuracy", _set("accuracy", float("inf")), ["selection.parquet", "column accuracy", "inf"], ALL),
    ("unknown sampling key", _manifest(lambda m: {**m, "config": {**m["config"], "sampling": {"tempreature": 0.5}}}),
     ["manifest.json", "config.sampling", "tempreature"], ALL),
    ("npz wrong shapes", _estimator(lambda a: a.update(ridge_coef=a["ridge_coef"][:-3])),
     ["estimator-tfidf.npz", "ridge_coef"], ALL),
    ("npz empty classes", _estimator(lambda a: a.update(classes=np.zeros(0, dtype=np.int64))),
     ["estimator-tfidf.npz", "classes"], ALL),
    # 7. tracebacks
    ("estimators a string", _meta(estimators="prompt:tfidf"), ["selection.parquet", "metadata estimators"], ALL),
    ("estimators a list", _meta(estimators=["prompt:tfidf"]), ["selection.parquet", "metadata estimators"], ALL),
    ("estimator without file", _meta(estimators=lambda m: {"prompt:tfidf": {"sha256": "0" * 64}}),
     ["selection.parquet", "estimators.'prompt:tfidf'.file"], ALL),
    ("no policy_id", _meta(policy_id=_DROP), ["selection.parquet", "metadata policy_id"], ALL),
    ("policy_params a list", _meta(policy_params=[1, 2]), ["selection.parquet", "metadata policy_params"], ALL),
    ("ledger a string", _meta(ledger="lots"), ["selection.parquet", "metadata ledger"], ALL),
    ("profiling_cost a list", _meta(profiling_cost=[1]), ["selection.parquet", "metadata profiling_cost"], ALL),
    ("manifest []", _manifest(lambda m: []), ["manifest.json", "manifest", "list"], ALL),
    ("manifest config a list", _manifest(lambda m: {**m, "config": [1]}), ["manifest.json", "config", "list"], ALL),
    ("manifest grid a list", _manifest(lambda m: {**m, "config": {**m["config"], "grid": [1]}}),
     ["manifest.json", "config.grid", "list"], ALL),
    ("manifest a directory", _manifest_node("dir"), ["manifest.json", "directory"], ALL),
    ("report rows without method", _report_rows, ["evaluation-heldout.json", "rows[0]", "method"], ALL),
    # evaluate alone reads the evaluations of each selected cell; the others never need them
    ("selected cell not in evaluations", _drop_evaluations_of_a_selected_cell,
     ["evaluations.parquet", "selection.parquet", "configuration"], {"evaluate"}),
]


# ----------------------------------------------------------------------------- the driver

def _argv(command: str, table: str, out: str) -> list[str]:
    return {
        "route": ["route", "What is 2 + 3?", "--tables", table, "--budget", "4"],
        "solve": ["solve", "What is 2 + 3?", "--tables", table, "--budget", "4"],
        "inspect": ["inspect", table],
        "evaluate": ["evaluate", "--tables", table, "--out", out, "--bootstrap", "50"],
        "serve": ["serve", "--tables", table, "--port", "0"],
    }[command]


def drive(jobs_file: str) -> None:
    """Run every (case, table) job's five commands in this process; print one JSON list."""
    import threading
    import time

    import uvicorn

    from selector.cli import main

    uvicorn.Server.run = lambda self, sockets=None: print("STARTED")  # serve got past every check
    results = []
    for case, table in json.loads(Path(jobs_file).read_text()):
        for command in COMMANDS:
            box: dict = {}
            out, err = io.StringIO(), io.StringIO()

            def run() -> None:
                try:
                    box["rc"] = main(_argv(command, table, str(Path(table).parent / f"{command}-out.json")))
                except BaseException as exc:  # noqa: BLE001 - a traceback is what the test reports
                    import traceback

                    box["rc"], box["exc"] = "raised", "".join(traceback.format_exception(exc))[-3000:]

            sys.stdout, sys.stderr = out, err
            t0 = time.perf_counter()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            worker.join(DEADLINE_S)
            seconds = time.perf_counter() - t0
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            results.append({"case": case, "command": command, "rc": box.get("rc", "hung"), "seconds": seconds,
                            "stderr": (err.getvalue()[-4000:] + box.get("exc", "")), "started": "STARTED" in out.getvalue()})
    print(json.dumps(results))


def _run_driver(jobs: list[tuple[str, str]], tmp_path: Path) -> list[dict]:
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    code = f"import test_hostile_tables as t; t.drive({str(jobs_file)!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_tampering_exits_2_within_10_s_naming_the_file_and_field(sim_table, tmp_path):
    jobs = [("untampered", str(sim_table))]
    for i, (case, tamper, _, _) in enumerate(CASES):
        copy = tmp_path / f"case{i:02d}" / "table"
        shutil.copytree(sim_table, copy, symlinks=True)
        tamper(copy)
        jobs.append((case, str(copy)))
    results = _run_driver(jobs, tmp_path)
    expected = {case: (words, reads) for case, _, words, reads in CASES}
    failures, slowest = [], max(r["seconds"] for r in results)
    for r in results:
        if r["case"] == "untampered":  # the harness is live: every command works on the clean table
            if r["rc"] != 0 or (r["command"] == "serve") != r["started"]:
                failures.append(f"untampered {r['command']}: exit {r['rc']}: {r['stderr'][-500:]}")
            continue
        words, reads = expected[r["case"]]
        want = 2 if r["command"] in reads else 0
        if r["rc"] != want or r["seconds"] > DEADLINE_S or "Traceback" in r["stderr"] \
                or (r["command"] == "serve" and r["started"] != (want == 0)):
            failures.append(f"{r['case']} / {r['command']}: exit {r['rc']} (wanted {want}) in {r['seconds']:.1f} s, "
                            f"started={r['started']}: {r['stderr'][-700:]}")
        elif want == 2:
            missing = [w for w in words if w not in r["stderr"]]
            if missing or len(r["stderr"]) > 3000:  # a hostile value is never echoed whole
                failures.append(f"{r['case']} / {r['command']}: message lacks {missing} "
                                f"({len(r['stderr'])} chars): {r['stderr'][-700:]}")
    assert not failures, "\n".join(failures)
    assert slowest < DEADLINE_S


def test_json_output_is_json_even_when_a_figure_is_not_finite():
    """``route --json`` and ``evaluate --json`` print null, never NaN or Infinity (which jq and
    most parsers reject), whatever a figure turned out to be."""
    import math

    from selector.router_evaluation import EvalReport
    from selector.routing import Decision
    from selector.search import make_strategy
    from selector.strict_json import dumps

    d = Decision(1, {1: 1.0}, make_strategy("majority", n=2), 2, 2, math.inf, (-math.inf, math.nan), math.nan, "x")
    out = json.loads(dumps(d.to_dict()), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert out["expected_accuracy"] is None and out["ci_low"] is None and out["ci_high"] is None
    report = EvalReport(table="t", split="heldout", n_prompts=1, budgets=[1],
                        rows=[{"method": "m", "budget": 1, "accuracy": math.nan}], efficiency={"ratio": np.float64(math.inf)})
    parsed = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert parsed["rows"][0]["accuracy"] is None and parsed["efficiency"]["ratio"] is None
