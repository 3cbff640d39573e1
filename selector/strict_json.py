"""JSON that every parser accepts: NaN and infinities become null.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON: ``jq`` and most other
parsers reject the whole document. Output meant for other programs (``--json``, reports) goes
through :func:`dumps`, so a missing figure is ``null`` and never an invalid file.
"""
from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (also numpy's) replaced by None, recursively."""
    if isinstance(value, float) or getattr(getattr(value, "dtype", None), "kind", None) == "f":
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``, refusing NaN should any remain."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
