"""The top-level Python API: ``solve`` one question, ``solve_batch`` many."""
from __future__ import annotations

import threading
from typing import Sequence

from .backends.base import PRM, Policy, SamplingParams
from .backends.registry import DEFAULT_POLICY, DEFAULT_PRM, make_policy, make_prm
from .search.base import StrategyConfig
from .search.runner import run_search
from .records import Candidate, SearchResult

_ENGINES: dict[tuple[str, str], object] = {}
_ENGINES_LOCK = threading.Lock()


def build_engines(policy: str | Policy, prm: str | PRM | None) -> tuple[Policy, PRM | None]:
    """Turn specs into engine objects without loading any weights (ids and parameter counts
    work; an engine loads on first use), reusing engines already built for the same spec string
    in this process."""

    def get(kind: str, spec, factory):
        if not isinstance(spec, str):
            return spec
        with _ENGINES_LOCK:
            if (kind, spec) not in _ENGINES:
                _ENGINES[(kind, spec)] = factory(spec)
            return _ENGINES[(kind, spec)]

    return get("policy", policy, make_policy), get("prm", prm, make_prm)


def resolve_engines(policy: str | Policy, prm: str | PRM | None) -> tuple[Policy, PRM | None]:
    """Turn specs into loaded engines (:func:`build_engines`, then each engine's ``load``), so
    repeated ``solve`` calls do not reload a model. Loading happens here, not inside the first
    search call, so a solve's ledger does not count the one-time load."""
    engines = build_engines(policy, prm)
    for engine in engines:
        load = getattr(engine, "load", None)
        if callable(load):
            load()
    return engines


def solve(
    question: str,
    strategy: StrategyConfig,
    *,
    policy: str | Policy = DEFAULT_POLICY,
    prm: str | PRM | None = DEFAULT_PRM,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    pilot: Sequence[Candidate] | None = None,
) -> SearchResult:
    """Search for an answer to ``question`` with ``strategy`` (e.g. ``BeamSearch(n=8, m=4)``).

    ``policy``/``prm`` are engines or spec strings (default: the embedded CPU default,
    SmolLM2-135M with the ``arith-check`` verifier). Returns the answer, the candidates and the
    cost ledger (generations, tokens, FLOPs, seconds). ``pilot``: whole solutions already
    sampled for this question; the best-of-N family counts them inside its budget and draws
    only the rest, and their cost is not in this ledger. Samples that decided the question's
    difficulty bin (a pilot's) should not be passed here if the result is to be compared with a
    table's expected accuracy: the tables are scored on samples independent of the bin, and
    the router never reuses its pilot's samples.
    """
    pilots = None if pilot is None else [tuple(pilot)]
    return solve_batch([question], strategy, policy=policy, prm=prm, sampling=sampling, seed=seed, pilots=pilots)[0]


def solve_batch(
    questions: Sequence[str],
    strategy: StrategyConfig | Sequence[StrategyConfig],
    *,
    policy: str | Policy = DEFAULT_POLICY,
    prm: str | PRM | None = DEFAULT_PRM,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    progress: bool = False,
    pilots: Sequence[Sequence[Candidate]] | None = None,
) -> list[SearchResult]:
    """Solve many questions together: every round of every question shares one batched policy
    call and one PRM call. ``strategy`` is one config for all, or one per question. A
    question's result does not depend on the rest of the batch."""
    if isinstance(questions, str):
        raise TypeError("solve_batch takes a list of questions; use solve() for one")
    strategies = [strategy] * len(questions) if isinstance(strategy, StrategyConfig) else list(strategy)
    if len(strategies) != len(questions):
        raise ValueError(f"got {len(strategies)} strategies for {len(questions)} questions")
    policy_engine, prm_engine = resolve_engines(policy, prm)
    return run_search(
        list(zip(questions, strategies)), policy_engine, prm_engine, sampling=sampling, seed=seed, progress=progress,
        pilots=pilots,
    )
