"""``tts-selector inspect``: a terminal summary of a table directory (or a catalog of them).

The summary lists the table's provenance, its sample counts, the selected configuration per
(difficulty bin, budget) as a grid (strategy, n/M/aggregation, held-out accuracy [95% CI],
mean FLOPs, prompts), warnings for cells selected from few prompts, and the router's held-out
evaluation when ``evaluation-*.json`` files sit beside the table. ``--plot OUT.png`` writes the
selection heatmap to ``OUT.png`` and the accuracy curves to ``OUT-curves.png``
(:mod:`selector.plots`). This module needs no matplotlib; the labels it shares with the plots
are in :mod:`selector.labels`.

Units: budget N = sampled generations per round; accuracy = mean over a bin's prompts;
FLOPs = mean per prompt (policy + PRM; 0 is shown as "not recorded" for imported pools whose
parameter counts are unknown).
"""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from .labels import (FEW_PROMPTS, bin_titles, cell_lines, check_budget, config_label, flops_known,
                     format_flops, present, provenance_rows, selection_columns)
from .tables import TableDir, TableError

__all__ = [
    "FEW_PROMPTS", "bin_titles", "cell_lines", "check_budget", "config_label", "curves_path", "evaluation_frame", "flops_known",
    "format_flops", "inspect_path", "inspect_table", "present", "provenance_rows", "selection_grid", "write_plots",
]

_CELL_GAP = 2  # spaces between grid columns

# ----------------------------------------------------------------------------- text grids

def _grid(corner: list[str], columns: list[str], rows: list[tuple[list[str], list[list[str]]]],
          width: int) -> list[str]:
    """A text grid with multi-line cells: ``rows`` = (row label lines, one list of lines per
    column). Columns that do not fit ``width`` characters continue in further blocks below
    (like pandas), each repeating the row labels."""
    label_w = max(len(s) for s in corner + [l for label, _ in rows for l in label]) + _CELL_GAP
    col_w = [max([len(columns[j])] + [len(l) for _, cells in rows for l in cells[j]]) + _CELL_GAP
             for j in range(len(columns))]
    blocks: list[list[int]] = [[]]
    used = label_w
    for j, w in enumerate(col_w):
        if blocks[-1] and used + w > width:
            blocks.append([])
            used = label_w
        blocks[-1].append(j)
        used += w
    multiline = any(len(label) > 1 or any(len(c) > 1 for c in cells) for label, cells in rows)
    out: list[str] = []
    for block in blocks:
        if out:
            out.append("")
        out.append((corner[0].ljust(label_w) + "".join(columns[j].ljust(col_w[j]) for j in block)).rstrip())
        for label, cells in rows:
            height = max([len(label)] + [len(cells[j]) for j in block])
            for i in range(height):
                left = label[i] if i < len(label) else ""
                line = left.ljust(label_w) + "".join(
                    (cells[j][i] if i < len(cells[j]) else "").ljust(col_w[j]) for j in block)
                out.append(line.rstrip())
            if multiline:  # a blank line between rows of multi-line cells keeps them apart
                out.append("")
        if multiline:
            out.pop()
    return out


def _terminal_width(width: int | None) -> int:
    return width if width is not None else max(60, shutil.get_terminal_size((120, 24)).columns)



def selection_grid(selection: pd.DataFrame, meta: dict, *, budget: int | None = None,
                   few_prompts: int = FEW_PROMPTS, width: int | None = None) -> list[str]:
    """The selection as text: one row per bin (with its pass@1 range), one column per budget N
    (only ``budget`` if given); each cell strategy, n/M/aggregation, held-out accuracy [95% CI],
    mean FLOPs and the prompts it was selected from ("few!" below ``few_prompts``)."""
    check_budget(selection, budget, "selection")
    if budget is not None:
        selection = selection[selection["budget"] == budget]
    sel, keys, headers, _ = selection_columns(selection)
    bins = sorted(int(b) for b in sel["bin"].unique())
    titles = bin_titles(meta, bins)
    known = flops_known(meta)
    rows = []
    for b in bins:
        in_bin = sel[sel["bin"] == b]
        cells = []
        for key in keys:
            r = in_bin[in_bin["column"] == key]
            cells.append(cell_lines(next(r.itertuples(index=False)), known_flops=known, few_prompts=few_prompts)
                         if not r.empty else ["-"])
        name, _, rng = titles[b].partition(": ")
        rows.append(([name, rng] if rng else [name], cells))
    return _grid(["bin"], headers, rows, _terminal_width(width))


