"""A small pool of worker processes that run sympy/math-verify work under a hard deadline.

sympy can spend hours in C code (big-integer powers, factorials) that holds the GIL and ignores
signals, and ``signal.alarm`` only works in the main thread anyway. So the grader sends that
work to worker processes: a call that does not answer within its deadline has its worker
killed and replaced, and the caller gets a sentinel it turns into a fallback. The pool works
the same from every thread of the parent.

- Workers are forked from the parent after it has imported math-verify and sympy
  (``preload``), so a replacement is ready in milliseconds, with no re-import of the parent's
  ``__main__`` (spawn and forkserver would run it again). A worker closes every inherited file
  descriptor but its pipe and only ever runs the grading functions, so the parent's other
  threads and sockets do not matter to it; a worker that still got stuck is killed at its
  deadline like any other.
- :meth:`GraderPool.run` sends a whole batch in one message; the worker answers item by item,
  and each item has its own deadline (``timeout_s`` seconds, also covering the wait for a free
  worker). After a timeout the rest of the batch goes to a fresh worker.
- A worker's address space may grow by at most :data:`WORKER_MEMORY_BYTES` beyond what it
  inherited, so a huge number fails with ``MemoryError`` instead of swapping the machine.
  Workers ignore Ctrl-C (the parent's interrupt ends them with the parent).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence

#: Default seconds one item may take (including the wait for a free worker).
DEFAULT_TIMEOUT_S = 5.0
#: Seconds a new worker may take to start (the first one also starts the forkserver, which
#: imports math-verify and sympy); not part of any item's deadline.
STARTUP_TIMEOUT_S = 60.0
#: How far a worker's address space may grow beyond the size it was forked with (bytes).
WORKER_MEMORY_BYTES = 4 << 30

TIMEOUT = "timeout"  # result status: the item ran past its deadline (worker killed)
CRASHED = "crashed"  # the worker died or could not start
FAILED = "error"  # the item raised in the worker (the worker lives on)
OK = "ok"


def _serve(conn: Any, ops_module: str, memory: int) -> None:
    """Worker loop: receive ``(op, items)``, send ``(status, value)`` per item, forever."""
    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        # Relative to what the fork inherited: a parent holding a model (or a CUDA context's
        # reserved ranges) may already exceed any fixed cap.
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (current + memory, resource.RLIM_INFINITY))
    except (ImportError, ValueError, OSError):  # pragma: no cover - no /proc or no rlimits
        pass
    import importlib

    ops: dict[str, Callable] = importlib.import_module(ops_module).WORKER_OPS
    conn.send((OK, "ready"))
    while True:
        try:
            op, items = conn.recv()
        except (EOFError, OSError):
            return
        fn = ops[op]
        for args in items:
            try:
                out = (OK, fn(*args))
            except BaseException as e:  # noqa: BLE001 - any failure is one item's result
                out = (FAILED, f"{type(e).__name__}: {str(e)[:200]}")
            conn.send(out)


class _Worker:
    def __init__(self, ctx: Any, ops_module: str) -> None:
        parent, child = ctx.Pipe()
        self.conn = parent
        self.proc = ctx.Process(target=_serve, args=(child, ops_module, WORKER_MEMORY_BYTES), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(STARTUP_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"grader worker did not start within {STARTUP_TIMEOUT_S:g}s")
        self.conn.recv()

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(1.0)
        except Exception:  # noqa: BLE001 - best effort
            pass
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


class GraderPool:
    """Up to ``size`` worker processes running the functions in ``ops_module.WORKER_OPS``."""

    def __init__(self, ops_module: str, size: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.ops_module = ops_module
        self.size = max(1, int(size or min(4, os.cpu_count() or 1)))
        self.timeout_s = float(timeout_s)
        self._idle: list[_Worker] = []
        self._count = 0  # workers alive (idle or busy) or starting
        self._cond = threading.Condition()
        self._ctx = None
        self.timeouts = 0  # items that timed out or crashed their worker
        self.broken: str | None = None  # why workers cannot be started, once that happened

    def _context(self) -> Any:
        if self._ctx is None:
            import importlib

            ops = importlib.import_module(self.ops_module)
            for name in getattr(ops, "WORKER_PRELOAD", ()):
                importlib.import_module(name)  # imported once here, inherited by every fork
            methods = multiprocessing.get_all_start_methods()
            self._ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        return self._ctx

    def _acquire(self, deadline: float) -> _Worker | None:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._count < self.size:
                    self._count += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if not self._idle:
                        return None
        try:
            worker = _Worker(self._context(), self.ops_module)
            self.broken = None
            return worker
        except Exception as e:  # noqa: BLE001 - no workers: callers fall back
            with self._cond:
                self._count -= 1
                self.broken = f"{type(e).__name__}: {e}"
                self._cond.notify()
            return None

    def _release(self, worker: _Worker | None) -> None:
        with self._cond:
            if worker is not None:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def run(self, op: str, items: Sequence[tuple], timeout_s: float | None = None) -> list[tuple[str, Any]]:
        """``(status, value)`` for ``WORKER_OPS[op](*item)`` of each item, in order.

        ``status`` is :data:`OK`, :data:`FAILED` (the call raised; value is the message),
        :data:`TIMEOUT` (ran past ``timeout_s`` seconds; its worker was killed and replaced) or
        :data:`CRASHED` (the worker died, or none could be started). Never raises.
        """
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        out: list[tuple[str, Any]] = []
        i = 0
        while i < len(items):
            worker = self._acquire(time.monotonic() + timeout)
            if worker is None:
                # No free worker within the deadline (all stuck) or none can start.
                out.append((CRASHED if self.broken else TIMEOUT, None))
                self._count_timeout()
                i += 1
                continue
            alive = True
            try:
                worker.conn.send((op, list(items[i:])))
                while i < len(items):
                    if not worker.conn.poll(timeout):
                        out.append((TIMEOUT, None))
                        alive = False
                        break
                    out.append(worker.conn.recv())
                    i += 1
            except (EOFError, OSError, ValueError):
                out.append((CRASHED, None))
                alive = False
            finally:
                if not alive:
                    i += 1
                    self._count_timeout()
                    worker.kill()
                self._release(worker if alive else None)
        return out

    def _count_timeout(self) -> None:
        with self._cond:
            self.timeouts += 1

    def close(self) -> None:
        """Stop every idle worker (busy ones stop when their call returns or times out)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.kill()
