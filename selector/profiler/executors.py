"""Where the profile's shards run: this process (``local``) or Ray actors (``ray``).

A shard job is one (stage, shard) pair: a pool shard (N_pool rollouts per prompt) or a tree
shard (beam search / DVTS runs). Both executors compute a job's rows with the same function
(``STAGES[stage].rows``: ``pool.pool_shard_rows`` / ``outcomes.tree_shard_rows``) and write it
with the same ``STAGES[stage].write``, so their
tables are identical. Pool shards are dispatched first, then tree shards.

With Ray, each actor builds the policy and PRM from the config's specs once, then runs shard
after shard; it **returns the rows to the driver, which writes each shard file** (atomically,
once). The output directory therefore only has to exist on the driver's machine, never on a
shared filesystem; what every node needs is the package (``pip install 'tts-selector[ray]'``)
and whatever the engine specs name (model weights, server URLs). A job whose actor dies is
retried by Ray (the actor restarts with its engines, ``max_retries`` times); a shard already
on disk is never dispatched; a driver killed mid-run loses only the shards in flight, and
rerunning the command resumes. Engines passed as objects cannot travel to actors: that is an
:class:`~selector.errors.InputError`.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd

from ..backends.base import PRM, Policy
from ..errors import EngineError, InputError
from .config import ExecutorConfig, ProfileConfig
from .outcomes import tree_checkpoint, tree_configs, tree_shard_rows, write_tree_shard
from .pool import Shard, done_shard_indices, pool_shard_rows, write_pool_shard


@dataclass(frozen=True)
class Stage:
    """How one stage computes a shard's rows (anywhere) and writes them (on the driver)."""

    name: str
    desc: str  # progress bar label
    rows: Callable[[ProfileConfig, Shard, Policy, PRM | None], tuple[pd.DataFrame, dict]]  # rows, time stats
    write: Callable[[Path, int, pd.DataFrame, dict, dict], Path]


STAGES: dict[str, Stage] = {
    "pool": Stage("pool", "pool", pool_shard_rows, write_pool_shard),
    "tree": Stage("tree", "beam search / DVTS", tree_shard_rows, write_tree_shard),
}


@dataclass(frozen=True)
class ShardJob:
    stage: str  # a key of STAGES
    shard: Shard

    @property
    def key(self) -> str:
        return f"{self.stage}-{self.shard.index:05d}"


def pending_jobs(cfg: ProfileConfig, shards: list[Shard], table_dir: Path) -> list[ShardJob]:
    """Every job whose shard file is not on disk yet: pool shards first, then tree shards."""
    done = done_shard_indices(table_dir)
    jobs = [ShardJob("pool", s) for s in shards if s.index not in done]
    if tree_configs(cfg):
        jobs += [ShardJob("tree", s) for s in shards if not tree_checkpoint(table_dir, s.index).exists()]
    return jobs


def stage_bars(cfg: ProfileConfig, shards: list[Shard], jobs: list[ShardJob],
               progress: Callable | None) -> tuple[list[str], dict[str, Any]]:
    """The stages this config runs and one progress bar per stage (shards on disk counted as
    done); no bars without ``progress``."""
    stages = [s for s in STAGES if s == "pool" or tree_configs(cfg)]
    todo = {s: sum(j.stage == s for j in jobs) for s in stages}
    bars = {s: progress(total=len(shards), initial=len(shards) - todo[s], desc=STAGES[s].desc, unit="shard")
            for s in stages} if progress else {}
    return stages, bars


@dataclass(frozen=True)
class EngineInfo:
    """What the driver records about an engine that lives in an actor (table metadata)."""

    id: str
    num_parameters: int


@dataclass
class ExecutorReport:
    """What an executor did: shards computed and written, retried jobs, seconds (wall)."""

    kind: str
    actors: int = 1
    written: int = 0
    skipped: int = 0  # already on disk
    retried: int = 0  # job attempts beyond the first (an actor died under them)
    seconds: float = 0.0
    # CPU seconds of the driver during the run plus, with Ray, of the live actor processes
    # over their lives (Ray's own daemons not included): a figure that contention leaves alone.
    cpu_seconds: float = 0.0

    def render(self) -> str:
        where = f"{self.actors} Ray actor{'s' * (self.actors != 1)}" if self.kind == "ray" else "this process"
        return (f"executor {self.kind}: {self.written} shards computed on {where}, {self.skipped} already on disk, "
                f"{self.retried} retried; {self.seconds:.1f} s")