def _warnings(selection: pd.DataFrame, meta: dict, few_prompts: int) -> list[str]:
    """Cells selected from fewer than ``few_prompts`` prompts, and in-sample cells, grouped by bin."""
    out = []
    titles = bin_titles(meta, selection["bin"].unique())
    for b, sel in selection.groupby("bin"):
        counted = sel["n_prompts"].fillna(0) > 0 if "n_prompts" in sel else pd.Series(False, index=sel.index)
        few = sel[counted & (sel["n_prompts"].fillna(0) < few_prompts)]  # 0 prompts: a prior, nothing profiled
        if not few.empty:
            counts = sorted({int(n) for n in few["n_prompts"]})
            budgets = ", ".join(str(int(n)) if present(n) else "any" for n in few["budget"])
            out.append(f"warning: {titles[int(b)]}: selected from {'/'.join(map(str, counts))} prompts "
                       f"(< {few_prompts}) at N = {budgets}: the choice and its CI are noisy; profile more prompts "
                       f"(dataset.size) or use fewer bins (binning.k / thresholds)")
        if "cross_fitted" in sel:
            insample = sel[sel["cross_fitted"].eq(False)]
            if not insample.empty:
                out.append(f"warning: {titles[int(b)]}: accuracy at N = "
                           f"{', '.join(str(int(n)) for n in sorted(insample['budget']))} is in-sample "
                           f"(fewer prompts than select.folds), so it is optimistic")
    return out


# ----------------------------------------------------------------------------- sections

def _sample_lines(t: TableDir, few_prompts: int) -> list[str]:
    meta, prompts = t.metadata, t.prompts()
    split = prompts["split"].value_counts()
    profile = prompts[prompts["split"] == "profile"]
    n_pool = meta.get("n_pool")
    rollouts = int(prompts["pool_size"].sum()) if "pool_size" in prompts else None
    results, evaluations = t.results(), t.evaluations()
    configs = results.drop_duplicates(["strategy", "n", "m", "aggregation"]).shape[0] if not results.empty else 0
    if prompts.empty:
        return ["no prompts: nothing was profiled for this table" + (" (a published prior)" if meta.get("prior") else "")]
    lines = [
        f"prompts:     {len(prompts)} ({int(split.get('profile', 0))} profiling, {int(split.get('heldout', 0))} held out"
        + "".join(f", {int(v)} {k}" for k, v in split.items() if k not in ("profile", "heldout")) + ")",
        f"pool:        {n_pool if n_pool is not None else '?'} evaluation samples per prompt"
        + (f" + {meta['difficulty_samples']} difficulty samples (bins only)" if meta.get("difficulty_samples") else "")
        + (f", {rollouts} rollouts" if rollouts is not None else ""),
        f"evaluations: {len(evaluations)} rows (prompt x configuration x budget); results: {len(results)} rows, "
        f"{configs} configurations",
    ]
    counts = profile["bin"].value_counts().sort_index()
    titles = bin_titles(meta, counts.index)
    lines.append("profiling prompts per bin:")
    lines += [f"  {titles[int(b)]}: {int(n)}" + ("  (few)" if n < few_prompts else "") for b, n in counts.items()]
    return lines


def evaluation_frame(table_dir: str | Path, split: str = "heldout") -> pd.DataFrame:
    """``evaluation-<split>.json`` (written by ``tts-selector evaluate``) as a DataFrame: one row
    per (method, budget) with accuracy, ci_low, ci_high, mean_generations, mean_flops."""
    path = Path(table_dir) / f"evaluation-{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluation; run `tts-selector evaluate --tables {table_dir}` to write it")
    from .table_checks import read_report

    return pd.DataFrame(read_report(path)["rows"])


def _accuracy_text(r: Any) -> str:
    return f"{r['accuracy']:.3f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]"


