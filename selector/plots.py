"""Figures of a table directory, shared by ``tts-selector inspect --plot`` and the notebooks.

Every function takes a table directory (a path or a :class:`~selector.tables.TableDir`) and
returns a :class:`matplotlib.figure.Figure` (or a DataFrame). Figures are built without
``pyplot``: nothing is registered with a GUI backend and nothing is shown, so the functions
are safe in scripts, tests and headless CI (``fig.savefig("x.png")`` renders with Agg), and a
notebook displays the returned figure like any other.

Units: budget N = sampled generations per round; accuracy = fraction of a bin's prompts
answered correctly (a mean of per-prompt expected accuracies); FLOPs = mean per prompt, policy
and PRM together. Tables built from imported pools record 0 FLOPs (parameter counts unknown)
and prior tables (``metadata["prior"]``) have no measured accuracy: both plot without numbers
where numbers are missing.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import pandas as pd

from .labels import (FEW_PROMPTS, bin_titles, cell_lines, check_budget, config_label, flops_known,
                      present as _present, provenance_rows, selection_columns)
from .tables import TableDir

try:
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullLocator
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "selector.plots needs matplotlib, which is not installed: pip install -e '.[plots]' "
        "(or pip install matplotlib)", name="matplotlib") from exc

__all__ = [
    "FEW_PROMPTS", "TableLike", "accuracy_curves", "as_table", "bin_titles", "compare_provenance",
    "compare_selected_curves", "compare_selection_heatmaps", "config_label", "difficulty_scatter",
    "flops_known", "learning_curve_plot", "pass1_histogram", "provenance", "selection_heatmap", "strategy_color",
]

TableLike = Union[TableDir, str, Path]

# tab20 comes in (dark, light) pairs: lines and markers use the dark shade, heatmap cells the
# light one (black annotations stay legible on it). Fixed slots keep a strategy's colour the
# same in every figure and every table.
_TAB20 = matplotlib.colormaps["tab20"].colors
_STRATEGY_SLOTS = {"majority": 7, "best_of_n": 0, "weighted_best_of_n": 2, "beam_search": 1, "dvts": 4,
                   "particle_filtering": 3, "adaptive_consistency": 9, "filtered_vote": 5, "adaptive_confidence": 8}
_SPARE_SLOTS = (6,)
_STRATEGY_MARKERS = {"majority": "o", "best_of_n": "s", "weighted_best_of_n": "^", "beam_search": "D", "dvts": "P",
                     "particle_filtering": "X", "adaptive_consistency": "v", "filtered_vote": "<", "adaptive_confidence": ">"}
_AGG_STYLES = {"last": "-", "min": "--", "prod": ":", "mean": "-."}
_M_MARKERS = ("o", "s", "^", "D", "v", "P")


# ----------------------------------------------------------------------------- small helpers

def as_table(table: TableLike) -> TableDir:
    """``table`` as a :class:`TableDir` (a path is opened; nothing is read yet)."""
    return table if isinstance(table, TableDir) else TableDir(table)


def strategy_color(strategy: str, *, light: bool = False) -> tuple[float, float, float]:
    """The fixed colour of a strategy (``light``: the pale shade used for heatmap cells)."""
    slot = _STRATEGY_SLOTS.get(strategy)
    if slot is None:  # an unknown strategy: a spare slot chosen by its name, stable across runs
        slot = _SPARE_SLOTS[sum(map(ord, strategy)) % len(_SPARE_SLOTS)]
    return _TAB20[2 * slot + (1 if light else 0)]


def _strategy_rank(strategy: str) -> int:
    """Position of a strategy in legends: the fixed order of the known ones, unknown ones after."""
    return list(_STRATEGY_SLOTS).index(strategy) if strategy in _STRATEGY_SLOTS else len(_STRATEGY_SLOTS)


def _has_accuracy(df: pd.DataFrame) -> bool:
    return "accuracy" in df and bool(df["accuracy"].notna().any())


def _table_title(meta: dict) -> str:
    dataset = Path(str(meta.get("dataset", "?"))).name  # imported pools record a path
    if meta.get("prior"):
        return f"published prior ({meta.get('citation_short') or meta.get('citation') or 'no citation'}) on {dataset}"
    return f"{meta.get('policy_id', '?')} + {meta.get('prm_id', '?')} on {dataset}"


def _wrap(text: str, inches: float, points: float = 10.0) -> str:
    """Wrap each line of ``text`` to a figure ``inches`` wide (long model ids overflow otherwise)."""
    width = max(20, int(0.92 * inches * 72 / (0.55 * points)))  # DejaVu Sans: about 0.55 em per character
    return "\n".join(w for line in text.split("\n") for w in (textwrap.wrap(line, width) or [""]))


def _budget_axis(ax: Any, budgets: Sequence[int]) -> None:
    """Log2 budget axis with one labelled tick per profiled budget."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(budgets))
    ax.set_xticklabels([str(b) for b in budgets])
    ax.xaxis.set_minor_locator(NullLocator())
    if len(budgets) == 1:  # a single budget: give the point some room
        ax.set_xlim(budgets[0] / 1.5, budgets[0] * 1.5)


