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
from ..errors import InputError
from ..grading import equivalent_many, extract_answer, group_keys, timeout_count
from ..search.best_of_n import BestOfN, Majority
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
    # Without a PRM nothing scores the samples: the same draws (one seed path for the whole
    # family), unscored.
    size = cfg.pool.difficulty_samples + cfg.pool.n
    sampler = BestOfN(n=size) if prm is not None else Majority(n=size)
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
    """Read existing samples from the JSONL named by ``pool.path`` into rollout shards.

    Each record holds one prompt (matched to the data set by ``dataset.id_field``, else by line
    order) and parallel per-sample lists (the first ``difficulty_samples + n`` are used):

    - completions (``completions_field``) with scores (``scores_field``): a score is a number or
      a list of step scores (one entry = one outcome score for the whole completion); with
      ``score_transform: sigmoid``, unbounded logits are mapped into [0, 1]. Answers are
      extracted from the text;
    - answer-only (``answers_field``): each sample's final answer (a string, or null for none)
      and generated token count (``tokens_field``); text and scores optional. Such a sample is
      stored as one synthetic step, its answer boxed (``\\boxed{answer}``), so everything that
      reads answers from solution text (adaptive consistency's replay) reads the stated one;
      the text, when given, is kept in the ``text`` column.

    The project's grader decides correctness from the answers (never the file's labels). With
    ``tokens_field``, a sample's ``tokens`` are its generated tokens and ``prompt_tokens`` come
    from ``prompt_tokens_field`` or are estimated from the problem text
    (:data:`PROMPT_TOKENS_ESTIMATE`); without it both are 0 (costs unknown). Every value is
    untrusted and checked (:func:`_record_samples`). Returns the agreement of our grading with
    the file's own correctness labels when ``pool.correct_field`` is set.
    """
    t0 = time.perf_counter()
    pc = cfg.pool
    path = Path(cfg.resolve(pc.path))
    by_id = {p.id: p for s in shards for p in s.problems}
    records = _read_records(path)
    agree = labelled = 0
    timeouts = timeout_count()
    rows_by_prompt: dict[str, list[dict]] = {}
    done = done_shard_indices(table_dir)
    wanted = {p.id for s in shards if s.index not in done for p in s.problems}
    for lineno, record in records:
        where = f"{path}:{lineno}"
        if not isinstance(record, dict):
            raise PoolFileError(f"{where}: a record must be a JSON object, got {type(record).__name__}: fix that line")
        pid = str(record.get(cfg.dataset.id_field)) if cfg.dataset.id_field else f"{path.stem}-{lineno - 1}"
        if pid not in wanted:
            continue
        problem = by_id[pid]
        samples = _record_samples(record, pc, where)
        correct = equivalent_many([(a, problem.answer) for a in samples.answers])  # one grader call
        if pc.correct_field:
            labels = samples.labels
            labelled += len(labels)
            agree += sum(c == bool(x) for c, x in zip(correct, labels))
        rows_by_prompt[pid] = _imported_rows(problem, samples, correct, pc)
    missing = wanted - set(rows_by_prompt)
    if missing:
        raise PoolFileError(f"{path}: no samples for {len(missing)} prompts of the data set (e.g. {sorted(missing)[:3]}): "
                            "add their records, or match them by dataset.id_field")
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


# Bounds on an imported pool's values (the file is untrusted input).
MAX_ANSWER_CHARS = 1000  # a final answer: longer is a solution, not an answer
MAX_COMPLETION_CHARS = 1 << 20  # one sample's text
MAX_SAMPLE_TOKENS = 1 << 20  # generated tokens of one sample, or a prompt's tokens (as table_checks.MAX_TOKENS)
CHARS_PER_TOKEN = 4
PROMPT_TOKENS_ESTIMATE = (f"estimated as ceil(characters of the problem text / {CHARS_PER_TOKEN}): the question only, "
                          "no chat template or few-shot turns (the file states no prompt token count)")


class PoolFileError(InputError):
    """An imported pool's JSONL that cannot be used; the message names the line, the field and the fix."""


@dataclass(frozen=True)
class ImportedSamples:
    """One record's samples, checked: per sample its answer, and where given its text, step
    scores, generated tokens and the file's label; the prompt's token count if stated."""

    answers: list[str | None]
    texts: list[str] | None
    scores: list[list[float]] | None
    tokens: list[int] | None
    prompt_tokens: int | None
    labels: list[bool]


