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


ESTIMATOR_MAX_BYTES = 256 << 20  # the file, and its arrays once unzipped
_MAX_TERMS = 1 << 21  # TF-IDF vocabulary (the trainer keeps at most 20000 terms)
_MAX_CLASSES = 1000
_STATS_FEATURES = 10  # TextStats' columns (features.py)
_MINILM_DIM = 384  # all-MiniLM-L6-v2's embedding size


def _array(arrays: Any, name: str, ndim: int, kind: str = "f") -> np.ndarray:
    """``arrays[name]`` with ``ndim`` dimensions of numbers (``kind`` "f": finite floats, "i":
    integers), else a ValueError naming it; the caller turns it into EstimatorIntegrityError."""
    if name not in arrays:
        raise ValueError(f"array {name!r} is missing")
    a = np.asarray(arrays[name])
    if a.ndim != ndim:
        raise ValueError(f"array {name!r} has shape {a.shape}, expected {ndim} dimension(s)")
    if kind == "i":
        if a.dtype.kind not in "iu":
            raise ValueError(f"array {name!r} holds {a.dtype}, expected integers")
        return a.astype(np.int64)
    if a.dtype.kind not in "fiu" or not np.isfinite(a).all():
        raise ValueError(f"array {name!r} must hold finite numbers")
    return a.astype(float)


def _set_scaler(scaler: Any, arrays: Any, prefix: str, width: int | None = None) -> int:
    mean, scale, var = (_array(arrays, f"{prefix}_{k}", 1) for k in ("mean", "scale", "var"))
    if not len(mean) == len(scale) == len(var) or (width is not None and len(mean) != width) or not len(mean):
        raise ValueError(f"{prefix} scaler arrays have lengths {len(mean)}, {len(scale)}, {len(var)}"
                         + (f", expected {width}" if width is not None else ""))
    if (scale <= 0).any() or (var < 0).any():
        raise ValueError(f"{prefix} scaler has a non-positive scale or a negative variance")
    scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, var
    scaler.n_samples_seen_ = int(_array(arrays, f"{prefix}_seen", 0, "i"))
    scaler.n_features_in_ = len(scaler.mean_)
    return len(mean)


def _header_number(header: dict, key: str) -> float:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"header {key} must be a positive number, got {value!r}")
    return float(value)


