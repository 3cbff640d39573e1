"""Final answers: extraction from solution text, equivalence, and canonical voting keys.

* :func:`extract_answer` pulls the final answer out of a solution (last closed ``\\boxed``).
* :func:`has_final_answer` is the cheap "is this partial solution finished?" test used by search.
* :func:`is_equivalent` / :func:`grade` decide correctness with math-verify.
* :func:`answer_key` / :func:`group_keys` give equal strings to equivalent answers so that
  voting counts them together.

Deadlines. Model output is untrusted: 23 characters such as ``(99999^{99999})^{99999}`` make
sympy compute for hours in C code that ignores signals. So no sympy work runs in the calling
process. Every parse, verify and key computation runs in a :class:`~selector.grader_pool.GraderPool`
worker process with a deadline (:data:`GRADE_TIMEOUT_S` seconds per answer), killed and
replaced when it runs over, the same in every thread. Before that, :func:`_is_safe` refuses
(cheaply, by string scanning) answers whose size or exponents would make sympy evaluate a
huge number: longer than :data:`MAX_UNTIMED_CHARS`, power towers, exponents whose product
exceeds :data:`MAX_EXPONENT`, large factorials, binomials, sums or products, deep nesting.

Fallback. A refused answer, or one whose worker timed out or failed, is compared by
normalized string (:func:`_normalize_str`: formatting such as ``\\text``, ``\\left``, spaces,
``$``, ``%`` and redundant braces dropped), and keyed by that string. Timeouts and crashed
workers are counted (:func:`timeout_count`); the profiler records them as ``grader_timeouts``.
Fallback results are cached like any other, so an answer's key never depends on the thread
or on timing after its first computation. Plain integers are graded in-process (exact).

Extraction is linear in the text: braces are matched in one pass per text.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any, Sequence

from .grader_pool import CRASHED, FAILED, OK, GraderPool

#: Answers longer than this are never handed to math-verify without a timeout (worker threads)
#: and never parsed for :func:`answer_key`. Real final answers are far shorter (MATH-500 max: 55).
MAX_UNTIMED_CHARS = 200

#: Seconds one answer's parse/verify/key work may take in a grader worker before the worker is
#: killed and the answer falls back to normalized-string comparison.
GRADE_TIMEOUT_S = 5.0
#: The largest product of the numeric exponents in one answer that sympy is asked to evaluate
#: (``2^{99999}`` passes; ``(99999^{99999})^{99999}`` and ``2^{1000}^{1000}`` do not).
MAX_EXPONENT = 10**5
#: Deeper brace/parenthesis nesting than this is refused before parsing.
MAX_NESTING = 30

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


def _brace_ends(text: str) -> dict[int, int]:
    """For every ``{`` in ``text`` that is closed: its index -> the index just past its ``}``.

    One pass with a stack (escaped ``\\{``/``\\}`` skipped, as in :func:`_group_end`), so
    callers that look up many groups of one text stay linear in its length.
    """
    ends: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKENS.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            ends[stack.pop()] = m.end()
    return ends


def _box_at(text: str, start: int, macro: str, ends: dict[int, int]) -> str | None:
    """Content of the box whose macro begins at ``start``; None if it is not a complete box.

    ``ends`` is :func:`_brace_ends` of ``text``.
    """
    i = start + len(macro)
    if i < len(text) and text[i].isalpha():
        return None  # a different macro, e.g. ``\boxedsymbol``
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    if j < len(text) and text[j] == "{":
        end = ends.get(j)
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
    if not starts:
        return None
    ends = _brace_ends(text)
    # Last-opened first: for nested boxes the innermost wins; an unclosed (truncated) trailing
    # box is skipped in favour of the previous complete one.
    for start, macro in sorted(starts, reverse=True):
        content = _box_at(text, start, macro, ends)
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
    if not isinstance(text, str) or not text:  # model output is untrusted: a non-string has no answer
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
    if not isinstance(text, str) or ("\\boxed" not in text and "\\fbox" not in text):
        return False
    return _last_box(text) is not None


# ---------------------------------------------------------------------------------------------
# math-verify plumbing


class _DropTimeoutDisabled(logging.Filter):
    """Drops math-verify's "Timeout is disabled" warning: grader workers disable its signal
    timeouts on purpose and are bounded by being killed instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabled())


def _brace_group(text: str, open_idx: int) -> str:
    end = _group_end(text, open_idx)
    return text[open_idx + 1 : (end - 1) if end is not None else len(text)]


