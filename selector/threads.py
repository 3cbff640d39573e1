"""CPU thread settings that hold up when other processes share the cores.

Torch's OpenMP threads spin-wait for each other between parallel regions; when another
process holds a core, a spinning thread burns the time slice its partner needs, and a
routed solve measured 20x slower beside one CPU-bound job (4.8 s with one thread). So, before
torch is first imported:

* OpenMP threads yield instead of spin: ``OMP_WAIT_POLICY=PASSIVE`` (libgomp then spins 0
  times; ``KMP_BLOCKTIME=0`` does the same for Intel's runtime), each only if the user did not
  set it;
* torch's intra-op threads = the cores this process may run on (``os.sched_getaffinity``, not
  the machine's count: a container or ``taskset`` gives fewer).

Override the count with ``--threads N`` on the CLI or ``TTS_SELECTOR_THREADS=N``;
``OMP_NUM_THREADS`` is honoured when set. :func:`configure_threads` is called by the modules
that first import torch (the transformers backends, the MiniLM embedder) and by the CLI.
"""
from __future__ import annotations

import os
import sys

ENV_VAR = "TTS_SELECTOR_THREADS"

# Yield, do not spin (read by the OpenMP runtime once, when torch loads it).
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}

_configured: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _positive_int(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from .errors import InputError

        raise InputError(f"{where} must be a positive number of threads, got {text!r}")
    return value


def choose_threads(threads: int | None = None) -> int:
    """The intra-op thread count: ``threads``, else ``$TTS_SELECTOR_THREADS``, else
    ``$OMP_NUM_THREADS``, else :func:`available_cores`."""
    if threads is not None:
        return _positive_int(str(threads), "--threads")
    if os.environ.get(ENV_VAR):
        return _positive_int(os.environ[ENV_VAR], ENV_VAR)
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return available_cores()


def configure_threads(threads: int | None = None) -> int:
    """Apply the settings above; returns the thread count. Idempotent: later calls without
    ``threads`` keep the first choice. Effective for the wait policy only if called before
    torch is imported; the thread count is applied to torch whenever it is loaded."""
    global _configured
    if threads is None and _configured is not None:
        return _configured
    n = choose_threads(threads)
    for key, value in PASSIVE_ENV.items():
        os.environ.setdefault(key, value)
    # Read by torch (and by libraries it loads) when it initialises its pools.
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    _configured = n
    return n