def _evaluation_lines(path: Path, width: int, budget: int | None = None) -> list[str]:
    """A compact view of one evaluation report: each router (and oracle) against the best fixed
    configuration per budget (only ``budget`` if given), then the efficiency figure. The full
    table: ``tts-selector evaluate``. A hand-edited, truncated or hostile report (a link, a
    FIFO, wrong types) is named as unreadable instead (the CLI refuses it: table_checks)."""
    from .table_checks import read_report

    try:
        report = read_report(path)
        return _render_evaluation(path, report, width, budget)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # TableError is a ValueError
        return [f"{path.name}: unreadable ({str(exc)[:300]}): re-run `tts-selector evaluate --tables {path.parent}`"]


def _render_evaluation(path: Path, report: dict, width: int, budget: int | None) -> list[str]:
    rows = pd.DataFrame(report["rows"])
    budgets = [int(b) for b in report["budgets"] if budget is None or int(b) == budget]
    lines = [f"router evaluation ({path.name}: {report.get('n_prompts', '?')} {report.get('split', '')} prompts, "
             "never used to select; accuracy [95% CI]):"]

    grid_rows = []
    routers = sorted({m for m in rows["method"] if m.startswith("router")}, key=lambda m: ("oracle" in m, m))
    for method in routers:
        mine = rows[rows["method"] == method].set_index("budget")
        grid_rows.append(([method], [[_accuracy_text(mine.loc[b])] if b in mine.index else ["-"] for b in budgets]))
    pick = rows[rows["method"] == "profile pick"].set_index("budget")
    if not pick.empty:
        grid_rows.append((["profile pick"], [[_accuracy_text(pick.loc[b])] if b in pick.index else ["-"] for b in budgets]))
        grid_rows.append((["  (which)"], [[str(pick.loc[b].get("config", "?"))] if b in pick.index else ["-"]
                                          for b in budgets]))
    fixed = rows[rows["method"].str.startswith("fixed ")]
    best_names, best_cells = [], []
    for b in budgets:
        at = fixed[fixed["budget"] == b]
        top = at.loc[at["accuracy"].idxmax()] if not at.empty else None
        best_cells.append([_accuracy_text(top)] if top is not None else ["-"])
        best_names.append([top["method"].removeprefix("fixed ")] if top is not None else ["-"])
    if not fixed.empty:
        grid_rows += [(["best fixed strategy"], best_cells), (["  (which)"], best_names)]
    lines += _grid(["method"], [f"N={b}" for b in budgets], grid_rows, width)
    if not pick.empty:
        lines.append("profile pick: the one configuration chosen on the profiling prompts within N samples' compute "
                     "(what a user deploys without a router)")
    if not fixed.empty:
        lines.append("best fixed strategy: the most accurate fixed configuration at that N, picked on these prompts "
                     "(an oracle reference, whatever its compute)")
    declared = report.get("declared_router")
    versus_pick = [v for v in report.get("versus_profile_pick", [])
                   if budget is None or v.get("budget") == "pooled" or int(v["budget"]) == budget]
    if versus_pick:
        lines.append(f"declared router {declared} vs the profile pick, margin [95% paired CI]: "
                     + ", ".join(f"{'N=' + str(v['budget']) if v['budget'] != 'pooled' else 'pooled'} {v['margin']:+.3f} "
                                 f"[{v['margin_ci'][0]:+.3f}, {v['margin_ci'][1]:+.3f}]" for v in versus_pick))
    margins = [v for v in report.get("versus_fixed", []) if v.get("method") == declared and v.get("margin") is not None
               and (budget is None or int(v["budget"]) == budget)]
    if margins:
        lines.append(f"oracle reference: {declared} vs the best fixed strategy at equal compute picked on these prompts, "
                     "margin [95% paired CI]: "
                     + ", ".join(f"N={v['budget']} {v['margin']:+.3f} [{v['margin_ci'][0]:+.3f}, {v['margin_ci'][1]:+.3f}]"
                                 for v in margins))
    e = report.get("efficiency") or {}
    if e.get("router_budget") is not None:
        ci = e.get("ratio_ci", [float("nan")] * 2)
        lines.append(f"{e['reference']}@{e['reference_budget']}'s accuracy {e['target_accuracy']:.3f} is reached by {e['router']} "
                     f"at N={e['router_budget']} with {e['ratio']:.2f}x less compute [95% CI {ci[0]:.2f}, {ci[1]:.2f}]")
    elif e:
        lines.append(f"the declared router does not reach {e.get('reference', 'the reference')}@{e.get('reference_budget', '?')}'s "
                     f"accuracy {e.get('target_accuracy', float('nan')):.3f} "
                     "within the table's budgets")
    for name, c in (report.get("calibration") or {}).items():
        lines.append(f"calibration {name}: reported {c['reported']:.3f}, realized {c['realized']:.3f} "
                     f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}]")
    lines.append(f"full report: tts-selector evaluate --tables {path.parent}")
    return lines


