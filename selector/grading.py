"""Final answers: extraction from solution text, equivalence, and canonical voting keys.

* :func:`extract_answer` pulls the final answer out of a solution (last closed ``\\boxed``).
* :func:`has_final_answer` is the cheap "is this partial solution finished?" test used by search.
* :func:`is_equivalent` / :func:`grade` decide correctness with math-verify.
* :func:`answer_key` / :func:`group_keys` give equal strings to equivalent answers so that
  voting counts them together.

Threads. math-verify bounds its work with ``signal.alarm``, which only works in the main
thread. There we pass its timeouts. In any other thread we pass ``None`` (no timeout) and
bound the work ourselves: an answer that fails :func:`_is_safe` (longer than
:data:`MAX_UNTIMED_CHARS`, or shaped like a huge power/factorial that sympy would try to
evaluate) is treated as unparseable and compared by normalized string instead. Keys from
:func:`answer_key` apply that bound in every thread, so a key never depends on the calling
thread. All caches are ``functools.lru_cache`` (thread-safe).
"""
from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any, Sequence

#: Answers longer than this are never handed to math-verify without a timeout (worker threads)
#: and never parsed for :func:`answer_key`. Real final answers are far shorter (MATH-500 max: 55).
MAX_UNTIMED_CHARS = 200

#: math-verify timeouts (seconds) used in the main thread.
PARSE_TIMEOUT_S = 5
VERIFY_TIMEOUT_S = 5

_CACHE_SIZE = 1 << 16

_BOX_MACROS = ("\\boxed", "\\fbox")
# Tokens that matter for brace matching: an escaped character (``\{``, ``\}``, ``\\``, or the
# first letter of a macro, all skipped) or a bare brace.
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)
# "final answer is X", "answer is: X", "Final answer: X" (case-insensitive); the last one wins.
_PHRASE = re.compile(r"\banswer\s+is\b\s*:?|\bfinal\s+answer\s*:", re.IGNORECASE)
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


# ---------------------------------------------------------------------------------------------
# Extraction (plain string scanning, no sympy)


def _group_end(text: str, open_idx: int) -> int | None:
    """Index just past the ``}`` that closes the ``{`` at ``open_idx``; None if never closed."""
    depth = 0
    for m in _BRACE_TOKENS.finditer(text, open_idx):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def _box_at(text: str, start: int, macro: str) -> str | None:
    """Content of the box whose macro begins at ``start``; None if it is not a complete box."""
    i = start + len(macro)
    if i < len(text) and text[i].isalpha():
        return None  # a different macro, e.g. ``\boxedsymbol``
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    if j < len(text) and text[j] == "{":
        end = _group_end(text, j)
        return None if end is None else text[j + 1 : end - 1].strip()
    # Brace-less ``\boxed 5``: models mean the whole token, not TeX's single character, so take
    # the run of non-space characters, minus trailing punctuation (Hendrycks-style).
    k = j
    while k < len(text) and not text[k].isspace() and text[k] != "$":
        k += 1
    token = text[j:k].rstrip(".,;")
    return token or None


def _last_box(text: str) -> str | None:
    """Content of the last-opened complete box (``\\boxed``/``\\fbox``), or None."""
    starts: list[tuple[int, str]] = []
    for macro in _BOX_MACROS:
        i = text.find(macro)
        while i != -1:
            starts.append((i, macro))
            i = text.find(macro, i + 1)
    # Last-opened first: for nested boxes the innermost wins; an unclosed (truncated) trailing
    # box is skipped in favour of the previous complete one.
    for start, macro in sorted(starts, reverse=True):
        content = _box_at(text, start, macro)
        if content is not None:
            return content
    return None


def _phrase_answer(text: str) -> str | None:
    """X from the last "answer is X" / "final answer: X" phrase, or None."""
    last = None
    for last in _PHRASE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() :].lstrip()
    rest = rest.split("\n", 1)[0]
    for opener, closer in _MATH_DELIMS:
        if rest.startswith(opener):
            end = rest.find(closer, len(opener))
            if end != -1:
                rest = rest[len(opener) : end]
            break
    else:
        # Plain text: stop at the end of the sentence ("The answer is 5. I hope ..."); a period
        # inside a number ("3.5") is not followed by a space, so it stays.
        m = _SENTENCE_END.search(rest)
        if m:
            rest = rest[: m.start()]
    answer = rest.strip().strip("*").strip().strip("$").strip().rstrip(".").strip()
    if not answer or any(macro in answer for macro in _BOX_MACROS):
        return None  # an unclosed box is not an answer
    return answer