# ----------------------------------------------------------------------------- accuracy curves

def _curve_keys(results: pd.DataFrame, lines: str) -> pd.DataFrame:
    """Rows of ``results`` that make the plotted lines, with a ``line`` label column.

    ``lines="strategy"``: one line per (strategy, M), using the aggregation with the highest
    mean accuracy over the whole table (one choice per strategy, so every panel's line means
    the same configuration); ``"configuration"``: one line per (strategy, M, aggregation).
    """
    df = results.copy()
    df["_m"] = df["m"].astype("Float64").fillna(0).astype(int) if "m" in df else 0
    df["_agg"] = df["aggregation"].where(df["aggregation"].map(lambda a: isinstance(a, str)), "")
    if lines == "strategy":
        mean = df.groupby(["strategy", "_m", "_agg"], sort=True)["accuracy"].mean().reset_index()
        mean["_rank"] = mean["accuracy"].fillna(-1.0)
        best = mean.sort_values(["strategy", "_m", "_rank"], ascending=[True, True, False], kind="stable")
        best = best.drop_duplicates(["strategy", "_m"])[["strategy", "_m", "_agg"]]
        df = df.merge(best, on=["strategy", "_m", "_agg"])
    elif lines != "configuration":
        raise ValueError(f"lines must be 'strategy' or 'configuration', got {lines!r}")
    df["line"] = [config_label({"strategy": s, "m": m or None, "aggregation": a or None}, with_n=False)
                  for s, m, a in zip(df["strategy"], df["_m"], df["_agg"])]
    return df


def _line_style(strategy: str, m: int, agg: str, ms: list[int], lines: str) -> dict[str, Any]:
    return {
        "color": strategy_color(strategy),
        "linestyle": _AGG_STYLES.get(agg, "-") if lines == "configuration" else "-",
        "marker": _M_MARKERS[ms.index(m) % len(_M_MARKERS)] if m in ms else "o",
    }


