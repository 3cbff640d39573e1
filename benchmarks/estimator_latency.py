"""Latency of the prompt-only difficulty estimators (no model calls of the policy).

Fits ``PromptEstimator`` (tfidf, minilm) on MATH-500 levels, then times ``estimate`` on 1,000
prompts one at a time (median, p99) and in batches of 64 (per-prompt median). Prompts:
``--source math`` (MATH-500 and GSM8K questions, about 73 MiniLM tokens on average) or
``arithmetic`` (the CPU demo's generator, about 15). Targets (issue 4): tfidf < 1 ms per prompt
median single; minilm < 10 ms per prompt batched, on 2 cores.

    python benchmarks/estimator_latency.py [--features tfidf minilm] [--source math arithmetic]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from selector.datasets import load_dataset
from selector.estimators import PromptEstimator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", nargs="+", default=["tfidf", "minilm"])
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--source", nargs="+", default=["math", "arithmetic"], choices=["math", "arithmetic"])
    args = ap.parse_args()
    train, _ = load_dataset("math500")
    gsm, _ = load_dataset("gsm8k")
    sources = {
        "math": [p.problem for p in (train + gsm)][: args.prompts],
        "arithmetic": [p.problem for p in load_dataset("arithmetic", size=args.prompts, seed=1)[0]],
    }
    levels = np.array([p.level for p in train])
    for features, source in ((f, s) for f in args.features for s in args.source):
        queries = sources[source]
        est = PromptEstimator(features=features).fit([p.problem for p in train], (5 - levels) / 4, levels)
        est.estimate(queries[0])  # warm-up: lazy model load, caches
        single = []
        for q in queries:
            t0 = time.perf_counter()
            est.estimate(q)
            single.append(time.perf_counter() - t0)
        batched = []
        for i in range(0, len(queries), args.batch):
            chunk = queries[i : i + args.batch]
            t0 = time.perf_counter()
            est.estimate_batch(chunk)
            batched.append((time.perf_counter() - t0) / len(chunk))
        s = np.array(single) * 1e3
        b = np.array(batched) * 1e3
        print(f"{features:<7} {source:<11} single: median {np.median(s):.3f} ms, p99 {np.percentile(s, 99):.3f} ms per prompt; "
              f"batched ({args.batch}): median {np.median(b):.3f} ms, p99 {np.percentile(b, 99):.3f} ms per prompt "
              f"({len(queries)} prompts)")


if __name__ == "__main__":
    main()
