"""Inspecting tables: the figures of selector.plots, the `tts-selector inspect` summary and its CLI,
and the shipped Qwen replay table."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from selector import plots
from selector.cli import main
from selector.table_summary import FEW_PROMPTS, curves_path, inspect_path, inspect_table
from selector.profiler import load_config
from selector.tables import TableDir, TableError, write_table

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"
REPLAY = ROOT / "tables" / "qwen2.5-math-cot__qwen2.5-math-rm__math100"
KINDS = ("prompts", "results", "selection", "evaluations")


def cell_texts(ax) -> dict[str, str]:
    """Heatmap cell annotations by their gid ``cell:<bin>:<budget>``."""
    return {t.get_gid(): t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("cell:")}


def prior_like(tmp_path: Path, *, any_budget: bool) -> Path:
    """The demo table turned into a prior: no prompts, results or evaluations; the selection's
    accuracies, CIs and FLOPs empty; with ``any_budget`` also null budgets / n and one column per
    policy size range (as the published-prior tables have)."""
    demo = TableDir(DEMO)
    meta = {**demo.metadata, "prior": True, "policy_params": 0, "ledger": {}}
    out = tmp_path / "prior"
    for kind in ("prompts", "results", "evaluations"):
        write_table(getattr(demo, kind)().iloc[:0], out / f"{kind}.parquet", kind, meta)
    sel = demo.selection()
    sel[["accuracy", "ci_low", "ci_high", "mean_flops"]] = np.nan
    sel["n_prompts"] = 0
    if any_budget:
        sel = sel[sel["budget"] <= 2].copy()
        sel["size_range"] = np.where(sel["budget"] == 1, "< 7B", ">= 7B")
        sel["policy_params_min"] = np.where(sel["budget"] == 1, 0, 7_000_000_000)
        sel["budget"] = pd.array([None] * len(sel), dtype="Int64")
        sel["n"] = pd.array([None] * len(sel), dtype="Int64")
    write_table(sel, out / "selection.parquet", "selection", meta)
    return out


# ----------------------------------------------------------------------------- the shipped replay table

def test_shipped_replay_table_is_valid_and_reproducible_from_its_config():
    t = TableDir(REPLAY)
    t.validate()
    meta = t.metadata
    # the shipped table is what the config produces (regenerate it when the config changes)
    assert meta["config_hash"] == load_config(ROOT / "configs" / "replay-qwen-rm8.yaml").config_hash
    assert meta["pool_source"] == "jsonl" and meta["n_pool"] == 8
    assert len(t.prompts()) == 100 and set(t.selection()["budget"]) == {1, 2, 4, 8}


# ----------------------------------------------------------------------------- figures

def test_heatmap_cells_show_the_selection():
    sel = TableDir(DEMO).selection()
    fig = plots.selection_heatmap(DEMO)
    ax = fig.axes[0]
    cells = cell_texts(ax)
    assert set(cells) == {f"cell:{b}:{n}" for b, n in zip(sel["bin"], sel["budget"])}
    bins, budgets = sorted(sel["bin"].unique()), sorted(sel["budget"].unique())
    codes = ax.images[0].get_array()
    cmap = ax.images[0].get_cmap()
    for r in sel.itertuples(index=False):
        lines = cells[f"cell:{r.bin}:{r.budget}"].split("\n")
        assert lines[0] == r.strategy
        assert f"acc {r.accuracy:.2f} [{r.ci_low:.2f},{r.ci_high:.2f}]" in lines
        assert any(line.endswith("FLOPs") for line in lines)
        # the cell's colour is its strategy's
        code = codes[bins.index(r.bin), budgets.index(r.budget)]
        assert np.allclose(cmap(int(code))[:3], plots.strategy_color(r.strategy, light=True))
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert legend == set(sel["strategy"])
    ylabels = [t.get_text() for t in ax.get_yticklabels()]
    labels = TableDir(DEMO).metadata["bin_labels"]
    assert "easiest" in ylabels[0] and "hardest" in ylabels[-1] and labels[str(bins[0])] in ylabels[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"N = {b}" for b in budgets]
    assert "arith-check" in fig._suptitle.get_text()


def test_heatmap_one_budget_column():
    ax = plots.selection_heatmap(DEMO, budget=8).axes[0]
    assert {k.rsplit(":", 1)[1] for k in cell_texts(ax)} == {"8"}
    with pytest.raises(ValueError, match=r"budget 3 is not in the table \(budgets 1, 2, 4, 8, 16\)"):
        plots.selection_heatmap(DEMO, budget=3)


def test_heatmap_without_flops_or_accuracy_shows_strategies_only(tmp_path):
    # imported pool: FLOPs 0 because parameter counts are unknown -> no FLOPs in the cells
    replay = cell_texts(plots.selection_heatmap(REPLAY).axes[0])
    assert replay and not any("FLOPs" in text for text in replay.values())
    for any_budget in (False, True):
        prior = prior_like(tmp_path / str(any_budget), any_budget=any_budget)
        fig = plots.selection_heatmap(prior)
        texts = cell_texts(fig.axes[0])
        sel = TableDir(prior).selection()
        assert len(texts) == len(sel)
        assert {t.split("\n")[0] for t in texts.values()} == set(sel["strategy"])
        assert not any(re.search(r"\d\.\d\d|FLOPs|prompts", t) for t in texts.values())  # no numbers
        if any_budget:
            assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["policy < 7B", "policy >= 7B"]


def test_curves_one_panel_per_bin_with_ci_and_selection():
    t = TableDir(DEMO)
    sel, res = t.selection(), t.results()
    fig = plots.accuracy_curves(DEMO)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == sel["bin"].nunique() == 5
    assert "bin 1 (easiest)" in panels[0].get_title() and "bin 5 (hardest)" in panels[-1].get_title()
    for b, ax in zip(sorted(sel["bin"].unique()), panels):
        assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
        labels = [line.get_label() for line in ax.get_lines()]
        # one line per (strategy, M): its best aggregation (adaptive consistency's M is its window)
        keys = [tuple(p for p in label.split("/") if not p.startswith(("last", "min", "prod", "mean"))) for label in labels]
        assert len(keys) == len(set(keys)), labels
        assert {k[0] for k in keys} == set(res[res["bin"] == b]["strategy"])
        stars = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(stars) == len(sel[sel["bin"] == b])  # the selected configuration at every budget
        star_y = sorted(float(s.get_offsets()[0][1]) for s in stars)
        assert np.allclose(star_y, sorted(sel[sel["bin"] == b]["accuracy"]))
        bands = [c for c in ax.collections if not isinstance(c, PathCollection)]
        assert len(bands) == len(labels)  # a CI band per line
    every = plots.accuracy_curves(DEMO, lines="configuration")
    configurations = res[res["bin"] == 1].drop_duplicates(["strategy", "m", "aggregation"])
    # one line per (strategy, M, aggregation): 22 in the demo grid (majority; best-of-N and weighted x 4
    # aggregations; beam search, DVTS and particle filtering; adaptive consistency x 2 windows x 5 votes)
    assert len(every.axes[0].get_lines()) == len(configurations) == 22


def test_histogram_and_scatter():
    t = TableDir(DEMO)
    prompts, meta = t.prompts(), t.metadata
    profile = prompts[prompts["split"] == "profile"]
    ax = plots.pass1_histogram(DEMO).axes[0]
    assert sum(p.get_height() for p in ax.patches) == len(profile)
    edges = [line.get_xdata()[0] for line in ax.get_lines()]
    assert np.allclose(edges, meta["bin_edges"])
    scatter = plots.difficulty_scatter(DEMO)
    points = sum(len(c.get_offsets()) for c in scatter.axes[0].collections)
    assert points == len(prompts)
    assert "Spearman rho = 0." in scatter._suptitle.get_text()


def test_provenance_and_comparisons():
    meta = TableDir(DEMO).metadata
    prov = plots.provenance(DEMO)
    assert prov.loc["policy_id", "value"] == meta["policy_id"]
    assert prov.loc["config_hash", "value"] == meta["config_hash"]
    assert "ledger pool" in prov.index
    both = plots.compare_provenance([DEMO, REPLAY])
    assert list(both.columns) == [DEMO.name, REPLAY.name, "same"]
    assert not both.loc["policy_id", "same"] and both.loc["schema_version", "same"]
    fig = plots.compare_selection_heatmaps([DEMO, REPLAY])
    for ax, table in zip(fig.axes, (DEMO, REPLAY)):
        assert len(cell_texts(ax)) == len(TableDir(table).selection())
    curves = plots.compare_selected_curves([DEMO, REPLAY], ["demo", "replay"])
    assert [ax.get_title().split("\n")[0] for ax in curves.axes] == ["demo", "replay"]
    with pytest.raises(ValueError, match="one name per table"):
        plots.compare_selected_curves([DEMO, REPLAY], ["only one"])


def test_every_figure_survives_a_prior_table(tmp_path):
    for any_budget in (False, True):
        prior = prior_like(tmp_path / str(any_budget), any_budget=any_budget)
        for make in (plots.selection_heatmap, plots.accuracy_curves, plots.pass1_histogram, plots.difficulty_scatter):
            make(prior).savefig(tmp_path / "x.png")
        plots.compare_selection_heatmaps([DEMO, prior]).savefig(tmp_path / "x.png")
        plots.compare_selected_curves([DEMO, prior]).savefig(tmp_path / "x.png")
        assert "prior" in plots.provenance(prior).index


def test_plots_never_touch_pyplot():
    # Agg-safe: figures are built without pyplot, so nothing is shown and no GUI backend is needed
    code = ("import sys; from selector import plots; "
            f"plots.selection_heatmap({str(DEMO)!r}); plots.accuracy_curves({str(DEMO)!r}); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MPLBACKEND", None)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


# ----------------------------------------------------------------------------- the terminal summary

@pytest.mark.parametrize("table", [DEMO, REPLAY], ids=["demo", "replay"])
def test_inspect_lists_every_bin_by_budget_selection(table):
    sel = TableDir(table).selection()
    for budget, cells in sel.groupby("budget"):
        text = inspect_table(table, budget=int(budget), width=200).splitlines()
        assert sum(1 for line in text if line.startswith("bin ") and "N=" in line) == 1  # one column only
        for r in cells.itertuples(index=False):
            i = next(i for i, line in enumerate(text) if re.match(rf"bin {r.bin}\b(?! *N=)", line))
            cell = [line.split("  ")[-1].strip() for line in text[i:i + 5]]
            assert cell[0] == r.strategy
            assert cell[1].startswith(f"n={r.n}") and (not isinstance(r.aggregation, str) or cell[1].endswith(r.aggregation))
            assert cell[2] == f"acc {r.accuracy:.2f} [{r.ci_low:.2f},{r.ci_high:.2f}]"
            assert f"{r.n_prompts} prompts" in " ".join(cell)


def _demo_prompts():
    return TableDir(DEMO).prompts()


def test_inspect_summary_sections_and_few_prompt_warnings():
    import json

    text = inspect_table(DEMO, width=120)
    prompts = _demo_prompts()
    profile, held = (prompts["split"] == "profile").sum(), (prompts["split"] == "heldout").sum()
    report = json.loads((DEMO / "evaluation-heldout.json").read_text())
    ratio = report["efficiency"]["ratio"]
    for part in ("provenance:", "policy_id", "smollm2-135m-instruct-q4_1", "samples:",
                 f"{len(prompts)} ({profile} profiling, {held} held out)", f"{len(TableDir(DEMO).rollouts())} rollouts",
                 f"router evaluation (evaluation-heldout.json: {held} heldout prompts", "best fixed strategy",
                 f"{ratio:.2f}x less compute", "declared router router (prompt:tfidf)", "calibration prompt:tfidf"):
        assert part in text, part
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    # one warning per bin selected from fewer than 10 profiling prompts, and "(few!)" in its cells
    sizes = prompts[prompts["split"] == "profile"].groupby("bin").size()
    few = sizes[sizes < 10]
    assert len(warnings) == len(few) > 0
    for (b, n), line in zip(few.items(), warnings):
        assert f"bin {b}" in line and f"{n} prompts (< 10)" in line
    assert f"{few.iloc[0]} prompts (few!)" in text
    assert FEW_PROMPTS == 10
    quiet = inspect_table(DEMO, few_prompts=3, width=120)
    assert "warning:" not in quiet and "(few!)" not in quiet
    strict = inspect_table(DEMO, few_prompts=int(sizes.max()) + 1, width=120)
    assert sum(line.startswith("warning:") for line in strict.splitlines()) == len(sizes)  # every bin then


def test_inspect_wraps_budget_columns_to_the_width():
    wide = inspect_table(DEMO, width=400)
    narrow = inspect_table(DEMO, width=80)
    header = re.compile(r"^bin +N=")
    assert sum(bool(header.match(l)) for l in wide.splitlines()) == 1
    assert sum(bool(header.match(l)) for l in narrow.splitlines()) > 1
    grid = narrow.split("selection per difficulty")[1].split("warning:")[0]
    assert max(len(l) for l in grid.splitlines()[2:]) <= 80


def test_inspect_replay_and_prior(tmp_path):
    text = inspect_table(REPLAY, width=120)
    assert "FLOPs not recorded" in text and "100 (100 profiling, 0 held out)" in text
    assert "router evaluation" not in text  # the replay has no held-out split
    prior = inspect_table(prior_like(tmp_path, any_budget=True), width=120)
    assert "[prior:" in prior and "no accuracy" in prior and "warning:" not in prior
    assert "policy < 7B" in prior


# ----------------------------------------------------------------------------- the CLI

def test_cli_plot_writes_heatmap_and_curves(tmp_path, capsys):
    out = tmp_path / "figs" / "demo.png"
    assert main(["inspect", str(DEMO), "--budget", "8", "--plot", str(out)]) == 0
    printed = capsys.readouterr().out
    curves = curves_path(out)
    assert curves == tmp_path / "figs" / "demo-curves.png"
    assert f"wrote selection heatmap: {out}" in printed and f"wrote accuracy curves: {curves}" in printed
    for path in (out, curves):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width >= 600 and height >= 300
    assert "N=8" in printed and "N=16" not in printed


def test_cli_errors_name_the_problem(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "not a table directory" in err and "tts-selector profile" in err
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["inspect", str(DEMO), "--budget", "3"]) == 2
    assert "budget 3 is not in the table (budgets 1, 2, 4, 8, 16)" in capsys.readouterr().err
    half = tmp_path / "half"
    shutil.copytree(DEMO, half, ignore=shutil.ignore_patterns("results.parquet", "rollouts", "state", "*.npz"))
    assert main(["inspect", str(half)]) == 2
    assert "unfinished table directory (missing results.parquet)" in capsys.readouterr().err
    assert main(["inspect", str(DEMO / "selection.parquet")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_summarises_a_catalog(tmp_path, capsys, monkeypatch):
    shutil.copytree(REPLAY, tmp_path / "replay", ignore=shutil.ignore_patterns("rollouts"))
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"catalog {tmp_path}: 1 tables") and "replay " in out and "budgets 1, 2, 4, 8" in out
    assert main(["inspect", str(tmp_path), "--budget", "4"]) == 2
    assert "--budget applies to one table" in capsys.readouterr().err
    # without the catalog module the error says so and how to inspect one table instead
    monkeypatch.setitem(sys.modules, "selector.catalog", None)
    with pytest.raises(TableError, match="catalog.*selector.catalog.*inspect .*/<table>"):
        inspect_path(tmp_path)
