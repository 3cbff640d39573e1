"""Tests for selector.grading: extraction, equivalence, voting keys, threads, real data."""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from selector import grading
from selector.grading import (
    answer_key,
    extract_answer,
    grade,
    group_keys,
    has_final_answer,
    is_equivalent,
)

# The project root's sibling ``shared/`` holds the read-only data sets.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _rows(name: str, limit: int | None = None) -> list[dict]:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"data file {path} not found (expected the project's sibling shared/data/)")
    rows = []
    with path.open() as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="module")
def math500() -> list[dict]:
    return _rows("math500.jsonl")


# ------------------------------------------------------------------------------------------
# Extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # nested braces
        (r"the set $\boxed{\{1,2\}}$", r"\{1,2\}"),  # escaped braces inside
        (r"$\boxed{\left\{ x \right.}$", r"\left\{ x \right."),  # unbalanced escaped brace
        (r"first \boxed{1}, then \boxed{2}", "2"),  # last box wins
        (r"\boxed{\boxed{5}}", "5"),  # innermost (last-opened) box
        (r"hence \fbox{7}.", "7"),
        (r"so the answer is $\boxed 5$.", "5"),  # brace-less form
        (r"so \boxed 5.", "5"),
        (r"\boxed {9}", "9"),  # TeX skips the space before the group
        (r"\boxed{ 12 }", "12"),
        (r"\boxed{3} but then \boxed{12", "3"),  # the truncated last box is ignored
    ],
)
def test_extract_boxed(text: str, expected: str) -> None:
    assert extract_answer(text) == expected
    assert has_final_answer(text)


@pytest.mark.parametrize(
    "text",
    [
        r"so the answer is $\boxed{12",  # truncated box is not an answer
        r"The final answer is $\boxed{12",  # ... not even through the phrase fallback
        r"\boxedx{5}",  # a different macro
        "no answer here",
        "",
    ],
)
def test_no_answer(text: str) -> None:
    assert extract_answer(text) is None
    assert not has_final_answer(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        (r"The final answer is $\frac{1}{2}$", r"\frac{1}{2}"),
        ("The answer is: 3.5.", "3.5"),
        ("so the answer is 72.\nDone.", "72"),
        ("The final answer is **42**.", "42"),
        ("**Final Answer:** $7$", "7"),
        ("The answer is 4.\nWait, the answer is 5.", "5"),  # last phrase wins
        ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
        ("#### 2,125", "2,125"),
        ("The answer is: 6\n#### 7", "6"),  # phrase comes before ####
        (r"The answer is 6 and \boxed{8}", "8"),  # a box beats every fallback
    ],
)
def test_extract_fallbacks(text: str, expected: str) -> None:
    assert extract_answer(text) == expected
    # Fallbacks never count as finished for search: only a box does.
    assert has_final_answer(text) == ("boxed" in text)


def test_has_final_answer_on_math500_and_truncations(math500: list[dict]) -> None:
    for row in math500:
        sol = row["solution"]
        assert has_final_answer(sol)
        if sol.count("\\boxed") == 1:
            cut = sol[: sol.index("\\boxed") + len("\\boxed{")]
            assert not has_final_answer(cut), cut[-80:]
            assert extract_answer(cut) is None


# ------------------------------------------------------------------------------------------
# Equivalence on real data


def test_math500_extract_and_verify_all(math500: list[dict]) -> None:
    failures = [
        (row["unique_id"], extract_answer(row["solution"]), row["answer"])
        for row in math500
        if not is_equivalent(extract_answer(row["solution"]), row["answer"])
    ]
    assert len(math500) == 500
    assert failures == []
    assert all(grade(row["solution"], row["answer"]) for row in math500[:50])


def test_math500_shuffled_pairs_mostly_not_equivalent(math500: list[dict]) -> None:
    # A cyclic shift of a random order is a derangement: no solution meets its own answer.
    order = list(range(len(math500)))
    random.Random(0).shuffle(order)
    pairs = [(order[i], order[(i + 1) % len(order)]) for i in range(len(order))]
    assert all(i != j for i, j in pairs)
    passed = sum(
        is_equivalent(extract_answer(math500[i]["solution"]), math500[j]["answer"]) for i, j in pairs
    )
    # Only coincidences (e.g. two problems whose answer is 3) may pass.
    assert passed < 0.05 * len(pairs)


def test_gsm8k_hash_answers_extract_and_self_verify() -> None:
    rows = _rows("gsm8k_test.jsonl", limit=200)
    assert len(rows) == 200
    for row in rows:
        number = row["answer"].rsplit("####", 1)[1].strip()
        extracted = extract_answer(row["answer"])
        assert extracted == number
        assert is_equivalent(extracted, number)
        # "2,125" means 2125: thousands separators must not turn it into a tuple.
        assert is_equivalent(extracted, number.replace(",", ""))
        assert answer_key(extracted) == answer_key(number.replace(",", ""))


def test_aime_zero_padded_answers() -> None:
    rows = _rows("aime24.jsonl")
    for row in rows:
        plain = str(int(row["answer"]))
        assert is_equivalent(plain, row["answer"])
        assert answer_key(row["answer"]) == answer_key(plain)


def test_grade_agrees_with_recorded_scores_on_model_outputs() -> None:
    # Real Qwen2.5-Math outputs with the evaluator's recorded correctness. The one known
    # disagreement: reference "10{,}000" vs answer "10000", where the recorded score (False) is
    # wrong and math-verify is right.
    rows = _rows("qwen25math_rm8_math_cot_100.jsonl")
    total = agree = 0
    for row in rows:
        for text, score in zip(row["code"], row["score"]):
            total += 1
            agree += grade(text, row["answer"]) == bool(score)
    assert total == 800
    assert agree >= total - 2