_DIGITS = re.compile(r"\d+")
# A factorial sign and the digits right before it; ``\!`` (a LaTeX thin negative space) is not one.
_FACTORIAL_ARG = re.compile(r"(\d*)\s*(?<!\\)!")
# Constructs whose evaluation grows with the numbers in them (binomials, finite sums/products).
_BIG_OPERATORS = re.compile(r"\\(?:binom|dbinom|tbinom|choose|sum|prod)(?![a-zA-Z])")
_OPENERS, _CLOSERS = "{([", "})]"


def _nesting_depth(answer: str) -> int:
    depth = best = 0
    for ch in answer:
        if ch in _OPENERS:
            depth += 1
            best = max(best, depth)
        elif ch in _CLOSERS:
            depth = max(depth - 1, 0)
    return best


def _is_safe(answer: str) -> bool:
    """Whether sympy may be asked to parse/verify/evaluate ``answer`` (cheap string scan).

    Short strings can still be pathological: ``10^{10^{10}}``, ``(99999^{99999})^{99999}`` or
    ``(10^{10})!`` make sympy evaluate a number with billions of digits. Refuse: anything over
    :data:`MAX_UNTIMED_CHARS`; nesting deeper than :data:`MAX_NESTING`; exponents holding another
    ``^`` (towers) or a ``!``; a product of all numeric exponents above :data:`MAX_EXPONENT`
    (a nested power's size is at most that product times its base's digits); factorials except
    of a literal of at most 3 digits; binomials, sums and products holding a number of more
    than 3 digits. The worker deadline still bounds whatever passes.
    """
    if len(answer) > MAX_UNTIMED_CHARS or _nesting_depth(answer) > MAX_NESTING:
        return False
    exponent_product = 1
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
        if "^" in exponent or "!" in exponent:
            return False
        for d in _DIGITS.findall(exponent):
            if len(d) > 7:
                return False
            exponent_product *= max(int(d), 1)
        if exponent_product > MAX_EXPONENT:
            return False
        i = answer.find("^", i + 1)
    for m in _FACTORIAL_ARG.finditer(answer):
        if answer[m.end() : m.end() + 1] == "=":
            continue  # "!=" is not a factorial
        if not m.group(1) or len(m.group(1)) > 3:
            return False
    if _BIG_OPERATORS.search(answer) and any(len(d) > 3 for d in _DIGITS.findall(answer)):
        return False
    return True


# A superscript written without braces whose argument is a macro with arguments: TeX takes the
# whole macro as the exponent (``2^\frac{3}{1}`` is 2^3), math-verify only its first token.
_BRACELESS_EXPONENT = re.compile(r"\^\s*(\\(?:[dt]?frac|binom|sqrt))(?![a-zA-Z])")
_MACRO_ARGS = {"\\frac": 2, "\\dfrac": 2, "\\tfrac": 2, "\\binom": 2, "\\sqrt": 1}


def _brace_exponents(answer: str) -> str:
    """``answer`` with each brace-less macro exponent wrapped in braces (``2^\\frac{3}{1}`` ->
    ``2^{\\frac{3}{1}}``), so the parser and :func:`_is_safe` read the exponent TeX means."""
    if "^" not in answer or "\\" not in answer:
        return answer
    out, pos = [], 0
    for m in _BRACELESS_EXPONENT.finditer(answer):
        if m.start() < pos:
            continue
        end = m.end()
        if m.group(1) == "\\sqrt" and answer[end:end + 1] == "[":  # \sqrt[n]{x}
            close = answer.find("]", end)
            if close == -1:
                continue
            end = close + 1
        for _ in range(_MACRO_ARGS[m.group(1)]):
            while end < len(answer) and answer[end].isspace():
                end += 1
            group_end = _group_end(answer, end) if answer[end:end + 1] == "{" else None
            if group_end is None:
                break
            end = group_end
        else:
            out.append(answer[pos:m.start()] + "^{" + answer[m.start(1):end] + "}")
            pos = end
    return "".join(out) + answer[pos:] if out else answer


def _as_math(answer: str) -> str:
    """Wrap a bare answer in ``$...$`` so math-verify reads it as LaTeX."""
    s = answer.strip()
    if s.startswith("$") or s.startswith("\\(") or s.startswith("\\["):
        return s
    return f"${s}$"


# ---------------------------------------------------------------------------------------------
# Worker-side work (runs only inside grader worker processes, see selector.grader_pool)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse(answer: str) -> tuple[Any, ...]:
    """math-verify's parse of a bare answer, untimed (the worker's deadline bounds it)."""
    from math_verify import parse

    return tuple(parse(_as_math(answer), parsing_timeout=None))


def _worker_equivalent(prediction: str, reference: str) -> bool:
    from math_verify import verify

    gold, pred = list(_parse(reference)), list(_parse(prediction))
    return bool(verify(gold, pred, timeout_seconds=None))


