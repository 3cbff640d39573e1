"""Load test of `tts-selector serve` on the simulator engines.

Starts the gateway in a subprocess (`python -m selector.cli serve`, loopback, a free port) on a
simulator table (profiled from configs/sim-small.yaml into a temporary directory unless
--tables is given), then N concurrent clients (asyncio + httpx, one connection each) send a
fixed number of chat completions. Prints throughput, p50/p99 latency, and per request:

- search: the batched search that answered it (``tts.timing.search_seconds``),
- batch wait: time queued for the batch window and for the batch before it,
- gateway overhead = total - search - batch wait: HTTP on both ends, JSON, validation,
  routing bookkeeping and building the response (``total - search`` is printed too),
- server-side gateway time (``tts.timing.gateway_seconds``: the server's own share of it),
- the HTTP floor: GET /health round trips from one client and from N (no search, no
  batching): what the HTTP stack alone costs on this machine at this concurrency,
- gateway CPU per request: the server process's CPU seconds minus the CPU seconds of its
  batched searches (the worker thread's), over the requests: what each request costs the
  gateway, free of queueing and of other processes on the machine.

Targets (issue 17): p50 gateway overhead under 2 ms; 500 requests from 64 concurrent clients
with none lost or failed. The clients share the machine with the server: on a loaded machine
the figures include their contention.

    python benchmarks/serve_load.py [--clients 64] [--requests 500] [--window-ms 5] [--tables DIR]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def sim_table(out: Path) -> Path:
    from selector.estimators.train import train_on_table
    from selector.profiler import load_config, run_profile

    run_profile(load_config(ROOT / "configs" / "sim-small.yaml"), out, progress=False)
    train_on_table(out, features="tfidf", folds=3)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become healthy")


async def load(url: str, questions: list[str], clients: int, requests: int) -> tuple[list[dict], list[str], float]:
    """Send ``requests`` chat completions from ``clients`` concurrent clients; (rows, failures, seconds)."""
    rows: list[dict] = []
    failures: list[str] = []
    counter = iter(range(requests))

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=1)) as http:
            for i in counter:
                body = {"model": "sim", "messages": [{"role": "user", "content": questions[i % len(questions)]}]}
                t0 = time.perf_counter()
                try:
                    resp = await http.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"request {i}: {type(exc).__name__}: {exc}")
                    continue
                total = time.perf_counter() - t0
                if resp.status_code != 200:
                    failures.append(f"request {i}: HTTP {resp.status_code}: {resp.text[:200]}")
                    continue
                timing = resp.json()["tts"]["timing"]
                rows.append({"total": total, **timing})

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return rows, failures, time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def health_floor(url: str, clients: int, n: int = 20) -> tuple[np.ndarray, float]:
    """Round trips of GET /health from ``clients`` concurrent clients, ``n`` each: the HTTP floor at
    this concurrency (client + server, no work); (latencies, requests per second)."""
    out: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
            for _ in range(n):
                t0 = time.perf_counter()
                (await http.get("/health")).raise_for_status()
                out.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return np.array(out), len(out) / (time.perf_counter() - t0)


def ms(values, q) -> str:
    return f"{np.percentile(values, q) * 1e3:7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--window-ms", type=float, default=5.0, help="the server's --batch-window-ms")
    ap.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    ap.add_argument("--budget", type=int, default=None, help="the server's --budget (default: the table's largest)")
    ap.add_argument("--engine-latency", type=float, default=0.0,
                    help="seconds the simulated policy sleeps per batched call (an engine's fixed per-call cost; "
                         "0: the simulator's CPU work only, which grows with the batch as a real engine's does not)")
    ap.add_argument("--tables", default=None, help="a simulator table (default: profile configs/sim-small.yaml)")
    args = ap.parse_args()

    from selector.backends.simulated import make_questions

    tmp = tempfile.TemporaryDirectory()
    table = Path(args.tables) if args.tables else sim_table(Path(tmp.name) / "table")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "selector.cli", "serve", "--tables", str(table), "--port", str(port),
           "--batch-window-ms", str(args.window_ms), "--max-batch", str(args.max_batch)]
    if args.budget is not None:
        cmd += ["--budget", str(args.budget)]
    if args.engine_latency:
        cmd += ["--policy", f"sim:latency={args.engine_latency}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(url, proc)
        rng = np.random.default_rng(0)
        questions = make_questions(list(rng.uniform(0.05, 0.95, 200)), prefix="load")
        asyncio.run(load(url, questions[:8], min(args.clients, 8), 16))  # warm-up
        floor1, _ = asyncio.run(health_floor(url, 1, 200))
        floor, floor_rate = asyncio.run(health_floor(url, args.clients))
        h0, cpu0 = httpx.get(f"{url}/health").json(), cpu_seconds(proc.pid)
        rows, failures, seconds = asyncio.run(load(url, questions, args.clients, args.requests))
        h1, cpu1 = httpx.get(f"{url}/health").json(), cpu_seconds(proc.pid)
        batches = h1["batches"] - h0["batches"]
        gateway_cpu = (cpu1 - cpu0 - (h1["search_cpu_seconds"] - h0["search_cpu_seconds"])) / max(len(rows), 1)
    finally:
        proc.terminate()
        proc.wait(30)
    total = np.array([r["total"] for r in rows])
    search = np.array([r["search_seconds"] for r in rows])
    wait = np.array([r["queued_seconds"] for r in rows])
    own = np.array([r["gateway_seconds"] for r in rows])
    sizes = np.array([r["batch_size"] for r in rows])
    print(f"serve_load: {args.requests} requests from {args.clients} concurrent clients, window {args.window_ms:g} ms, "
          f"simulator engines{f' (+{args.engine_latency:g} s per policy call)' if args.engine_latency else ''} "
          f"(CPU cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}: a shared machine inflates every figure)")
    print(f"  answered {len(rows)}, failed {len(failures)}, lost {args.requests - len(rows) - len(failures)}")
    for f in failures[:5]:
        print(f"    {f}")
    if not rows:
        return
    print(f"  throughput         {len(rows) / seconds:8.1f} requests/s ({seconds:.2f} s)")
    print(f"  batches            {batches} (mean {len(rows) / max(batches, 1):.1f} requests per batched search; "
          f"a request's batch p50 {np.median(sizes):.0f})")
    print(f"  latency            p50 {ms(total, 50)}   p99 {ms(total, 99)}")
    print(f"  search             p50 {ms(search, 50)}   p99 {ms(search, 99)}")
    print(f"  batch wait         p50 {ms(wait, 50)}   p99 {ms(wait, 99)}   (window + the batch before)")
    print(f"  total - search     p50 {ms(total - search, 50)}   p99 {ms(total - search, 99)}")
    over = total - search - wait
    print(f"  gateway overhead   p50 {ms(over, 50)}   p99 {ms(over, 99)}   (total - search - batch wait; target p50 < 2 ms)")
    print(f"  server's own share p50 {ms(own, 50)}   p99 {ms(own, 99)}   (parse, validate, build the response)")
    handler = np.array([r["handler_seconds"] for r in rows])
    print(f"  outside handler    p50 {ms(total - handler, 50)}   p99 {ms(total - handler, 99)}   "
          "(HTTP, uvicorn, the client: total - the server's handler time)")
    print(f"  HTTP floor         p50 {ms(floor1, 50)}   p99 {ms(floor1, 99)}   (GET /health round trip, one client)")
    print(f"  HTTP floor, N      p50 {ms(floor, 50)}   p99 {ms(floor, 99)}   ({args.clients} clients: {floor_rate:.0f} GET /health per s)")
    print(f"  gateway CPU        {gateway_cpu * 1e3:7.2f} ms per request (server CPU - search CPU, / requests)")


if __name__ == "__main__":
    main()
