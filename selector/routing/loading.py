"""The estimators a router can be loaded with, and the engine specs a table may name.

``prompt:<features>`` is read from the file the table records (sha256-checked),
``pilot:<k>`` is fitted on the table's profiling prompts; a published prior bins a pilot's
(calibrated) pass@1 by its absolute thresholds, or makes no estimate when every bin of the
policy's size range routes alike.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backends.base import PRM
from ..binning import assign_bins
from ..catalog import CatalogChoice, TableCatalog, format_params
from ..errors import InputError
from ..estimators import PILOT_ESTIMATORS, Estimate, EstimateContext, PilotEstimator, load_estimator
from ..search.base import STRATEGIES
from ..tables import TableDir
from ..records import Cost
from .cells import PriorCells


def table_spec(table_dir: str | Path, config: dict, meta: dict, kind: str) -> str:
    """The engine spec a table was profiled with, for when the user names none; only one of the
    package's own engines is accepted: a table directory must not choose code to run (a model
    path, a preset file, trust_remote_code) nor where the user's prompts are sent."""
    from ..backends.registry import require_package_spec

    spec = config.get(kind, meta.get(f"{kind}_id"))
    where = f"{Path(table_dir) / 'state' / 'manifest.json'}" if kind in config else f"{table_dir}'s metadata"
    return require_package_spec(spec, "policy" if kind == "policy" else "PRM", where)


def pilot_size(estimator: str) -> int:
    """``k`` of a ``pilot:<k>`` (or ``pilot:<k>:<signal>``) estimator name (``pilot:`` alone: 4),
    or an InputError."""
    arg = estimator.partition(":")[2].partition(":")[0] or "4"
    if not arg.isdigit() or not 1 <= int(arg) <= 4096:
        raise InputError(f"estimator {estimator[:80]!r}: a pilot's size k is a whole number of samples from 1 to 4096, "
                         "e.g. pilot:4")
    return int(arg)


class NoEstimator:
    """Stands in for an estimator when every bin routes alike: makes no estimate, spends nothing."""

    def __init__(self, reason: str):
        self.reason = reason

    def estimate_batch(self, prompts: Sequence[str], ctx: EstimateContext = EstimateContext()) -> list[Estimate]:
        return [Estimate(math.nan, 0, {}, Cost(), self.reason) for _ in prompts]


def load_prior_estimator(cells: PriorCells, estimator: str | Any, where: str | Path = "prior",
                         calibration: TableDir | None = None) -> tuple[Any, str]:
    """The estimator for a published prior and its name: none when every bin of the size range
    routes alike, ``pilot:<k>`` binned by the prior's absolute pass@1 thresholds, or an object as
    is (its estimates' ``pass1`` is binned by the prior's thresholds).

    The prior's thresholds are on true pass@1, and a raw PRM mean is not that: with
    ``calibration`` (a profiled table with the same PRM, e.g. from the same catalog) the pilot's
    mean score is mapped to pass@1 by that table's isotonic calibration; without one the mean is
    taken as pass@1 as is and the estimator's name says it is uncalibrated."""
    if cells.uniform:
        strategy = STRATEGIES[next(iter(cells.rows.values())).strategy].words()
        reason = (f"none: every difficulty bin of the prior's size range for a {format_params(cells.policy_params)} "
                  f"policy uses {strategy}, so no estimate was made")
        return NoEstimator(reason), reason
    if not isinstance(estimator, str):
        return estimator, type(estimator).__name__
    kind = estimator.partition(":")[0]
    if kind == "pilot":
        k = pilot_size(estimator)
        if calibration is not None:
            scores, oracle = pilot_training(calibration, k)
            est = PassOnePilot(k=k, edges=tuple(cells.edges)).fit(scores, oracle)
            return est, f"pilot:{k} (PRM mean calibrated to pass@1 on {calibration.path})"
        est = PassOnePilot(k=k, edges=tuple(cells.edges)).fit([], None)
        return est, f"pilot:{k} (uncalibrated: mean final-step PRM score taken as pass@1)"
    raise ValueError(
        f"{where}: a published prior has no profiled prompts, so no trained estimator {estimator!r}: use 'pilot:<k>' "
        f"(e.g. --estimator pilot:4: the pilot's mean final-step PRM score is the pass@1 estimate, binned by the "
        f"prior's thresholds {cells.edges}) or pass an estimator object whose estimates carry pass1"
    )


