"""How well does the embedded ``arith-check`` PRM predict final-answer correctness on REAL
rollouts of the embedded default policy (SmolLM2-135M on the CPU)?

Samples K whole solutions per problem from the ``arithmetic`` generator (no PRM involved in
sampling), grades each final answer against the reference, scores every step with
arith-check, and prints:

- pass@1 per level (the difficulty spread the tiny model shows);
- AUROC of the aggregated arith-check score for correctness, over all samples and within a
  problem (mean over problems that have both correct and wrong samples), per aggregation;
- accuracy of majority@K, best_of_n@K and weighted_best_of_n@K chosen by the same voting code
  the strategies use, next to pass@1 and pass@K.

    python benchmarks/arith_check_auroc.py [--problems 48] [--k 8] [--seed 0] [--out rollouts.jsonl]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

from selector import Majority
from selector.api import resolve_engines
from selector.backends.base import ScoreRequest
from selector.datasets import arithmetic_problems
from selector.grading import is_equivalent
from selector.stats import auroc
from selector.search.aggregate import AGGREGATIONS, aggregate, select_answer
from selector.search.runner import run_search
from selector.records import Candidate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--k", type=int, default=8, help="samples per problem")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", default="smollm2-135m")
    ap.add_argument("--out", default=None, help="write the graded, scored rollouts here (JSONL)")
    args = ap.parse_args()

    problems = arithmetic_problems(args.problems, seed=args.seed)
    policy, prm = resolve_engines(args.policy, "arith-check")
    t0 = time.perf_counter()
    results = run_search([(p.problem, Majority(n=args.k)) for p in problems], policy, None, seed=args.seed, progress=True)
    gen_seconds = time.perf_counter() - t0

    all_scores: dict[str, list[float]] = defaultdict(list)
    all_labels: list[bool] = []
    within: dict[str, list[float]] = defaultdict(list)
    by_level: dict[int, list[float]] = defaultdict(list)
    acc: dict[str, list[float]] = defaultdict(list)
    rows = []
    tokens = 0
    for p, r in zip(problems, results):
        tokens += r.cost.policy_generated_tokens
        outs = prm.score([ScoreRequest(p.problem, c.steps or ("",)) for c in r.candidates])
        cands = [Candidate(c.steps, o.step_scores, c.answer, c.answer_key, c.finished, c.stop_reason, c.tokens)
                 for c, o in zip(r.candidates, outs)]
        correct = [is_equivalent(c.answer, p.answer) for c in cands]
        all_labels.extend(correct)
        by_level[p.level].append(statistics.mean(correct))
        for how in AGGREGATIONS:
            agg = [aggregate(c.step_scores, how) for c in cands]
            all_scores[how].extend(agg)
            if 0 < sum(correct) < len(correct):
                within[how].append(auroc(agg, correct))
        acc["pass@1"].append(statistics.mean(correct))
        acc[f"pass@{args.k}"].append(float(any(correct)))
        for rule, name in (("majority", "majority"), ("best", "best_of_n"), ("weighted", "weighted_best_of_n")):
            answer, _ = select_answer(cands, rule, "last")
            acc[f"{name}@{args.k} (last)"].append(float(is_equivalent(answer, p.answer)))
        rows.extend({"problem": p.problem, "reference": p.answer, "level": p.level, "text": c.text,
                     "answer": c.answer, "correct": ok, "step_scores": list(c.step_scores)}
                    for c, ok in zip(cands, correct))

    n = len(all_labels)
    print(f"\n{len(problems)} arithmetic problems x {args.k} samples = {n} rollouts of {policy.id}; "
          f"{tokens} tokens generated in {gen_seconds:.0f} s ({tokens / gen_seconds:.1f} tok/s)")
    print("pass@1 by level: " + ", ".join(f"L{lv} {statistics.mean(v):.2f}" for lv, v in sorted(by_level.items())))
    print(f"correct samples: {sum(all_labels)}/{n}")
    print(f"{'aggregation':<12}{'AUROC all':>10}{'AUROC within problem':>22}{'(problems)':>11}")
    for how in AGGREGATIONS:
        w = within[how]
        print(f"{how:<12}{auroc(all_scores[how], all_labels):>10.3f}{(statistics.mean(w) if w else float('nan')):>22.3f}{len(w):>11}")
    print(f"{'selection':<28}{'accuracy':>9}")
    for name, vals in acc.items():
        print(f"{name:<28}{statistics.mean(vals):>9.3f}")
    if args.out:
        with open(args.out, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        print(f"rollouts written to {args.out}")


if __name__ == "__main__":
    main()
