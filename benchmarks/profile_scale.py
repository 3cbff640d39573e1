"""Profiler scale: 1,000 prompts, N_pool = 256, the full grid, on the simulator.

Grid: best-of-N family (majority, best_of_n, weighted_best_of_n x 4 aggregations) at budgets
1, 2, 4, ..., 256 from the pool; beam search and DVTS at N = 4, 8, 16, 32, 64 with M = 4,
run for real. Prints wall time per stage, peak memory (RSS), and the share of wall time spent
outside the backends (the profiler's own work: search orchestration, grading, evaluation,
selection, Parquet I/O). Because the simulator's backends cost almost nothing, the script also
projects that share for the real CPU model: backend time = generated + prompt tokens divided
by a measured throughput of the embedded SmolLM2-135M (``--model-tokens-per-second``, or
measured here when the model is installed).

Targets (issue 3): under 10 minutes and 4 GiB on 2 cores; the profiler's own share under 10%
with the real CPU model as backend.

With ``--executor ray`` it instead profiles the same config three times on the same simulated
work: in one process, then on a local Ray cluster with one actor (the same serial work, so the
difference is Ray's overhead: task dispatch, moving each shard's rows to the driver) and with
``--num-actors`` actors; it prints each run's wall time (the pool and tree shards, and the
whole profile), the overhead of the one-actor run over the single process (target, issue 18:
under 15% at 1,000 prompts), and checks the three tables are equal.

    python benchmarks/profile_scale.py [--prompts 1000] [--n-pool 256] [--out /tmp/profile-scale]
    python benchmarks/profile_scale.py --executor ray [--num-actors 2]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.profiler import load_config, run_profile


class TimedEngine:
    """Wraps an engine and accumulates the seconds spent inside it."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0
        self.id, self.num_parameters = inner.id, inner.num_parameters

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _timed(self, call, requests):
        t0 = time.perf_counter()
        try:
            return call(requests)
        finally:
            self.seconds += time.perf_counter() - t0

    def generate_steps(self, requests):
        return self._timed(self.inner.generate_steps, requests)

    def score(self, requests):
        return self._timed(self.inner.score, requests)


