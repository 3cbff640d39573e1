"""Drives strategies for many questions at once against a policy and a PRM.

Each round, the runner collects the expansions of every question still searching (whatever
its strategy), sends them to the policy as ONE batched ``generate_steps`` call, scores all
new children with ONE batched PRM call, and hands each question its children. A batch of
questions doing beam search therefore advances together, one pool per question.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

from ..backends.base import PRM, Policy, SamplingParams, ScoreRequest, StepRequest
from ..grading import extract_answer, group_keys, has_final_answer
from ..prompts import check_questions
from ..seeds import derive_seed
from ..steps import split_steps
from ..records import Candidate, Cost, SearchResult
from .aggregate import select_answer
from .base import Expansion, Node, SearchContext, StrategyConfig

EMPTY_SOLUTION_SCORE = 0.0  # an empty solution is scored without asking the PRM


@dataclass
class RunStats:
    """Where the wall time of a run went (seconds), for overhead benchmarks."""

    total_seconds: float = 0.0
    policy_seconds: float = 0.0
    prm_seconds: float = 0.0
    rounds: int = 0
    generations: int = 0
    steps: int = 0  # generated steps (a whole best-of-N solution counts its steps)

    @property
    def orchestration_seconds(self) -> float:
        return self.total_seconds - self.policy_seconds - self.prm_seconds


@dataclass
class _Job:
    index: int
    question: str
    strategy: StrategyConfig
    prompt: str
    gen: object
    pending: list[Expansion]
    rounds: list[int]
    generations: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cache_unreported: int = 0
    generated_tokens: int = 0
    prm_tokens: int = 0
    seconds: float = 0.0
    result_nodes: list[Node] | None = None


def _finish_state(text: str, finish_reason: str, to_completion: bool) -> tuple[bool, str | None]:
    """(finished, stop_reason) of a child whose newest text is ``text``."""
    if finish_reason == "eos":
        return True, "eos"
    if has_final_answer(text):
        return True, "answer"
    return False, ("length" if to_completion else None)


def run_search(
    problems: Sequence[tuple[str, StrategyConfig]],
    policy: Policy,
    prm: PRM | None,
    *,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    progress: bool = False,
    stats: RunStats | None = None,
    pilots: Sequence[Sequence[Candidate]] | None = None,
) -> list[SearchResult]:
    """Run each ``(question, strategy)`` pair; all questions share every policy/PRM call.

    ``seed`` is combined with each question's text (not its batch position), so a question
    gets the same result alone or in any batch. ``prm`` may be ``None`` only when every
    strategy is ``majority``. ``seconds`` in each cost apportions the batch's wall time by each
    question's share of the tokens in each call. ``pilots`` (one tuple of candidates per
    problem) are handed to strategies that reuse them inside their budget (the best-of-N
    family); their cost is not in the returned ledgers (whoever drew them accounts for it).
    """
    t_start = time.perf_counter()
    check_questions([q for q, _ in problems])  # before any engine spends on the batch
    params = sampling or policy.default_sampling_params()
    if getattr(prm, "reads_policy_confidence", False) and not params.logprobs:
        params = params.replace(logprobs=True)  # the verifier scores the policy's own log-probabilities
    delimiter = params.step_delimiter
    jobs: list[_Job] = []
    if pilots is not None and len(pilots) != len(problems):
        raise ValueError(f"got {len(pilots)} pilots for {len(problems)} problems")
    for index, (question, strategy) in enumerate(problems):
        pilot = tuple(_node(c) for c in pilots[index]) if pilots is not None and strategy.reuses_pilot else ()
        gen = strategy.search(SearchContext(question, derive_seed(seed, question), pilot))
        job = _Job(index, question, strategy, policy.format_prompt(question), gen, [], [])
        try:
            job.pending = next(gen)
        except StopIteration as stop:  # e.g. a pilot that already fills the budget
            job.result_nodes = stop.value
        jobs.append(job)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=sum(j.result_nodes is not None for j in jobs), desc="search", unit="question")
    active = [job for job in jobs if job.result_nodes is None]
    policy_seconds = prm_seconds = 0.0
    new_steps = 0
    while active:
        requests, owners, expansions = [], [], []
        for job in active:
            for exp in job.pending:
                prefix = job.prompt + "".join(exp.node.steps)
                requests.append(StepRequest(prefix, exp.n, params, exp.seed, exp.to_completion))
                owners.append(job)
                expansions.append(exp)
            job.rounds.append(sum(exp.n for exp in job.pending))
        outputs, dt = _timed_batch(policy.generate_steps, requests, f"policy {policy.id!r}")
        policy_seconds += dt
        _apportion(dt, owners, [o.prompt_tokens + sum(c.num_tokens for c in o.continuations) for o in outputs])

        # Children of this round, flat in request order; Nodes are built once, after scoring.
        child_steps: list[tuple[str, ...]] = []
        child_confidence: list[tuple[float, ...]] = []
        child_meta: list[tuple[int, bool, str | None]] = []  # (tokens, finished, stop_reason)
        child_scores: list[tuple[float, ...]] = []
        score_at: list[int] = []
        score_jobs: list[_Job] = []
        score_requests: list[ScoreRequest] = []
        for job, exp, out in zip(owners, expansions, outputs):
            conts = out.continuations
            if len(conts) != exp.n:
                raise RuntimeError(f"policy {policy.id!r} returned {len(conts)} continuations, asked {exp.n}")
            job.generations += exp.n
            job.prompt_tokens += out.prompt_tokens
            if out.cached_tokens is None:
                job.cache_unreported += 1
            else:
                job.cached_tokens += min(int(out.cached_tokens), out.prompt_tokens)
            job.generated_tokens += sum(c.num_tokens for c in conts)
            base, base_tokens, to_completion = exp.node.steps, exp.node.tokens, exp.to_completion
            # Comprehensions, not a per-child loop: this is the hot path of tree search.
            if to_completion:  # whole rest of the solution after the node's steps (none at the root)
                group = [base + tuple(split_steps(c.text, delimiter)) for c in conts]
            else:
                group = [base + (c.text,) if c.text else base for c in conts]
            if params.logprobs:
                child_confidence.extend([_confidence(exp.node, c, len(steps) - len(base))
                                         for c, steps in zip(conts, group)])
            else:
                child_confidence.extend([()] * len(group))
            new_steps += sum(map(len, group)) - len(base) * len(group)
            child_meta.extend(
                [(base_tokens + c.num_tokens, *_finish_state(c.text, c.finish_reason, to_completion)) for c in conts]
            )
            offset = len(child_steps)
            child_steps.extend(group)
            if not exp.score:
                child_scores.extend([()] * len(group))
                continue
            child_scores.extend([() if steps else (EMPTY_SOLUTION_SCORE,) for steps in group])
            for k, steps in enumerate(group):
                if steps:
                    score_at.append(offset + k)
                    score_jobs.append(job)
                    score_requests.append(ScoreRequest(job.question, steps, child_confidence[offset + k]))

        child_prm_tokens = [0] * len(child_steps)
        if score_requests:
            if prm is None:
                raise ValueError("this strategy needs a PRM (only 'majority' runs without one); pass prm=...")
            scored, dt = _timed_batch(prm.score, score_requests, f"PRM {prm.id!r}")
            prm_seconds += dt
            _apportion(dt, score_jobs, [o.num_tokens for o in scored])
            for i, job, req, out in zip(score_at, score_jobs, score_requests, scored):
                if len(out.step_scores) != len(req.steps):
                    raise RuntimeError(f"PRM {prm.id!r} returned {len(out.step_scores)} scores for {len(req.steps)} steps")
                job.prm_tokens += out.num_tokens
                child_scores[i] = tuple(out.step_scores)
                child_prm_tokens[i] = out.num_tokens

        nodes = [
            Node(st, sc, *meta, pt, cf)
            for st, sc, meta, pt, cf in zip(child_steps, child_scores, child_meta, child_prm_tokens, child_confidence)
        ]
        children_of: dict[int, list[list[Node]]] = {job.index: [] for job in active}
        pos = 0
        for job, exp in zip(owners, expansions):
            children_of[job.index].append(nodes[pos : pos + exp.n])
            pos += exp.n

        still = []
        for job in active:
            try:
                job.pending = job.gen.send(children_of[job.index])
                still.append(job)
            except StopIteration as stop:
                job.result_nodes = stop.value
                if bar is not None:
                    bar.update(1)
        active = still
    if bar is not None:
        bar.close()

    total = time.perf_counter() - t_start
    if stats is not None:
        stats.total_seconds += total
        stats.policy_seconds += policy_seconds
        stats.prm_seconds += prm_seconds
        stats.rounds += max((len(j.rounds) for j in jobs), default=0)
        stats.generations += sum(j.generations for j in jobs)
        stats.steps += new_steps
    # Orchestration time is shared evenly: it is per question, not per token.
    overhead = (total - policy_seconds - prm_seconds) / max(len(jobs), 1)
    return [_finish(job, policy, prm, overhead) for job in jobs]


def _confidence(node: Node, c, new_steps: int) -> tuple[float, ...]:
    """The per-step confidence of ``node``'s path after continuation ``c`` added ``new_steps``
    steps: the geometric-mean probability of ``c``'s tokens, for each of them. Empty when it is
    not known for every step (the policy reported no log-probability; the self-confidence
    verifier then says so)."""
    if c.logprob is None or len(node.confidence) != len(node.steps) or not math.isfinite(c.logprob):
        return ()
    value = math.exp(c.logprob / c.num_tokens) if c.num_tokens > 0 else 1.0
    return node.confidence + (min(max(value, 0.0), 1.0),) * new_steps


def _node(c: Candidate) -> Node:
    return Node(tuple(c.steps), tuple(c.step_scores), c.tokens, c.finished, c.stop_reason, c.prm_tokens)


def _timed_batch(call, requests: list, who: str) -> tuple[list, float]:
    """Run one batched engine call; return its outputs (one per request, checked) and seconds."""
    t0 = time.perf_counter()
    outputs = call(requests)
    seconds = time.perf_counter() - t0
    if len(outputs) != len(requests):
        raise RuntimeError(f"{who} returned {len(outputs)} outputs for {len(requests)} requests")
    return outputs, seconds


def _apportion(seconds: float, owners: Sequence[_Job], weights: Sequence[float]) -> None:
    total = float(sum(weights))
    if total <= 0:
        share = seconds / max(len(owners), 1)
        for job in owners:
            job.seconds += share
        return
    for job, w in zip(owners, weights):
        job.seconds += seconds * w / total


def candidates_of(nodes: Sequence[Node]) -> tuple[Candidate, ...]:
    """A strategy's returned nodes as candidates, with answers extracted and keys grouped."""
    answers = [extract_answer("".join(n.steps)) for n in nodes]
    keys = group_keys(answers)
    return tuple(
        Candidate(n.steps, n.scores, a, k, n.finished, n.stop_reason or "max_steps", n.tokens, n.prm_tokens)
        for n, a, k in zip(nodes, answers, keys)
    )


def _finish(job: _Job, policy: Policy, prm: PRM | None, overhead: float) -> SearchResult:
    candidates = candidates_of(job.result_nodes or [])
    answer, key = select_answer(candidates, job.strategy.answer_rule, job.strategy.selection_aggregation)
    prm_params = prm.num_parameters if prm is not None else 0
    cost = Cost(
        generations=job.generations,
        policy_prompt_tokens=job.prompt_tokens,
        policy_cached_tokens=job.cached_tokens,
        cache_unreported_requests=job.cache_unreported,
        policy_generated_tokens=job.generated_tokens,
        prm_tokens=job.prm_tokens,
        # FLOPs of what was computed: prompt tokens served from a prefix cache cost no prefill.
        policy_flops=2.0 * policy.num_parameters * (job.prompt_tokens - job.cached_tokens + job.generated_tokens),
        prm_flops=2.0 * prm_params * job.prm_tokens,
        seconds=job.seconds + overhead,
    )
    return SearchResult(job.question, answer, key, job.strategy, candidates, cost, tuple(job.rounds))
