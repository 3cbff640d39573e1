"""Reading YAML that a user (or anyone) wrote, without letting its aliases explode.

``yaml.safe_load`` runs no code, but an alias (``*a``) makes the loaded value share the anchored
node, so a 600-byte file of nested aliases ("billion laughs") loads instantly into a value that
is astronomically large once walked: formatting it, hashing it or checking its types runs for
minutes or exhausts memory. :func:`load_yaml` walks the value once, counting each shared part as
often as it is referenced, and refuses it beyond :data:`MAX_NODES` (real configs have a few
hundred), or when an alias makes it contain itself.
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000


class YAMLTooLarge(ValueError):
    """A YAML value that expands beyond MAX_NODES, contains itself, or nests too deeply."""


def expanded_size(value: Any, limit: int = MAX_NODES) -> int:
    """The number of values ``value`` holds with every shared (aliased) part counted each time
    it is referenced; raises YAMLTooLarge past ``limit`` or on a cycle. Linear in the distinct
    parts: each one's size is computed once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (list, dict)):
            return 1
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise YAMLTooLarge("an alias makes the value contain itself")
        open_.add(key)
        total = 1
        for item in (list(v.keys()) + list(v.values())) if isinstance(v, dict) else v:
            total += size(item)
            if total > limit:
                raise YAMLTooLarge(f"its aliases expand it to more than {limit} values")
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        return size(value)
    except RecursionError:
        raise YAMLTooLarge("it is nested too deeply") from None


def load_yaml(text: str, where: str, error: type[Exception] = ValueError) -> Any:
    """``yaml.safe_load(text)``, refused with ``error`` (message naming ``where``) when it is not
    valid YAML, nests too deeply, or expands beyond :data:`MAX_NODES` values through aliases."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML ({exc})") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to be a config") from None
    try:
        expanded_size(value)
    except YAMLTooLarge as exc:
        raise error(f"{where}: refused: {exc} (a config has a few hundred); write the values out instead of "
                    "nesting aliases") from None
    return value
