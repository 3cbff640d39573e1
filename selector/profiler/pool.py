"""Stage 1, the pool: N_pool rollouts per prompt, every step scored, final answers graded.

Each prompt gets ``pool.difficulty_samples + pool.n`` i.i.d. whole solutions; the first
``difficulty_samples`` (role ``difficulty``) only decide the prompt's bin, the other ``n``
(role ``evaluation``) are the samples the best-of-N family is scored on, so no sample both
bins a prompt and scores a strategy on it.

Rollouts are written as a Parquet dataset, one shard of ``shard_size`` prompts at a time, each
file atomically; a shard whose file exists is never generated again, so a killed profile
resumes where it stopped. Samples are whole solutions drawn with the best-of-N family's own
search code (``BestOfN(n=N_pool)``), so any subset of a prompt's pool is a valid best-of-n
sample, and seeds derive from (profile seed, question), never from shard or batch position.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..backends.base import PRM, Policy
from ..datasets import Problem
from ..grading import equivalent_many, extract_answer, group_keys, is_equivalent, timeout_count
from ..search.best_of_n import BestOfN
from ..search.runner import RunStats, run_search
from ..steps import split_steps
from ..tables import rollout_shards, write_rollout_shard
from .config import ProfileConfig


@dataclass(frozen=True)
class Shard:
    index: int
    problems: tuple[Problem, ...]


def plan_shards(problems: Sequence[Problem], shard_size: int) -> list[Shard]:
    """Consecutive slices of ``shard_size`` prompts, in dataset order."""
    return [Shard(i // shard_size, tuple(problems[i : i + shard_size])) for i in range(0, len(problems), shard_size)]


def select_shards(shards: list[Shard], part: tuple[int, int] | None) -> list[Shard]:
    """The shards this process owns under ``--shard i/k`` (round robin), or all."""
    if part is None:
        return shards
    i, k = part
    return [s for s in shards if s.index % k == i]


def done_shard_indices(table_dir: Path) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in rollout_shards(table_dir)}


def pool_shard_rows(cfg: ProfileConfig, shard: Shard, policy: Policy, prm: PRM | None) -> tuple[pd.DataFrame, dict]:
    """One pool shard's rollout rows (difficulty + evaluation samples per prompt) and its stats
    (``seconds`` it took, of which ``policy_seconds`` / ``prm_seconds`` inside engine calls, and
    ``grader_timeouts``: answers graded by normalized string because the grader ran out of time). The same call in every executor (this process, a Ray actor), so
    the rows are identical."""
    t0, timeouts = time.perf_counter(), timeout_count()
    sampling = policy.default_sampling_params()
    if cfg.sampling:
        sampling = sampling.replace(**cfg.sampling)
    sampler = BestOfN(n=cfg.pool.difficulty_samples + cfg.pool.n)
    run = RunStats()
    results = run_search([(p.problem, sampler) for p in shard.problems], policy, prm, sampling=sampling, seed=cfg.seed,
                         stats=run)
    rows = []
    for problem, result in zip(shard.problems, results):
        rows.extend(_rollout_rows(problem, result.candidates, result.cost.policy_prompt_tokens,
                                  cfg.pool.difficulty_samples))
    return pd.DataFrame(rows), {"seconds": time.perf_counter() - t0, "policy_seconds": run.policy_seconds,
                                "prm_seconds": run.prm_seconds, "grader_timeouts": timeout_count() - timeouts}


def write_pool_shard(table_dir: Path, index: int, rows: pd.DataFrame, metadata: dict, stats: dict) -> Path:
    """Write one pool shard's rows atomically (once; a shard on disk is never generated again)."""
    return write_rollout_shard(rows, table_dir, index, dict(
        metadata, grader_timeouts=stats["grader_timeouts"], **shard_time_metadata(stats)))


def shard_time_metadata(stats: dict) -> dict:
    """A shard's wall seconds and the part spent inside policy / PRM calls (the rest is the
    profiler's own: batching, grading, bookkeeping), as shard-file metadata."""
    return {"shard_seconds": float(stats["seconds"]), "shard_policy_seconds": float(stats.get("policy_seconds", 0.0)),
            "shard_prm_seconds": float(stats.get("prm_seconds", 0.0))}


def sample_role(sample_id: int, difficulty_samples: int) -> str:
    """``"difficulty"`` for the first ``difficulty_samples`` samples of a prompt (they decide its
    bin only), else ``"evaluation"`` (scored as strategies' samples)."""
    return "difficulty" if sample_id < difficulty_samples else "evaluation"


