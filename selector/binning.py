"""Difficulty bins, written once for the profiler and the router.

Bins are numbered ``1..k`` with **1 = easiest** (highest pass@1), as MATH's levels and
Snell et al.'s difficulty levels. Two schemes:

- ``quantile`` (Snell et al. 2024): ``k`` bins of (as nearly as ties allow) equal size over
  the profiled prompts' pass@1. Each edge sits in the gap between two distinct observed
  values nearest to its quantile, so prompts with equal pass@1 (often many at 0 with a small
  pool) always share a bin and no bin is empty; with fewer than ``k`` distinct values there
  are fewer bins;
- ``absolute`` (Liu et al. 2025): fixed pass@1 thresholds, e.g. ``(0.1, 0.5)`` gives
  hard (< 0.1) = bin 3, medium [0.1, 0.5) = bin 2, easy (>= 0.5) = bin 1.

A value equal to an edge belongs to the easier bin.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def quantile_edges(pass_at_1: Sequence[float], k: int) -> list[float]:
    """Up to ``k - 1`` inner edges near the quantiles ``1/k .. (k-1)/k`` (see module docstring)."""
    values = np.sort(np.asarray(pass_at_1, dtype=float))
    n = values.size
    if n == 0:
        raise ValueError("cannot bin an empty set of prompts")
    gaps = [j for j in range(1, n) if values[j - 1] < values[j]]  # cut before index j
    cuts: list[int] = []
    for i in range(1, k):
        free = [g for g in gaps if g not in cuts]
        if not free:
            break
        target = i * n / k
        cuts.append(min(free, key=lambda g: (abs(g - target), g)))
    return sorted(float((values[j - 1] + values[j]) / 2) for j in cuts)


def bin_edges(pass_at_1: Sequence[float], scheme: str, k: int = 5, thresholds: Sequence[float] = (0.1, 0.5)) -> list[float]:
    """Inner edges (ascending pass@1) for a scheme; see the module docstring."""
    if scheme == "quantile":
        return quantile_edges(pass_at_1, k)
    if scheme == "absolute":
        return [float(t) for t in thresholds]
    raise ValueError(f"unknown binning scheme {scheme!r}; use 'quantile' or 'absolute'")


def assign_bins(pass_at_1: Sequence[float] | float, edges: Sequence[float]) -> np.ndarray:
    """Bin (1 = easiest .. len(edges) + 1 = hardest) of each pass@1 value."""
    values = np.atleast_1d(np.asarray(pass_at_1, dtype=float))
    below = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return (len(edges) + 1 - below).astype(np.int64)


def bin_labels(edges: Sequence[float], quantity: str = "pass@1") -> dict[int, str]:
    """Human-readable range of ``quantity`` in each bin, e.g. ``{1: "pass@1 >= 0.50", ...}``
    (``quantity="agreement"`` for bins on the modal answer's share)."""
    k = len(edges) + 1
    labels = {}
    for b in range(1, k + 1):
        hi_edge = k - b  # index of the edge above this bin
        lo = edges[hi_edge - 1] if hi_edge - 1 >= 0 else None
        hi = edges[hi_edge] if hi_edge < len(edges) else None
        if lo is None and hi is None:
            labels[b] = "all"
        elif lo is None:
            labels[b] = f"{quantity} < {hi:.2f}"
        elif hi is None:
            labels[b] = f"{quantity} >= {lo:.2f}"
        else:
            labels[b] = f"{lo:.2f} <= {quantity} < {hi:.2f}"
    return labels
