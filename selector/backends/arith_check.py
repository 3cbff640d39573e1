"""``arith-check``: a programmatic PRM that checks the arithmetic a solution asserts.

It never sees the reference answer. For each step it finds the equations the step states
(``17 + 25 = 42``, chains such as ``3 * 4 = 12 + 2 = 14``, LaTeX ``\\times``/``\\cdot``/
``\\div``/``\\frac``, and equations in words: ``7 + 7 equals 14``, ``is equal to``, ``makes``,
``gives``, ``yields``, ``results in``, and ``is`` after an expression with an operator, each
only when the right side ends the clause), evaluates every side exactly with fractions, and checks the final
``\\boxed{}`` answer against the last result the solution derived. The score of step ``k``
describes the *prefix* ``1..k`` (as trained PRMs do):

- any claim so far is false: ``0.05 + 0.15 * (share of claims that hold)``, in [0.05, 0.2];
- otherwise ``0.5 + 0.5 * verified / (verified + unverifiable + 1)``, in [0.5, 1): a prefix
  with nothing checkable yet scores 0.5, each verified claim raises it.

A claim is unverifiable when a side is not plain arithmetic, or a boxed answer appears in a
solution that derived nothing. Decimal results count as correct when they are the exact value
rounded to the decimals written. It has no parameters (0 FLOPs) and no tokenizer: it reports
whitespace-separated words as its tokens read.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Iterator, Sequence

from .base import ScoreOutput, ScoreRequest

_REPLACEMENTS = (
    ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("·", "*"),
    ("−", "-"), ("–", "-"), ("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""),
    ("\\(", " "), ("\\)", " "), ("\\[", " "), ("\\]", " "), ("$", " "),
)
_FRAC = re.compile(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}")
_TIMES_X = re.compile(r"(?<=\d)\s*[xX]\s*(?=\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A run of arithmetic characters containing at least one '='.
_CHAIN = re.compile(r"[0-9.+\-*/^()\s]*=[0-9.+\-*/^()\s=]*")
_BOXED = re.compile(r"\\(?:boxed|fbox)\{([^{}]*)\}")
# An equation in words: an arithmetic left side, a verb meaning '=', a number or expression
# that ends the clause ("7 + 7 equals 14.", "3 * 4 is 12,"); "12 is 3 times 4" is not one.
_WORD_EQUALS = re.compile(
    r"(?P<left>[0-9.()][0-9.+\-*/^()\s]*?)\s+"
    r"(?P<word>(?i:is\s+equal\s+to|is\s+equal|equals?|equal\s+to|makes|gives|yields|results\s+in|is))\s+"
    r"(?P<right>[-(.\d][0-9.+\-*/^()\s]*?)(?=\s*(?:[.,;:!?]|$))", re.M)
_OPERATOR = re.compile(r"[\d)]\s*[-+*/^]\s*[\d(]")
_MAX_EXPONENT = 64


class _Unverifiable(Exception):
    pass


def _normalize(text: str) -> str:
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    text = _FRAC.sub(r"((\1)/(\2))", text)
    text = _TIMES_X.sub("*", text)
    text = _THOUSANDS.sub("", text)
    return _WORD_EQUALS.sub(_word_equation, text)


def _word_equation(m: re.Match) -> str:
    """``left = right`` for an equation stated in words; a bare "is" only after an expression
    with an operator ("Question 3 is 7." states no arithmetic)."""
    if m["word"].lower() == "is" and not _OPERATOR.search(m["left"]):
        return m.group(0)
    return f"{m['left']} = {m['right']}"


class _Parser:
    """Recursive-descent evaluator for + - * / ^ and parentheses over exact fractions."""

    _TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|[-+*/^()])")

    def __init__(self, text: str) -> None:
        self.tokens = self._tokenize(text)
        self.i = 0

    def _tokenize(self, text: str) -> list[str]:
        out, pos, text = [], 0, text.strip()
        while pos < len(text):
            m = self._TOKEN.match(text, pos)
            if not m:
                raise _Unverifiable(text)
            out.append(m.group(1))
            pos = m.end()
        return out

    def parse(self) -> Fraction:
        value = self._sum()
        if self.i != len(self.tokens):
            raise _Unverifiable("trailing tokens")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> str:
        if self.i >= len(self.tokens):
            raise _Unverifiable("unexpected end")
        self.i += 1
        return self.tokens[self.i - 1]

    def _sum(self) -> Fraction:
        value = self._product()
        while self._peek() in ("+", "-"):
            op = self._take()
            rhs = self._product()
            value = value + rhs if op == "+" else value - rhs
        return value

    def _product(self) -> Fraction:
        value = self._power()
        while self._peek() in ("*", "/") or self._peek() == "(":
            op = "*" if self._peek() == "(" else self._take()  # 2(3+4): implicit product
            rhs = self._power()
            if op == "*":
                value *= rhs
            elif rhs == 0:
                raise _Unverifiable("division by zero")
            else:
                value /= rhs
        return value

    def _power(self) -> Fraction:
        base = self._unary()
        if self._peek() == "^":
            self._take()
            exponent = self._power()
            if exponent.denominator != 1 or abs(exponent) > _MAX_EXPONENT or (base == 0 and exponent < 0):
                raise _Unverifiable("exponent")
            return base ** int(exponent)
        return base

    def _unary(self) -> Fraction:
        tok = self._peek()
        if tok in ("+", "-"):
            self._take()
            value = self._unary()
            return -value if tok == "-" else value
        return self._atom()

    def _atom(self) -> Fraction:
        tok = self._take()
        if tok == "(":
            value = self._sum()
            if self._take() != ")":
                raise _Unverifiable("unbalanced")
            return value
        if tok[0].isdigit() or tok[0] == ".":
            return Fraction(tok)
        raise _Unverifiable(tok)


def evaluate(expression: str) -> Fraction:
    """Exact value of a plain arithmetic expression; raises ValueError if it is not one."""
    try:
        return _Parser(_normalize(expression)).parse()
    except _Unverifiable as exc:
        raise ValueError(f"not plain arithmetic: {expression!r}") from exc


def _decimals(side: str) -> int | None:
    """Decimal places written in a bare number (for rounding tolerance), else None."""
    m = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", side)
    return len(m.group(1)) if m else None


def _matches(value: Fraction, side: str, side_value: Fraction) -> bool:
    if value == side_value:
        return True
    places = _decimals(side)
    return places is not None and abs(value - side_value) <= Fraction(1, 2 * 10**places)


def _equations(text: str) -> Iterator[tuple[bool | None, Fraction | None]]:
    """Yield (holds?, value of the last side) per equation chain; holds is None if unverifiable."""
    for m in _CHAIN.finditer(text):
        sides = m.group(0).split("=")
        # A side glued to letters or brackets (f(2) = 7, 3x = 12, = 5y) is not plain arithmetic.
        chain = m.group(0)
        before = text[m.start() - 1] if m.start() > 0 and not chain[0].isspace() else " "
        after = text[m.end()] if m.end() < len(text) and not chain[-1].isspace() else " "
        if before.isalnum() or before in ")}]_^\\":
            sides[0] = ""
        if after.isalnum() or after in "({[_^\\":
            sides[-1] = ""
        # "10% of 50 = 5", "3 groups of 4 = 12": a bare number right after words is the tail of
        # a phrase, not the whole left side.
        preceding = text[: m.start()].rstrip()[-1:]
        if (preceding.isalpha() or preceding == "%") and not re.search(r"\d\s*[-+*/^]", sides[0]):
            sides[0] = ""
        sides = [s.strip().rstrip(".").strip() for s in sides]
        sides = [s for s in sides if any(ch.isdigit() for ch in s)]
        if len(sides) < 2:
            continue
        try:
            values = [_Parser(s).parse() for s in sides]
        except _Unverifiable:
            yield None, None
            continue
        holds = all(_matches(values[0], s, v) for s, v in zip(sides[1:], values[1:]))
        yield holds, values[-1]


class ArithCheckPRM:
    """Programmatic step verifier (see module docstring). The embedded default PRM."""

    id = "arith-check"
    num_parameters = 0

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        return [self._score_one(r) for r in requests]

    def _score_one(self, request: ScoreRequest) -> ScoreOutput:
        verified = unverifiable = false = 0
        last_value: Fraction | None = None
        scores = []
        for step in request.steps:
            text = _normalize(step)
            for holds, value in _equations(_BOXED.sub(" ", text)):
                if holds is None:
                    unverifiable += 1
                    continue
                if holds:
                    verified += 1
                else:
                    false += 1
                last_value = value
            for boxed in _BOXED.findall(text):
                if last_value is None:
                    unverifiable += 1
                    continue
                try:
                    ok = _matches(last_value, boxed, _Parser(boxed.strip().rstrip(".")).parse())
                except _Unverifiable:
                    unverifiable += 1
                    continue
                verified += ok
                false += not ok
            if false:
                scores.append(0.05 + 0.15 * verified / (verified + false))
            else:
                scores.append(0.5 + 0.5 * verified / (verified + unverifiable + 1))
        tokens = len(request.question.split()) + sum(len(s.split()) for s in request.steps)
        return ScoreOutput(tuple(scores), tokens)
