"""`tts-selector evaluate --learning-curve`: held-out accuracy vs the number of profiling prompts,
re-learned from subsets of the profiling split without new generation (selector/learning_curve.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selector.router_evaluation import evaluate_router
from selector.learning_curve import ONE_STRATEGY, learning_curve, learning_curve_path, read_learning_curve
from selector.tables import TableDir

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"


def _rows(curve, method, n):
    return {r["budget"]: r for r in curve.rows if r["method"] == method and r["n_profile"] == n}


@pytest.fixture(scope="module")
def curve():
    return learning_curve(DEMO, sizes=[20, 30], draws=3, bootstrap=300)


def test_the_full_size_reproduces_the_evaluate_report(curve):
    """At every profiling prompt, re-selecting (and re-training the declared tfidf estimator)
    gives exactly the cells the table ships, so the held-out figures are evaluate's."""
    n_profile = int((TableDir(DEMO).prompts()["split"] == "profile").sum())
    assert curve.sizes == [20, 30, n_profile] and curve.n_profile == n_profile
    report = evaluate_router(DEMO, estimators=["prompt:tfidf"], bootstrap=300)
    by = {(r["method"], r["budget"]): r for r in report.rows}
    full_router = _rows(curve, "router (prompt:tfidf)", n_profile)
    full_own = _rows(curve, "selection (bins:predicted)", n_profile)
    for b in curve.budgets:
        for got, method in ((full_router[b], "router (prompt:tfidf)"), (full_own[b], "router (bins:predicted)")):
            want = by[(method, b)]
            assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12), (method, b)
            assert got["mean_flops"] == pytest.approx(want["mean_flops"], rel=1e-9), (method, b)
            # same bootstrap resamples as evaluate: the same CI
            assert [got["ci_low"], got["ci_high"]] == pytest.approx([want["ci_low"], want["ci_high"]], abs=1e-12)
            assert got["draws"] == 1


def test_subsets_are_drawn_re_selected_and_reported_with_intervals(curve):
    for method in curve.methods():
        for n in curve.sizes:
            for b, r in _rows(curve, method, n).items():
                assert 0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0
                lo, hi = r["draw_range"]
                assert lo - 1e-12 <= r["accuracy"] <= hi + 1e-12  # the mean of the draws lies within them
                assert r["draws"] == (1 if n == curve.n_profile else 3)
    # The draws differ (subsets of 20 of 45 prompts pick different cells somewhere).
    spreads = [r["draw_range"][1] - r["draw_range"][0] for r in curve.rows if r["n_profile"] == 20]
    assert max(spreads) > 0
    # Router minus one strategy is paired: its CI brackets its own mean.
    for r in curve.rows:
        if r["method"].startswith("router"):
            base = _rows(curve, ONE_STRATEGY, r["n_profile"])[r["budget"]]
            assert r["margin"] == pytest.approx(r["accuracy"] - base["accuracy"], abs=1e-12)
            assert r["margin_ci"][0] <= r["margin"] <= r["margin_ci"][1]


def test_one_strategy_is_a_single_configuration_per_budget(curve):
    """With one bin for every prompt, the held-out accuracy at the full size is one fixed
    configuration's, which evaluate reports among its fixed rows."""
    report = evaluate_router(DEMO, estimators=[], bootstrap=300)
    fixed = {(r["method"], r["budget"]): r["accuracy"] for r in report.rows if r["method"].startswith("fixed ")}
    for b, r in _rows(curve, ONE_STRATEGY, curve.n_profile).items():
        assert any(abs(acc - r["accuracy"]) < 1e-12 for (m, fb), acc in fixed.items() if fb == b), b


def test_it_is_deterministic(curve):
    again = learning_curve(DEMO, sizes=[20, 30], draws=3, bootstrap=300)
    assert again.to_dict() == curve.to_dict()


