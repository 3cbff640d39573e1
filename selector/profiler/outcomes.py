"""Stage 3: every configuration at every budget, one row per (prompt, configuration, budget).

Best-of-N family (majority, best_of_n, weighted_best_of_n x aggregations) at budget n <= N_pool
is evaluated **from the pool alone**: a prompt's expected accuracy is the mean over random
n-subsets drawn without replacement (all subsets when there are no more than
``evaluate.subsamples`` of them, so small pools are exact), with the same subsets for every
configuration. Voting follows ``search/aggregate.select_answer`` exactly: a subset's members
are taken in pool order, candidates without an answer take no part, and ties go to the answer
seen first; ``tests/test_profile.py`` checks the vectorized code against it. Beam search,
DVTS, particle filtering (M = None) and any other strategy of kind ``live`` are run for real
at each (N, M, aggregation, seed),
batched across the shard's prompts,
with each shard's rows checkpointed so a resumed profile does not run them again.
"""
from __future__ import annotations

import math
import time
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..backends.base import PRM, Policy
from ..cost_model import CostModel
from ..grading import is_equivalent
from ..search.aggregate import AGGREGATIONS
from ..search.base import STRATEGIES
from ..search.runner import RunStats, run_search
from ..seeds import derive_seed
from ..tables import read_table, write_table
from ..search.best_of_n import kept_count
from .config import ProfileConfig, of_kind
from .pool import Shard, shard_time_metadata

EVAL_COLUMNS = [
    "prompt_id", "strategy", "n", "m", "aggregation", "budget", "accuracy", "accuracy_std", "generations",
    "prompt_tokens", "request_prompt_tokens", "generated_tokens", "prm_tokens", "policy_tokens", "policy_cached_tokens",
    "computed_tokens", "tokens", "flops", "flops_no_cache", "cost",
]
"""Evaluation columns. Every row carries the token counts it is priced from (P, R, G and PRM
tokens, see :mod:`selector.cost_model`) and the costs the table's declared cost model gives them:
``flops`` (that model), ``flops_no_cache`` (every request computing its prefix), ``cost`` (the
table's budget axis). ``policy_tokens`` = R + G (what the policy read and wrote);
``policy_cached_tokens`` what the engine reported serving from its prefix cache: a diagnostic,
never the axis."""


def token_columns(generations: float, prompt_tokens: float, request_prompt_tokens: float, generated_tokens: float,
                  prm_tokens: float, cached_tokens: float = 0.0) -> dict[str, float]:
    """The raw counts of one row (generations, tokens); :meth:`CostModel.price` adds the costs."""
    return {"generations": float(generations), "prompt_tokens": float(prompt_tokens),
            "request_prompt_tokens": float(request_prompt_tokens), "generated_tokens": float(generated_tokens),
            "prm_tokens": float(prm_tokens), "policy_tokens": float(request_prompt_tokens + generated_tokens),
            "policy_cached_tokens": float(cached_tokens)}


def priced(rows: list[dict] | pd.DataFrame, cost_model: CostModel | None) -> pd.DataFrame:
    """Rows in :data:`EVAL_COLUMNS` order, priced by ``cost_model`` (None: cost columns left NaN,
    for the caller to price the whole evaluation table at once)."""
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=EVAL_COLUMNS)
    df = cost_model.price(df) if cost_model is not None else df
    return df.reindex(columns=EVAL_COLUMNS)


def subsets(pool_size: int, n: int, count: int, seed: int) -> np.ndarray:
    """Index matrix (rows = subsets, sorted ascending) of n-subsets of range(pool_size).

    All C(pool_size, n) subsets when that is at most ``count`` (exact expectation), else
    ``count`` random subsets without replacement within each subset.
    """
    total = math.comb(pool_size, n)
    if total <= count:
        return np.array(list(combinations(range(pool_size), n)), dtype=np.int64).reshape(total, n)
    rng = np.random.default_rng(seed)
    # argsort of uniform noise = a uniformly random permutation per row; keep n, sort them.
    picks = np.argsort(rng.random((count, pool_size)), axis=1)[:, :n]
    return np.sort(picks, axis=1)


def _vote(ids: np.ndarray, weights: np.ndarray, n_keys: int) -> np.ndarray:
    """Winning answer id per row (-1 when no candidate has an answer); ties to first seen."""
    rows, n = ids.shape
    valid = ids >= 0
    flat = (np.arange(rows)[:, None] * n_keys + np.where(valid, ids, 0))[valid]
    totals = np.bincount(flat, weights=weights[valid], minlength=rows * n_keys).reshape(rows, n_keys)
    seen = np.zeros((rows, n_keys), dtype=bool)
    seen.reshape(-1)[flat] = True
    first = np.full((rows, n_keys), n, dtype=np.int64)
    for col in range(n - 1, -1, -1):  # later columns first, so earlier ones overwrite
        ok = valid[:, col]
        first[np.nonzero(ok)[0], ids[ok, col]] = col
    best = np.where(seen, totals, -np.inf).max(axis=1, keepdims=True)
    tied = seen & (totals == best)
    winner = np.argmin(np.where(tied, first, n + 1), axis=1)
    return np.where(valid.any(axis=1), winner, -1)


