"""Checking a value read from a file or a spec against a field's annotation, written once.

The profile config (``selector/profiler/config.py``, YAML) and the engine specs
(``selector/backends/registry.py``, ``name:key=value``) both read values a user typed and
check them against a dataclass field's or a constructor parameter's annotation before
anything runs: scalars (``int``, ``float``: finite, ``str``, ``bool``; ``True`` is never a
number), optionals and unions, ``tuple``/``list``/``Sequence`` (of one type, or a fixed
length), ``dict``; any other annotation is left to the constructor.
"""
from __future__ import annotations

import collections.abc
import math
import types
import typing
from typing import Any, Callable

_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
_SEQUENCES = (tuple, list, collections.abc.Sequence)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def fits(value: Any, hint: Any, *, integral_floats: bool = False) -> bool:
    """Whether ``value`` fits the annotation ``hint``. ``integral_floats``: a float with an
    integer value passes for ``int`` (YAML reads ``1.5e9`` parameters as a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if _is_union(hint):
        return any(fits(value, a, integral_floats=integral_floats) for a in args)
    if hint is type(None):
        return value is None
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, int]: fixed length
            return len(args) == len(value) and all(fits(v, a, integral_floats=integral_floats) for v, a in zip(value, args))
        return not args or all(fits(v, args[0], integral_floats=integral_floats) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is float:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if hint is int:
        if integral_floats and isinstance(value, float) and value.is_integer():
            return True
        return not isinstance(value, bool) and isinstance(value, int)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """The annotation in words, e.g. 'a list of integers', 'an integer or null'."""
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not Ellipsis]
    if _is_union(hint):
        named = [describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if hint is type(None):
        return "null"
    if origin in _SEQUENCES:
        if not args:
            return "a list"
        if origin is tuple and len(typing.get_args(hint)) == len(args) and len(args) > 1:  # fixed length
            return f"a list [{', '.join(describe(a) for a in args)}]"
        return f"a list of {_PLURALS.get(args[0], describe(args[0]))}"
    if origin is dict or hint is dict:
        return "a mapping"
    return _SCALARS.get(hint, getattr(hint, "__name__", str(hint)))


def conform(value: Any, hint: Any, key: str, error: Callable[[str], Exception]) -> Any:
    """``value`` checked against ``hint`` (integer-valued floats pass for ``int``) with lists
    made tuples where the annotation is a tuple; otherwise ``error`` is raised with a message
    naming ``key`` (an element as ``key[i]``), the expected type and (cut short) the value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            if fits(value, arg, integral_floats=True):
                return conform(value, arg, key, error)
    elif origin is tuple and isinstance(value, (list, tuple)):
        if args and args[-1] is Ellipsis or len(args) == 1:
            return tuple(conform(v, args[0], f"{key}[{i}]", error) for i, v in enumerate(value))
        if fits(value, hint, integral_floats=True):
            return tuple(value)
    elif fits(value, hint, integral_floats=True):
        return value  # unconverted: the config hash of existing tables stays as it was
    # Formatted only when raised: a value may be huge (see safe_yaml).
    shown = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a {type(value).__name__}"
    shown = shown if len(shown) <= 80 else shown[:80] + "..."
    raise error(f"{key} must be {describe(hint)}, got {shown} ({type(value).__name__})")
