"""Problem sets: built-in names, any JSONL file, and the ``arithmetic`` generator.

Built-ins read the real data sets from a data directory: ``$TTS_SELECTOR_DATA`` if set, else
``../shared/data`` beside the project checkout. ``arithmetic`` is a seeded generator of graded
problems, from one-digit sums (level 1) to two-step word problems (level 6), on which the
embedded CPU default (SmolLM2-135M) shows a real spread of pass@1. Nothing here needs the
network.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import InputError
from .files import file_sha256

NAMES = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "pencils", "shells", "cards")


class DatasetError(InputError):
    """A data set that cannot be read: missing, empty, not UTF-8 or not JSONL of problems."""


@dataclass(frozen=True)
class Problem:
    """One problem with its reference answer. ``level`` is a human or generator difficulty
    label when the source has one (MATH levels 1-5, arithmetic levels 1-6), else None."""

    id: str
    problem: str
    answer: str
    level: int | None = None
    kind: str | None = None


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

    Duplicated question texts are re-drawn so every problem is distinct; a level that runs out
    of distinct problems leaves the rotation (so very large counts shift the level mix).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    unknown = set(levels) - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown arithmetic levels {sorted(unknown)}; levels are {sorted(LEVELS)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Problem] = []
    active = list(levels)
    turn = 0
    while len(out) < count:
        if not active:
            raise ValueError(f"levels {list(levels)} hold fewer than {count} distinct problems; ask for fewer")
        level = active[turn % len(active)]
        # A level with few distinct problems (81 one-digit sums) runs dry: drop it from the
        # rotation once it stops producing new ones, instead of looping forever.
        for _ in range(200):
            text, answer, kind = LEVELS[level](rng)
            if text not in seen:
                break
        else:
            active.remove(level)
            continue
        turn += 1
        seen.add(text)
        out.append(Problem(f"arith-{seed}-{len(out)}", text, str(answer), level, kind))
    return out


# ---------------------------------------------------------------------------------------------
# Real data sets and JSONL files


def _gsm8k_answer(raw: str) -> str:
    # GSM8K's answer field is a worked solution ending with "#### 72".
    return raw.rsplit("####", 1)[-1].strip().replace(",", "")


def _math_level(raw: Any) -> int | None:
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.split()[-1].isdigit():
        return int(raw.split()[-1])  # "Level 3" (Qwen's copy) or "3"
    return None


@dataclass(frozen=True)
class JsonlFormat:
    """Where a JSONL file keeps its fields. ``id_field=None`` numbers the lines."""

    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = None
    level_field: str | None = None
    answer_transform: Callable[[str], str] | None = field(default=None, compare=False)


BUILTIN_FILES: dict[str, tuple[str, JsonlFormat]] = {
    "math500": ("math500.jsonl", JsonlFormat("problem", "answer", "unique_id", "level")),
    "gsm8k": ("gsm8k_test.jsonl", JsonlFormat("question", "answer", None, None, _gsm8k_answer)),
    "aime24": ("aime24.jsonl", JsonlFormat("problem", "answer", "id", None)),
}
GENERATED = {"arithmetic"}
# Built-ins whose problems carry a difficulty label (``Problem.level``).
LEVELLED = frozenset({"math500", "arithmetic"})

# The dataset family of each built-in: tables profiled on data sets of one family answer for
# each other in a table catalog (selector/catalog.py). A table records its family in its
# metadata (``dataset_family``); a profile config may state it (``dataset.family``) for
# data sets not listed here, e.g. a JSONL file of MATH problems.
FAMILIES: dict[str, str] = {
    "math500": "math",
    "aime24": "aime",
    "gsm8k": "gsm8k",
    "arithmetic": "arithmetic",
}


def dataset_family(name: str, family: str | None = None) -> str:
    """The family of data set ``name``: ``family`` when given, else the built-in's registered
    family (:data:`FAMILIES`), else the file stem of a ``.jsonl`` path, else ``name`` itself
    (so a family name such as ``"math"`` maps to itself)."""
    if family:
        return family
    if name in FAMILIES:
        return FAMILIES[name]
    if name.endswith(".jsonl"):
        return Path(name).stem
    return name


def data_dir() -> Path:
    """The directory holding the built-in data sets (see module docstring)."""
    env = os.environ.get("TTS_SELECTOR_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_jsonl(path: str | Path, fmt: JsonlFormat = JsonlFormat()) -> list[Problem]:
    """Problems from a JSONL file; errors name the file, the line and the missing field."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"data set file {path} does not exist: check the path (relative paths in a config are "
                           "read from the config's folder)")
    out: list[Problem] = []
    with path.open(encoding="utf-8", errors="strict") as fh:
        lines = iter(fh)
        lineno = 0
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{path}: line {lineno + 2} is not valid UTF-8 ({exc.reason}): re-encode the file "
                                   "as UTF-8") from None
            lineno += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({exc.msg}): fix or remove that line") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{lineno}: a line must be a JSON object, got {type(row).__name__}")
            for name in (fmt.problem_field, fmt.answer_field, fmt.id_field):
                if name is not None and name not in row:
                    raise DatasetError(
                        f"{path}:{lineno}: no field {name!r} (fields: {sorted(row)}); "
                        "set dataset.problem_field / answer_field / id_field in the config"
                    )
            answer = str(row[fmt.answer_field])
            if fmt.answer_transform is not None:
                answer = fmt.answer_transform(answer)
            pid = str(row[fmt.id_field]) if fmt.id_field else f"{path.stem}-{lineno - 1}"
            level = _math_level(row.get(fmt.level_field)) if fmt.level_field else None
            out.append(Problem(pid, str(row[fmt.problem_field]), answer, level))
    ids = [p.id for p in out]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: duplicate ids in field {fmt.id_field!r}; choose a unique id_field or none")
    if not out:
        raise DatasetError(f"data set file {path} is empty (no problems): give a JSONL file with one problem per line")
    return out


