"""Routing overhead: estimator + table lookup per prompt, no model calls.

Routes 10,000 prompts (the ``arithmetic`` generator's wording plus MATH-500 and GSM8K
questions) one at a time with ``Router.route`` and prints the median and p99 latency per
prompt, then the per-prompt time of ``route_batch``. Target (issue 5): median under 1 ms per
prompt with the tfidf estimator.

    python benchmarks/router_overhead.py [--tables DIR] [--prompts 10000] [--estimator prompt:tfidf]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from selector.datasets import load_dataset
from selector.routing import Router

DEFAULT_TABLE = Path(__file__).resolve().parents[1] / "tables" / "smollm2-135m__arith-check__arithmetic"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default=str(DEFAULT_TABLE))
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--estimator", default="prompt:tfidf")
    ap.add_argument("--budget", type=int, default=8)
    args = ap.parse_args()
    router = Router.load(args.tables, estimator=args.estimator)
    pool = [p.problem for p in load_dataset("arithmetic", size=2000, seed=7)[0]]
    for name in ("math500", "gsm8k"):
        try:
            pool += [p.problem for p in load_dataset(name)[0]]
        except FileNotFoundError:
            pass
    prompts = [pool[i % len(pool)] for i in range(args.prompts)]
    router.route(prompts[0], args.budget)  # warm-up
    times = np.empty(len(prompts))
    for i, q in enumerate(prompts):
        t0 = time.perf_counter()
        router.route(q, args.budget)
        times[i] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(prompts), 256):
        router.route_batch(prompts[i : i + 256], args.budget)
    batched = (time.perf_counter() - t0) / len(prompts)
    print(f"{len(prompts)} prompts, {args.estimator}, table {Path(args.tables).name}: route() median "
          f"{np.median(times) * 1e3:.3f} ms, p99 {np.percentile(times, 99) * 1e3:.3f} ms per prompt "
          f"(target: median < 1 ms); route_batch(256) {batched * 1e3:.3f} ms per prompt")


if __name__ == "__main__":
    main()