def _rollout_rows(problem: Problem, candidates, prompt_tokens: int, difficulty_samples: int = 0) -> list[dict]:
    correct = equivalent_many([(c.answer, problem.answer) for c in candidates])  # one grader call
    return [
        {
            "prompt_id": problem.id,
            "sample_id": j,
            "role": sample_role(j, difficulty_samples),
            "steps": list(c.steps),
            "step_scores": [float(x) for x in c.step_scores],
            "answer": c.answer,
            "answer_key": c.answer_key,
            "correct": correct[j],
            "tokens": int(c.tokens),
            "prm_tokens": int(c.prm_tokens),
            "prompt_tokens": int(prompt_tokens),  # the prompt's, read once for all its samples
            "finished": bool(c.finished),
        }
        for j, c in enumerate(candidates)
    ]


def import_pool(
    cfg: ProfileConfig, shards: list[Shard], table_dir: Path, metadata: dict, progress: Callable | None = None
) -> dict[str, float]:
    """Read existing samples with scores from the JSONL named by ``pool.path`` into rollout shards.

    Each record holds one prompt (matched to the data set by line order) with a list of
    completions and a parallel list of scores; a score is a number or a list of step scores
    (one entry = one outcome score for the whole completion). With ``score_transform:
    sigmoid``, unbounded logits are mapped into [0, 1]. Returns the agreement of our grading
    with the file's own correctness labels when ``pool.correct_field`` is set.
    """
    t0 = time.perf_counter()
    pc = cfg.pool
    path = Path(cfg.resolve(pc.path))
    by_id = {p.id: p for s in shards for p in s.problems}
    # Same numbering as datasets.read_jsonl: 1-based line numbers, blank lines skipped.
    records = [(lineno, json.loads(line)) for lineno, line in enumerate(path.open(), 1) if line.strip()]
    transform = _sigmoid if pc.score_transform == "sigmoid" else float
    agree = labelled = 0
    timeouts = timeout_count()
    rows_by_prompt: dict[str, list[dict]] = {}
    done = done_shard_indices(table_dir)
    wanted = {p.id for s in shards if s.index not in done for p in s.problems}
    for lineno, record in records:
        pid = str(record[cfg.dataset.id_field]) if cfg.dataset.id_field else f"{path.stem}-{lineno - 1}"
        if pid not in wanted:
            continue
        for key in (pc.completions_field, pc.scores_field):
            if key not in record:
                raise ValueError(f"{path}:{lineno}: no field {key!r}; set pool.completions_field / pool.scores_field")
        texts, scores = record[pc.completions_field], record[pc.scores_field]
        need = pc.difficulty_samples + pc.n
        if len(texts) < need or len(scores) != len(texts):
            raise ValueError(
                f"{path}:{lineno}: {len(texts)} completions and {len(scores)} scores; pool.difficulty_samples + pool.n "
                f"= {need} needs at least {need} of each, paired"
            )
        texts, scores = texts[:need], scores[:need]
        answers = [extract_answer(t) for t in texts]
        keys = group_keys(answers)
        problem = by_id[pid]
        rows = []
        for j, (text, score, answer, key) in enumerate(zip(texts, scores, answers, keys)):
            step_scores = [transform(x) for x in (score if isinstance(score, list) else [score])]
            steps = split_steps(text, "\n\n") if len(step_scores) > 1 else [text]
            if len(steps) != len(step_scores):
                raise ValueError(
                    f"{path}:{lineno}: completion {j} has {len(steps)} steps (split at blank lines) but "
                    f"{len(step_scores)} step scores; give one outcome score or one score per step"
                )
            correct = bool(is_equivalent(answer, problem.answer))
            if pc.correct_field:
                labelled += 1
                agree += correct == bool(record[pc.correct_field][j])
            rows.append({
                "prompt_id": pid, "sample_id": j, "role": sample_role(j, pc.difficulty_samples), "steps": steps, "step_scores": step_scores,
                "answer": answer, "answer_key": key, "correct": correct,
                # Imported samples carry no token counts: their costs are unknown, recorded as 0.
                "tokens": 0, "prm_tokens": 0, "prompt_tokens": 0, "finished": True,
            })
        rows_by_prompt[pid] = rows
    missing = wanted - set(rows_by_prompt)
    if missing:
        raise ValueError(f"{path}: no samples for {len(missing)} prompts of the data set (e.g. {sorted(missing)[:3]})")
    todo = [s for s in shards if s.index not in done]
    bar = progress(total=len(todo), desc="import pool", unit="shard") if progress else None
    timeouts = timeout_count() - timeouts  # all recorded on the first shard written: the sum is right
    # The stage's wall time here is reading and grading the samples, shared out by prompts.
    per_prompt = (time.perf_counter() - t0) / max(1, len(wanted))
    for shard in todo:
        rows = [row for p in shard.problems for row in rows_by_prompt[p.id]]
        meta = dict(metadata, shard_seconds=per_prompt * len(shard.problems), grader_timeouts=timeouts)
        write_rollout_shard(pd.DataFrame(rows), table_dir, shard.index, meta)
        timeouts = 0
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"labelled": labelled, "agree": agree}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-float(z)))