def _worker_key(unwrapped: str) -> str | None:
    import sympy

    for obj in _parse(unwrapped):
        if isinstance(obj, (sympy.Basic, sympy.MatrixBase)):
            try:
                return _sympy_key(obj) or None
            except Exception:
                return None
    return None


#: What :class:`~selector.grader_pool.GraderPool` workers may be asked to run.
WORKER_OPS = {"equiv": _worker_equivalent, "key": _worker_key}
#: Imported in the parent before workers are forked, so a new worker is ready at once.
WORKER_PRELOAD = ("sympy", "math_verify", "latex2sympy2_extended")


# ---------------------------------------------------------------------------------------------
# Parent-side: caches, the pool, fallbacks


class _Memo:
    """A bounded thread-safe dict (cleared when full: keys are cheap to recompute)."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._d: dict = {}
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._d.get(key, default)

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._d) >= self._size:
                self._d.clear()
            self._d[key] = value

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


_MISSING = object()
_KEYS = _Memo()
_EQUIV = _Memo()
_POOL: GraderPool | None = None
_POOL_LOCK = threading.Lock()
_INT = re.compile(r"-?\d{1,60}")


def grader_pool() -> GraderPool:
    """The process's grading worker pool (started on first use), shared by every grading call."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = GraderPool(__name__, timeout_s=GRADE_TIMEOUT_S)
    return _POOL


def _run(op: str, items: list[tuple]) -> list[tuple[str, Any]]:
    pool = grader_pool()
    out = pool.run(op, items, timeout_s=GRADE_TIMEOUT_S)
    if pool.broken is None:
        return out
    # No worker process can start here (e.g. inside a daemonic multiprocessing worker): grade
    # in-process, bounded by the _is_safe pre-checks only, rather than string-compare all.
    if not _WARNED_BROKEN:
        _warn_broken(pool.broken)
    fn = WORKER_OPS[op]
    fixed = []
    for (status, value), args in zip(out, items):
        if status == CRASHED:
            try:
                status, value = OK, fn(*args)
            except Exception as e:  # noqa: BLE001 - one answer's failure is its fallback
                status, value = FAILED, repr(e)
        fixed.append((status, value))
    return fixed


_WARNED_BROKEN = False


def _warn_broken(reason: str) -> None:
    global _WARNED_BROKEN
    _WARNED_BROKEN = True
    logging.getLogger(__name__).warning(
        "grader worker processes cannot start (%s); grading in-process, bounded by size limits only", reason
    )


def timeout_count() -> int:
    """How many answers (in this process) timed out or crashed a grader worker and were graded
    by the normalized-string fallback instead. Monotonic; diff it around a piece of work."""
    return _POOL.timeouts if _POOL is not None else 0


def configure(*, workers: int | None = None, timeout_s: float | None = None) -> None:
    """Set the grader pool's size (processes) and per-answer deadline (seconds); stops the
    current workers. Cached results are kept."""
    global GRADE_TIMEOUT_S, _POOL
    with _POOL_LOCK:
        if timeout_s is not None:
            if not timeout_s > 0:
                raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
            GRADE_TIMEOUT_S = float(timeout_s)
        old, _POOL = _POOL, None
        if workers is not None or old is not None:
            size = workers if workers is not None else (old.size if old is not None else None)
            count = old.timeouts if old is not None else 0
            _POOL = GraderPool(__name__, size=size, timeout_s=GRADE_TIMEOUT_S)
            _POOL.timeouts = count
    if old is not None:
        old.close()


# ---------------------------------------------------------------------------------------------
# Equivalence