def test_is_equivalent_basics() -> None:
    assert is_equivalent(r"\frac{1}{2}", "0.5")
    assert is_equivalent("x=3", "3")
    assert is_equivalent(r"\{2, 1\}", r"\{1,2\}")
    assert not is_equivalent("2", r"\frac12")
    assert not is_equivalent("-3", "3")
    assert not is_equivalent(None, "3")
    assert not is_equivalent("3", None)
    assert not is_equivalent("", "")
    assert not grade("no answer at all", "3")


# ------------------------------------------------------------------------------------------
# Canonical keys


@pytest.mark.parametrize(
    "group",
    [
        ["1/2", r"\frac{1}{2}", r"\dfrac12", "0.5", r"\tfrac{1}{2}"],
        ["42", "42.", " 42 ", r"\$42", "42.0", "{42}", r"\text{42}", r"42^\circ", "$42$", "x=42"],
        ["x=3", "3", "y = 3"],
        ["1024", "2^{10}"],
        [r"\{1,2\}", r"\{2, 1\}"],
        [r"\text{(C)}", "C"],
        ["10000", r"10,\!000", "10{,}000"],
    ],
)
def test_answer_key_equal(group: list[str]) -> None:
    keys = {answer_key(a) for a in group}
    assert len(keys) == 1, dict(zip(group, map(answer_key, group)))
    assert None not in keys


@pytest.mark.parametrize("a, b", [("1/2", "2"), ("3", "-3"), ("(1, 2)", "(2, 1)"), ("x+1", "x-1"), ("0.1", "0.11")])
def test_answer_key_distinct(a: str, b: str) -> None:
    assert answer_key(a) != answer_key(b)


def test_answer_key_none_and_blank() -> None:
    assert answer_key(None) is None
    assert answer_key("  ") is None
    # Unparseable text still gets a (normalized string) key.
    assert answer_key(r"\text{ Evelyn }") == answer_key("Evelyn")


def test_group_keys_merges_equivalent_answers() -> None:
    answers = [r"\frac13", None, "0.333333", "2", "1/3", r"10\%", "10"]
    raw = [answer_key(a) for a in answers]
    # Equivalent per math-verify, yet keyed differently: the merge step is what joins them.
    assert raw[0] != raw[2]
    assert raw[5] != raw[6]
    merged = group_keys(answers)
    assert merged[1] is None
    assert merged[0] == merged[2] == merged[4] == raw[0]  # the first-seen key names the group
    assert merged[5] == merged[6] == raw[5]
    assert merged[3] == raw[3]
    assert len({merged[0], merged[3], merged[5]}) == 3
    assert group_keys([]) == []
    assert group_keys([None, None]) == [None, None]


# ------------------------------------------------------------------------------------------
# Threads


def test_worker_threads_match_main_thread(math500: list[dict]) -> None:
    pairs = [(extract_answer(r["solution"]), r["answer"]) for r in math500[:100]]
    shuffled = [(p, pairs[(i + 7) % len(pairs)][1]) for i, (p, _) in enumerate(pairs)]
    work = pairs + shuffled

    def run(pair: tuple[str, str]) -> tuple[bool, str | None, str | None]:
        pred, ref = pair
        return is_equivalent(pred, ref), answer_key(pred), answer_key(ref)

    grading.clear_caches()
    in_main = [run(p) for p in work]
    grading.clear_caches()  # so the workers really parse and verify, not read the cache
    with ThreadPoolExecutor(4) as pool:
        in_workers = list(pool.map(run, work))
    assert in_workers == in_main
    assert all(ok for ok, _, _ in in_workers[: len(pairs)])
    # Matching pairs also share keys except where the key cannot see the equivalence.
    assert sum(kp == kr for _, kp, kr in in_workers[: len(pairs)]) >= 95


PATHOLOGICAL = [r"10^{10^{10}}", r"(10^{10})!", "1000000!", r"9^{9^{9}}", "2^{1234567}", "7" * 300]


def test_pathological_answers_do_not_hang_workers() -> None:
    # Without math-verify's signal timeouts, sympy would evaluate these for hours, in C code
    # holding the GIL, so an in-process watchdog thread could not even notice. A subprocess
    # with a timeout turns a regression into a failure instead of a hung test run.
    script = f"""
import json, threading
from selector.grading import answer_key, is_equivalent
out = []
def work():
    for a in {PATHOLOGICAL!r}:
        out.append([is_equivalent(a, "1"), answer_key(a)])
t = threading.Thread(target=work)
t.start(); t.join()
print(json.dumps(out))
"""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("worker thread stuck on a pathological answer")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [eq for eq, _ in results] == [False] * len(PATHOLOGICAL)
    # Refused answers are keyed by their normalized string, the same in every thread.
    assert [key for _, key in results] == [answer_key(a) for a in PATHOLOGICAL]
    assert None not in [key for _, key in results]


def test_worker_threads_do_not_log_timeout_disabled(monkeypatch, caplog) -> None:
    import math_verify.grader
    import math_verify.parser

    # math-verify warns once per process; re-arm that so the filter is really exercised.
    monkeypatch.setattr(math_verify.parser, "TIMEOUT_WARNING_SHOWN", False)
    monkeypatch.setattr(math_verify.grader, "TIMEOUT_WARNING_SHOWN", False)
    grading.clear_caches()
    with caplog.at_level(logging.WARNING):
        with ThreadPoolExecutor(2) as pool:
            assert all(pool.map(lambda p: is_equivalent(*p), [("1/2", "0.5"), ("x=3", "3")]))
    assert not [r for r in caplog.records if "Timeout is disabled" in r.getMessage()]
    assert math_verify.parser.TIMEOUT_WARNING_SHOWN  # the untimed path really ran
