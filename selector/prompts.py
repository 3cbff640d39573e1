"""Checks every question passes before an engine sees it, and reading one from a file or stdin.

A question is refused (:class:`~selector.errors.InputError`) when it is not a string, empty or
only whitespace (an engine would answer it anyway, with an answer to nothing), or not encodable
as UTF-8 (e.g. undecodable bytes on a command line, which a tokenizer would fail on later).
Over-long questions are refused by the engines that know their context length (tokens).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .errors import InputError

MAX_PROMPT_FILE_BYTES = 64 << 20


def check_question(question: object, where: str = "question") -> str:
    """``question`` if it is usable, else an InputError naming the problem and the fix."""
    if not isinstance(question, str):
        raise InputError(f"{where} must be a string, got {type(question).__name__}")
    if not question.strip():
        raise InputError(f"{where} is empty or only whitespace: give the problem text to solve")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        chars = question[exc.start:exc.end][:8]
        if all(0xDC80 <= ord(c) <= 0xDCFF for c in chars):  # undecodable bytes, kept by surrogateescape
            what = f"bytes {chars.encode('utf-8', 'surrogateescape')!r}"
        else:  # a lone surrogate (e.g. "\ud800" escaped in JSON): no bytes at all
            what = "lone surrogate " + ", ".join(f"U+{ord(c):04X}" for c in chars)
        raise InputError(
            f"{where} is not valid UTF-8 ({what} at character {exc.start}): re-encode the text as UTF-8, "
            "or pass it with --prompt-file PATH"
        ) from None
    return question


def check_questions(questions: Sequence[object]) -> None:
    """Every question of a batch checked, the first bad one named by its index."""
    for i, q in enumerate(questions):
        check_question(q, f"question {i}" if len(questions) > 1 else "question")


def read_question(question: str | None, prompt_file: str | None) -> str:
    """The question of a CLI command: the argument, stdin when it is ``-``, or ``prompt_file``'s
    text (UTF-8); exactly one of the argument and ``prompt_file`` may be given."""
    if (question is None) == (prompt_file is None):
        raise InputError("give the question as an argument, '-' to read it from stdin, or --prompt-file PATH (one of them)")
    if prompt_file is not None:
        from .files import read_regular_file

        # A regular file of bounded size: a FIFO would wait for a writer, a device never ends.
        data = read_regular_file(Path(prompt_file), max_bytes=MAX_PROMPT_FILE_BYTES, what="prompt file")
        where = f"--prompt-file {prompt_file}"
    elif question == "-":
        data, where = sys.stdin.buffer.read(), "the question read from stdin"
    else:
        return check_question(question)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}): "
                         "re-encode it as UTF-8") from None
    return check_question(text, where)
