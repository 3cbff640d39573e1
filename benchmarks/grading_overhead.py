"""Cost of grading through the deadline-bounded worker pool, on real answers.

Prints, cold cache: milliseconds per ``is_equivalent`` and per ``answer_key`` over MATH-500's
extracted answers (one call each, then the same work batched through ``equivalent_many`` /
``answer_keys``), the per-call round-trip overhead of the pool (a trivial integer-free answer
after warm-up, cached in the worker), and the cached (parent-side) call cost in microseconds.
Runs against whichever ``selector`` is on PYTHONPATH, so an older checkout can be compared
for the functions it has.

    python benchmarks/grading_overhead.py [--limit 500]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selector import grading

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "math500.jsonl"


def _ms(fn, items) -> float:
    t0 = time.perf_counter()
    for x in items:
        fn(*x)
    return (time.perf_counter() - t0) * 1e3 / max(len(items), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=500)
    args = ap.parse_args()
    rows = [json.loads(line) for line in DATA.open() if line.strip()][: args.limit]
    pairs = [(grading.extract_answer(r["solution"]), r["answer"]) for r in rows]
    grading.is_equivalent("1/2", "0.5")  # start-up (imports, workers) is not per call
    grading.clear_caches()
    print(f"is_equivalent, cold, one call each: {_ms(grading.is_equivalent, pairs):.2f} ms/pair ({len(pairs)} pairs)")
    grading.clear_caches()
    print(f"answer_key, cold, one call each:    {_ms(grading.answer_key, [(p,) for p, _ in pairs]):.2f} ms/answer")
    print(f"is_equivalent, cached:              {_ms(grading.is_equivalent, pairs) * 1e3:.1f} us/pair")
    if hasattr(grading, "equivalent_many"):
        grading.clear_caches()
        t0 = time.perf_counter()
        grading.equivalent_many(pairs)
        print(f"equivalent_many, cold, one batch:   {(time.perf_counter() - t0) * 1e3 / len(pairs):.2f} ms/pair")
        grading.clear_caches()
        t0 = time.perf_counter()
        grading.answer_keys([p for p, _ in pairs])
        print(f"answer_keys, cold, one batch:       {(time.perf_counter() - t0) * 1e3 / len(pairs):.2f} ms/answer")
        pool = grading.grader_pool()
        n = 300
        grading.answer_key("y")
        t0 = time.perf_counter()
        for _ in range(n):
            pool.run("key", [("y",)])  # parsed once in the worker, then its cache: pure round trip
        print(f"pool round trip (worker-cached):    {(time.perf_counter() - t0) * 1e6 / n:.0f} us/call")
        print(f"grader timeouts: {grading.timeout_count()}")


if __name__ == "__main__":
    main()
