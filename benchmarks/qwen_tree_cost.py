"""What beam search and DVTS would cost on the GSM8K table's policy (issue 27): wall seconds,
generated tokens and generations of best-of-N, beam search and DVTS at the same N, on the same
GSM8K test questions, Qwen2.5-Coder-1.5B (`qwen2.5-coder-1.5b` preset) scored by its own
confidence. Prints one line per strategy and the ratios to best-of-N, plus the projection to the
shipped table's 160 problems. Needs the `qwen-1.5b` extra; run it on a quiet machine:

    OMP_NUM_THREADS=1 python benchmarks/qwen_tree_cost.py --questions 8 --n 4 --m 2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selector import BeamSearch, DVTS, BestOfN, solve_batch
from selector.backends.registry import make_policy, make_prm
from selector.datasets import load_dataset

PROMPTS_IN_TABLE = 160


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=8, help="GSM8K test questions (from the end of the file)")
    ap.add_argument("--n", type=int, default=4, help="budget N (generations)")
    ap.add_argument("--m", type=int, default=2, help="beam width M")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    problems, _ = load_dataset("gsm8k")
    questions = [p.problem for p in problems[-args.questions:]]  # the table samples 160 of 1,319 at random
    policy, prm = make_policy("qwen2.5-coder-1.5b"), make_prm("self-confidence")
    policy.load()
    rows = []
    for strategy in (BestOfN(n=args.n, aggregation="min"), BeamSearch(n=args.n, m=args.m, aggregation="min"),
                     DVTS(n=args.n, m=args.m, aggregation="min")):
        t0 = time.perf_counter()
        results = solve_batch(questions, strategy, policy=policy, prm=prm, seed=0)
        seconds = time.perf_counter() - t0
        gen = sum(r.cost.policy_generated_tokens for r in results)
        rows.append({"strategy": type(strategy).__name__, "seconds": seconds, "generated_tokens": gen,
                     "generations": sum(r.cost.generations for r in results),
                     "policy_prompt_tokens": sum(r.cost.policy_prompt_tokens for r in results)})
        print(f"{rows[-1]['strategy']:<12} N={args.n} {seconds:7.1f} s  {gen:6d} generated tokens  "
              f"{rows[-1]['generations']:4d} generations  {rows[-1]['policy_prompt_tokens']:7d} prompt tokens", flush=True)
    base = rows[0]["seconds"]
    for r in rows[1:]:
        projected = r["seconds"] / len(questions) * PROMPTS_IN_TABLE / 60
        print(f"{r['strategy']} / best-of-N wall ratio {r['seconds'] / base:.2f}; projected for the table's "
              f"{PROMPTS_IN_TABLE} problems: {projected:.0f} min on this thread count")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