def inspect_table(table: TableDir | str | Path, *, budget: int | None = None, few_prompts: int = FEW_PROMPTS,
                  width: int | None = None) -> str:
    """The terminal summary of one table directory (see the module docstring)."""
    t = table if isinstance(table, TableDir) else TableDir(table)
    meta, selection = t.metadata, t.selection()
    check_budget(selection, budget, t.path)
    width = _terminal_width(width)
    prior = bool(meta.get("prior"))
    lines = [f"table {t.path}" + ("  [prior: strategies from rules, no measured accuracy]" if prior else ""), "",
             "provenance:"]
    rows = provenance_rows(meta)
    key_w = max(len(k) for k, _ in rows) + 2
    lines += [f"  {k.ljust(key_w)}{v}" for k, v in rows]
    lines += ["", "samples:"] + [f"  {l}" for l in _sample_lines(t, few_prompts)]
    if prior:
        lines += ["", "published rules (strategy per difficulty bin x policy size; no measured accuracy):"]
    else:
        lines += ["", "selection per difficulty bin x budget N (held-out accuracy [95% CI], mean FLOPs per prompt, "
                  "prompts it was selected from):"]
        if not flops_known(meta):
            lines.append("(FLOPs not recorded: the policy's and PRM's parameter counts are unknown)")
        others = [e for e in t.selection_estimators() if e != meta.get("default_selection")]
        lines.append(f"(cells chosen and scored on the table's own bins, {meta.get('default_selection')}; each router "
                     f"uses the cells chosen on its own estimator's bins: {', '.join(others) or 'none other yet'})")
    lines += selection_grid(selection, meta, budget=budget, few_prompts=few_prompts, width=width)
    if prior and "rule" in selection:
        lines += [""] + [f"rule: {rule}" for rule in dict.fromkeys(selection["rule"].dropna())]
    shown = selection if budget is None else selection[selection["budget"] == budget]
    warnings = _warnings(shown, meta, few_prompts)
    if warnings:
        lines += [""] + warnings
    for path in sorted(t.path.glob("evaluation-*.json")):
        lines += [""] + _evaluation_lines(path, width, budget)
    for path in sorted(t.path.glob("learning-curve-*.json")):
        lines += [""] + _learning_curve_lines(path, budget)
    return "\n".join(lines)


def _learning_curve_lines(path: Path, budget: int | None = None) -> list[str]:
    """A learning-curve report (``evaluate --learning-curve``), rendered in full (one budget if given)."""
    from .errors import InputError
    from .learning_curve import read_learning_curve

    try:
        curve = read_learning_curve(path)
    except (OSError, InputError) as exc:
        return [f"{path.name}: unreadable ({exc})"]
    if budget is not None:
        curve.budgets = [b for b in curve.budgets if b == budget]
    return [f"learning curve ({path.name}):"] + curve.render().splitlines()[1:]


# ----------------------------------------------------------------------------- catalogs and dispatch

def _catalog_module(path: Path) -> Any | None:
    """``selector.catalog`` when ``path`` is a catalog (a directory of table directories), else None."""
    name = f"{__package__}.catalog"
    try:
        catalog = importlib.import_module(name)  # lazily: only catalogs need it
    except ModuleNotFoundError as exc:
        if exc.name != name:  # a dependency of the catalog module is missing: say that, not this
            raise
        if any((c / "selection.parquet").is_file() for c in path.iterdir() if c.is_dir()):
            raise TableError(
                f"{path} is a directory of table directories (a catalog), and summarising a catalog needs "
                f"selector.catalog, which this installation lacks: upgrade tts-selector, or inspect one table "
                f"with `tts-selector inspect {path}/<table>`") from None
        return None
    return catalog if catalog.is_catalog(path) else None


def _not_a_table(path: Path, t: TableDir) -> TableError:
    missing = t.missing()
    if len(missing) < 4:
        return TableError(f"{path}: an unfinished table directory (missing {', '.join(missing)}): finish it with "
                          f"`tts-selector profile CONFIG --out {path}` (it resumes) or `tts-selector merge`")
    return TableError(f"{path}: not a table directory (no prompts/results/selection/evaluations .parquet) nor a "
                      f"directory of them: point at a directory written by `tts-selector profile`, e.g. "
                      f"tables/smollm2-135m__arith-check__arithmetic")


