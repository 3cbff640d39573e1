"""Dynamic batching: requests arriving within a short window are solved together.

Each request becomes a :class:`Job`. The batcher waits up to ``window_s`` after the first job
of a batch (or until ``max_batch`` jobs), then hands the whole batch to ``solve`` in ONE
worker thread: engines are not thread-safe, so exactly one batch runs at a time, and jobs
arriving meanwhile form the next batch. A job's result must not depend on its batch: the
router derives every seed from the request's seed and text, never from batch position. So when
a batch's solve raises, each of its jobs is solved again alone: the job that broke it gets the
error, the others their normal results (a stranger's bad request never fails yours).
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class Job:
    """One question to solve: its budget (None: the server's), forced decision (None: route) and
    seed (jobs with one seed share a search). Times are ``perf_counter`` seconds."""

    question: str
    budget: int | None
    forced: Any  # the router's Decision for a forced strategy (Router.force), or None to route
    seed: int
    future: asyncio.Future = field(repr=False, default=None)  # type: ignore[assignment]
    enqueued: float = 0.0
    started: float = 0.0
    batch_size: int = 0
    search_seconds: float = 0.0


class DynamicBatcher:
    """Gathers jobs for ``window_s`` seconds (at most ``max_batch``) and runs
    ``solve(jobs) -> results`` (one result, or an exception instance, per job) on one worker thread."""

    def __init__(self, solve: Callable[[Sequence[Job]], list[Any]], *, window_s: float = 0.005, max_batch: int = 64,
                 on_batch: Callable[[int, float], None] | None = None):
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"batch window must be >= 0 s and max batch >= 1, got {window_s} and {max_batch}")
        self._solve = solve
        self._on_batch = on_batch  # called with (jobs, seconds) after each batched search
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-batch")
        self.batches = 0
        self.search_seconds = 0.0  # wall seconds spent in batched searches, all batches
        self.search_cpu_seconds = 0.0  # CPU seconds of the worker thread in them (for overhead figures)
        self.in_flight = 0  # jobs submitted and not yet answered

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish the jobs already queued, then stop the loop and the worker thread."""
        if self._task is not None:
            while self._queue is not None and not self._queue.empty():
                await asyncio.sleep(self.window_s or 0.001)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, job: Job) -> Any:
        """Queue ``job`` and wait for its result (raises the job's exception)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        job.future = asyncio.get_running_loop().create_future()
        job.enqueued = time.perf_counter()
        self.in_flight += 1
        try:
            await self._queue.put(job)
            return await job.future
        finally:
            self.in_flight -= 1

    async def _gather(self) -> list[Job]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())  # already waiting: no need to wait the window
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    def _timed_solve(self, batch: list[Job]) -> tuple[list[Any], float]:
        t0 = time.thread_time()
        return self._solve(batch), time.thread_time() - t0

    def _solve_each(self, batch: list[Job]) -> tuple[list[Any], float]:
        """Each job of a failed batch alone: its result, or the exception its own solve raised."""
        t0, results = time.thread_time(), []
        for job in batch:
            if job.future.done():  # timed out meanwhile: no one waits for it
                results.append(None)
                continue
            try:
                results.append(self._solve([job])[0])
            except Exception as exc:
                results.append(exc)
        return results, time.thread_time() - t0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [job for job in await self._gather() if not job.future.done()]  # skip timed-out jobs
            if not batch:
                continue
            t0 = time.perf_counter()
            for job in batch:
                job.started, job.batch_size = t0, len(batch)
            try:
                results, cpu = await loop.run_in_executor(self._executor, self._timed_solve, batch)
                self.search_cpu_seconds += cpu
            except Exception as exc:  # never the whole batch: retry each job alone; the loop keeps serving
                if len(batch) == 1:
                    results = [exc]
                else:
                    results, cpu = await loop.run_in_executor(self._executor, self._solve_each, batch)
                    self.search_cpu_seconds += cpu
            seconds = time.perf_counter() - t0
            self.batches += 1
            self.search_seconds += seconds
            if self._on_batch is not None:
                self._on_batch(len(batch), seconds)
            for job, result in zip(batch, results):
                job.search_seconds = seconds
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
