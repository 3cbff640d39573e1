"""The CPU default beside a CPU-bound competitor: slowdown with the new thread settings and the old.

Two jobs on the embedded CPU default (SmolLM2-135M + arith-check), each in a fresh process so
the thread settings apply before torch initialises:

* ``routed``: the README's routed solve (``Router.load(tables/smollm2-135m__arith-check__arithmetic)
  .solve("What is 17 + 25?", budget=8)``);
* ``bo8``: a best-of-8 batch (``solve_batch(questions, BestOfN(n=8))``).

Each job runs alone, then beside a competitor: a second process repeating the same job with the
same settings (two users of the tool on one machine). Settings:

* ``new``: the package defaults (``selector/threads.py``: ``OMP_WAIT_POLICY=PASSIVE``, torch
  threads = the cores of the process's affinity);
* ``old``: torch's defaults as before (torch imported before the package, so the OpenMP
  runtime starts with its default spin-wait, about 3 ms in libgomp; torch's own default count);
* ``brief`` (not run by default, ``--modes new old brief``): the package's settings with a short
  spin before yielding (``GOMP_SPINCOUNT=10000``, about 0.1 ms), the candidate should passive
  waiting cost speed on a quiet machine.

Printed per (settings, job): seconds alone, seconds beside the competitor (medians over
``--repeats``; engine loading excluded: the worker loads first, then times the job) and the
slowdown ratio (a fair share of 2 cores between 2 processes is 2x), and new vs old alone (the
quiet-machine speed). The worker processes get a clean environment: OMP_NUM_THREADS,
MKL_NUM_THREADS, OMP_WAIT_POLICY and TTS_SELECTOR_THREADS are removed (``--threads N`` sets the
new settings' count instead).

    python benchmarks/contention.py                # about 3-5 minutes on a quiet 2-core machine
    python benchmarks/contention.py --quick        # a reduced run that checks the script works
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"
QUESTIONS = ["What is 17 + 25?", "What is 9 * 26?", "What is 144 / 12 - 5?", "What is 3 + 4 * 5?",
             "What is 81 - 47?", "What is 6 * 7 + 8?", "What is 250 / 5?", "What is 19 + 23 + 11?"]
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT",
           "TTS_SELECTOR_THREADS")


# -- worker (a fresh process per run) --------------------------------------------------------
def worker(job: str, mode: str, questions: int, loop: bool) -> None:
    wait_policy = "default"
    if mode == "old":
        import torch  # before the package: OpenMP starts with its default (spinning) wait policy

        os.environ["TTS_SELECTOR_THREADS"] = str(torch.get_num_threads())  # and torch's default count
    sys.path.insert(0, str(ROOT))
    from selector import BestOfN, solve_batch
    from selector.api import resolve_engines
    from selector.routing import Router

    if job == "routed":
        router = Router.load(TABLE)
        router.policy, router.prm  # load the engines now: the timing is the job's

        def run() -> None:
            router.solve(QUESTIONS[0], budget=8)
    else:
        resolve_engines("smollm2-135m", "arith-check")

        def run() -> None:
            solve_batch(QUESTIONS[:questions], BestOfN(n=8))

    import torch

    if mode != "old":
        wait_policy = os.environ.get("OMP_WAIT_POLICY") + (" spin 1e4" if mode == "brief" else "")  # as the package set it before torch loaded
    print(json.dumps({"loaded": True, "threads": torch.get_num_threads(), "wait_policy": wait_policy}), flush=True)
    while True:
        t0 = time.perf_counter()
        run()
        print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)
        if not loop:
            return


# -- driver ------------------------------------------------------------------------------------
def _env(mode: str, threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    if mode != "old" and threads is not None:
        env["TTS_SELECTOR_THREADS"] = str(threads)
    if mode == "brief":
        env["GOMP_SPINCOUNT"] = "10000"  # an explicit spin count wins over the passive wait policy
    return env


def _start(job: str, mode: str, args: argparse.Namespace, loop: bool) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, __file__, "--worker", job, "--mode", mode, "--questions", str(args.questions)]
    proc = subprocess.Popen(cmd + (["--loop"] if loop else []), env=_env(mode, args.threads), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"worker {job}/{mode} failed (exit {proc.returncode}); run it alone: {' '.join(cmd)}")
    return proc, json.loads(line)


def _time_once(job: str, mode: str, args: argparse.Namespace) -> tuple[float, dict]:
    """The job's seconds in a fresh worker; ``inf`` when it ran past ``--timeout``."""
    proc, info = _start(job, mode, args, loop=False)
    try:
        out, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, by its pid
        proc.communicate()
        return math.inf, info
    if proc.returncode != 0:
        raise RuntimeError(f"worker {job}/{mode} exited {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])["seconds"], info


def measure(job: str, mode: str, args: argparse.Namespace) -> dict:
    alone = [_time_once(job, mode, args) for _ in range(args.repeats)]
    if math.isinf(statistics.median(s for s, _ in alone)):
        return {"job": job, "mode": mode, "threads": alone[0][1]["threads"], "wait_policy": alone[0][1]["wait_policy"],
                "alone_s": math.inf, "beside_s": math.inf, "slowdown": math.nan}
    competitor, _ = _start(job, mode, args, loop=True)
    try:
        # _start returned once the competitor had loaded its engines: it is computing now.
        beside = [_time_once(job, mode, args)[0] for _ in range(args.repeats)]
    finally:
        competitor.terminate()  # our own child, by its pid
        competitor.wait()
    a, b = statistics.median(s for s, _ in alone), statistics.median(beside)
    return {"job": job, "mode": mode, "threads": alone[0][1]["threads"], "wait_policy": alone[0][1]["wait_policy"],
            "alone_s": a, "beside_s": b, "slowdown": b / a}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["routed", "bo8"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["new", "old", "brief"], default="new", help=argparse.SUPPRESS)
    parser.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--questions", type=int, default=4, help="questions in the best-of-8 batch (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the median is printed (default 2)")
    parser.add_argument("--jobs", nargs="+", default=["routed", "bo8"], choices=["routed", "bo8"])
    parser.add_argument("--modes", nargs="+", default=["new", "old"], choices=["new", "old", "brief"])
    parser.add_argument("--threads", type=int, default=None, help="the new settings' thread count (default: affinity)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per timed run (default 120)")
    parser.add_argument("--quick", action="store_true", help="reduced: 1 question, 1 repeat, routed and bo8 once each")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.mode, args.questions, args.loop)
        return 0
    if args.quick:
        args.questions, args.repeats = 1, 1
    print(f"cores available: {len(os.sched_getaffinity(0))}; best-of-8 batch of {args.questions} questions; "
          f"medians of {args.repeats}")
    t0 = time.perf_counter()
    print(f"{'settings':<8} {'job':<7} {'threads':>7} {'wait':<16} {'alone s':>8} {'beside s':>9} {'slowdown':>9}", flush=True)
    rows = []
    for mode in args.modes:
        for job in args.jobs:
            r = measure(job, mode, args)
            rows.append(r)
            print(f"{r['mode']:<8} {r['job']:<7} {r['threads']:>7} {str(r['wait_policy']):<16} {r['alone_s']:>8.2f} "
                  f"{r['beside_s']:>9.2f} {r['slowdown']:>8.2f}x", flush=True)
    if any(math.isinf(r["alone_s"]) or math.isinf(r["beside_s"]) for r in rows):
        print(f"inf: a run took longer than --timeout {args.timeout:.0f} s and was stopped")
    by = {(r["mode"], r["job"]): r for r in rows}
    for job in args.jobs:
        if ("new", job) in by and ("old", job) in by:
            print(f"{job}: alone new/old {by['new', job]['alone_s'] / by['old', job]['alone_s']:.2f}; "
                  f"slowdown beside a competitor {by['new', job]['slowdown']:.2f}x (new) vs "
                  f"{by['old', job]['slowdown']:.2f}x (old)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
