"""Small statistics shared by the profiler, the estimators, the evaluations and the benchmarks:
AUROC, and the bootstrap resamples and percentile intervals every CI in the package uses."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties 1/2.

    Computed from average ranks (Mann-Whitney U). NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    # average ranks over ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) prompt indices drawn with replacement; every method of one report shares
    them, so its differences are paired."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def boot_means(values: np.ndarray, boot: np.ndarray) -> np.ndarray:
    """Means of ``values`` (one per prompt) over each resample of ``boot`` (bootstrap_indices)."""
    return values[boot].mean(axis=1)


def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means over rows (prompts), drawn from ``rng``; ``values`` is (prompts,) or
    (prompts, configs)."""
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    return values[idx].mean(axis=1)


def ci95(samples: np.ndarray) -> list[float]:
    """The 95% percentile interval of bootstrap ``samples``."""
    return [float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))]


def interval(means: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval at ``confidence`` (e.g. 0.95) of bootstrap ``means``."""
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def two_way(values: np.ndarray, draw_boot: np.ndarray, boot: np.ndarray) -> np.ndarray:
    """Bootstrap means of a (draws, prompts) array: resample ``r`` averages the draws
    ``draw_boot[r]`` over the prompts ``boot[r]`` (both dimensions resampled)."""
    return np.array([values[d][:, p].mean() for d, p in zip(draw_boot, boot)])
