"""The package's one error contract.

Every error a user can cause (a bad prompt, config, spec, table, server or data set) is a
:class:`TTSError` whose message names the problem and the fix. The CLI maps every
``TTSError`` to exit status 2 with the message and no traceback (``--debug`` shows it);
the Python API raises it as is. Anything else escaping is a bug in the package.
"""
from __future__ import annotations


class TTSError(Exception):
    """Base of every user-facing error; the message names the problem and the fix."""


class InputError(TTSError, ValueError):
    """A bad argument: an empty or over-long prompt, an out-of-range or non-finite parameter."""


class EngineError(TTSError, RuntimeError):
    """An engine or server failed (timeout, bad response, HTTP error); the message says which and what to try."""


class DependencyError(TTSError, ImportError):
    """An optional dependency a backend or feature needs is not importable; the message says
    what to install (``pip install ...``, or which environment to run from)."""


__all__ = ["DependencyError", "EngineError", "InputError", "TTSError"]