def accuracy_curves(table: TableLike, *, lines: str = "strategy", bins: Sequence[int] | None = None,
                    ncols: int = 3) -> Figure:
    """Accuracy vs budget N, one panel per difficulty bin.

    One line per strategy (``lines="strategy"``: its best aggregation, named in the legend) or
    per configuration (``"configuration"``: line style = aggregation), shaded with the
    results' bootstrap CI (``ci_low``..``ci_high``, in-sample over the bin's profiling
    prompts); the selected configuration per budget is a star at its **held-out** accuracy,
    in its strategy's colour. Budget axis log2.
    """
    t = as_table(table)
    meta, results, selection = t.metadata, t.results(), t.selection()
    all_bins = sorted(set(results["bin"]).union(selection["bin"]))
    bins = all_bins if bins is None else [int(b) for b in bins]
    titles = bin_titles(meta, all_bins)
    budgets = sorted({int(b) for b in pd.concat([results["budget"], selection["budget"]]).dropna()})
    curves = _curve_keys(results, lines) if not results.empty else results.assign(line=[], _m=[], _agg=[])
    ms = sorted({int(m) for m in curves["_m"]}) if not curves.empty else []

    ncols = max(1, min(ncols, len(bins)))
    nrows = max(1, math.ceil(len(bins) / ncols))
    fig = Figure(figsize=(4.4 * ncols, 3.3 * nrows + 1.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel())
    handles: dict[str, tuple[int, Any]] = {}  # legend label -> (sort rank, artist)
    for ax, b in zip(axes, bins):
        cur, sel = curves[curves["bin"] == b], selection[selection["bin"] == b]
        for (line, strategy, m, agg), g in cur.groupby(["line", "strategy", "_m", "_agg"], sort=True):
            g = g.sort_values("budget")
            style = _line_style(strategy, int(m), agg, ms, lines)
            (h,) = ax.plot(g["budget"], g["accuracy"], label=line, markersize=4, linewidth=1.4, **style)
            ax.fill_between(g["budget"], g["ci_low"].astype(float), g["ci_high"].astype(float),
                            color=style["color"], alpha=0.10 if lines == "strategy" else 0.04, linewidth=0)
            handles.setdefault(line, (_strategy_rank(strategy), h))
        for r in sel.itertuples(index=False):
            if _present(r.accuracy):
                ax.scatter([r.budget], [r.accuracy], marker="*", s=170, zorder=5, color=strategy_color(r.strategy),
                           edgecolors="black", linewidths=0.8)
                handles.setdefault("selected (held-out accuracy; colour = strategy)", (99, Line2D(
                    [], [], linestyle="", marker="*", markersize=13, color="white", markeredgecolor="black")))
        if not _has_accuracy(cur) and not _has_accuracy(sel):
            what = "prior table: no measured accuracy" if meta.get("prior") else "no measured accuracy"
            ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="0.4")
        n_prompts = sel["n_prompts"].max() if not sel.empty and "n_prompts" in sel else None
        title = titles.get(b, f"bin {b}") + (f"\n{int(n_prompts)} profiling prompts"
                                             if _present(n_prompts) and n_prompts > 0 else "")
        ax.set_title(title, fontsize=9.5)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(-0.03, 1.03)
        if budgets:
            _budget_axis(ax, budgets)
        else:  # a prior: no budgets were measured, so the axis has nothing to show
            ax.set_xticks([])
    for ax in axes[len(bins):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("accuracy")
    for ax in axes[:len(bins)][-ncols:]:
        ax.set_xlabel("budget N (generations per round)")
    for ax in axes[:len(bins)]:
        ax.tick_params(labelbottom=True)
    what = "best aggregation per strategy" if lines == "strategy" else "every configuration"
    fig.suptitle(_wrap(f"Accuracy vs budget per difficulty bin ({what}; bands: 95% CI)\n{_table_title(meta)}",
                       4.4 * ncols, 11), fontsize=11)
    if handles:
        order = sorted(handles, key=lambda label: (handles[label][0], label))
        fig.legend([handles[label][1] for label in order], order, loc="outside lower center",
                   ncols=min(len(handles), 4), fontsize=8.5, frameon=False)
    return fig


# ----------------------------------------------------------------------------- selection heatmap

def _draw_heatmap(ax: Any, t: TableDir, budget: int | None, few_prompts: int, fontsize: float) -> list[str]:
    """Draw ``t``'s selection grid into ``ax``; return the strategies shown (for the legend)."""
    meta, sel = t.metadata, t.selection()
    check_budget(sel, budget, t.path)
    if budget is not None:
        sel = sel[sel["budget"] == budget]
    sel, columns, headers, axis_label = selection_columns(sel)  # budgets, or a prior's policy size ranges
    bins = sorted(int(b) for b in sel["bin"].unique())
    strategies = sorted(set(sel["strategy"]), key=lambda s: (_strategy_rank(s), s))
    codes = np.full((len(bins), len(columns)), np.nan)
    known = flops_known(meta)
    for r in sel.itertuples(index=False):
        i, j = bins.index(int(r.bin)), columns.index(r.column)
        codes[i, j] = strategies.index(r.strategy)
        lines = cell_lines(r, known_flops=known, few_prompts=few_prompts, every_count=False)  # row labels give counts
        text = ax.text(j, i, "\n".join(lines), ha="center", va="center",
                       fontsize=fontsize, linespacing=1.3, color="black")
        text.set_gid(f"cell:{int(r.bin)}:{r.column}")  # tests and callers find a cell's text by it
    cmap = ListedColormap([strategy_color(s, light=True) for s in strategies] or ["white"]).with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(codes), cmap=cmap, vmin=-0.5, vmax=max(len(strategies), 1) - 0.5,
              aspect="auto", interpolation="nearest")
    for i in range(len(bins)):  # cells with no selection say so instead of staying blank
        for j in range(len(columns)):
            if np.isnan(codes[i, j]):
                ax.text(j, i, "no selection", ha="center", va="center", fontsize=fontsize, color="0.5")
    # White grid lines between cells.
    ax.set_xticks(np.arange(len(columns) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(bins) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xticks(range(len(columns)), [h.replace("=", " = ", 1) if h.startswith("N=") else h for h in headers])
    titles = bin_titles(meta, bins)
    counts = sel.groupby("bin")["n_prompts"].max() if "n_prompts" in sel else pd.Series(dtype=float)
    ax.set_yticks(range(len(bins)), [
        titles[b].replace(": ", "\n") + (f"\n{int(counts[b])} prompts" if b in counts and _present(counts[b])
                                         and counts[b] > 0 else "")
        for b in bins], fontsize=fontsize + 0.5)
    ax.set_xlabel(axis_label)
    ax.set_ylabel("difficulty bin")
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")
    for side in ax.spines.values():
        side.set_visible(False)
    return strategies


def _heatmap_note(metas: Sequence[dict], few_prompts: int) -> str:
    prior_note = "prior tables: strategies from published rules, no measured accuracy"
    if all(m.get("prior") for m in metas):
        return prior_note
    notes = ["accuracy: held-out (cross-fitted) mean over the bin's prompts [95% bootstrap CI]",
             "FLOPs: mean per prompt (policy + PRM)", f"'(few!)': decided from fewer than {few_prompts} prompts"]
    if not all(flops_known(m) for m in metas):
        notes.append("FLOPs not recorded where parameter counts are unknown (imported pools)")
    if any(m.get("prior") for m in metas):
        notes.append(prior_note)
    return "; ".join(notes)


def _note_below(ax: Any, note: str) -> None:
    """A small grey note under ``ax``; an annotation of the axes, so the constrained layout
    keeps it clear of the figure legend below it."""
    ax.annotate(note, xy=(0.5, 0.0), xycoords="axes fraction", xytext=(0, -6), textcoords="offset points",
                ha="center", va="top", fontsize=8, color="0.35")


def _strategy_legend(fig: Figure, strategies: Sequence[str], title: str = "selected strategy") -> None:
    """One patch per strategy shown (fixed order and colours) below the figure."""
    handles = [Patch(facecolor=strategy_color(s, light=True), edgecolor=strategy_color(s), label=s)
               for s in sorted(strategies, key=_strategy_rank)]
    if handles:
        legend = fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9,
                            title=title, title_fontsize=8 if title != "selected strategy" else 9, frameon=False)
        if title != "selected strategy":
            legend.get_title().set_color("0.35")


def selection_heatmap(table: TableLike, *, budget: int | None = None, few_prompts: int = FEW_PROMPTS) -> Figure:
    """The selected configuration per (difficulty bin, budget): cell colour = strategy (legend
    below), text = strategy, n/M/aggregation, held-out accuracy [CI], mean FLOPs, prompts.

    Each cell's text artist has gid ``"cell:<bin>:<budget>"``. ``budget`` restricts the grid
    to one column. Cells with no accuracy (prior tables) or FLOPs (imported pools) show the
    strategy without those numbers.
    """
    t = as_table(table)
    sel = t.selection()
    n_budgets = 1 if budget is not None else max(1, len(selection_columns(sel)[1]))
    n_bins = max(1, sel["bin"].nunique())
    width = 2.3 + 2.15 * n_budgets
    fig = Figure(figsize=(max(width, 6.0), 1.9 + 1.05 * n_bins), layout="constrained")
    ax = fig.subplots()
    strategies = _draw_heatmap(ax, t, budget, few_prompts, fontsize=8.5)
    meta = t.metadata
    fig.suptitle(_wrap(f"Selected configuration per difficulty bin and budget\n{_table_title(meta)}", max(width, 6.0), 12),
                 fontsize=12)
    note = _heatmap_note([meta], few_prompts)
    others = [e for e in t.selection_estimators() if e != meta.get("default_selection")]
    if others and not meta.get("prior"):
        # The router routes by its estimator's bins, not these: say so where the cells are shown.
        note += (f"\n(cells chosen on the table's own bins, {meta.get('default_selection')}; a router with an "
                 f"estimator ({', '.join(others)}) uses the cells chosen on that estimator's bins)")
    _note_below(ax, _wrap(note, max(width, 6.0), 8))
    _strategy_legend(fig, strategies)
    return fig


# ----------------------------------------------------------------------------- difficulty

def _difficulty_column(meta: dict) -> str:
    # The value the bins were cut on: agreement tables bin by their modal answer's share.
    return {"predicted": "predicted_pass1", "agreement": "agreement"}.get(meta.get("difficulty"), "oracle_pass1")


def pass1_histogram(table: TableLike, *, split: str | None = "profile", buckets: int | None = None) -> Figure:
    """Histogram of the pass@1 the bins were cut on (oracle by default) over ``split``'s prompts
    (``None``: all), with the bin edges as dashed lines and each bin's range and size listed.

    ``buckets`` defaults to one bar per attainable oracle value k / n_pool for pools of up to
    64 samples (the quantile edges sit between such values, so no bar straddles an edge), else 20.
    """
    t = as_table(table)
    meta, prompts = t.metadata, t.prompts()
    if split is not None and "split" in prompts:
        prompts = prompts[prompts["split"] == split]
    column = _difficulty_column(meta)
    values = prompts[column].dropna().to_numpy(dtype=float)
    n_pool = int(meta.get("n_pool") or 0)
    if buckets is None and column == "oracle_pass1" and 0 < n_pool <= 64:
        bars = (np.arange(n_pool + 2) - 0.5) / n_pool
    else:
        bars = np.linspace(0.0, 1.0, (buckets or 20) + 1)
    fig = Figure(figsize=(10.0, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.hist(values, bins=bars, color="0.55", edgecolor="white")
    edges = [float(e) for e in (meta.get("bin_edges") or [])]
    for k, e in enumerate(edges):
        ax.axvline(e, color="tab:red", linestyle="--", linewidth=1.2, label="bin edges" if k == 0 else None)
        ax.annotate(f"{e:.2f}", (e, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                    textcoords="offset points", rotation=90, va="top", fontsize=8, color="tab:red")
    if len(values) == 0:
        ax.text(0.5, 0.5, "no prompts", transform=ax.transAxes, ha="center", va="center", color="0.4")
    counts = prompts["bin"].value_counts().sort_index()
    titles = bin_titles(meta, counts.index)
    legend_text = "\n".join(f"{titles[int(b)]}  ({int(n)} prompts)" for b, n in counts.items())
    if legend_text:
        # Right of the plot, not on it: the edges and tall bars are anywhere in [0, 1].
        ax.text(1.02, 1.0, legend_text, transform=ax.transAxes, ha="left", va="top",
                fontsize=8.5, linespacing=1.5,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.8"})
    if edges:
        ax.legend(loc="upper center", fontsize=8.5, frameon=False)
    kind = {"oracle_pass1": "oracle (graded) pass@1", "agreement": "agreement (share of the modal answer)"}.get(
        column, "predicted (PRM) pass@1")
    ax.set_xlabel(kind + (f" (fraction of {n_pool} pooled samples correct)" if column == "oracle_pass1" and n_pool else ""))
    ax.set_ylabel("prompts")
    ax.set_xlim(bars[0], bars[-1])
    where = {"profile": "profiling prompts", "heldout": "held-out prompts", None: "prompts"}.get(split, f"{split} prompts")
    fig.suptitle(_wrap(f"pass@1 of {len(values)} {where} and the bin edges\n{_table_title(meta)}", 10.0, 11), fontsize=11)
    return fig


def difficulty_scatter(table: TableLike) -> Figure:
    """Oracle pass@1 (graded) vs predicted pass@1 (mean last-step PRM score) per prompt,
    coloured by bin; held-out prompts as crosses; Spearman rho in the title."""
    from scipy.stats import spearmanr

    t = as_table(table)
    meta, prompts = t.metadata, t.prompts()
    fig = Figure(figsize=(8.8, 5.4), layout="constrained")
    ax = fig.subplots()
    bins = sorted(int(b) for b in prompts["bin"].unique())
    titles = bin_titles(meta, bins)
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(bins), 1)))
    heldout = (prompts["split"] == "heldout") if "split" in prompts else pd.Series(False, index=prompts.index)
    handles = []
    for b, color in zip(bins, colors):
        for held, marker in ((False, "o"), (True, "x")):
            g = prompts[(prompts["bin"] == b) & (heldout == held)]
            if not g.empty:
                ax.scatter(g["oracle_pass1"], g["predicted_pass1"], color=color, marker=marker, s=26, alpha=0.75)
        handles.append(Line2D([], [], linestyle="", marker="o", color=color, label=titles[b]))
    if heldout.any():
        handles.append(Line2D([], [], linestyle="", marker="x", color="0.3", label="held-out prompt (x)"))
    handles.append(ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="predicted = oracle")[0])
    axis_line = ax.axvline if _difficulty_column(meta) == "oracle_pass1" else ax.axhline
    for e in meta.get("bin_edges") or []:
        axis_line(float(e), color="tab:red", linestyle="--", linewidth=0.8, alpha=0.6)
    valid = prompts[["oracle_pass1", "predicted_pass1"]].dropna()
    rho = float("nan")
    if len(valid) > 2 and valid["oracle_pass1"].nunique() > 1 and valid["predicted_pass1"].nunique() > 1:
        rho = float(spearmanr(valid["oracle_pass1"], valid["predicted_pass1"]).statistic)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("oracle pass@1 (graded pooled samples)")
    ax.set_ylabel("predicted pass@1 (mean last-step PRM score)")
    ax.grid(True, alpha=0.3)
    if meta.get("bin_edges"):
        handles.append(Line2D([], [], color="tab:red", linestyle="--", linewidth=0.8, label="bin edges"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(_wrap(f"Oracle vs predicted pass@1 per prompt ({len(valid)} prompts, Spearman rho = {rho:.2f})"
                       f"\n{_table_title(meta)}", 8.8, 11), fontsize=11)
    return fig


# ----------------------------------------------------------------------------- provenance

def provenance(table: TableLike) -> pd.DataFrame:
    """The table's provenance metadata as a DataFrame (index ``key``, column ``value``, text):
    the keys of :mod:`selector.tables` first, then any others, the trained estimators, and
    one ``ledger <stage>`` row per profiling stage (generations, FLOPs, seconds)."""
    return pd.DataFrame(provenance_rows(as_table(table).metadata), columns=["key", "value"]).set_index("key")


# ----------------------------------------------------------------------------- comparisons

def _names(tables: Sequence[TableDir], names: Sequence[str] | None) -> list[str]:
    if names is None:
        names = [t.path.name for t in tables]
    if len(names) != len(tables):
        raise ValueError(f"got {len(names)} names for {len(tables)} tables: give one name per table")
    return list(names)


def compare_provenance(tables: Sequence[TableLike], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Provenance of several tables side by side (one column per table) with a ``same`` column."""
    ts = [as_table(t) for t in tables]
    frames = [provenance(t)["value"].rename(n) for t, n in zip(ts, _names(ts, names))]
    out = pd.concat(frames, axis=1)
    out["same"] = out.nunique(axis=1, dropna=False) == 1
    return out


def compare_selection_heatmaps(tables: Sequence[TableLike], names: Sequence[str] | None = None, *,
                               side_by_side: bool = True, few_prompts: int = FEW_PROMPTS) -> Figure:
    """The selection heatmaps of several tables side by side (``side_by_side=False``: stacked,
    which reads better when the tables have many budgets); each keeps its own bins and budgets,
    the strategy colours are shared."""
    ts = [as_table(t) for t in tables]
    labels = _names(ts, names)
    sels = [t.selection() for t in ts]
    budgets = [max(1, len(selection_columns(s)[1])) for s in sels]  # grid columns of each table
    bins = [max(1, s["bin"].nunique()) for s in sels]
    cell_w, cell_h, label_w, title_h = (1.55, 0.95, 2.1, 1.0) if side_by_side else (2.0, 1.0, 2.3, 1.0)
    if side_by_side:
        size = (sum(label_w + cell_w * b for b in budgets), title_h + 1.4 + cell_h * max(bins))
        grid = {"nrows": 1, "ncols": len(ts), "width_ratios": [label_w + cell_w * b for b in budgets]}
    else:
        size = (label_w + cell_w * max(budgets), 1.4 + sum(title_h + cell_h * b for b in bins))
        grid = {"nrows": len(ts), "ncols": 1, "height_ratios": [title_h + cell_h * b for b in bins]}
    fig = Figure(figsize=size, layout="constrained")
    axes = np.atleast_1d(fig.subplots(squeeze=False, **grid).ravel())
    shown: list[str] = []
    for ax, t, label, n_budgets in zip(axes, ts, labels, budgets):
        shown += [s for s in _draw_heatmap(ax, t, None, few_prompts, fontsize=7.5 if side_by_side else 8)
                  if s not in shown]
        inches = label_w + cell_w * n_budgets if side_by_side else size[0]
        ax.set_title(_wrap(f"{label}\n{_table_title(t.metadata)}", inches, 9.5), fontsize=9.5)
    fig.suptitle("Selected configuration per difficulty bin and budget", fontsize=12)
    # The note goes in the legend's title: a separate figure text at the bottom would overlap it.
    _strategy_legend(fig, shown, title=_wrap(_heatmap_note([t.metadata for t in ts], few_prompts), size[0], 8))
    return fig


def compare_selected_curves(tables: Sequence[TableLike], names: Sequence[str] | None = None) -> Figure:
    """Per table, the selected (best) configuration's held-out accuracy vs budget, one line per
    bin with its CI band; marker shape = the selected strategy at that budget."""
    ts = [as_table(t) for t in tables]
    labels = _names(ts, names)
    fig = Figure(figsize=(5.2 * len(ts), 5.8), layout="constrained")
    axes = fig.subplots(1, len(ts), sharey=True, squeeze=False)[0]
    strategies: list[str] = []
    for ax, t, label in zip(axes, ts, labels):
        meta, sel = t.metadata, t.selection()
        bins = sorted(int(b) for b in sel["bin"].unique())
        sel = sel[sel["budget"].notna()]  # a prior's rules hold at any budget: there is no curve to draw
        titles = bin_titles(meta, bins)
        colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(bins), 1)))
        for b, color in zip(bins, colors):
            g = sel[sel["bin"] == b].sort_values("budget")
            if g.empty:
                continue
            ax.plot(g["budget"], g["accuracy"], color=color, linewidth=1.5, label=titles[b])
            ax.fill_between(g["budget"], g["ci_low"].astype(float), g["ci_high"].astype(float), color=color,
                            alpha=0.12, linewidth=0)
            for r in g.itertuples(index=False):
                if _present(r.accuracy):
                    ax.scatter([r.budget], [r.accuracy], color=color, edgecolors="black", linewidths=0.6, s=45,
                               marker=_STRATEGY_MARKERS.get(r.strategy, "X"), zorder=4)
                if r.strategy not in strategies:
                    strategies.append(r.strategy)
        if not _has_accuracy(sel):
            ax.text(0.5, 0.5, "no measured accuracy" + (" (prior table)" if meta.get("prior") else ""),
                    transform=ax.transAxes, ha="center", va="center", color="0.4")
        if sel.empty:
            ax.set_xticks([])
        else:
            _budget_axis(ax, sorted(int(b) for b in sel["budget"].unique()))
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("budget N (generations per round)")
        ax.set_title(_wrap(f"{label}\n{_table_title(meta)}", 5.2, 9.5), fontsize=9.5)
        # Under the panel: inside, it would hide the low curves of hard bins.
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    axes[0].set_ylabel("held-out accuracy of the selected configuration")
    markers = [Line2D([], [], linestyle="", marker=_STRATEGY_MARKERS.get(s, "X"), color="0.3", markersize=7, label=s)
               for s in sorted(strategies, key=_strategy_rank)]
    if markers:
        fig.legend(handles=markers, loc="outside lower center", ncols=len(markers), fontsize=8.5, frameon=False,
                   title="marker: selected strategy", title_fontsize=8.5)
    fig.suptitle("Best configuration per bin: accuracy vs budget (bands: 95% CI)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- learning curve

_CURVE_COLORS = {"router": _TAB20[0], "selection": _TAB20[4], "one strategy": _TAB20[14]}


def learning_curve_plot(curve: Any, *, budgets: Sequence[int] | None = None, ncols: int = 3) -> Figure:
    """Held-out accuracy vs number of profiling prompts, one panel per budget N.

    ``curve``: a :class:`selector.learning_curve.LearningCurve`, the path of its JSON report
    (``tts-selector evaluate --learning-curve``), or a table directory holding
    ``learning-curve-heldout.json``. One line per method (the declared router, the table's own
    selection, one strategy for every prompt), each re-learned from the same subsets; bands:
    95% bootstrap CI over the held-out prompts. Profiling-prompt axis log2.
    """
    from .learning_curve import LearningCurve, learning_curve_path, read_learning_curve

    if not isinstance(curve, LearningCurve):
        path = Path(curve)
        curve = read_learning_curve(learning_curve_path(path) if path.is_dir() else path)
    df = curve.frame()
    shown = [int(b) for b in (budgets or curve.budgets)]
    ncols = max(1, min(ncols, len(shown)))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.1 * nrows + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel())
    handles: dict[str, Any] = {}
    for ax, b in zip(axes, shown):
        at = df[df["budget"] == b]
        for method, g in at.groupby("method", sort=False):
            g = g.sort_values("n_profile")
            color = _CURVE_COLORS.get(method.split(" (")[0], _TAB20[6])
            (h,) = ax.plot(g["n_profile"], g["accuracy"], marker="o", markersize=4, linewidth=1.5, color=color)
            ax.fill_between(g["n_profile"], g["ci_low"].astype(float), g["ci_high"].astype(float), color=color,
                            alpha=0.12, linewidth=0)
            handles.setdefault(method, h)
        ax.set_title(f"N = {b}", fontsize=9.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(curve.sizes, [str(s) for s in curve.sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, alpha=0.3)
        ax.set_ylim(-0.03, 1.03)
        ax.tick_params(labelbottom=True)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(f"held-out accuracy ({curve.n_heldout} prompts)")
    for ax in axes[:len(shown)][-ncols:]:
        ax.set_xlabel("profiling prompts")
    fig.suptitle(_wrap(f"How many profiling prompts a table needs: held-out accuracy vs profiling prompts "
                       f"({curve.draws} draws per size; bands: 95% CI)\n{Path(curve.table).name}", 4.2 * ncols, 11),
                 fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 3),
               fontsize=8.5, frameon=False)
    return fig
