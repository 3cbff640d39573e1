"""Saving and loading fitted estimators as plain arrays, never as pickles.

A :class:`~selector.estimators.prompt.PromptEstimator` is written as one ``.npz`` file: its
fitted arrays (TF-IDF vocabulary and idf weights, scaler statistics, ridge and logistic
regression coefficients, classes) and a JSON header with its hyperparameters. Loading reads the
file with ``numpy.load(allow_pickle=False)`` (an object array, i.e. a pickle, is refused
unread), checks the header against the few shapes this package writes, and rebuilds the
scikit-learn objects from the arrays, so a table directory cannot run code when it is loaded.
(``skops.io`` was the first choice, but importing it walks every scikit-learn estimator module,
which imports torch: about 2.4 s on every ``route``.) The sha256 recorded in the table still
catches accidental corruption. ``.joblib`` (pickles, written by older versions) and ``.skops``
files are refused unread with the retraining command.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TTSError
from ..tables import atomic_write_bytes

ESTIMATOR_SUFFIX = ".npz"
FORMAT = "tts-selector-prompt-estimator/1"
FEATURE_KINDS = ("tfidf", "minilm", "hidden")


class EstimatorIntegrityError(TTSError, ValueError):
    """An estimator file that is refused unread: a hash mismatch, a pickle, or an unknown layout."""


def retrain_hint(path: Path) -> str:
    features = path.stem.removeprefix("estimator-") or "tfidf"
    return f"retrain it with `tts-selector train-estimator {path.parent} --features {features}`"


def _scaler_arrays(prefix: str, scaler: Any) -> dict[str, np.ndarray]:
    return {f"{prefix}_mean": scaler.mean_, f"{prefix}_scale": scaler.scale_, f"{prefix}_var": scaler.var_,
            f"{prefix}_seen": np.asarray(scaler.n_samples_seen_, dtype=np.int64)}


def save_estimator(estimator: Any, path: str | Path) -> str:
    """Write a fitted ``PromptEstimator`` as arrays (``.npz``) atomically; return its sha256."""
    from .prompt import PromptEstimator

    if not isinstance(estimator, PromptEstimator):
        raise TypeError(f"only PromptEstimator objects are saved, got {type(estimator).__name__}")
    parts = dict(estimator.features_.transformer_list)
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(estimator.classes_, dtype=np.int64),
                                     "ridge_coef": estimator.regressor_.coef_,
                                     "ridge_intercept": np.asarray(estimator.regressor_.intercept_, dtype=float)}
    arrays.update(_scaler_arrays("stats", parts["stats"][-1]))
    header: dict[str, Any] = {"format": FORMAT, "features": estimator.features, "alpha": estimator.alpha,
                              "C": estimator.C, "policy": estimator.policy,
                              "classifier": estimator.classifier_ is not None}
    if estimator.classifier_ is not None:
        arrays["clf_coef"], arrays["clf_intercept"] = estimator.classifier_.coef_, estimator.classifier_.intercept_
    if estimator.features == "tfidf":
        words = parts["words"]
        terms = sorted(words.vocabulary_, key=words.vocabulary_.get)
        arrays["tfidf_terms"], arrays["tfidf_idf"] = np.asarray(terms, dtype=str), words.idf_
    elif estimator.features == "hidden":
        arrays.update(_scaler_arrays("hidden", parts["hidden"][-1]))
    arrays["header"] = np.asarray(json.dumps(header, sort_keys=True))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _set_scaler(scaler: Any, arrays: Any, prefix: str) -> None:
    scaler.mean_, scaler.scale_, scaler.var_ = (np.asarray(arrays[f"{prefix}_{k}"], dtype=float)
                                                for k in ("mean", "scale", "var"))
    scaler.n_samples_seen_ = int(arrays[f"{prefix}_seen"])
    scaler.n_features_in_ = len(scaler.mean_)


def _rebuild(arrays: Any, header: dict) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge

    from ..backends.registry import require_local_spec
    from .features import make_features
    from .prompt import PromptEstimator

    kind = header.get("features")
    if header.get("format") != FORMAT or kind not in FEATURE_KINDS:
        raise ValueError(f"unknown layout {header.get('format')!r} / features {kind!r}")
    policy = str(header.get("policy", "smollm2-135m"))
    if kind == "hidden":  # the estimator would run this policy: a file may only name a local one
        require_local_spec(policy, "policy", "the hidden-state estimator")
    est = PromptEstimator(features=kind, alpha=float(header["alpha"]), C=float(header["C"]), policy=policy)
    est.features_ = make_features(kind, policy)
    parts = dict(est.features_.transformer_list)
    _set_scaler(parts["stats"][-1], arrays, "stats")
    if kind == "tfidf":
        words = parts["words"]
        words.vocabulary_ = {str(t): i for i, t in enumerate(arrays["tfidf_terms"].tolist())}
        words.idf_ = np.asarray(arrays["tfidf_idf"], dtype=float)
    elif kind == "hidden":
        _set_scaler(parts["hidden"][-1], arrays, "hidden")
    est.classes_ = np.asarray(arrays["classes"], dtype=np.int64)
    est.regressor_ = Ridge(alpha=est.alpha)
    est.regressor_.coef_ = np.asarray(arrays["ridge_coef"], dtype=float)
    est.regressor_.intercept_ = float(arrays["ridge_intercept"])
    est.regressor_.n_features_in_ = est.regressor_.coef_.shape[-1]
    est.classifier_ = None
    if header.get("classifier"):
        clf = LogisticRegression(C=est.C, max_iter=5000)
        clf.coef_, clf.intercept_ = np.asarray(arrays["clf_coef"], dtype=float), np.asarray(arrays["clf_intercept"], dtype=float)
        clf.classes_, clf.n_features_in_ = est.classes_, clf.coef_.shape[-1]
        est.classifier_ = clf
    return est


def load_estimator(path: str | Path, sha256: str) -> Any:
    """Load an ``.npz`` estimator whose sha256 equals ``sha256``, rebuilt from its arrays;
    pickles (``.joblib``, object arrays), ``.skops`` files and unknown layouts are refused."""
    path = Path(path)
    if path.suffix != ESTIMATOR_SUFFIX:
        raise EstimatorIntegrityError(
            f"{path}: a {path.suffix or 'suffix-less'} estimator file is not loaded (pickled .joblib estimators can run "
            f"code when loaded; only {ESTIMATOR_SUFFIX} files of arrays are read): {retrain_hint(path)}"
        )
    if not path.is_file():
        raise EstimatorIntegrityError(f"{path}: estimator file not found; {retrain_hint(path)}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise EstimatorIntegrityError(
            f"{path}: sha256 {actual[:16]}... does not match the recorded {str(sha256)[:16]}...; refusing to load it. "
            f"Restore the file that was saved with this table, or {retrain_hint(path)}"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:  # object arrays (pickles) raise here
            header = json.loads(str(arrays["header"]))
            return _rebuild(arrays, header)
    except TTSError:
        raise
    except Exception as exc:
        raise EstimatorIntegrityError(f"{path}: not a readable estimator file ({exc}); {retrain_hint(path)}") from None


__all__ = ["ESTIMATOR_SUFFIX", "EstimatorIntegrityError", "load_estimator", "save_estimator"]