def pool_metadata(cfg: ProfileConfig) -> dict:
    """What a table's metadata says about its pool: ``pool_supports`` (the strategies it can be
    scored on and why, :meth:`ProfileConfig.pool_supports`) and, for an imported pool,
    ``pool_tokens`` (where its token counts come from: the cost model's provenance)."""
    out: dict = {"pool_supports": cfg.pool_supports()}
    pc = cfg.pool
    if pc.source == "jsonl":
        if pc.tokens_field is None:
            out["pool_tokens"] = {"generated": "not in the file: recorded as 0", "prompt": "not in the file: recorded as 0"}
        else:
            out["pool_tokens"] = {"generated": f"the file's field {pc.tokens_field!r}",
                                  "prompt": (f"the file's field {pc.prompt_tokens_field!r}" if pc.prompt_tokens_field
                                             else PROMPT_TOKENS_ESTIMATE)}
    return out


def answer_step(answer: str | None) -> list[str]:
    """An answer-only sample's steps: its answer boxed, which ``extract_answer`` reads back as the
    answer (checked on import), or none for a sample without an answer."""
    return [] if answer is None else ["\\boxed{" + answer + "}"]


def estimate_prompt_tokens(problem_text: str) -> int:
    """Tokens of a problem's prompt when the file states none (see :data:`PROMPT_TOKENS_ESTIMATE`)."""
    return math.ceil(len(problem_text) / CHARS_PER_TOKEN)


def _read_records(path: Path) -> list[tuple[int, object]]:
    """(1-based line number, JSON value) of every non-blank line (datasets.read_jsonl's numbering)."""
    out = []
    try:
        with path.open(encoding="utf-8", errors="strict") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    out.append((lineno, json.loads(line)))
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise PoolFileError(f"{path}:{lineno}: not valid JSON ({str(exc)[:120]}): fix or remove that line") from None
    except UnicodeDecodeError as exc:
        raise PoolFileError(f"{path}: not valid UTF-8 ({exc.reason}): re-encode the file as UTF-8") from None
    except OSError as exc:
        raise PoolFileError(f"{path}: cannot read the pool file ({exc.strerror or exc}): check pool.path") from None
    return out


def _field(record: dict, key: str, where: str, config_key: str) -> object:
    if key not in record:
        fields = sorted(map(str, record))[:20]
        raise PoolFileError(f"{where}: no field {key!r} (fields: {fields}); set pool.{config_key} to the field that "
                            f"holds it{' or null' if config_key != 'answers_field' else ''}")
    return record[key]


def _record_samples(record: dict, pc, where: str) -> ImportedSamples:
    """The first ``difficulty_samples + n`` samples of one record, every value checked: lists
    of samples long enough and paired, texts and answers strings of bounded length (answers
    that a boxed step reads back), scores finite and in [0, 1] after the transform, token counts
    integers in [0, MAX_SAMPLE_TOKENS]."""
    need = pc.difficulty_samples + pc.n
    lists: dict[str, list] = {}
    for config_key in ("completions_field", "answers_field", "scores_field", "tokens_field", "correct_field"):
        key = getattr(pc, config_key)
        if key is None:
            continue
        value = _field(record, key, where, config_key)
        if not isinstance(value, list):
            raise PoolFileError(f"{where}: field {key!r} must be a list with one entry per sample, got "
                                f"{type(value).__name__}")
        lists[config_key] = value
    lengths = {getattr(pc, k): len(v) for k, v in lists.items() if k != "correct_field"}
    if len(set(lengths.values())) > 1 or min(len(v) for v in lists.values()) < need:
        raise PoolFileError(f"{where}: the per-sample lists hold {lengths} entries (labels: "
                            f"{len(lists.get('correct_field', [])) if 'correct_field' in lists else 'none'}); "
                            f"pool.difficulty_samples + pool.n = {need} needs at least {need} in each, paired")
    lists = {k: v[:need] for k, v in lists.items()}
    texts = None
    if "completions_field" in lists:
        texts = [_text(t, where, pc.completions_field, j) for j, t in enumerate(lists["completions_field"])]
    if "answers_field" in lists:
        answers = [_answer(a, where, pc.answers_field, j) for j, a in enumerate(lists["answers_field"])]
    else:
        answers = [extract_answer(t) for t in texts]
    transform = _sigmoid if pc.score_transform == "sigmoid" else float
    scores = None
    if "scores_field" in lists:
        scores = [_score(x, transform, where, pc, j) for j, x in enumerate(lists["scores_field"])]
    tokens = None
    if "tokens_field" in lists:
        tokens = [_count(t, where, f"{pc.tokens_field!r}[{j}]") for j, t in enumerate(lists["tokens_field"])]
    prompt_tokens = None
    if pc.prompt_tokens_field is not None:
        prompt_tokens = _count(_field(record, pc.prompt_tokens_field, where, "prompt_tokens_field"), where,
                               repr(pc.prompt_tokens_field))
    labels = []
    for j, x in enumerate(lists.get("correct_field", [])):
        if not isinstance(x, (bool, int)) or isinstance(x, int) and x not in (0, 1):
            raise PoolFileError(f"{where}: {pc.correct_field!r}[{j}] must be true or false, got {str(x)[:40]!r}")
        labels.append(bool(x))
    return ImportedSamples(answers, texts, scores, tokens, prompt_tokens, labels)