def _top_share(scores: np.ndarray, k: int) -> np.ndarray:
    """Mask of each row's ``k`` highest scores (ties: the earlier column), as
    ``search.best_of_n.keep_top`` keeps them."""
    order = np.argsort(-scores, axis=1, kind="stable")
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, order[:, :k], True, axis=1)
    return mask


def _best(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Answer id of the highest-scoring answered candidate per row (first on ties), or -1."""
    valid = ids >= 0
    pos = np.argmax(np.where(valid, scores, -np.inf), axis=1)
    return np.where(valid.any(axis=1), ids[np.arange(len(ids)), pos], -1)


def best_of_n_family_rows(
    cfg: ProfileConfig, rollouts: pd.DataFrame, cost_model: CostModel | None = None, progress: Callable | None = None
) -> pd.DataFrame:
    """Expected accuracy and token counts of the pooled strategies (the best-of-N family: every
    strategy of kind ``pooled``, voted by its declared ``answer_rule``: majority, best or
    weighted, among the ``grid.filter_keep`` best-scored share of the subset for a strategy that
    keeps one, e.g. ``filtered_vote``) at every budget, from the pool, priced by ``cost_model``
    (None: unpriced, see :func:`priced`)."""
    grid = cfg.grid
    budgets = sorted(b for b in grid.budgets if b <= cfg.pool.n)
    family = of_kind(grid.strategies, "pooled")
    rules = {s: STRATEGIES[s].answer_rule for s in family}
    # A strategy that takes a share to keep votes among the best-scored part of each subset only.
    keeps = {s: grid.filter_keep if "filter_keep" in STRATEGIES[s].takes() else 1.0 for s in family}
    if not family:
        return pd.DataFrame(columns=EVAL_COLUMNS)
    out: list[dict] = []
    groups = rollouts.sort_values(["prompt_id", "sample_id"]).groupby("prompt_id", sort=False)
    bar = progress(total=rollouts["prompt_id"].nunique(), desc="evaluate best-of-N family", unit="prompt") if progress else None
    for prompt_id, pool in groups:
        keys = pool["answer_key"].tolist()
        key_ids: dict[str, int] = {}
        ids = np.array([-1 if k is None else key_ids.setdefault(k, len(key_ids)) for k in keys], dtype=np.int64)
        correct_of = np.zeros(max(len(key_ids), 1), dtype=bool)
        for k, c in zip(keys, pool["correct"]):
            if k is not None:
                correct_of[key_ids[k]] = bool(c)
        agg = {a: np.array([AGGREGATIONS[a](s) for s in pool["step_scores"]]) for a in grid.aggregations} if any(
            rule != "majority" for rule in rules.values()) else {}
        size = len(pool)
        mean_gen = float(pool["tokens"].mean())
        mean_prm = float(pool["prm_tokens"].mean())
        prompt_tokens = int(pool["prompt_tokens"].iloc[0])
        for n in budgets:
            idx = subsets(size, n, cfg.evaluate.subsamples, derive_seed(cfg.seed, "subsets", prompt_id, n))
            sub_ids = ids[idx]
            ones = np.ones(sub_ids.shape)
            for strategy in family:
                rule = rules[strategy]
                for aggregation in ([None] if rule == "majority" else grid.aggregations):
                    if rule == "majority":
                        winner = _vote(sub_ids, ones, len(key_ids) or 1)
                    elif rule == "best":
                        winner = _best(sub_ids, agg[aggregation][idx])
                    elif keeps[strategy] < 1.0:
                        kept = _top_share(agg[aggregation][idx], kept_count(n, keeps[strategy]))
                        winner = _vote(np.where(kept, sub_ids, -1), agg[aggregation][idx], len(key_ids) or 1)
                    else:
                        winner = _vote(sub_ids, agg[aggregation][idx], len(key_ids) or 1)
                    hits = np.where(winner >= 0, correct_of[np.maximum(winner, 0)], False)
                    prm_tokens = 0.0 if rule == "majority" else n * mean_prm  # a majority vote reads no PRM
                    out.append({
                        "prompt_id": prompt_id, "strategy": strategy, "n": n, "m": None, "aggregation": aggregation,
                        "budget": n, "accuracy": float(hits.mean()), "accuracy_std": float(hits.std()),
                        # From the pool: these samples were already paid for in stage 1, so the
                        # family adds no generations; the columns say what a live run would spend:
                        # one request of n samples, its prompt read once.
                        **token_columns(n, prompt_tokens, prompt_tokens, n * mean_gen, prm_tokens),
                    })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return priced(out, cost_model)


def tree_configs(cfg: ProfileConfig) -> list:
    """Every (strategy, N, M, aggregation) of the live strategies in the grid, as configs: M
    over the grid's beam widths for a strategy that takes one (None otherwise, e.g. particle
    filtering), the aggregations for one that takes an aggregation, and the grid's
    ``max_steps`` and ``answer_rule`` where the strategy takes them."""
    grid = cfg.grid
    settings = {"max_steps": grid.max_steps, "answer_rule": grid.answer_rule}
    out = []
    for strategy in of_kind(grid.strategies, "live"):
        cls = STRATEGIES[strategy]
        for n in grid.tree_budget_list:
            for m in grid.beam_widths if "m" in cls.takes() else (None,):
                if m is not None and (n % m or n < m):
                    continue
                aggregations = (grid.tree_aggregations or grid.aggregations) if "aggregation" in cls.takes() else (None,)
                for aggregation in aggregations:
                    out.append(cls.from_table_row(n, m, aggregation, settings))
    return out


def tree_checkpoint(table_dir: Path, shard_index: int) -> Path:
    return table_dir / "state" / f"tree-shard-{shard_index:05d}.parquet"


def tree_shard_rows(cfg: ProfileConfig, shard: Shard, policy: Policy, prm: PRM | None) -> tuple[pd.DataFrame, dict]:
    """One shard's raw tree runs (one row per prompt, configuration and seed) and its stats
    (``seconds`` it took, of which ``policy_seconds`` / ``prm_seconds`` inside engine calls).
    The same call in every executor (this process, a Ray actor)."""
    t0, run = time.perf_counter(), RunStats()
    configs = tree_configs(cfg)
    sampling = policy.default_sampling_params()
    if cfg.sampling:
        sampling = sampling.replace(**cfg.sampling)
    rows = []
    for seed in cfg.evaluate.seeds:
        jobs = [(p, c) for p in shard.problems for c in configs]
        results = run_search([(p.problem, c) for p, c in jobs], policy, prm, sampling=sampling, seed=seed, stats=run)
        for (problem, config), r in zip(jobs, results):
            c = r.cost
            rows.append({
                "prompt_id": problem.id, "strategy": config.name, "n": config.n, "m": config.m,
                "aggregation": config.params()["aggregation"], "seed": seed,
                "correct": bool(is_equivalent(r.answer, problem.answer)),
                "generations": c.generations, "policy_tokens": c.policy_tokens,
                "policy_generated_tokens": c.policy_generated_tokens,
                "policy_cached_tokens": c.policy_cached_tokens, "prm_tokens": c.prm_tokens,
                "policy_flops": c.policy_flops, "prm_flops": c.prm_flops, "seconds": c.seconds,
            })
    return pd.DataFrame(rows), {"seconds": time.perf_counter() - t0, "policy_seconds": run.policy_seconds,
                                "prm_seconds": run.prm_seconds}


def write_tree_shard(table_dir: Path, index: int, rows: pd.DataFrame, metadata: dict, stats: dict | None = None) -> Path:
    """Write one shard's tree-run checkpoint atomically (once; never run again after), with its
    time breakdown (``stats`` from :func:`tree_shard_rows`) in the file's metadata."""
    path = tree_checkpoint(table_dir, index)
    write_table(rows, path, "tree_runs", dict(metadata, **shard_time_metadata(stats)) if stats else metadata)
    return path


