"""What a *step* is, written once.

A step is a span of generated text that ends with the step delimiter (kept in the text), or
the last span of a solution (which ends at EOS, at a final answer, or at a token cap).
Policies cut their continuations with :func:`cut_at_delimiter`; PRMs and the best-of-N family
split whole solutions with :func:`split_steps`. Both use the same rule so a solution sampled in
one go and the same text grown step by step have identical steps.
"""
from __future__ import annotations


def _content_start(text: str, delimiter: str) -> int:
    """Index of the first character that is not part of leading delimiters or whitespace.

    Leading blank text does not make a step: a continuation that begins with the delimiter
    (e.g. the policy emits a newline right after the previous step's newline) keeps going.
    """
    i = 0
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def cut_at_delimiter(text: str, delimiter: str | None) -> str | None:
    """Return ``text`` up to and including the first delimiter after some content.

    ``None`` when the text holds no such delimiter yet (generation should go on).
    """
    if not delimiter:
        return None
    start = _content_start(text, delimiter)
    pos = text.find(delimiter, start)
    if pos < 0 or start >= len(text):
        return None
    return text[: pos + len(delimiter)]


def split_steps(text: str, delimiter: str | None) -> list[str]:
    """Split a whole solution into steps; ``"".join(split_steps(t, d)) == t`` always holds.

    Whitespace-only text after the last delimiter is merged into the last step rather than
    forming an empty step.
    """
    if not text:
        return []
    if not delimiter:
        return [text]
    steps: list[str] = []
    rest = text
    while rest:
        step = cut_at_delimiter(rest, delimiter)
        if step is None:
            if rest.strip() or not steps:
                steps.append(rest)
            else:
                steps[-1] += rest
            break
        steps.append(step)
        rest = rest[len(step):]
    return steps