def _gsm8k_answer(text: str) -> str | None:
    """X from the last GSM8K-style ``#### X`` line, or None."""
    matches = _GSM8K.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip().rstrip(".").strip()
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer in a solution text, or None.

    In order: the content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces
    matched, escaped ``\\{ \\}`` ignored; brace-less ``\\boxed 5`` takes the token); else X of
    the last "answer is X" / "answer is: X" / "final answer: X" phrase (surrounding ``$``,
    trailing period and whitespace stripped); else X of the last ``#### X`` line (GSM8K).
    A truncated box (``\\boxed{12``) is never an answer.
    """
    if not text:
        return None
    boxed = _last_box(text)
    if boxed is not None:
        return boxed
    return _phrase_answer(text) or _gsm8k_answer(text)


def has_final_answer(text: str) -> bool:
    """True when the text holds a complete ``\\boxed``/``\\fbox`` answer (string scan only).

    Exactly when :func:`extract_answer` would take its answer from a box; the phrase and
    ``####`` fallbacks do not count, since they can occur mid-reasoning.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return False
    return _last_box(text) is not None


# ---------------------------------------------------------------------------------------------
# math-verify plumbing


class _DropTimeoutDisabled(logging.Filter):
    """Drops math-verify's "Timeout is disabled" warning: in worker threads we disable its
    timeouts on purpose and bound the work with :func:`_is_safe` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabled())


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _brace_group(text: str, open_idx: int) -> str:
    end = _group_end(text, open_idx)
    return text[open_idx + 1 : (end - 1) if end is not None else len(text)]


_DIGITS = re.compile(r"\d+")
# A factorial sign and the digits right before it; ``\!`` (a LaTeX thin negative space) is not one.
_FACTORIAL_ARG = re.compile(r"(\d*)\s*(?<!\\)!")


def _is_safe(answer: str) -> bool:
    """Whether sympy can handle ``answer`` without a timeout (cheap, conservative).

    Short strings can still be pathological: ``10^{10^{10}}`` or ``(10^{10})!`` make sympy
    evaluate a number with billions of digits. Refuse: anything over
    :data:`MAX_UNTIMED_CHARS`; exponents holding another ``^`` (towers) or a number of more
    than 5 digits; factorials except of a literal of at most 3 digits.
    """
    if len(answer) > MAX_UNTIMED_CHARS:
        return False
    i = answer.find("^")
    while i != -1:
        j = i + 1
        while j < len(answer) and answer[j].isspace():
            j += 1
        if j < len(answer) and answer[j] == "{":
            exponent = _brace_group(answer, j)
        else:
            m = _DIGITS.match(answer, j)
            exponent = m.group() if m else answer[j : j + 1]
        if "^" in exponent or any(len(d) > 5 for d in _DIGITS.findall(exponent)):
            return False
        i = answer.find("^", i + 1)
    for m in _FACTORIAL_ARG.finditer(answer):
        if answer[m.end() : m.end() + 1] == "=":
            continue  # "!=" is not a factorial
        if not m.group(1) or len(m.group(1)) > 3:
            return False
    return True


def _as_math(answer: str) -> str:
    """Wrap a bare answer in ``$...$`` so math-verify reads it as LaTeX."""
    s = answer.strip()
    if s.startswith("$") or s.startswith("\\(") or s.startswith("\\["):
        return s
    return f"${s}$"


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse(answer: str) -> tuple[Any, ...]:
    """math-verify's parse of a bare answer (a tuple, so the cache never hands out a mutable list).

    Callers outside the main thread must check :func:`_is_safe` first: there it runs untimed.
    The result does not depend on the thread except when the main thread hits a timeout.
    """
    from math_verify import parse  # lazy: keeps `import selector.grading` light

    if _in_main_thread():
        return tuple(parse(_as_math(answer), parsing_timeout=PARSE_TIMEOUT_S))
    return tuple(parse(_as_math(answer), parsing_timeout=None))


# ---------------------------------------------------------------------------------------------
# Equivalence


def _normalize_str(answer: str) -> str:
    """String form for when sympy is not used: drops formatting that never changes the value."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\%|%|\\\$", "", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    while len(s) >= 2 and s[0] == "{" and _group_end(s, 0) == len(s):
        s = s[1:-1]  # a redundant group: "{42}" is 42 (but "\{42\}" is a set)
    return s.lower()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _equivalent(prediction: str, reference: str, main_thread: bool) -> bool:
    # ``main_thread`` is part of the cache key: the two modes may legitimately disagree on
    # answers that fail _is_safe, and one must not leak into the other through the cache.
    from math_verify import verify

    if not main_thread and not (_is_safe(prediction) and _is_safe(reference)):
        a, b = _normalize_str(prediction), _normalize_str(reference)
        return bool(a) and a == b
    gold, pred = list(_parse(reference)), list(_parse(prediction))
    if main_thread:
        return bool(verify(gold, pred, timeout_seconds=VERIFY_TIMEOUT_S))
    return bool(verify(gold, pred, timeout_seconds=None))


def is_equivalent(prediction: str | None, reference: str | None) -> bool:
    """math-verify's ``verify(parse(reference), parse(prediction))`` on bare answers (cached).

    Answers are wrapped in ``$...$`` to be read as LaTeX. None or blank -> False. Outside the
    main thread, answers failing :func:`_is_safe` are compared by normalized string instead.
    """
    if prediction is None or reference is None or not prediction.strip() or not reference.strip():
        return False
    return _equivalent(prediction, reference, _in_main_thread())


def grade(text: str, reference: str) -> bool:
    """Whether the final answer extracted from a full solution ``text`` matches ``reference``."""
    return is_equivalent(extract_answer(text), reference)


# ---------------------------------------------------------------------------------------------
# Canonical keys


def _unwrap_for_key(answer: str) -> str:
    """Strips wrappers that math-verify would read as a different object (for keys only).

    ``{42}`` parses as the set {42} and ``\\text{42}`` as a symbol named "42"; both mean 42.
    """
    s = answer.strip().strip("$").strip()
    changed = True
    while changed:
        changed = False
        if len(s) >= 2 and s[0] == "{" and _group_end(s, 0) == len(s):
            s, changed = s[1:-1].strip(), True
        m = re.match(r"\\(?:text|textbf|mathrm|mbox)\s*\{", s)
        if m and _group_end(s, m.end() - 1) == len(s):
            s, changed = s[m.end() : -1].strip(), True
    return s


def _sympy_key(expr: Any) -> str | None:
    """Canonical string of a parsed sympy object, or None if it cannot be made."""
    import sympy
    from sympy.logic.boolalg import And

    # An assignment "x = 3" (or a chain "x = y = 3") votes with its value, like math-verify's
    # comparison against a bare "3".
    if isinstance(expr, And) and expr.args and all(isinstance(a, sympy.Eq) for a in expr.args):
        expr = expr.args[-1]
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):
        expr = expr.rhs
    # math-verify keeps arithmetic unevaluated ("2^{10}" is Pow(2, 10), "5!" is factorial(5));
    # evaluating makes "2^{10}" and "1024" one key. Cheap for inputs that passed _is_safe, except
    # calculus (an integral could run the Risch algorithm), which stays as written.
    if not expr.has(sympy.Integral, sympy.Sum, sympy.Product, sympy.Limit, sympy.Derivative):
        try:
            expr = expr.doit()
        except Exception:
            pass
    # Floats from short decimals are exact: "42.0" -> 42, "0.5" -> 1/2. Float's own string has
    # 15 significant digits, enough to round-trip any decimal an answer would contain.
    try:
        floats = expr.atoms(sympy.Float)
    except Exception:
        floats = set()
    if floats:
        mapping = {f: sympy.Rational(str(f)) for f in floats}
        expr = expr.applyfunc(lambda e: e.xreplace(mapping)) if isinstance(expr, sympy.MatrixBase) else expr.xreplace(mapping)
    return str(expr)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def answer_key(answer: str | None) -> str | None:
    """Canonical voting key: equivalent answers get equal keys as far as cheaply possible.

    ``str`` of math-verify's sympy parse (wrappers ``{...}``/``\\text{...}`` removed first;
    exact decimals turned into rationals; an assignment ``x=3`` keyed by its value), else a
    normalized string. Answers failing :func:`_is_safe` always take the string path, in every
    thread, so a key never depends on the calling thread. None or blank -> None.
    """
    if answer is None or not answer.strip():
        return None
    unwrapped = _unwrap_for_key(answer)
    if unwrapped and _is_safe(unwrapped):
        import sympy

        for obj in _parse(unwrapped):
            if isinstance(obj, (sympy.Basic, sympy.MatrixBase)):
                try:
                    key = _sympy_key(obj)
                except Exception:
                    key = None
                if key:
                    return key
                break
    return _normalize_str(answer) or None