def test_a_pilot_router_is_refitted_on_each_subset():
    c = learning_curve(DEMO, sizes=[20], draws=2, router="pilot:2", bootstrap=200)
    assert c.declared_router == "pilot:2" and "router (pilot:2)" in c.methods()
    full = _rows(c, "router (pilot:2)", c.n_profile)
    report = evaluate_router(DEMO, estimators=["pilot:2"], bootstrap=200)
    for b, r in full.items():
        want = next(x for x in report.rows if x["method"] == "router (pilot:2)" and x["budget"] == b)
        assert r["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
        assert r["mean_flops"] == pytest.approx(want["mean_flops"], rel=1e-9)  # the pilot's spend included


def test_bad_requests_are_typed_errors():
    from selector.errors import InputError

    with pytest.raises(InputError, match="too small"):
        learning_curve(DEMO, sizes=[4])
    with pytest.raises(InputError, match="draws"):
        learning_curve(DEMO, draws=0)
    with pytest.raises(InputError, match="prompt:<features>' or 'pilot:<k>'"):
        learning_curve(DEMO, router="bins:oracle")
    with pytest.raises(InputError, match="difficulty samples"):
        learning_curve(DEMO, router="pilot:64")


def test_cli_writes_the_report_beside_a_table_and_inspect_shows_and_plots_it(tmp_path):
    pytest.importorskip("matplotlib")
    table = tmp_path / "demo"
    shutil.copytree(DEMO, table)
    cmd = [sys.executable, "-m", "selector.cli", "evaluate", "--tables", str(table), "--learning-curve",
           "--sizes", "20", "--draws", "2", "--bootstrap", "200", "--json", "--save"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # stdout is the one JSON object
    assert out["sizes"][0] == 20 and out["declared_router"] == "prompt:tfidf"
    written = learning_curve_path(table)
    assert read_learning_curve(written).to_dict() == out
    shown = subprocess.run([sys.executable, "-m", "selector.cli", "inspect", str(table), "--plot",
                            str(tmp_path / "plots" / "demo.png")], capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "learning curve (learning-curve-heldout.json)" in shown.stdout
    assert "router (prompt:tfidf) minus one strategy" in shown.stdout
    png = tmp_path / "plots" / "demo-learning-curve.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote learning curve: {png}" in shown.stdout
    bad = subprocess.run([sys.executable, "-m", "selector.cli", "evaluate", "--tables", str(table), "--learning-curve",
                          "--sizes", "3"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "too small" in bad.stderr


def test_the_plot_has_a_panel_per_budget_and_a_line_per_method(curve):
    pytest.importorskip("matplotlib")
    from selector.plots import learning_curve_plot

    fig = learning_curve_plot(curve)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(curve.budgets)
    for ax in panels:
        assert len(ax.lines) == len(curve.methods())
        assert np.allclose(sorted({x for line in ax.lines for x in line.get_xdata()}), curve.sizes)


def test_the_router_diagnosis_benchmark_is_consistent_with_evaluate():
    """benchmarks/router_diagnosis.py: the split-half headroom is reported where half the pool
    holds the budget, one quantile bin is one strategy, and the pilot row is evaluate's router on
    the table's own bins."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from router_diagnosis import diagnose, render

    d = diagnose(str(DEMO), bootstrap=200)
    report = evaluate_router(DEMO, estimators=[], bootstrap=200)
    own = {r["budget"]: r["accuracy"] for r in report.rows if r["method"] == "router (bins:predicted)"}
    for b in d["budgets"]:
        h = d["headroom"][str(b)]
        split = h["split_half"]
        if b > int(TableDir(DEMO).metadata["n_pool"]) // 2:
            assert split is None  # half the pool cannot hold b samples
        else:  # tests/test_evidence_table.py checks its size on the 400-prompt table
            assert split["configs"] > 1
            assert split["per_prompt"]["margin_ci"][0] <= split["per_prompt"]["margin"] <= split["per_prompt"]["margin_ci"][1]
        assert d["bin_count"]["1"][str(b)]["margin"] == 0.0
        assert d["bin_count"]["1"][str(b)]["accuracy"] == pytest.approx(h["one_strategy"]["accuracy"])
        pilot = d["estimator_quality"]["pilot (PRM-predicted pass@1 of the difficulty samples)"][str(b)]
        assert pilot["accuracy"] == pytest.approx(own[b], abs=1e-12)
    assert "1. headroom" in render(d) and "4. bin count" in render(d)
    prm = d["prm"]
    assert 0.5 < prm["pooled_auroc"] <= 1.0 and prm["pooled_ci"][0] <= prm["pooled_auroc"] <= prm["pooled_ci"][1]
    n_eval = int(TableDir(DEMO).metadata["n_pool"]) * d["n_heldout"]
    assert prm["samples"] == n_eval  # the held-out prompts' evaluation samples only