def measure_model_throughput() -> float | None:
    """Tokens/s (prompt + generated) of the embedded CPU default on a tree-search-like call."""
    try:
        from selector.api import resolve_engines
        from selector.backends.base import StepRequest
    except ImportError:
        return None
    try:
        policy, _ = resolve_engines("smollm2-135m", None)
    except (ImportError, ModuleNotFoundError):
        return None
    params = policy.default_sampling_params().replace(max_step_tokens=24)
    qs = [f"What is {a} + {b}?" for a, b in zip(range(11, 27), range(31, 47))]
    reqs = [StepRequest(policy.format_prompt(q), 4, params, seed=i) for i, q in enumerate(qs)]
    t0 = time.perf_counter()
    outs = policy.generate_steps(reqs)
    dt = time.perf_counter() - t0
    tokens = sum(o.prompt_tokens + sum(c.num_tokens for c in o.continuations) for o in outs)
    return tokens / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--n-pool", type=int, default=256)
    ap.add_argument("--out", default=None, help="table directory (default: a temporary one, removed after)")
    ap.add_argument("--model-tokens-per-second", type=float, default=None)
    ap.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="ray: compare one process with Ray actors on the same work")
    ap.add_argument("--num-actors", type=int, default=2, help="actors of the second Ray run (--executor ray)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="profile-scale-"))
    out = Path(args.out) if args.out else work / "table"
    rng = np.random.default_rng(0)
    with (work / "questions.jsonl").open("w") as fh:
        for i, q in enumerate(make_questions(list(rng.beta(1.2, 1.2, args.prompts)))):
            fh.write(json.dumps({"id": f"sim-{i}", "problem": q, "answer": problem_for(q).answer}) + "\n")
    budgets = [2**i for i in range(int(np.log2(args.n_pool)) + 1)]
    cfg = {
        "name": "profile-scale", "policy": "sim", "prm": "sim",
        "dataset": {"name": "questions.jsonl", "id_field": "id", "heldout": 0.2},
        "pool": {"n": args.n_pool, "difficulty_samples": 8},
        "grid": {"strategies": ["majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts"],
                 "budgets": budgets, "tree_budgets": [4, 8, 16, 32, 64], "beam_widths": [4],
                 "aggregations": ["last", "min", "prod", "mean"], "max_steps": 10},
        "binning": {"scheme": "quantile", "k": 5},
        "evaluate": {"subsamples": 200, "seeds": [0]},
        "select": {"folds": 2, "bootstrap": 1000},
        "shard_size": 50,
    }
    (work / "profile.yaml").write_text(yaml.safe_dump(cfg))
    if args.executor == "ray":
        compare_ray(load_config(work / "profile.yaml"), out, args.num_actors, args.prompts, args.n_pool)
        if not args.out:
            shutil.rmtree(work)
        return
    policy, prm = TimedEngine(SimulatedPolicy()), TimedEngine(SimulatedPRM())
    t0 = time.perf_counter()
    summary = run_profile(load_config(work / "profile.yaml"), out, policy=policy, prm=prm, progress=True)
    wall = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    backend = policy.seconds + prm.seconds
    own = wall - backend
    print(summary.render())
    print(f"\n{args.prompts} prompts, N_pool={args.n_pool}, {len(budgets)} best-of-N budgets, "
          f"beam/DVTS at N=4..64, M=4, 4 aggregations")
    print(f"wall time {wall:.1f} s ({wall / 60:.1f} min; target < 10 min), peak RSS {peak_gib:.2f} GiB (target < 4 GiB)")
    print(f"simulated backends {backend:.1f} s; the profiler's own work {own:.1f} s "
          f"({own / wall:.0%} of wall time with the near-free simulator)")
    tokens = sum(summary.ledger[k]["policy_tokens"] for k in summary.ledger)
    rate = args.model_tokens_per_second or measure_model_throughput()
    if rate:
        model_seconds = tokens / rate
        print(f"projected with the real CPU model ({rate:.0f} policy tokens/s measured): backend "
              f"{model_seconds / 3600:.1f} h for {tokens:.3g} policy tokens; the profiler's own share "
              f"{own / (own + model_seconds):.2%} (target < 10%)")
    else:
        print("real CPU model not installed: no projection of its share (pass --model-tokens-per-second)")
    if not args.out:
        shutil.rmtree(work)


def compare_ray(cfg, out: Path, num_actors: int, prompts: int, n_pool: int) -> None:
    """One process vs Ray (1 actor, then ``num_actors``) on the same config and simulated work."""
    import os

    import pandas as pd
    import ray

    from selector.profiler import RayExecutor
    from selector.profiler.config import ExecutorConfig
    from selector.tables import TableDir

    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter() - t0
    runs = {}
    for name, executor in [
        ("one process", None),
        ("ray, 1 actor", RayExecutor(ExecutorConfig(kind="ray", num_actors=1))),
        (f"ray, {num_actors} actors", RayExecutor(ExecutorConfig(kind="ray", num_actors=num_actors))),
    ]:
        t0 = time.perf_counter()
        summary = run_profile(cfg, out / name.replace(" ", "").replace(",", "-"), progress=False, executor=executor)
        runs[name] = (summary.executor.seconds, time.perf_counter() - t0, summary, summary.executor.cpu_seconds)
        print(f"{name:<16} pool + tree shards {runs[name][0]:7.1f} s wall, {runs[name][3]:7.1f} CPU s   "
              f"whole profile {runs[name][1]:7.1f} s   load average {os.getloadavg()[0]:.1f}", flush=True)
    ray.shutdown()
    base = runs["one process"]
    one = runs["ray, 1 actor"]
    many = runs[f"ray, {num_actors} actors"]
    print(f"\n{prompts} prompts, N_pool={n_pool}, {cpus} CPUs; Ray cluster start {start:.1f} s (once, not counted below)")
    print(f"Ray overhead, 1 actor vs one process: shards {one[0] / base[0] - 1:+.1%}, whole profile "
          f"{one[1] / base[1] - 1:+.1%} (target < 15%); in CPU seconds (driver + actors, what contention "
          f"from other processes leaves alone) {one[3] / base[3] - 1:+.1%}")
    print(f"{num_actors} actors vs one process: shards x{base[0] / many[0]:.2f} faster, whole profile x{base[1] / many[1]:.2f}")
    for kind in ("prompts", "evaluations", "results", "selection"):
        want = getattr(TableDir(base[2].out_dir), kind)()
        for name in list(runs)[1:]:
            pd.testing.assert_frame_equal(getattr(TableDir(runs[name][2].out_dir), kind)(), want)
    print("tables equal across the three runs")


if __name__ == "__main__":
    main()