class Executor(Protocol):
    kind: str

    def engines(self, cfg: ProfileConfig, policy: Policy | None, prm: PRM | None) -> tuple[Any, Any]:
        """The engines' identities for the table metadata (objects with ``id``, ``num_parameters``)."""

    def run(self, cfg: ProfileConfig, shards: list[Shard], table_dir: Path, metadata: dict,
            progress: Callable | None) -> ExecutorReport:
        """Compute and write every shard of ``shards`` not on disk yet."""

    def close(self) -> None:
        """Release what ``engines``/``run`` started (actors, a cluster this executor began)."""


def build_engines(policy_spec: str, prm_spec: str) -> tuple[Policy, PRM | None]:
    """The engines of a config's specs (loaded), as an actor builds them."""
    from ..api import resolve_engines

    return resolve_engines(policy_spec, prm_spec)


class LocalExecutor:
    """Every shard job in this process, one after the other, through the same :data:`STAGES`
    as the Ray executor's actors."""

    kind = "local"

    def __init__(self) -> None:
        self.policy: Policy | None = None
        self.prm: PRM | None = None

    def engines(self, cfg, policy, prm):
        if policy is None or prm is None:
            policy, prm = build_engines(policy or cfg.policy, prm if prm is not None else cfg.prm)
        self.policy, self.prm = policy, prm
        return policy, prm

    def run(self, cfg, shards, table_dir, metadata, progress):
        t0, c0 = time.perf_counter(), time.process_time()
        jobs = pending_jobs(cfg, shards, table_dir)
        stages, bars = stage_bars(cfg, shards, jobs, progress)
        try:
            for job in jobs:
                stage = STAGES[job.stage]
                rows, stats = stage.rows(cfg, job.shard, self.policy, self.prm)
                stage.write(table_dir, job.shard.index, rows, metadata, stats)
                if job.stage in bars:
                    bars[job.stage].update(1)
        finally:
            for bar in bars.values():
                bar.close()
        return ExecutorReport("local", 1, len(jobs), len(shards) * len(stages) - len(jobs), 0,
                              time.perf_counter() - t0, time.process_time() - c0)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------ Ray

def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("the Ray executor needs Ray: pip install 'tts-selector[ray]'") from None
    return ray


class _Attempts:
    """Counts each job's attempts; a Ray actor (num_cpus=0) so counts survive worker deaths."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def started(self, key: str) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def retried(self) -> int:
        return sum(n - 1 for n in self.counts.values())


class _ShardWorker:
    """A Ray actor holding one copy of the engines; runs shard jobs, returns their rows."""

    def __init__(self, cfg: ProfileConfig, factory: Callable, attempts_name: str) -> None:
        import ray

        self.cfg = cfg
        self.policy, self.prm = factory(cfg.policy, cfg.prm)
        self.attempts = ray.get_actor(attempts_name)

    def describe(self) -> tuple[EngineInfo, EngineInfo | None]:
        def info(e):
            return None if e is None else EngineInfo(str(e.id), int(e.num_parameters))

        return info(self.policy), info(self.prm)

    def cpu_seconds(self) -> float:
        """CPU seconds this actor's process has used (all its threads), for the report."""
        return time.process_time()

    def run(self, job: ShardJob) -> tuple[pd.DataFrame, dict]:
        import ray

        ray.get(self.attempts.started.remote(job.key))  # before the work: a death mid-job still counts
        return STAGES[job.stage].rows(self.cfg, job.shard, self.policy, self.prm)