def _normalize_str(answer: str) -> str:
    """String form for when sympy is not used: drops formatting that never changes the value.

    Linear in the length (redundant outer braces are found with one :func:`_brace_ends` pass).
    """
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\%|%|\\\$", "", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if s.startswith("{"):
        # Redundant groups: "{42}" is 42 (but "\{42\}" is a set). Inner groups of a stripped
        # group keep their matching, so one pass over the original string serves every layer.
        ends = _brace_ends(s)
        i, j = 0, len(s)
        while j - i >= 2 and s[i] == "{" and ends.get(i) == j:
            i, j = i + 1, j - 1
        s = s[i:j]
    return s.lower()


def _string_equal(prediction: str, reference: str) -> bool:
    a, b = _normalize_str(prediction), _normalize_str(reference)
    return bool(a) and a == b


def _fast_equivalent(prediction: str, reference: str) -> bool | None:
    """The verdict without sympy where it is exact (both plain integers), else None."""
    a, b = prediction.strip(), reference.strip()
    if _INT.fullmatch(a) and _INT.fullmatch(b):
        return int(a) == int(b)
    return None


def equivalent_many(pairs: Sequence[tuple[str | None, str | None]]) -> list[bool]:
    """:func:`is_equivalent` of each ``(prediction, reference)`` pair, in one worker call for
    all uncached pairs (each still has its own :data:`GRADE_TIMEOUT_S` deadline)."""
    out: list[bool | None] = []
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (pred, ref) in enumerate(pairs):
        if not isinstance(pred, str) or not isinstance(ref, str) or not pred.strip() or not ref.strip():
            out.append(False)  # None, blank, or not text at all (untrusted output): never raises
            continue
        pred, ref = _brace_exponents(pred), _brace_exponents(ref)
        hit = _EQUIV.get((pred, ref), _MISSING)
        if hit is _MISSING:
            hit = _fast_equivalent(pred, ref)
            if hit is None and not (_is_safe(pred) and _is_safe(ref)):
                hit = _string_equal(pred, ref)
            if hit is not None:
                _EQUIV.put((pred, ref), hit)
        if hit is _MISSING or hit is None:
            todo.setdefault((pred, ref), []).append(i)
            out.append(None)
        else:
            out.append(hit)
    if todo:
        items = list(todo)
        for (pred, ref), (status, value) in zip(items, _run("equiv", items)):
            verdict = bool(value) if status == OK else _string_equal(pred, ref)
            _EQUIV.put((pred, ref), verdict)
            for i in todo[(pred, ref)]:
                out[i] = verdict
    return [bool(v) for v in out]


def is_equivalent(prediction: str | None, reference: str | None) -> bool:
    """math-verify's ``verify(parse(reference), parse(prediction))`` on bare answers (cached).

    Answers are wrapped in ``$...$`` to be read as LaTeX. None or blank -> False. Runs in a
    grader worker under a :data:`GRADE_TIMEOUT_S` deadline; answers failing :func:`_is_safe`,
    timing out or failing there are compared by normalized string instead (see the module
    docstring). Never raises, never hangs, the same in every thread.
    """
    if not isinstance(prediction, str) or not isinstance(reference, str):
        return False
    hit = _EQUIV.get((prediction, reference))
    return hit if hit is not None else equivalent_many([(prediction, reference)])[0]


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


def answer_keys(answers: Sequence[str | None]) -> list[str | None]:
    """:func:`answer_key` of each answer, with one worker call for all uncached ones."""
    out: list[str | None] = []
    todo: dict[str, list[int]] = {}
    unwrapped: dict[str, str] = {}
    for i, answer in enumerate(answers):
        if not isinstance(answer, str) or not answer.strip():
            out.append(None)
            continue
        hit = _KEYS.get(answer, _MISSING)
        if hit is _MISSING:
            u = _brace_exponents(_unwrap_for_key(answer)) if len(answer) <= 2 * MAX_UNTIMED_CHARS else ""
            if u and _INT.fullmatch(u):
                hit = str(int(u))  # what sympy's Integer prints
            elif not (u and _is_safe(u)):
                hit = _normalize_str(answer) or None
            if hit is not _MISSING:
                _KEYS.put(answer, hit)
            else:
                unwrapped[answer] = u
                todo.setdefault(answer, []).append(i)
        out.append(None if hit is _MISSING else hit)
    if todo:
        items = list(todo)
        results = _run("key", [(unwrapped[a],) for a in items])
        for answer, (status, value) in zip(items, results):
            key = (value if status == OK else None) or _normalize_str(answer) or None
            _KEYS.put(answer, key)
            for i in todo[answer]:
                out[i] = key
    return out


def answer_key(answer: str | None) -> str | None:
    """Canonical voting key: equivalent answers get equal keys as far as cheaply possible.

    ``str`` of math-verify's sympy parse (wrappers ``{...}``/``\\text{...}`` removed first;
    exact decimals turned into rationals; an assignment ``x=3`` keyed by its value), else a
    normalized string. Answers failing :func:`_is_safe`, or timing out in the grader worker,
    take the string path (cached, so a key never depends on the calling thread). None or
    blank -> None.
    """
    if not isinstance(answer, str):
        return None
    hit = _KEYS.get(answer, _MISSING)
    return hit if hit is not _MISSING else answer_keys([answer])[0]


def group_keys(answers: Sequence[str | None]) -> list[str | None]:
    """:func:`answer_key` of each answer, with equivalent keys merged (None stays None).

    Distinct keys are compared pairwise, each through its first answer, with
    :func:`is_equivalent` in either direction; every key in a merged group is replaced by the
    group's first-seen key. Cost is quadratic in the number of distinct keys, not answers.
    """
    keys = answer_keys(answers)
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
    """Empty every cache in this module (for tests and benchmarks), the workers' too: idle
    workers are stopped, and new ones are forked from a parent that never parses."""
    _KEYS.clear()
    _EQUIV.clear()
    if _POOL is not None:
        _POOL.close()
