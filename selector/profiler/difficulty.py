"""Stage 2: each prompt's difficulty, from samples that no strategy is scored on.

A prompt's pool holds ``pool.difficulty_samples`` (K) difficulty samples and ``pool.n``
evaluation samples (``pool.sample_role``). Difficulty is read from the K difficulty samples
only, so a prompt's bin is independent of the samples the best-of-N family is scored on
(scoring a bin's strategies on the samples that put the prompt in that bin biases every cell:
a prompt lands in the hardest bin *because* its scored samples were wrong). Sources
(``difficulty`` in the config):

- ``predicted`` (default; Snell et al.'s model-predicted difficulty): the mean final-step PRM
  score of the K samples, which is exactly what a ``pilot:K`` router computes at run time;
- ``oracle``: the graded pass@1 of the K samples (not reproducible by a router: its cells
  are a reference, not a deployable choice);
- ``level``: the data set's own difficulty label (e.g. MATH's level 1-5), for imported pools
  too small to split; it is mapped to ``(max_level - level) / (max_level - min_level)`` so
  that, like pass@1, higher means easier, and binned by the config's scheme;
- ``agreement`` (no PRM, no ground truth): the share of the modal answer among the K
  difficulty samples (:func:`selector.agreement.modal_share`: a sample without an answer
  agrees with nothing), in [0, 1] and, like pass@1, higher = easier; what an agreement
  ``pilot:K`` computes.

``pilot:<k>`` routers bin by a signal of ``k`` pilot samples (:data:`PILOT_SIGNALS`): their
mean final-step score (``prm_mean``), or the share of their modal answer (``agreement``, on
agreement tables and tables without scores). The table's cells for such a router are
selected on the bins of the first ``k`` difficulty samples, with edges from the profiling
prompts' own pilot values (:func:`pilot_bins`), so the accuracy a cell reports is that of the
prompts a k-sample pilot sends there. ``prompts.parquet`` records what each signal reads:
``difficulty_scores`` and ``difficulty_answers`` (the difficulty samples' answer keys in order).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..agreement import modal_share
from ..binning import assign_bins, bin_edges
from ..datasets import Problem
from ..search.aggregate import aggregate
from .config import ProfileConfig

DESCRIPTIONS = {
    "predicted": "PRM-predicted pass@1 (mean final-step score) of {k} difficulty samples per prompt",
    "oracle": "graded pass@1 of {k} difficulty samples per prompt",
    "level": "the data set's difficulty label (level; higher level = harder)",
    "agreement": "share of the modal answer among {k} difficulty samples per prompt (no PRM; a sample without an "
                 "answer does not agree)",
}

# What a pilot:<k> computes from its k samples (a pilot record's ``signal`` in the table's
# metadata; a record without one is ``prm_mean``, as every table before agreement pilots).
PILOT_SIGNALS = ("prm_mean", "agreement")


def table_estimator(difficulty: str) -> str:
    """Name of the selection keyed by the table's own bins (e.g. ``bins:predicted``)."""
    return f"bins:{difficulty}"


def pilot_name(k: int, signal: str | None = None) -> str:
    """``pilot:<k>`` for the table's own pilot signal, ``pilot:<k>:<signal>`` for another one
    (``select.pilot_signals``: e.g. an agreement pilot beside a self-confidence table's own)."""
    return f"pilot:{k}" if signal is None else f"pilot:{k}:{signal}"


def final_scores(step_scores: pd.Series) -> list[float]:
    """The final-step PRM score of each sample (0 for an empty solution)."""
    return [aggregate(x, "last") if len(x) else 0.0 for x in step_scores]


def pilot_signal(cfg: ProfileConfig) -> str:
    """The signal a profile's ``pilot:<k>`` routers bin by: the modal answer's share on agreement
    tables and wherever the samples have no scores, else the mean final-step PRM score."""
    return "agreement" if cfg.difficulty == "agreement" or not cfg.has_scores else "prm_mean"


def record_signal(record: Mapping[str, Any]) -> str:
    """The signal of a ``pilots`` metadata record (``prm_mean`` when it names none)."""
    signal = record.get("signal", "prm_mean")
    if signal not in PILOT_SIGNALS:
        raise ValueError(f"unknown pilot signal {str(signal)[:40]!r}; known: {list(PILOT_SIGNALS)}")
    return signal


def own_pilot_signal(estimator: str | None) -> str | None:
    """The pilot signal that reproduces a table's own bins (``bins:predicted``: a K-sample PRM
    pilot; ``bins:agreement``: a K-sample agreement pilot), None for bins no router reproduces."""
    return {"bins:predicted": "prm_mean", "bins:agreement": "agreement"}.get(estimator or "")