def inspect_path(path: str | Path, *, budget: int | None = None, few_prompts: int = FEW_PROMPTS,
                 width: int | None = None) -> str:
    """The summary of a table directory, or of a catalog (a directory of table directories,
    summarised by :class:`selector.catalog.TableCatalog`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TableError: ``path`` is neither a table directory nor a catalog, or a table file is invalid.
        ValueError: ``budget`` is not one of the table's budgets.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory: give a table directory written by `tts-selector "
                                f"profile` (e.g. tables/smollm2-135m__arith-check__arithmetic) or a directory of them")
    if not path.is_dir():
        raise TableError(f"{path}: not a directory: give the table directory that holds selection.parquet, not a file")
    t = TableDir(path)
    if t.exists():
        return inspect_table(t, budget=budget, few_prompts=few_prompts, width=width)
    catalog = _catalog_module(path)
    if catalog is None:
        raise _not_a_table(path, t)
    if budget is not None:
        raise ValueError(f"{path} is a catalog: --budget applies to one table; inspect {path}/<table> --budget {budget}")
    cat = catalog.TableCatalog(path)
    summary = cat.summary()
    # One line per table, names in full (they are what `inspect DIR/<name>` takes); the DataFrame
    # (TableCatalog(path).summary()) has every column.
    name_w = max([len(str(n)) for n in summary.get("name", [])] + [4])
    rows = []
    for r in summary.to_dict("records"):
        params = r.get("policy_params")
        size = catalog.format_params(params if present(params) else None)
        budgets = list(r.get("budgets") or [])
        engines = ("rules for any policy size and PRM" if r.get("prior")
                   else f"{r.get('policy_id')} ({size}) + {r.get('prm_id')}")
        rows.append(f"  {str(r.get('name')).ljust(name_w)}  {str(r.get('kind', '')).ljust(8)}  "
                    f"{engines}; family {r.get('dataset_family')}; "
                    f"{len(list(r.get('bins') or []))} bins; "
                    + (f"budgets {', '.join(map(str, budgets))}" if budgets else "any budget"))
    body = "\n".join(rows)
    lines = [f"catalog {path}: {len(summary)} tables", body]
    for sub, reason in getattr(cat, "skipped", ()):
        lines.append(f"skipped {sub}: {reason}")
    return "\n".join(lines + ["", f"one table in detail: tts-selector inspect {path}/<table>"])


def curves_path(out: str | Path, what: str = "curves") -> Path:
    """Where ``--plot OUT.png`` writes its second and later figures: ``OUT-<what>.png`` beside it
    (``curves``: the accuracy curves; ``learning-curve``: the learning curve, when the table has one)."""
    out = Path(out)
    return out.with_name(f"{out.stem}-{what}{out.suffix}")


def write_plots(table: TableDir | str | Path, out: str | Path, *, budget: int | None = None,
                few_prompts: int = FEW_PROMPTS, dpi: int = 110) -> list[tuple[str, Path]]:
    """Write the selection heatmap to ``out``, the accuracy curves to :func:`curves_path` and,
    when the table has ``learning-curve-heldout.json``, the learning curve to
    ``curves_path(out, "learning-curve")``; return ``[(what, path), ...]``. The format follows
    the suffix (png, pdf, svg; none: png)."""
    from .learning_curve import learning_curve_path
    from .plots import accuracy_curves, learning_curve_plot, selection_heatmap

    t = table if isinstance(table, TableDir) else TableDir(table)
    if not t.exists():
        raise _not_a_table(t.path, t)
    out = Path(out)
    if not out.suffix:
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    figures = [("selection heatmap", selection_heatmap(t, budget=budget, few_prompts=few_prompts), out),
               ("accuracy curves", accuracy_curves(t), curves_path(out))]
    if learning_curve_path(t.path).is_file():
        figures.append(("learning curve", learning_curve_plot(learning_curve_path(t.path)),
                        curves_path(out, "learning-curve")))
    for what, fig, path in figures:
        fig.savefig(path, dpi=dpi)
        written.append((what, path))
    return written
