"""Saving and loading fitted estimators. A pickle runs code when loaded, so a file is only
unpickled when its sha256 matches the hash recorded when it was saved."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import joblib

from ..errors import TTSError
from ..datasets import file_sha256
from ..tables import atomic_write_bytes


class EstimatorIntegrityError(TTSError, ValueError):
    """An estimator file whose hash does not match the recorded one (refused unread)."""


def save_estimator(estimator: Any, path: str | Path) -> str:
    """Write ``estimator`` with joblib atomically; return the file's sha256."""
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer, compress=3)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_estimator(path: str | Path, sha256: str) -> Any:
    """Load an estimator only if the file's sha256 equals ``sha256`` (checked before unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: estimator file not found; train one with `tts-selector train-estimator`")
    actual = file_sha256(path)
    if actual != sha256:
        raise EstimatorIntegrityError(
            f"{path}: sha256 {actual[:16]}... does not match the recorded {sha256[:16]}...; refusing to unpickle it "
            "(a pickle runs code when loaded). Retrain with `tts-selector train-estimator`, or restore the file "
            "that was saved with this table."
        )
    return joblib.load(path)
