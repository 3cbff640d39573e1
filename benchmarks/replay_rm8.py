"""Replay 100 MATH problems x 8 real Qwen2.5-Math samples through our voting code.

Data: ../shared/data/qwen25math_rm8_math_cot_100.jsonl (QwenLM/Qwen2.5-Math evaluation
example): per problem 8 sampled chain-of-thought responses (``code``), the reference answer
(``gt``), the original harness's correctness labels (``score``), and one outcome-reward-model
score per response (``pred_score``).

The reward scores are unbounded logits, not probabilities. Our PRM protocol and the
aggregations expect scores in [0, 1], so each logit is mapped with the logistic function
sigmoid(z) = 1 / (1 + e^-z). Best-of-N is unchanged by any monotone map; weighted voting is
not (it sums scores), so the script also shows what summing RAW logits would do: negative
logits subtract votes, which is why raw logits must not be used as weights.

Answers are extracted and grouped by ``selector.grading`` and chosen by
``selector.search.select_answer``: the same code the strategies use. A response is one step
(outcome scores), so all four aggregations coincide here.

    python benchmarks/replay_rm8.py [--data PATH] [--bootstrap 2000]
"""
from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from selector.grading import extract_answer, group_keys, is_equivalent
from selector.search.aggregate import select_answer
from selector.records import Candidate

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qwen25math_rm8_math_cot_100.jsonl"


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def candidates(row: dict, transform) -> list[Candidate]:
    texts = row["code"]
    answers = [extract_answer(t) for t in texts]
    keys = group_keys(answers)
    return [
        Candidate((t,), (transform(s[0]),), a, k, True, "eos", 0)
        for t, a, k, s in zip(texts, answers, keys, row["pred_score"])
    ]


def bootstrap_ci(values: list[float], reps: int, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for 95%% CIs")
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"data file not found: {args.data} (expected ../shared/data beside the project)")
    rows = [json.loads(line) for line in args.data.open()]
    k = len(rows[0]["code"])

    outcome: dict[str, list[float]] = {name: [] for name in
        ("pass@1", f"pass@{k}", f"majority@{k}", f"best_of_n@{k}", f"weighted_best_of_n@{k}", f"weighted(raw logits)@{k}")}
    agree = total = 0
    for row in rows:
        ref = row["gt"]
        cands = candidates(row, sigmoid)
        correct = [is_equivalent(c.answer, ref) for c in cands]
        agree += sum(c == bool(s) for c, s in zip(correct, row["score"]))
        total += len(correct)
        outcome["pass@1"].append(sum(correct) / len(correct))
        outcome[f"pass@{k}"].append(float(any(correct)))
        for rule, name in (("majority", f"majority@{k}"), ("best", f"best_of_n@{k}"), ("weighted", f"weighted_best_of_n@{k}")):
            answer, _ = select_answer(cands, rule)
            outcome[name].append(float(is_equivalent(answer, ref)))
        raw_answer, _ = select_answer(candidates(row, lambda z: z), "weighted")
        outcome[f"weighted(raw logits)@{k}"].append(float(is_equivalent(raw_answer, ref)))

    print(f"{len(rows)} problems x {k} samples ({args.data.name}); reward logits mapped with sigmoid")
    print(f"our grading agrees with the data set's own correctness labels on {agree}/{total} samples ({agree / total:.1%})")
    print(f"{'metric':<28}{'accuracy':>9}   95% bootstrap CI over problems")
    for name, vals in outcome.items():
        lo, hi = bootstrap_ci(vals, args.bootstrap)
        print(f"{name:<28}{sum(vals) / len(vals):>9.3f}   [{lo:.3f}, {hi:.3f}]")


if __name__ == "__main__":
    main()
