"""Orchestration overhead of each search strategy, on the simulator (model cost ~ zero).

Prints, for each strategy at equal budget N with a batch of prompts: wall time, time spent
inside the simulated engines (particle filtering and adaptive consistency, window M,
included), the orchestration time (wall minus engine time) per generated
step in microseconds, and the beam-search / best-of-N ratios (wall and orchestration).
Targets (issue 2): < 20 us of orchestration per step; beam/best-of-N ratio < 1.5.

    python benchmarks/search_overhead.py [--prompts 64] [--n 16] [--m 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import platform

from selector import DVTS, BeamSearch, BestOfN, Majority, WeightedBestOfN
from selector.search import AdaptiveConsistency, ParticleFiltering
from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, clear_caches, make_questions
from selector.search.runner import RunStats, run_search


def measure(strategy, questions, repeats):
    best = None
    for r in range(repeats):
        clear_caches()  # every run starts cold: no strategy profits from another's memoized draws
        stats = RunStats()
        run_search([(q, strategy) for q in questions], SimulatedPolicy(), SimulatedPRM(), seed=r, stats=stats)
        if best is None or stats.total_seconds < best.total_seconds:
            best = stats
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="best of R runs per strategy")
    args = ap.parse_args()
    questions = make_questions([i / (args.prompts - 1) for i in range(args.prompts)])
    strategies = [
        Majority(n=args.n), BestOfN(n=args.n), WeightedBestOfN(n=args.n),
        BeamSearch(n=args.n, m=args.m), DVTS(n=args.n, m=args.m), ParticleFiltering(n=args.n),
        AdaptiveConsistency(n=args.n, window=args.m),
    ]
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{args.prompts} prompts, N={args.n}, M={args.m}, best of {args.repeats}")
    print(f"{'strategy':<20}{'rounds':>7}{'steps':>8}{'wall ms':>9}{'engine ms':>10}{'orch ms':>9}{'us/step':>9}")
    rows = {}
    for s in strategies:
        st = measure(s, questions, args.repeats)
        rows[s.name] = st
        per_step = 1e6 * st.orchestration_seconds / st.steps
        print(f"{s.name:<20}{st.rounds:>7}{st.steps:>8}{1e3 * st.total_seconds:>9.1f}"
              f"{1e3 * (st.policy_seconds + st.prm_seconds):>10.1f}{1e3 * st.orchestration_seconds:>9.1f}{per_step:>9.2f}")
    beam, bon = rows["beam_search"], rows["best_of_n"]
    print(f"beam_search / best_of_n at N={args.n}: orchestration ratio "
          f"{beam.orchestration_seconds / bon.orchestration_seconds:.2f}, wall ratio (incl. simulator) "
          f"{beam.total_seconds / bon.total_seconds:.2f}")
    worst = max(1e6 * st.orchestration_seconds / st.steps for st in rows.values())
    print(f"worst orchestration per step: {worst:.2f} us (target < 20)")


if __name__ == "__main__":
    main()