def _text(value: object, where: str, key: str, j: int) -> str:
    if not isinstance(value, str) or len(value) > MAX_COMPLETION_CHARS:
        got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise PoolFileError(f"{where}: {key!r}[{j}] must be a solution text of at most {MAX_COMPLETION_CHARS} "
                            f"characters, got {got}")
    return value


def _answer(value: object, where: str, key: str, j: int) -> str | None:
    """A stated final answer (None: the sample has none), checked."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PoolFileError(f"{where}: {key!r}[{j}] must be the sample's final answer as a string (or null for none), "
                            f"got {type(value).__name__} {str(value)[:40]!r}: quote it in the file")
    answer = value.strip()
    if len(answer) > MAX_ANSWER_CHARS:
        raise PoolFileError(f"{where}: {key!r}[{j}] is {len(answer)} characters long (a final answer is at most "
                            f"{MAX_ANSWER_CHARS}): store the extracted answer, not the solution")
    if not answer:
        return None
    if extract_answer(answer_step(answer)[0]) != answer:
        raise PoolFileError(f"{where}: {key!r}[{j}] = {answer[:60]!r} is not a well-formed answer (unbalanced braces?): "
                            "fix it in the file, or write null for a sample without an answer")
    return answer


def _score(value: object, transform, where: str, pc, j: int) -> list[float]:
    """A sample's step scores: a number (one outcome score) or a non-empty list of numbers."""
    raw = value if isinstance(value, list) else [value]
    if not raw or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in raw):
        raise PoolFileError(f"{where}: {pc.scores_field!r}[{j}] must be a finite number or a non-empty list of them, "
                            f"got {str(value)[:60]!r}")
    out = [float(transform(x)) for x in raw]
    if not all(0.0 <= x <= 1.0 for x in out):
        raise PoolFileError(f"{where}: {pc.scores_field!r}[{j}] holds scores outside [0, 1] ({str(value)[:60]}): scores "
                            "are probabilities; set pool.score_transform: sigmoid for logits")
    return out


def _count(value: object, where: str, what: str) -> int:
    """A token count: an integer (an integral float passes) in [0, MAX_SAMPLE_TOKENS]."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SAMPLE_TOKENS:
        raise PoolFileError(f"{where}: {what} must be a token count, an integer in [0, {MAX_SAMPLE_TOKENS}], got "
                            f"{str(value)[:40]!r}")
    return value


def _imported_rows(problem: Problem, samples: ImportedSamples, correct: list[bool], pc) -> list[dict]:
    """Rollout rows of one imported record (see :func:`import_pool`)."""
    keys = group_keys(samples.answers)
    answer_only = pc.answers_field is not None
    if samples.tokens is None:
        tokens, prompt_tokens = [0] * len(samples.answers), 0  # costs unknown: recorded as 0, said in pool_tokens
    else:
        tokens = samples.tokens
        prompt_tokens = (samples.prompt_tokens if samples.prompt_tokens is not None
                         else estimate_prompt_tokens(problem.problem))
    rows = []
    for j, (answer, key) in enumerate(zip(samples.answers, keys)):
        step_scores = samples.scores[j] if samples.scores is not None else []
        if answer_only:
            steps = answer_step(answer)
        elif len(step_scores) > 1:
            steps = split_steps(samples.texts[j], "\n\n")
            if len(steps) != len(step_scores):
                raise PoolFileError(
                    f"{pc.path}: prompt {problem.id}: completion {j} has {len(steps)} steps (split at blank lines) but "
                    f"{len(step_scores)} step scores; give one outcome score or one score per step"
                )
        else:
            steps = [samples.texts[j]]
        row = {
            "prompt_id": problem.id, "sample_id": j, "role": sample_role(j, pc.difficulty_samples), "steps": steps,
            "step_scores": step_scores, "answer": answer, "answer_key": key, "correct": bool(correct[j]),
            "tokens": int(tokens[j]), "prm_tokens": 0, "prompt_tokens": int(prompt_tokens), "finished": True,
        }
        if answer_only and samples.texts is not None:
            row["text"] = samples.texts[j]  # the solution, kept for inspection; steps hold the answer
        rows.append(row)
    return rows


def _sigmoid(z: float) -> float:
    z = float(z)
    # Either branch's exp has a non-positive argument: no overflow for logits of any size.
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
