"""Problem sets. ``arithmetic``: a seeded generator of graded arithmetic problems.

The generator spans difficulty for small models on purpose, from one-digit sums (level 1) to
two-step word problems (level 6), so that the embedded CPU default (SmolLM2-135M) shows a
real spread of pass@1 (see the README for measured figures). Every record carries its exact
integer answer; nothing here needs the network.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

NAMES = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "pencils", "shells", "cards")


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    level: int
    kind: str


def _one_digit_sum(r: random.Random) -> tuple[str, int, str]:
    a, b = r.randint(1, 9), r.randint(1, 9)
    return f"What is {a} + {b}?", a + b, "1-digit addition"


def _two_digit_add_sub(r: random.Random) -> tuple[str, int, str]:
    a, b = r.randint(10, 99), r.randint(10, 99)
    if r.random() < 0.5:
        return f"What is {a} + {b}?", a + b, "2-digit addition"
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", a - b, "2-digit subtraction"


def _multiplication(r: random.Random) -> tuple[str, int, str]:
    a, b = r.randint(2, 9), r.randint(11, 29)
    return f"What is {a} * {b}?", a * b, "1x2-digit multiplication"


def _two_operations(r: random.Random) -> tuple[str, int, str]:
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(2, 30)
    if r.random() < 0.5:
        return f"What is {a} times {b}, plus {c}?", a * b + c, "two operations"
    c = r.randint(1, a * b - 1)
    return f"What is {a} times {b}, minus {c}?", a * b - c, "two operations"


def _word_one_step(r: random.Random) -> tuple[str, int, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(5, 40), r.randint(2, 20)
    if r.random() < 0.5:
        return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b, "word problem, 1 step"
    a = a + b
    return f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b, "word problem, 1 step"


def _word_two_steps(r: random.Random) -> tuple[str, int, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    per, boxes = r.randint(3, 9), r.randint(2, 6)
    lost = r.randint(1, per * boxes - 1)
    return (
        f"A box holds {per} {item}. {name} buys {boxes} boxes and loses {lost} {item}. How many {item} does {name} have?",
        per * boxes - lost,
        "word problem, 2 steps",
    )


LEVELS: dict[int, Callable[[random.Random], tuple[str, int, str]]] = {
    1: _one_digit_sum,
    2: _two_digit_add_sub,
    3: _multiplication,
    4: _two_operations,
    5: _word_one_step,
    6: _word_two_steps,
}


def arithmetic_problems(count: int, seed: int = 0, levels: tuple[int, ...] = tuple(LEVELS)) -> list[Problem]:
    """``count`` problems cycling through ``levels`` (1 easiest .. 6), reproducible from ``seed``.

    Duplicated question texts are re-drawn so every problem is distinct.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown arithmetic levels {sorted(unknown)}; levels are {sorted(LEVELS)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < count:
        level = levels[len(out) % len(levels)]
        text, answer, kind = LEVELS[level](rng)
        if text in seen:
            continue
        seen.add(text)
        out.append(Problem(f"arith-{seed}-{len(out)}", text, str(answer), level, kind))
    return out