def group_keys(answers: Sequence[str | None]) -> list[str | None]:
    """:func:`answer_key` of each answer, with equivalent keys merged (None stays None).

    Distinct keys are compared pairwise, each through its first answer, with
    :func:`is_equivalent` in either direction; every key in a merged group is replaced by the
    group's first-seen key. Cost is quadratic in the number of distinct keys, not answers.
    """
    keys = [answer_key(a) for a in answers]
    reps: dict[str, str] = {}  # key -> first answer with that key, in first-seen order
    for answer, key in zip(answers, keys):
        if key is not None and key not in reps:
            reps[key] = answer  # type: ignore[assignment]
    distinct = list(reps)
    order = {k: i for i, k in enumerate(distinct)}
    root = {k: k for k in distinct}  # union-find; a root is the group's first-seen key

    def find(k: str) -> str:
        while root[k] != k:
            root[k] = root[root[k]]
            k = root[k]
        return k

    for i, a in enumerate(distinct):
        for b in distinct[i + 1 :]:
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            if is_equivalent(reps[b], reps[a]) or is_equivalent(reps[a], reps[b]):
                # Attach the later-seen root to the earlier one so a group keeps its first key.
                early, late = sorted((ra, rb), key=order.__getitem__)
                root[late] = early
    return [None if k is None else find(k) for k in keys]


def clear_caches() -> None:
    """Empty every cache in this module (for tests and benchmarks)."""
    answer_key.cache_clear()
    _equivalent.cache_clear()
    _parse.cache_clear()