class PassOnePilot(PilotEstimator):
    """A pilot for a published prior: bins its (calibrated) pass@1, not its raw mean score, by
    the prior's thresholds on pass@1."""

    def from_scores(self, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pass1, _ = super().from_scores(predicted)
        proba = np.zeros((len(pass1), len(self.classes_)))
        proba[np.arange(len(pass1)), assign_bins(pass1, self.edges) - 1] = 1.0
        return pass1, proba


def calibration_table(choice: CatalogChoice | None, prm: PRM | None, k: int = 1) -> TableDir | None:
    """A profiled table of the catalog with the same PRM and difficulty samples, to calibrate a
    pilot's PRM mean to pass@1 (None when the router was not loaded from a catalog or none fits)."""
    if choice is None or prm is None:
        return None
    for entry in TableCatalog(choice.path.parent).entries():
        if not entry.prior and entry.prm_id == prm.id:
            table = TableDir(entry.path)
            if int(table.metadata.get("difficulty_samples", 0)) >= k:  # a k-sample pilot's scores are there
                return table
    return None


def pilot_training(table: TableDir, k: int, signal: str = "prm_mean") -> tuple[np.ndarray, np.ndarray]:
    """The ``k``-sample pilot value of a table's profiling prompts (``signal``: the mean of the
    first ``k`` difficulty-sample scores, or their answers' agreement) and the graded pass@1 of
    their evaluation samples: what a ``k``-sample pilot sees, and what it should predict,
    measured on samples the pilot's value was not computed from (a sample's score and its
    correctness are correlated, so a target sharing them would make the fit too steep)."""
    prompts = table.prompts()
    prompts = prompts[prompts["split"] == "profile"]
    have = int(table.metadata.get("difficulty_samples", 0))
    if k > have:
        raise ValueError(f"{table.path}: a pilot:{k} needs {k} difficulty samples per prompt, the table has {have}")
    from ..profiler.difficulty import pilot_values

    scores = pilot_values(prompts, k, signal, table.path / "prompts.parquet").to_numpy(dtype=float)
    return scores, prompts["evaluation_pass1"].to_numpy(dtype=float)


def load_table_estimator(table: TableDir, estimator: str | Any) -> tuple[Any, str]:
    """An estimator for a table and its name: ``prompt:<features>`` (the file the table records,
    sha256-checked), ``pilot:<k>`` (fitted on the table's profiling prompts), or an object as is."""
    if not isinstance(estimator, str):
        return estimator, type(estimator).__name__
    kind, _, arg = estimator.partition(":")
    if kind == "prompt":
        entries = table.metadata.get("estimators", {})
        if estimator not in entries:
            raise ValueError(
                f"{table.path}: no estimator {estimator!r} recorded (have {sorted(entries)}); train it with "
                f"`tts-selector train-estimator {table.path} --features {arg or 'tfidf'}`"
            )
        from ..table_checks import estimator_path

        entry = entries[estimator]  # its types were checked with the metadata (table_checks)
        return load_estimator(estimator_path(table.path, entry["file"]), entry["sha256"], features=arg,
                              root=table.path), estimator
    if kind == "pilot":
        k = pilot_size(estimator)
        pilots = table.metadata.get("pilots", {})
        name = estimator if estimator in pilots else f"pilot:{k}"
        if name not in pilots:
            raise ValueError(f"{table.path}: no {estimator} profiled (have {sorted(pilots)}); use one of those, or "
                             f"profile with {k} in select.pilots (and its signal in select.pilot_signals)")
        from ..profiler.difficulty import record_signal

        record = pilots[name]
        signal = record_signal(record)  # what the table's cells for this pilot were binned by
        scores, oracle = pilot_training(table, k, signal)
        est = PILOT_ESTIMATORS[signal](k=k, edges=tuple(record["edges"]), name=name).fit(scores, oracle)
        return est, name
    raise ValueError(f"unknown estimator {estimator!r}: use 'prompt:<features>' or 'pilot:<k>'")