def prompt_difficulty(cfg: ProfileConfig, problems: Sequence[Problem], rollouts: pd.DataFrame) -> pd.DataFrame:
    """Per prompt (index prompt_id): ``oracle_pass1``, ``predicted_pass1`` and the final-step
    ``difficulty_scores`` of its difficulty samples (in sample order) with their generated and
    PRM tokens (``difficulty_tokens``, ``difficulty_prm_tokens``: what a pilot of their first
    k samples spends), their answer keys (``difficulty_answers``) and modal share
    (``agreement``), and ``difficulty_score``, the value it is binned by (higher = easier).

    With no difficulty samples (``difficulty: level``), pass@1 columns are read from the
    evaluation samples and are informational only: nothing is binned by them.
    """
    k = cfg.pool.difficulty_samples
    ordered = rollouts.sort_values(["prompt_id", "sample_id"])
    source = ordered[ordered["sample_id"] < k] if k else ordered
    groups = source.groupby("prompt_id", sort=False)
    out = pd.DataFrame({
        "oracle_pass1": groups["correct"].mean(),
        "predicted_pass1": groups["step_scores"].apply(lambda s: float(np.mean(final_scores(s)))),
        "difficulty_scores": groups["step_scores"].apply(final_scores) if k else pd.Series(dtype=object),
        "difficulty_tokens": groups["tokens"].apply(lambda t: [int(x) for x in t]) if k else pd.Series(dtype=object),
        "difficulty_prm_tokens": groups["prm_tokens"].apply(lambda t: [int(x) for x in t]) if k else pd.Series(dtype=object),
        "difficulty_answers": groups["answer_key"].apply(_keys) if k else pd.Series(dtype=object),
    })
    ids = [p.id for p in problems]
    out = out.reindex(ids)
    if not k:
        for column in ("difficulty_scores", "difficulty_tokens", "difficulty_prm_tokens", "difficulty_answers"):
            out[column] = [[] for _ in ids]
    out["agreement"] = [modal_share(keys) for keys in out["difficulty_answers"]]
    if cfg.difficulty == "level":
        levels = pd.Series([p.level for p in problems], index=ids, dtype="float")
        if levels.isna().any():
            missing = levels[levels.isna()].index[:3].tolist()
            raise ValueError(
                f"difficulty 'level': {int(levels.isna().sum())} problems have no level (e.g. {missing}); set "
                f"dataset.level_field to the field holding it, or use difficulty: predicted with pool.difficulty_samples"
            )
        span = max(levels.max() - levels.min(), 1.0)
        out["difficulty_score"] = (levels.max() - levels) / span
    else:
        column = {"oracle": "oracle_pass1", "agreement": "agreement"}.get(cfg.difficulty, "predicted_pass1")
        out["difficulty_score"] = out[column]
    return out


def _keys(keys: pd.Series) -> list[str | None]:
    """Answer keys as plain strings, None for a sample without an answer."""
    return [None if k is None or (isinstance(k, float) and np.isnan(k)) else str(k) for k in keys]


def pilot_scores(difficulty_scores: pd.Series, k: int) -> pd.Series:
    """Mean final-step score of each prompt's first ``k`` difficulty samples (``difficulty_scores``:
    one list per prompt, as in ``prompts.parquet``): what a ``k``-sample pilot computes."""
    return difficulty_scores.apply(lambda s: float(np.mean(s[:k])) if len(s) else np.nan)


def agreement_scores(difficulty_answers: pd.Series, k: int) -> pd.Series:
    """Modal share of each prompt's first ``k`` difficulty samples' answer keys
    (``difficulty_answers``: one list per prompt, as in ``prompts.parquet``): what a ``k``-sample
    agreement pilot computes."""
    return difficulty_answers.apply(lambda keys: modal_share(list(keys)[:k]))


def pilot_values(frame: pd.DataFrame, k: int, signal: str = "prm_mean", where: Any = "prompts.parquet") -> pd.Series:
    """What a ``k``-sample pilot with ``signal`` computes for each prompt of ``frame`` (the
    prompts table, or :func:`prompt_difficulty`'s frame)."""
    if signal == "agreement":
        if "difficulty_answers" not in frame:
            from ..errors import InputError

            raise InputError(f"{where}: no difficulty_answers column (written before agreement pilots): re-finish the "
                             "table with `tts-selector reprice TABLE`")
        return agreement_scores(frame["difficulty_answers"], k)
    return pilot_scores(frame["difficulty_scores"], k)


def pilot_bins(cfg: ProfileConfig, difficulty: pd.DataFrame, k: int, profile_ids: list[str],
               signal: str | None = None) -> tuple[pd.Series, list[float]]:
    """Bins a ``k``-sample pilot assigns to every prompt, and their edges (fitted, with the
    config's binning scheme, on the profiling prompts' pilot values; the signal is ``signal``,
    by default :func:`pilot_signal`'s)."""
    scores = pilot_values(difficulty, k, signal or pilot_signal(cfg))
    b = cfg.binning
    edges = bin_edges(scores.loc[profile_ids].to_numpy(), b.scheme, b.k, b.thresholds)
    return pd.Series(assign_bins(scores.to_numpy(), edges), index=scores.index), edges
