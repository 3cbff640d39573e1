"""Adaptive consistency scored from the pool, with no new generation.

Adaptive consistency draws whole solutions, like the pool does, so its run on a prompt can be
replayed on the prompt's pooled samples: its windows take the samples in pool order
(``sample_id``), window after window, until its stop rule fires or the budget cap is spent.
The replay drives the strategy's own ``search`` generator and chooses the answer with the
runner's own candidate building and answer rule, so a row equals a live run whose policy
returned those samples (``tests/test_new_strategies.py`` checks it). The caller decides which
samples are eligible (e.g. the evaluation samples only, never those that decided the bin).

Each row records what the run actually spent: ``generations`` = samples drawn, request prompt
tokens = one prompt read per window, generated tokens = the drawn samples', PRM tokens = the
drawn samples' (weighted vote only; the majority vote never calls the PRM); the table's cost
model prices them (:mod:`selector.cost_model`). ``budget`` is the cap ``n``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd

from ..search.adaptive_consistency import AdaptiveConfidence, AdaptiveConsistency
from ..search.aggregate import select_answer
from ..search.base import Node, SearchContext
from ..search.runner import candidates_of
from .config import ADAPTIVE, ProfileConfig, of_kind
from ..cost_model import CostModel
from .outcomes import EVAL_COLUMNS, priced, token_columns


def adaptive_configs(cfg: ProfileConfig) -> list[AdaptiveConsistency]:
    """Every (cap n, window, vote, aggregation) of adaptive consistency in the grid."""
    grid = cfg.grid
    out = []
    for n in grid.adaptive_budget_list:
        if n > cfg.pool.n:
            continue
        for window in grid.adaptive_windows:
            if window > n:
                continue
            for vote in grid.adaptive_votes if ADAPTIVE in grid.strategies else ():
                for aggregation in grid.aggregations if vote == "weighted" else ("last",):
                    out.append(AdaptiveConsistency(n=n, window=window, rule=grid.adaptive_rule,
                                                   threshold=grid.adaptive_threshold, vote=vote, aggregation=aggregation))
            for aggregation in grid.aggregations if AdaptiveConfidence.name in grid.strategies else ():
                out.append(AdaptiveConfidence(n=n, window=window, threshold=grid.adaptive_threshold,
                                              aggregation=aggregation))
    return out


def replay(strategy: AdaptiveConsistency, nodes: Sequence[Node], seed: int = 0) -> tuple[list[Node], list[int]]:
    """Run ``strategy`` with the samples ``nodes`` (in order) standing in for the policy's.

    Returns the strategy's candidates and the samples drawn per round. Raises ValueError when
    the strategy asks for more samples than ``nodes`` holds."""
    gen = strategy.search(SearchContext("", seed))
    used, rounds = 0, []
    try:
        request = next(gen)
        while True:
            got = []
            for exp in request:
                if used + exp.n > len(nodes):
                    raise ValueError(f"the pool holds {len(nodes)} samples; {strategy.name} asked for {used + exp.n}")
                got.append(list(nodes[used : used + exp.n]))
                used += exp.n
            rounds.append(sum(exp.n for exp in request))
            request = gen.send(got)
    except StopIteration as stop:
        return stop.value, rounds


def adaptive_consistency_rows(
    cfg: ProfileConfig, rollouts: pd.DataFrame, cost_model: CostModel | None = None, progress: Callable | None = None
) -> pd.DataFrame:
    """Accuracy and tokens as spent of adaptive consistency at every grid configuration, one row
    per (prompt, configuration), replayed on ``rollouts`` in ``sample_id`` order (tokens as the
    live run would count them; see the module docstring), priced by ``cost_model`` (None: unpriced)."""
    if not of_kind(cfg.grid.strategies, "replayed"):
        return pd.DataFrame(columns=EVAL_COLUMNS)
    configs = adaptive_configs(cfg)
    out: list[dict] = []
    groups = rollouts.sort_values(["prompt_id", "sample_id"]).groupby("prompt_id", sort=False)
    bar = progress(total=rollouts["prompt_id"].nunique(), desc="evaluate adaptive consistency", unit="prompt") if progress else None
    for prompt_id, pool in groups:
        nodes = [
            Node(tuple(steps), tuple(float(x) for x in scores), int(tokens), bool(finished), None, int(prm_tokens))
            for steps, scores, tokens, finished, prm_tokens in zip(
                pool["steps"], pool["step_scores"], pool["tokens"], pool["finished"], pool["prm_tokens"])
        ]
        correct = pool["correct"].astype(bool).tolist()
        prompt_tokens = int(pool["prompt_tokens"].iloc[0])
        for strategy in configs:
            if strategy.n > len(nodes):
                continue
            drawn, rounds = replay(strategy, nodes)
            candidates = candidates_of(drawn)
            answer, key = select_answer(candidates, strategy.answer_rule, strategy.selection_aggregation)
            # The answer's sample is the first drawn candidate with the winning key.
            hit = key is not None and correct[next(i for i, c in enumerate(candidates) if c.answer_key == key)]
            used = len(drawn)
            scored = strategy.vote == "weighted" or strategy.rule == "confidence"
            prm_tokens = sum(n.prm_tokens for n in drawn) if scored else 0
            out.append({
                "prompt_id": prompt_id, "strategy": strategy.name, "n": strategy.n, "m": strategy.window,
                "aggregation": strategy.aggregation if strategy.vote == "weighted" else None,
                "budget": strategy.n, "accuracy": float(hit), "accuracy_std": 0.0,
                # Each window is a new request at the root: it reads the prompt again (R); the
                # cost model decides whether an engine computes it again.
                **token_columns(used, prompt_tokens, len(rounds) * prompt_tokens, sum(n.tokens for n in drawn),
                                prm_tokens),
            })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return priced(out, cost_model)