def _rebuild(arrays: Any, header: dict, features: str | None = None) -> Any:
    """A PromptEstimator from checked arrays: every shape agrees with the feature kind, so a
    prediction cannot fail later (e.g. in a server, on every request)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    from ..backends.registry import require_package_spec
    from .features import make_features
    from .prompt import PromptEstimator

    kind = header.get("features")
    if header.get("format") != FORMAT or kind not in FEATURE_KINDS:
        raise ValueError(f"unknown layout {header.get('format')!r} / features {kind!r}")
    if features is not None and kind != features:
        # The table's record names the feature kind; a file may not pick another (hidden
        # features would load and run a model).
        raise EstimatorIntegrityError(f"the file's header says features {kind!r}, but the table records it as "
                                      f"prompt:{features}: a file may not choose its feature kind")
    policy = header.get("policy", "smollm2-135m")
    if not isinstance(policy, str):
        raise ValueError(f"header policy must be a spec string, got {type(policy).__name__}")
    if kind == "hidden":  # the estimator would run this policy: a file may name only the package's own
        require_package_spec(policy, "policy", "the hidden-state estimator's header")
    est = PromptEstimator(features=kind, alpha=_header_number(header, "alpha"), C=_header_number(header, "C"),
                          policy=policy)
    est.features_ = make_features(kind, policy)
    parts = dict(est.features_.transformer_list)
    width = _set_scaler(parts["stats"][-1], arrays, "stats", _STATS_FEATURES)
    if kind == "tfidf":
        words = parts["words"]
        terms = np.asarray(arrays["tfidf_terms"]) if "tfidf_terms" in arrays else None
        idf = _array(arrays, "tfidf_idf", 1)
        if terms is None or terms.ndim != 1 or terms.dtype.kind != "U" or len(terms) != len(idf) or not len(terms):
            raise ValueError("tfidf_terms must be a non-empty list of strings, one per idf weight")
        if len(terms) > _MAX_TERMS or (idf <= 0).any():
            raise ValueError(f"tfidf arrays out of range ({len(terms)} terms, idf weights must be positive)")
        vocabulary = {str(t): i for i, t in enumerate(terms.tolist())}
        if len(vocabulary) != len(terms):
            raise ValueError("tfidf_terms repeats a term")
        words.vocabulary_, words.idf_ = vocabulary, idf
        width += len(terms)
    elif kind == "hidden":
        width += _set_scaler(parts["hidden"][-1], arrays, "hidden")
    else:
        width += _MINILM_DIM
    est.classes_ = _array(arrays, "classes", 1, "i")
    if not 1 <= len(est.classes_) <= _MAX_CLASSES or len(set(est.classes_.tolist())) != len(est.classes_) \
            or (est.classes_ < 1).any():
        raise ValueError(f"classes must be 1 to {_MAX_CLASSES} distinct bins >= 1, got {est.classes_.tolist()[:10]}")
    est.regressor_ = Ridge(alpha=est.alpha)
    est.regressor_.coef_ = _array(arrays, "ridge_coef", 1)
    est.regressor_.intercept_ = float(_array(arrays, "ridge_intercept", 0))
    if len(est.regressor_.coef_) != width:
        raise ValueError(f"ridge_coef has {len(est.regressor_.coef_)} weights for {width} features")
    est.regressor_.n_features_in_ = width
    est.classifier_ = None
    classifier = header.get("classifier")
    if not isinstance(classifier, bool) or classifier != (len(est.classes_) > 1):
        raise ValueError(f"header classifier={classifier!r} does not fit {len(est.classes_)} class(es)")
    if classifier:
        clf = LogisticRegression(C=est.C, max_iter=5000)
        clf.coef_, clf.intercept_ = _array(arrays, "clf_coef", 2), _array(arrays, "clf_intercept", 1)
        rows = 1 if len(est.classes_) == 2 else len(est.classes_)
        if clf.coef_.shape != (rows, width) or clf.intercept_.shape != (rows,):
            raise ValueError(f"clf_coef {clf.coef_.shape} / clf_intercept {clf.intercept_.shape} do not fit "
                             f"{len(est.classes_)} classes and {width} features")
        clf.classes_, clf.n_features_in_ = est.classes_, width
        est.classifier_ = clf
    return est


def load_estimator(path: str | Path, sha256: str, *, features: str | None = None, root: str | Path | None = None) -> Any:
    """Load an ``.npz`` estimator whose sha256 equals ``sha256``, rebuilt from checked arrays;
    pickles (``.joblib``, object arrays), ``.skops`` files, unknown layouts and arrays whose
    shapes do not fit are refused.

    ``features``: the kind the table records (``prompt:<features>``); a file whose header names
    another is refused. ``root``: the table directory the file must lie inside (links resolved);
    the file must be a regular file of at most ``ESTIMATOR_MAX_BYTES``."""
    import zipfile

    from ..files import read_regular_file

    path = Path(path)
    if path.suffix != ESTIMATOR_SUFFIX:
        raise EstimatorIntegrityError(
            f"{path}: a {path.suffix or 'suffix-less'} estimator file is not loaded (pickled .joblib estimators can run "
            f"code when loaded; only {ESTIMATOR_SUFFIX} files of arrays are read): {retrain_hint(path)}"
        )
    if not path.exists() and not path.is_symlink():
        raise EstimatorIntegrityError(f"{path}: estimator file not found; {retrain_hint(path)}")
    data = read_regular_file(path, max_bytes=ESTIMATOR_MAX_BYTES, root=root, error=EstimatorIntegrityError,
                             what="estimator file")
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise EstimatorIntegrityError(
            f"{path}: sha256 {actual[:16]}... does not match the recorded {str(sha256)[:16]}...; refusing to load it. "
            f"Restore the file that was saved with this table, or {retrain_hint(path)}"
        )
    try:
        # An .npz is a zip: its members' declared sizes bound what unzipping them would allocate.
        unzipped = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist())
        if unzipped > ESTIMATOR_MAX_BYTES:
            raise ValueError(f"its arrays unzip to {unzipped} bytes, over {ESTIMATOR_MAX_BYTES}")
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:  # object arrays (pickles) raise here
            header = json.loads(str(arrays["header"]))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            return _rebuild(arrays, header, features)
    except TTSError as exc:
        raise EstimatorIntegrityError(f"{path}: {exc}; {retrain_hint(path)}") from None
    except Exception as exc:
        raise EstimatorIntegrityError(f"{path}: not a readable estimator file ({str(exc)[:300]}); "
                                      f"{retrain_hint(path)}") from None


__all__ = ["ESTIMATOR_SUFFIX", "EstimatorIntegrityError", "load_estimator", "save_estimator"]
