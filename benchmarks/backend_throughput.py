"""Throughput of best-of-N and beam search at equal N, per policy backend (issue 6).

For each backend, the same questions are solved by ``best_of_n`` (N whole solutions) and by
``beam_search`` (N generations per round, beam width M), in one batched run each after a
warm-up. Printed per backend and strategy: generated tokens per second, wall seconds,
generations, generated and prompt tokens; and the beam/best-of-N ratio of wall time (the
issue's target on vLLM: under 2) and of seconds per generated token (which discounts the two
strategies producing solutions of different lengths).

Backends:

- ``transformers``: our in-process KV-cache loop (embedded SmolLM2, or ``--random-models``).
- ``vllm-serve``: a local ``vllm serve`` of the same weights (vLLM's environment, see
  scripts/install_vllm_cpu.sh) through the ``openai`` backend.
- ``vllm-offline``: the offline ``vllm`` backend, run in vLLM's environment as a worker
  subprocess of this script (``--worker``), which prints its figures as JSON.

    python benchmarks/backend_throughput.py                       # every backend available here
    python benchmarks/backend_throughput.py --backends transformers --random-models 0.5b --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selector.backends.registry import make_policy, make_prm  # noqa: E402
from selector.datasets import load_dataset  # noqa: E402
from selector.search import make_strategy  # noqa: E402
from selector.search.runner import run_search  # noqa: E402

PRESET = "smollm2-135m"


def questions(count: int) -> list[str]:
    problems, _ = load_dataset("arithmetic", size=count, seed=7)
    return [p.problem for p in problems]


def measure(policy, prm, qs: list[str], n: int, m: int, max_steps: int, seed: int) -> dict:
    """Wall time and tokens of one batched run per strategy (after a small warm-up)."""
    sampling = policy.default_sampling_params()
    run_search([(qs[0], make_strategy("best_of_n", n=2))], policy, prm, sampling=sampling, seed=seed + 1)
    out = {}
    for strategy in (make_strategy("best_of_n", n=n), make_strategy("beam_search", n=n, m=m, max_steps=max_steps)):
        t0 = time.perf_counter()
        results = run_search([(q, strategy) for q in qs], policy, prm, sampling=sampling, seed=seed)
        wall = time.perf_counter() - t0
        gen = sum(r.cost.policy_generated_tokens for r in results)
        out[strategy.name] = {
            "wall_s": wall, "generated_tokens": gen, "prompt_tokens": sum(r.cost.policy_prompt_tokens for r in results),
            "generations": sum(r.cost.generations for r in results), "tokens_per_s": gen / wall,
            "rounds": max(len(r.rounds) for r in results),
        }
    bon, beam = out["best_of_n"], out["beam_search"]
    out["ratio_wall"] = beam["wall_s"] / bon["wall_s"]
    out["ratio_per_token"] = (beam["wall_s"] / beam["generated_tokens"]) / (bon["wall_s"] / bon["generated_tokens"])
    return out


def _models(args) -> dict | None:
    if not args.random_models:
        return None
    from random_models import build_models

    root = Path(tempfile.mkdtemp(prefix="tts-random-models-"))
    return build_models(root, size=args.random_models, prm_size=args.random_prm)


def transformers_engines(args, models):
    from selector.backends.hf_prm import HFPRM
    from selector.backends.transformers import TransformersPolicy

    if models is None:
        return make_policy(PRESET), make_prm("arith-check"), f"{PRESET} + arith-check"
    policy = TransformersPolicy(
        str(models["policy"]), device=args.device, dtype=args.dtype, step_delimiter="\n",
        sampling={"max_step_tokens": 32, "max_tokens": 32 * args.max_steps}, max_batch_size=args.batch_size,
    )
    prm = HFPRM(str(models["prm"]), "qwen25-math-prm", device=args.device, dtype=args.dtype, max_batch_size=args.batch_size)
    return policy, prm, f"random Llama {args.random_models} + random qwen25-math-prm {args.random_prm} on {args.device}"


def run_vllm_serve(args, qs):
    from selector.backends.vllm_launch import CPU_GENERATION_SETTINGS, VLLMServer, serve_flags

    model_dir = make_policy(PRESET).ensure_gguf_cache()
    with VLLMServer(model_dir, served_model_name="smollm2", args=[*serve_flags(CPU_GENERATION_SETTINGS), "--seed", "0"]) as server:
        print(f"vllm serve up in {server.startup_seconds:.0f} s at {server.base_url}", file=sys.stderr)
        policy = make_policy(f"openai:model=smollm2,base_urls=[{server.base_url}],preset={PRESET},max_concurrency=64")
        return measure(policy, make_prm("arith-check"), qs, args.n, args.m, args.max_steps, args.seed)


def run_vllm_offline(args, qs):
    """This script again, in vLLM's environment, as a worker that prints JSON."""
    from selector.backends.vllm_launch import cpu_env, find_vllm_python, vllm_unavailable_reason

    python = find_vllm_python()
    reason = vllm_unavailable_reason(python)
    if reason:
        raise RuntimeError(reason)
    cmd = [str(python), __file__, "--worker", "vllm-offline", "--questions", str(len(qs)), "--n", str(args.n),
           "--m", str(args.m), "--max-steps", str(args.max_steps), "--seed", str(args.seed)]
    env = cpu_env()
    env["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"  # stdout carries the worker's JSON
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"vllm-offline worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker(args) -> None:
    qs = questions(args.questions)
    from selector.backends.vllm_launch import CPU_GENERATION_SETTINGS, spec_args

    policy = make_policy(f"vllm:preset={PRESET},{spec_args(CPU_GENERATION_SETTINGS)}")
    print(json.dumps(measure(policy, make_prm("arith-check"), qs, args.n, args.m, args.max_steps, args.seed)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["transformers", "vllm-serve", "vllm-offline"],
                        choices=["transformers", "vllm-serve", "vllm-offline"])
    parser.add_argument("--questions", type=int, default=16, help="arithmetic questions per run")
    parser.add_argument("--n", type=int, default=8, help="budget N (generations per round)")
    parser.add_argument("--m", type=int, default=4, help="beam width M")
    parser.add_argument("--max-steps", dest="max_steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-models", default=None, help="transformers only: random-weight policy of this size "
                        "(tiny, 0.1b, 0.5b, 1.5b) and a random qwen25-math-prm PRM, for machines with no weights")
    parser.add_argument("--random-prm", default="0.1b", help="size of the random PRM (with --random-models)")
    parser.add_argument("--device", default="cpu", help="transformers device (e.g. cuda)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=64, help="transformers max rows per forward")
    parser.add_argument("--json-out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    qs = questions(args.questions)
    report = {"machine": f"{os.cpu_count()} CPU cores", "questions": len(qs), "n": args.n, "m": args.m, "backends": {}}
    for backend in args.backends:
        t0 = time.perf_counter()
        try:
            if backend == "transformers":
                policy, prm, what = transformers_engines(args, _models(args))
                figures = measure(policy, prm, qs, args.n, args.m, args.max_steps, args.seed)
                figures["engines"] = what
            elif backend == "vllm-serve":
                figures = run_vllm_serve(args, qs)
            else:
                figures = run_vllm_offline(args, qs)
        except Exception as exc:  # one backend missing must not hide the others' figures
            print(f"{backend}: skipped: {exc}", file=sys.stderr)
            report["backends"][backend] = {"skipped": str(exc)}
            continue
        figures["total_s"] = time.perf_counter() - t0
        report["backends"][backend] = figures

    print(f"\n{len(qs)} questions, N={args.n}, M={args.m} (beam_search max {args.max_steps} steps), {report['machine']}")
    print(f"{'backend':<14}{'strategy':<13}{'gen tok/s':>10}{'wall s':>9}{'gens':>7}{'gen tok':>9}{'prompt tok':>11}")
    for backend, f in report["backends"].items():
        if "skipped" in f:
            print(f"{backend:<14}skipped: {f['skipped'][:90]}")
            continue
        for name in ("best_of_n", "beam_search"):
            s = f[name]
            print(f"{backend:<14}{name:<13}{s['tokens_per_s']:>10.1f}{s['wall_s']:>9.2f}{s['generations']:>7}"
                  f"{s['generated_tokens']:>9}{s['prompt_tokens']:>11}")
        print(f"{backend:<14}beam/best-of-N: wall {f['ratio_wall']:.2f}x, per generated token {f['ratio_per_token']:.2f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
