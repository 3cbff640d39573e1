"""Saving and loading fitted estimators as data, never as pickles.

An estimator is written with ``skops.io`` (scikit-learn's safe format: a zip of JSON and
arrays that is rebuilt object by object). Loading reads the file's type list first and refuses
any type outside :data:`TRUSTED_TYPES` (scikit-learn's own, which skops trusts by default, plus
this package's estimator classes below), so a table directory cannot run code when it is
loaded. The sha256 recorded in the table still catches accidental corruption. Pickled
``.joblib`` files (what older versions wrote) are refused unread with the retraining command.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import TTSError
from ..tables import atomic_write_bytes

ESTIMATOR_SUFFIX = ".skops"

# This package's classes that a saved estimator may contain (beyond skops' own trusted list of
# scikit-learn, numpy and scipy types). Each is a plain sklearn-style object: its state is its
# constructor arguments and fitted arrays, and none runs code when its attributes are set.
TRUSTED_TYPES = [
    "selector.estimators.prompt.PromptEstimator",
    "selector.estimators.features.SerialUnion",
    "selector.estimators.features.TextStats",
    "selector.estimators.features.MiniLMEmbedder",
    "selector.estimators.features.PolicyHiddenStates",
]


class EstimatorIntegrityError(TTSError, ValueError):
    """An estimator file that is refused unread: a hash mismatch, a pickle, or an untrusted type."""


def retrain_hint(path: Path) -> str:
    features = path.stem.removeprefix("estimator-") or "tfidf"
    return f"retrain it with `tts-selector train-estimator {path.parent} --features {features}`"


def save_estimator(estimator: Any, path: str | Path) -> str:
    """Write ``estimator`` with ``skops.io`` atomically; return the file's sha256."""
    import skops.io as sio

    data = sio.dumps(estimator)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_estimator(path: str | Path, sha256: str) -> Any:
    """Load a ``.skops`` estimator whose sha256 equals ``sha256`` and whose types are all in
    :data:`TRUSTED_TYPES` or skops' default trusted list; anything else is refused unread."""
    import skops.io as sio

    path = Path(path)
    if path.suffix != ESTIMATOR_SUFFIX:
        raise EstimatorIntegrityError(
            f"{path}: a {path.suffix or 'suffix-less'} estimator file is not loaded (pickled .joblib estimators can run "
            f"code when loaded; only {ESTIMATOR_SUFFIX} files are read): {retrain_hint(path)}"
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
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    except Exception as exc:  # not a skops archive at all
        raise EstimatorIntegrityError(f"{path}: not a readable skops estimator ({exc}); {retrain_hint(path)}") from None
    if untrusted:
        raise EstimatorIntegrityError(
            f"{path}: refusing to load an estimator holding untrusted types {untrusted} (only scikit-learn types and "
            f"{TRUSTED_TYPES} are loaded); {retrain_hint(path)}"
        )
    try:
        return sio.loads(data, trusted=TRUSTED_TYPES)
    except Exception as exc:
        raise EstimatorIntegrityError(f"{path}: could not rebuild the estimator ({exc}); {retrain_hint(path)}") from None


__all__ = ["ESTIMATOR_SUFFIX", "EstimatorIntegrityError", "TRUSTED_TYPES", "load_estimator", "save_estimator"]