def read_tree_runs(table_dir: Path) -> pd.DataFrame:
    files = sorted((table_dir / "state").glob("tree-shard-*.parquet"))
    frames = [read_table(f, "tree_runs")[0] for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def tree_rows(runs: pd.DataFrame, prompt_tokens: pd.Series, cost_model: CostModel | None = None) -> pd.DataFrame:
    """Average the raw tree runs over seeds into evaluation rows, priced by ``cost_model``
    (None: unpriced). ``prompt_tokens``: prompt_id -> the question's prompt tokens (P, from the
    pool: the tree's first request reads the same prompt). R is what the runs' requests read
    (``policy_tokens`` minus generated), whatever the engine served from its cache."""
    if runs.empty:
        return pd.DataFrame(columns=EVAL_COLUMNS)
    if "policy_generated_tokens" not in runs:
        raise ValueError("these tree runs were written before generated tokens were recorded apart from prompt "
                         "tokens, so they cannot be priced: re-run the tree stage (delete state/tree-shard-*.parquet "
                         "and resume the profile)")
    keys = ["prompt_id", "strategy", "n", "m", "aggregation"]
    runs = runs.assign(correct=runs["correct"].astype(float),
                       request_prompt_tokens=runs["policy_tokens"] - runs["policy_generated_tokens"])
    g = runs.groupby(keys, sort=True, dropna=False)
    out = g.agg(
        accuracy=("correct", "mean"), accuracy_std=("correct", lambda x: float(np.std(x))),
        generations=("generations", "mean"), request_prompt_tokens=("request_prompt_tokens", "mean"),
        generated_tokens=("policy_generated_tokens", "mean"), policy_cached_tokens=("policy_cached_tokens", "mean"),
        prm_tokens=("prm_tokens", "mean"),
    ).reset_index()
    out["budget"] = out["n"]
    out["prompt_tokens"] = out["prompt_id"].map(prompt_tokens).astype(float)
    out["policy_tokens"] = out["request_prompt_tokens"] + out["generated_tokens"]
    return priced(out, cost_model)