class RayExecutor:
    """Shard jobs as Ray tasks on ``num_actors`` actors (``num_gpus``/``num_cpus`` each).

    ``engine_factory(policy_spec, prm_spec) -> (policy, prm)`` runs inside each actor (default
    :func:`build_engines`); it must be importable (or picklable) on every node.
    """

    kind = "ray"

    def __init__(self, config: ExecutorConfig = ExecutorConfig(kind="ray"), *,
                 engine_factory: Callable[[str, str], tuple[Policy, PRM | None]] = build_engines) -> None:
        self.config = dataclasses.replace(config, kind="ray")
        self.config.check()
        self.factory = engine_factory
        self.actors: list = []
        self.attempts = None
        self._started_ray = False

    def _connect(self):
        ray = _ray()
        if not ray.is_initialized():
            if self.config.address is None:
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                try:
                    ray.init(address=self.config.address, log_to_driver=False)
                except ConnectionError as exc:
                    raise InputError(
                        f"no Ray cluster at {self.config.address!r} ({exc}): start one with `ray start --head`, or "
                        "pass --ray-address HOST:PORT of its head (omit it to start a one-machine cluster here)"
                    ) from None
            self._started_ray = True
        return ray

    def _num_actors(self, ray) -> int:
        c = self.config
        if c.num_actors is not None:
            return c.num_actors
        total = ray.cluster_resources()
        n = int(total.get("GPU", 0) // c.num_gpus) if c.num_gpus else int(total.get("CPU", 0) // c.num_cpus)
        if n < 1:
            raise InputError(
                f"the Ray cluster ({total.get('GPU', 0):g} GPUs, {total.get('CPU', 0):g} CPUs) has room for no actor of "
                f"{c.num_gpus:g} GPUs and {c.num_cpus:g} CPUs: lower executor.num_gpus/num_cpus or add nodes"
            )
        return n

    def engines(self, cfg, policy, prm):
        if policy is not None and not isinstance(policy, str) or prm is not None and not isinstance(prm, str):
            raise InputError(
                "the Ray executor builds the engines inside its actors from the config's specs; engine objects "
                "cannot be sent there: pass specs (or no engines), or use the local executor"
            )
        if policy is not None or prm is not None:
            cfg = dataclasses.replace(cfg, policy=policy or cfg.policy, prm=prm if prm is not None else cfg.prm)
        ray = self._connect()
        c = self.config
        name = f"tts-selector-attempts-{uuid.uuid4().hex[:12]}"
        self.attempts = ray.remote(_Attempts).options(name=name, num_cpus=0).remote()
        worker = ray.remote(_ShardWorker).options(
            num_cpus=c.num_cpus, num_gpus=c.num_gpus, max_restarts=c.max_retries, max_task_retries=c.max_retries)
        self._cfg = cfg
        self.actors = [worker.remote(cfg, self.factory, name) for _ in range(self._num_actors(ray))]
        try:
            return ray.get(self.actors[0].describe.remote())
        except ray.exceptions.RayError as exc:
            raise EngineError(f"a Ray actor could not build the engines {cfg.policy!r} / {cfg.prm!r}: {exc}") from None

    def run(self, cfg, shards, table_dir, metadata, progress):
        ray = _ray()
        t0, c0 = time.perf_counter(), time.process_time()
        jobs = pending_jobs(cfg, shards, table_dir)
        stages, bars = stage_bars(cfg, shards, jobs, progress)
        queue = list(reversed(jobs))
        in_flight: dict[Any, tuple[int, ShardJob]] = {}

        def submit(actor: int) -> None:
            if queue:
                job = queue.pop()
                in_flight[self.actors[actor].run.remote(job)] = (actor, job)

        # Two jobs per actor: one running, one queued behind it, so no actor waits on the driver.
        for _ in range(2):
            for a in range(len(self.actors)):
                submit(a)
        written = 0
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                actor, job = in_flight.pop(ready[0])
                try:
                    rows, stats = ray.get(ready[0])
                except ray.exceptions.RayError as exc:
                    raise EngineError(
                        f"{job.stage} shard {job.shard.index} failed after {self.config.max_retries} retries: {exc}\n"
                        "the shards already written are kept: fix the cause and rerun the command to resume"
                    ) from None
                submit(actor)
                STAGES[job.stage].write(table_dir, job.shard.index, rows, metadata, stats)
                written += 1
                if job.stage in bars:
                    bars[job.stage].update(1)
        finally:
            for bar in bars.values():
                bar.close()
        retried = ray.get(self.attempts.retried.remote())
        total = len(shards) * len(stages)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        cpu += sum(ray.get([a.cpu_seconds.remote() for a in self.actors]))
        return ExecutorReport("ray", len(self.actors), written, total - len(jobs), retried, seconds, cpu)

    def close(self) -> None:
        ray = _ray()
        if not ray.is_initialized():
            return
        for actor in self.actors + ([self.attempts] if self.attempts is not None else []):
            ray.kill(actor)
        self.actors, self.attempts = [], None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


EXECUTORS: dict[str, Callable[[ExecutorConfig], Executor]] = {
    "local": lambda config: LocalExecutor(),
    "ray": lambda config: RayExecutor(config),
}


def make_executor(config: ExecutorConfig) -> Executor:
    """The executor a config's ``executor:`` section names."""
    return EXECUTORS[config.kind](config)
