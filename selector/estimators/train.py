"""Training and cross-validating difficulty estimators on a table directory or a data set.

Metrics (all out-of-fold, K-fold cross-validation): bin accuracy, within-one-bin accuracy,
Spearman rho between predicted pass@1 and the target's pass@1 (oracle pass@1 for a table;
for ``--target level``, the level rescaled so that higher = easier on both sides), and
AUROC of predicted pass@1 for separating the easiest bin from the hardest. A majority-class
baseline (the most frequent training bin, constant pass@1) is reported beside them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.model_selection import StratifiedKFold

from ..stats import auroc
from ..tables import TableDir, read_table, write_table
from .persist import ESTIMATOR_SUFFIX, save_estimator
from .prompt import PromptEstimator

ESTIMATORS_KEY = "estimators"


@dataclass
class CVReport:
    features: str
    target: str
    n_prompts: int
    folds: int
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    oof_bins: list[int] = field(default_factory=list, repr=False)  # out-of-fold predicted bin per prompt

    def render(self) -> str:
        names = ["bin_accuracy", "within_one_bin", "spearman_rho", "auroc_easiest_vs_hardest"]
        lines = [f"{self.features} features, target {self.target}, {self.n_prompts} prompts, {self.folds}-fold CV"]
        lines.append(f"{'metric':<26}{'estimator':>10}{'baseline':>10}")
        for k in names:
            lines.append(f"{k:<26}{self.metrics.get(k, float('nan')):>10.3f}{self.baseline.get(k, float('nan')):>10.3f}")
        return "\n".join(lines)


def _metrics(bins_true, bins_pred, pass1_true, pass1_pred) -> dict[str, float]:
    bins_true, bins_pred = np.asarray(bins_true), np.asarray(bins_pred)
    easiest, hardest = bins_true.min(), bins_true.max()
    ends = (bins_true == easiest) | (bins_true == hardest)
    rho = spearmanr(pass1_pred, pass1_true).statistic if np.ptp(pass1_pred) > 0 else 0.0
    return {
        "bin_accuracy": float(np.mean(bins_true == bins_pred)),
        "within_one_bin": float(np.mean(np.abs(bins_true - bins_pred) <= 1)),
        "spearman_rho": float(rho),
        "auroc_easiest_vs_hardest": auroc(np.asarray(pass1_pred)[ends], (bins_true == easiest)[ends]),
    }


def cross_validate(
    prompts: Sequence[str], pass1: Sequence[float], bins: Sequence[int], *, features: str = "tfidf",
    folds: int = 5, seed: int = 0, target: str = "bin", progress: Callable | None = None,
) -> CVReport:
    """Out-of-fold predictions of a :class:`PromptEstimator` and the majority baseline."""
    prompts, pass1, bins = list(prompts), np.asarray(pass1, float), np.asarray(bins, int)
    counts = np.bincount(bins)
    k = int(min(folds, counts[counts > 0].min())) if min(counts[counts > 0]) >= 2 else 2
    splitter = StratifiedKFold(n_splits=max(k, 2), shuffle=True, random_state=seed)
    pred_bins, pred_pass1 = np.empty_like(bins), np.empty_like(pass1)
    base_bins, base_pass1 = np.empty_like(bins), np.empty_like(pass1)
    splits = list(splitter.split(np.zeros(len(bins)), bins))
    bar = progress(total=len(splits), desc=f"cross-validate {features}", unit="fold") if progress else None
    for train, test in splits:
        est = PromptEstimator(features=features).fit([prompts[i] for i in train], pass1[train], bins[train])
        test_prompts = [prompts[i] for i in test]
        pred_bins[test] = est.predict(test_prompts)
        pred_pass1[test] = est.predict_pass1(test_prompts)
        values, counts_train = np.unique(bins[train], return_counts=True)
        base_bins[test] = values[np.argmax(counts_train)]
        base_pass1[test] = pass1[train].mean()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return CVReport(features, target, len(prompts), len(splits),
                    _metrics(bins, pred_bins, pass1, pred_pass1), _metrics(bins, base_bins, pass1, base_pass1),
                    [int(b) for b in pred_bins])


def train_on_table(
    table_dir: str | Path, *, features: str = "tfidf", folds: int = 5, seed: int = 0, progress: Callable | None = None,
) -> tuple[CVReport, Path, str]:
    """Cross-validate on the table's profiling prompts (the table's bins and oracle pass@1 as
    targets), fit on all of them, save ``estimator-<features>.npz`` (arrays, not a pickle) next to the table and
    record its sha256 and metrics in ``selection.parquet``'s metadata under ``estimators``.

    The router with this estimator sends a prompt to the bin *it* predicts, not to the table's
    bin, so the table gets a selection of its own for it (``estimator`` = ``prompt:<features>``):
    cells chosen and scored, from the per-prompt ``evaluations.parquet`` (no new generation), on
    the estimator's out-of-fold bins of the profiling prompts. A cell's expected accuracy is
    then that of the prompts this router will send there."""
    table = TableDir(table_dir)
    prompts = table.prompts()
    prompts = prompts[prompts["split"] == "profile"]
    texts, pass1, bins = prompts["text"].tolist(), prompts["oracle_pass1"].to_numpy(), prompts["bin"].to_numpy()
    report = cross_validate(texts, pass1, bins, features=features, folds=folds, seed=seed, target="table bin", progress=progress)
    estimator = PromptEstimator(features=features).fit(texts, pass1, bins)
    path = Path(table_dir) / f"estimator-{features}{ESTIMATOR_SUFFIX}"
    sha = save_estimator(estimator, path)
    selection_path = Path(table_dir) / "selection.parquet"
    df, meta = read_table(selection_path, "selection")
    entries = dict(meta.get(ESTIMATORS_KEY, {}))
    entries[f"prompt:{features}"] = {
        "file": path.name, "sha256": sha, "features": features, "target": "table bin",
        "cv_metrics": report.metrics, "baseline_metrics": report.baseline, "folds": report.folds, "seed": int(seed),
        "n_prompts": report.n_prompts, "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # The bins its cells were chosen on, so a re-priced or re-selected table can choose them again.
        "oof_bins": dict(zip(prompts["prompt_id"].tolist(), report.oof_bins)),
    }
    name = f"prompt:{features}"
    own = _estimator_selection(table, prompts["prompt_id"].tolist(), report.oof_bins, name, meta)
    df = pd.concat([df[df["estimator"] != name], own], ignore_index=True)
    write_table(df, selection_path, "selection", dict(meta, **{ESTIMATORS_KEY: entries}))
    return report, path, sha


def _estimator_selection(table: TableDir, prompt_ids: list[str], bins: list[int], name: str, meta: dict) -> pd.DataFrame:
    """The selection rows of estimator ``name`` from its out-of-fold ``bins`` of the profiling prompts."""
    from ..profiler.config import SelectConfig, build_section
    from ..profiler.selection import select_tables

    raw = table.config.get("select", {})
    sel = build_section(SelectConfig, raw, f"{table.path} manifest select") if raw else SelectConfig()
    ev = table.evaluations()
    ev = ev[ev["prompt_id"].isin(set(prompt_ids))]
    unit = (meta.get("cost_model") or {}).get("sample_cost")
    _, rows = select_tables(ev, pd.Series(bins, index=prompt_ids), sel, meta["policy_id"], meta["prm_id"],
                            estimator=name, unit=unit)
    return rows


def train_on_dataset_levels(dataset: str, *, features: str = "tfidf", folds: int = 5, seed: int = 0,
                            progress: Callable | None = None) -> CVReport:
    """Cross-validate against a data set's own difficulty label (MATH's level 1-5, 1 = easiest):
    bins = level, and the pass@1 stand-in is the level rescaled to [0, 1] with 1 = easiest
    (so Spearman rho is against the level, sign flipped)."""
    from ..datasets import load_dataset

    problems, _ = load_dataset(dataset)
    labelled = [p for p in problems if p.level is not None]
    if len(labelled) < 10:
        raise ValueError(f"{dataset}: {len(labelled)} problems carry a level; --target level needs a labelled data set (math500)")
    levels = np.array([p.level for p in labelled])
    stand_in = (levels.max() - levels) / max(levels.max() - levels.min(), 1)
    return cross_validate([p.problem for p in labelled], stand_in, levels, features=features,
                          folds=folds, seed=seed, target="level", progress=progress)


def report_json(report: CVReport) -> dict[str, Any]:
    return json.loads(json.dumps({"features": report.features, "target": report.target, "n_prompts": report.n_prompts,
                                  "folds": report.folds, "metrics": report.metrics, "baseline": report.baseline}))
