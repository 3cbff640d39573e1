"""Agreement: how strongly a prompt's samples agree on one answer, without a PRM or ground truth.

A prompt's agreement over ``k`` samples is the share of its modal answer (the most frequent
answer key; samples without an answer agree with nothing): 1.0 when every sample gives the
same answer, 1/k when all differ, 0 when none answers. Like pass@1 it lies in [0, 1] and
higher means easier (self-consistency's confidence), so it bins prompts as predicted pass@1
does. One definition for the profiler (``difficulty: agreement``, agreement pilots' bins) and
the router's agreement pilot (``selector/estimators/agreement.py``).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence


def modal_share(keys: Sequence[Any]) -> float:
    """Share of the most frequent answer key among ``keys`` (samples in order; None = no answer,
    which agrees with nothing); NaN for no samples."""
    if len(keys) == 0:
        return float("nan")
    counts = Counter(k for k in keys if k is not None)
    return max(counts.values()) / len(keys) if counts else 0.0
