"""Write a JSONL set of simulator questions (the simulator world of configs/sim-router.yaml).

Latent difficulties are drawn uniformly in [0, 1] with ``--seed``; each question's wording
carries a noisy hint of its difficulty (``--hint-noise``, as in ``make_questions``), so a
prompt-only estimator can learn part of it. The answer is the simulator's own.

    python scripts/make_sim_questions.py --n 2000 --seed 23 --prefix "sim router problem L" \
        --out configs/sim_router_questions_2000.jsonl
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selector.backends.simulated import make_questions, problem_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True, help="number of questions")
    ap.add_argument("--seed", type=int, default=0, help="seed of the difficulties and hints")
    ap.add_argument("--prefix", default="sim router problem", help="question text prefix")
    ap.add_argument("--id-prefix", default="simr", help="id prefix")
    ap.add_argument("--hint-noise", type=float, default=0.15, help="std of the difficulty hint's noise")
    ap.add_argument("--out", required=True, help="JSONL file to write")
    args = ap.parse_args()
    difficulties = np.random.default_rng(args.seed).uniform(0.0, 1.0, args.n)
    questions = make_questions([float(d) for d in difficulties], prefix=args.prefix, hint_noise=args.hint_noise,
                               seed=args.seed)
    with Path(args.out).open("w") as fh:
        for i, q in enumerate(questions):
            fh.write(json.dumps({"id": f"{args.id_prefix}-{i}", "problem": q, "answer": problem_for(q).answer}) + "\n")
    print(f"wrote {len(questions)} questions to {args.out}")


if __name__ == "__main__":
    main()