def problems_sha256(problems: list[Problem]) -> str:
    """A content hash of a problem list (ids, texts, answers), for provenance."""
    digest = hashlib.sha256()
    for p in problems:
        digest.update(json.dumps([p.id, p.problem, p.answer]).encode())
    return digest.hexdigest()


def load_dataset(name: str, *, size: int | None = None, seed: int = 0, fmt: JsonlFormat | None = None) -> tuple[list[Problem], str]:
    """Problems and the sha256 of their source (the file, or the generated content).

    ``name`` is a built-in (``math500``, ``gsm8k``, ``aime24``, ``arithmetic``) or a JSONL path.
    ``size`` takes a seeded random subset (for ``arithmetic``: how many to generate, default 120).
    """
    if name in GENERATED:
        problems = arithmetic_problems(120 if size is None else size, seed=seed)
        return problems, problems_sha256(problems)
    if name in BUILTIN_FILES:
        filename, builtin_fmt = BUILTIN_FILES[name]
        path = data_dir() / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"built-in data set {name!r} expects {path}; set TTS_SELECTOR_DATA to the folder holding {filename}"
            )
        fmt = builtin_fmt
    else:
        path = Path(name)
        if path.suffix == ".jsonl" and not path.is_file():
            raise DatasetError(f"data set file {path} does not exist: check the path (relative paths in a config are "
                               "read from the config's folder)")
        if path.suffix != ".jsonl":
            raise DatasetError(
                f"unknown data set {name!r}: use one of {sorted(BUILTIN_FILES) + sorted(GENERATED)} or a path to a .jsonl file"
            )
        fmt = fmt or JsonlFormat()
    problems = read_jsonl(path, fmt)
    if size is not None:
        if size > len(problems):
            raise DatasetError(f"dataset.size={size} but {name} has only {len(problems)} problems: lower dataset.size")
        keep = sorted(random.Random(seed).sample(range(len(problems)), size))
        problems = [problems[i] for i in keep]
    return problems, file_sha256(path)
