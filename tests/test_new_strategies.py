"""Particle filtering and adaptive self-consistency, pinned on the simulator and scripted fakes."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from selector.backends.base import Continuation, SamplingParams, ScoreOutput, StepOutput
from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.datasets import Problem
from selector.profiler import run_profile
from selector.cost_model import CostModel
from selector.profiler.adaptive import adaptive_configs, adaptive_consistency_rows
from selector.profiler.config import ConfigError, DatasetConfig, GridConfig, PoolConfig, ProfileConfig, load_config
from selector.profiler.pool import _rollout_rows
from selector.search import AdaptiveConsistency, BestOfN, ParticleFiltering, make_strategy, run_search
from selector.search.adaptive_consistency import beta_confidence, should_stop
from selector.search.particle_filtering import likelihood_weights, resample
from selector.grading import is_equivalent

from fakes import HashPRM, RecordingPolicy, RecordingPRM, ScriptedPolicy

QUESTIONS = make_questions([0.05, 0.3, 0.5, 0.7, 0.95])


# --- particle filtering ----------------------------------------------------------------------

def test_likelihood_is_softmax_of_logits_hand_computed():
    # odds 1 and 4 -> 1/5, 4/5; temperature 2 takes the square root of the odds: 1 and 2.
    assert likelihood_weights([0.5, 0.8]) == pytest.approx([0.2, 0.8])
    assert likelihood_weights([0.5, 0.8], temperature=2.0) == pytest.approx([1 / 3, 2 / 3])
    assert sum(likelihood_weights([0.0, 1.0, 0.3])) == pytest.approx(1.0)  # clipped, no inf/nan


@pytest.mark.parametrize("scheme", ["multinomial", "systematic"])
def test_resampling_frequencies_follow_the_weights(scheme):
    weights = [0.1, 0.2, 0.3, 0.4]
    counts = Counter()
    k, trials = 8, 3000
    for seed in range(trials):
        picks = resample(weights, k, scheme, seed)
        assert len(picks) == k and all(0 <= i < len(weights) for i in picks)
        if scheme == "systematic":  # each particle copied floor(k w) or ceil(k w) times
            per = Counter(picks)
            for i, w in enumerate(weights):
                assert int(np.floor(k * w)) <= per[i] <= int(np.ceil(k * w))
        counts.update(picks)
    freq = np.array([counts[i] for i in range(len(weights))]) / (k * trials)
    assert freq == pytest.approx(weights, abs=0.01)
    assert resample(weights, k, scheme, 7) == resample(weights, k, scheme, 7)  # seeded
    with pytest.raises(ValueError, match="resampling scheme"):
        resample(weights, k, "stratified-typo", 0)


@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_particle_filtering_never_spends_more_than_n_per_round(n):
    policy = RecordingPolicy(SimulatedPolicy())
    strategy = ParticleFiltering(n=n, max_steps=6)
    results = run_search([(q, strategy) for q in QUESTIONS], policy, SimulatedPRM())
    for r in results:
        assert r.rounds and all(g <= n for g in r.rounds)
        assert sum(r.rounds) == r.cost.generations
        assert len(r.rounds) <= 6
        assert len(r.candidates) <= n
    for call in policy.calls:  # one batched call per round; per question at most n
        per_question = defaultdict(int)
        for req in call:
            per_question[req.prefix.split("\n")[0]] += req.n
        assert max(per_question.values()) <= n


class _OneGoodFirstStep:
    """First steps s0..s{k-1}; later steps never finish until sampled to completion."""

    id = "one-good"
    num_parameters = 100

    def format_prompt(self, question):
        return f"Q: {question}\n"

    def default_sampling_params(self):
        return SamplingParams(step_delimiter="\n\n")

    def generate_steps(self, requests):
        outs = []
        for r in requests:
            if r.to_completion:
                conts = [Continuation(f"then \\boxed{{{j}}}", 4, "eos") for j in range(r.n)]
            elif r.prefix.endswith("\n") and "s" not in r.prefix.split("\n", 1)[1]:
                conts = [Continuation(f"s{j}\n\n", 2, "delimiter") for j in range(r.n)]
            else:
                conts = [Continuation(f"more{j}\n\n", 2, "delimiter") for j in range(r.n)]
            outs.append(StepOutput(tuple(conts), 3))
        return outs


class _FirstStepPRM:
    id = "first-step"
    num_parameters = 10

    def score(self, requests):
        return [ScoreOutput(tuple(0.99 if r.steps[0] == "s0\n\n" else 0.01 for _ in r.steps), len(r.steps)) for r in requests]


def test_a_particle_with_much_higher_weight_is_duplicated_and_the_last_round_completes_it():
    policy = RecordingPolicy(_OneGoodFirstStep())
    result = run_search([("q", ParticleFiltering(n=8, max_steps=2))], policy, _FirstStepPRM())[0]
    assert len(policy.calls) == 2 and result.rounds == (8, 8)
    second = policy.calls[1]
    # The likelihood ratio is (99 / (1/99)) ~ 1e4: every one of the 8 slots goes to s0.
    assert len(second) == 1 and second[0].n == 8 and second[0].prefix.endswith("s0\n\n")
    assert second[0].to_completion  # the last allowed round samples each path to the end
    assert len(result.candidates) == 8
    # Completed paths keep their earlier steps (the runner's to_completion on a non-root node).
    assert all(c.steps[0] == "s0\n\n" and len(c.steps) == 2 and c.finished for c in result.candidates)


def test_particle_filtering_is_deterministic_and_batch_independent():
    strategy = ParticleFiltering(n=8, resampling="systematic", temperature=0.5, max_steps=5)
    alone = [run_search([(q, strategy)], SimulatedPolicy(), SimulatedPRM(), seed=3)[0] for q in QUESTIONS]
    batch = run_search([(q, strategy) for q in QUESTIONS], SimulatedPolicy(), SimulatedPRM(), seed=3)
    assert [(r.answer, r.rounds, r.cost.generations) for r in alone] == [(r.answer, r.rounds, r.cost.generations) for r in batch]


def test_particle_filtering_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="resampling"):
        ParticleFiltering(n=4, resampling="residual")
    with pytest.raises(ValueError, match="temperature"):
        ParticleFiltering(n=4, temperature=0)
    with pytest.raises(ValueError, match="max_steps"):
        ParticleFiltering(n=4, max_steps=0)
    assert make_strategy("particle_filtering", n=4).params()["m"] is None


# --- adaptive consistency --------------------------------------------------------------------

def test_beta_confidence_hand_computed():
    assert beta_confidence(0, 0) == pytest.approx(0.5)
    assert beta_confidence(4, 0) == pytest.approx(31 / 32)  # P(Bin(5, 1/2) <= 4)
    assert beta_confidence(2, 0) == pytest.approx(7 / 8)
    assert beta_confidence(3, 1) == pytest.approx(26 / 32)  # P(Bin(5, 1/2) <= 3)
    assert should_stop(["a", "a", "a", "a"], 4, "beta", 0.95)
    assert not should_stop(["a", "a"], 2, "beta", 0.95)
    assert should_stop(["b", "a", "a"], 2, "unanimous", 0.95)
    assert not should_stop(["a", None], 2, "unanimous", 0.95)


@pytest.mark.parametrize("rule", ["unanimous", "beta"])
def test_adaptive_consistency_stops_after_one_unanimous_window(rule):
    policy = RecordingPolicy(ScriptedPolicy(answers=("7",)))
    r = run_search([("q", AdaptiveConsistency(n=16, window=4, rule=rule))], policy, None)[0]
    assert r.rounds == (4,) and r.cost.generations == 4 and r.answer == "7"
    assert len(policy.calls) == 1 and policy.calls[0][0].to_completion


@pytest.mark.parametrize("n,window", [(5, 2), (7, 3), (16, 4), (3, 4)])
@pytest.mark.parametrize("vote", ["majority", "weighted"])
def test_adaptive_consistency_never_exceeds_its_cap(n, window, vote):
    strategy = AdaptiveConsistency(n=n, window=window, rule="unanimous", vote=vote)
    prm = RecordingPRM(HashPRM())
    results = run_search([(f"q{i}", strategy) for i in range(20)], ScriptedPolicy(answers=("1", "2", "3")), prm)
    for r in results:
        assert r.cost.generations == sum(r.rounds) == len(r.candidates) <= n
        assert all(g <= window for g in r.rounds)
        assert r.cost.generations == n or len(r.rounds) * window == r.cost.generations  # stopped on a full window
    assert any(r.cost.generations == n for r in results)  # three answers: most windows disagree
    assert (prm.calls != []) == (vote == "weighted")  # the plain vote never calls the PRM


def test_adaptive_consistency_windows_are_seeded_by_index():
    # A window's samples do not depend on the cap: n=8 draws the same first two windows as n=16.
    small = run_search([("q", AdaptiveConsistency(n=8, window=4, rule="unanimous"))], ScriptedPolicy(), None)[0]
    big = run_search([("q", AdaptiveConsistency(n=16, window=4, rule="unanimous"))], ScriptedPolicy(), None)[0]
    k = len(small.candidates)
    assert [c.steps for c in big.candidates[:k]] == [c.steps for c in small.candidates]


def test_adaptive_consistency_config_errors():
    for bad, match in [({"window": 0}, "window"), ({"rule": "esc"}, "rule"), ({"threshold": 1.5}, "threshold"),
                       ({"vote": "best"}, "vote")]:
        with pytest.raises(ValueError, match=match):
            AdaptiveConsistency(n=8, **bad)


# --- the pool replay equals a live run -------------------------------------------------------

class _PoolPolicy:
    """Returns each question's pooled samples in sample order, whatever the seeds."""

    id = "pool"
    num_parameters = 1000

    def __init__(self, pools: dict[str, list[dict]], prompt_tokens: dict[str, int]):
        self.pools, self.prompt_tokens, self.next = pools, prompt_tokens, defaultdict(int)

    def format_prompt(self, question):
        return f"Q: {question}\n"

    def default_sampling_params(self):
        return SamplingParams(step_delimiter="\n\n")

    def generate_steps(self, requests):
        outs = []
        for r in requests:
            assert r.to_completion
            q = r.prefix[3:-1]
            rows = self.pools[q][self.next[q] : self.next[q] + r.n]
            self.next[q] += r.n
            conts = tuple(Continuation("".join(row["steps"]), row["tokens"], "eos" if row["finished"] else "length")
                          for row in rows)
            outs.append(StepOutput(conts, self.prompt_tokens[q]))
        return outs


class _PoolPRM:
    id = "pool-prm"
    num_parameters = 10

    def __init__(self, scores: dict[tuple, tuple[list[float], int]]):
        self.scores = scores

    def score(self, requests):
        return [ScoreOutput(tuple(self.scores[tuple(r.steps)][0]), self.scores[tuple(r.steps)][1]) for r in requests]


def _sim_pool(n_pool: int):
    questions = make_questions(list(np.linspace(0.1, 0.9, 12)))
    problems = [Problem(f"p{i}", q, problem_for(q).answer) for i, q in enumerate(questions)]
    results = run_search([(p.problem, BestOfN(n=n_pool)) for p in problems], SimulatedPolicy(), SimulatedPRM(), seed=5)
    rows = []
    for p, r in zip(problems, results):
        rows.extend(_rollout_rows(p, r.candidates, r.cost.policy_prompt_tokens))
    return problems, pd.DataFrame(rows)


@pytest.mark.parametrize("rule", ["beta", "unanimous", "confidence"])
def test_pool_replay_equals_a_live_run_on_the_same_samples(rule):
    problems, rollouts = _sim_pool(16)
    grid = GridConfig(strategies=("adaptive_consistency",), budgets=(2, 4, 8, 16), aggregations=("last", "min"),
                      adaptive_windows=(2, 4), adaptive_rule=rule)
    cfg = ProfileConfig("t", DatasetConfig("x"), PoolConfig(n=16, difficulty_samples=4), grid=grid).check()
    # The live run below has no prefix cache: every request computes its prefix, the "none" model.
    rows = adaptive_consistency_rows(cfg, rollouts, CostModel("none", policy_params=1000, prm_params=10))
    configs = adaptive_configs(cfg)
    assert len(rows) == len(configs) * len(problems) and len(configs) == (4 + 3) * 3  # (n, window) pairs (window 4 skips n=2) x 3 votes
    pools = {p.problem: rollouts[rollouts.prompt_id == p.id].sort_values("sample_id").to_dict("records") for p in problems}
    prompt_tokens = {p.problem: int(pools[p.problem][0]["prompt_tokens"]) for p in problems}
    scores = {tuple(row["steps"]): (row["step_scores"], row["prm_tokens"]) for pool in pools.values() for row in pool}
    assert any(rows.generations < rows.n)  # some prompts stop early
    for config in configs:
        live = run_search([(p.problem, config) for p in problems], _PoolPolicy(pools, prompt_tokens), _PoolPRM(scores))
        got = rows[(rows.n == config.n) & (rows.m == config.window)
                   & (rows.aggregation.isna() if config.vote == "majority" else rows.aggregation == config.aggregation)]
        got = got.set_index("prompt_id").loc[[p.id for p in problems]]
        for p, r, (_, row) in zip(problems, live, got.iterrows()):
            assert row.accuracy == float(is_equivalent(r.answer, p.answer))
            assert row.generations == r.cost.generations
            assert row.policy_tokens == r.cost.policy_tokens
            assert row.prm_tokens == r.cost.prm_tokens
            assert row.flops == pytest.approx(r.cost.flops)


def test_grid_checks_adaptive_keys(tmp_path):
    base = {"strategies": ("adaptive_consistency",), "budgets": (4, 8)}
    for bad, match in [({"adaptive_windows": (0,)}, "adaptive_windows"), ({"adaptive_rule": "esc"}, "adaptive_rule"),
                       ({"adaptive_threshold": 0.2}, "adaptive_threshold"), ({"adaptive_votes": ("best",)}, "adaptive_votes"),
                       ({"budgets": (4, 32)}, "exceed pool.n")]:
        with pytest.raises(ConfigError, match=match):
            ProfileConfig("t", DatasetConfig("x"), PoolConfig(n=8, difficulty_samples=4), grid=GridConfig(**{**base, **bad})).check()
    # Configs without adaptive consistency keep their hash (the new keys are left out of it).
    plain = ProfileConfig("t", DatasetConfig("x"), PoolConfig(n=8))
    tweaked = ProfileConfig("t", DatasetConfig("x"), PoolConfig(n=8), grid=GridConfig(adaptive_rule="unanimous"))
    assert plain.config_hash == tweaked.config_hash


def test_profile_reports_both_new_strategies(tmp_path):
    from test_profile import sim_config

    path = sim_config(tmp_path, prompts=12, grid={
        "strategies": ["majority", "weighted_best_of_n", "beam_search", "particle_filtering", "adaptive_consistency"],
        "budgets": [4, 8], "tree_budgets": [4, 8], "aggregations": ["last"], "adaptive_windows": [2, 4]})
    summary = run_profile(load_config(path), tmp_path / "out", progress=False)
    ev = pd.read_parquet(tmp_path / "out" / "evaluations.parquet")
    assert {"particle_filtering", "adaptive_consistency"} <= set(ev.strategy)
    pf = ev[ev.strategy == "particle_filtering"]
    assert pf.m.isna().all() and (pf.generations > 0).all()
    ac = ev[ev.strategy == "adaptive_consistency"]
    assert (ac.generations <= ac.n).all() and (ac.generations >= ac.m).all()
    res = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert {"particle_filtering", "adaptive_consistency"} <= set(res.strategy)
    assert summary.complete
    # Selection's cost columns are the means as spent: adaptive consistency is credited for stopping early.
    ac_res = res[res.strategy == "adaptive_consistency"]
    assert (ac_res.mean_generations <= ac_res.n).all() and (ac_res.mean_generations < ac_res.n).any()


def test_table_rows_name_the_configs_the_router_runs():
    settings = {"max_steps": 10, "answer_rule": "best", "adaptive_rule": "unanimous", "adaptive_threshold": 0.9}
    assert AdaptiveConsistency.from_table_row(16, 4, "min", settings) == AdaptiveConsistency(
        n=16, window=4, rule="unanimous", threshold=0.9, vote="weighted", aggregation="min")
    assert AdaptiveConsistency.from_table_row(8, 2, None, {}) == AdaptiveConsistency(n=8, window=2, vote="majority")
    assert ParticleFiltering.from_table_row(8, None, "min", settings) == ParticleFiltering(
        n=8, aggregation="min", max_steps=10, answer_rule="best")
    # The row a config writes (params' n, m, aggregation) builds that config back.
    for config in (AdaptiveConsistency(n=8, window=2, vote="weighted", aggregation="min"), ParticleFiltering(n=4)):
        p = config.params()
        agg = None if getattr(config, "vote", "weighted") == "majority" else p["aggregation"]
        assert type(config).from_table_row(p["n"], p["m"], agg, {}) == config


def test_new_strategies_have_their_own_colours():
    from selector import plots
    from selector.search import STRATEGIES

    colours = {s: plots.strategy_color(s) for s in STRATEGIES}
    assert len(set(colours.values())) == len(colours)  # every registered strategy its own colour
    light = {plots.strategy_color(s, light=True) for s in STRATEGIES}
    assert len(light) == len(STRATEGIES)


def test_adaptive_confidence_is_its_own_strategy_and_replays_like_a_live_run():
    problems, rollouts = _sim_pool(16)
    grid = GridConfig(strategies=("adaptive_consistency", "adaptive_confidence"), budgets=(4, 8, 16),
                      aggregations=("last",), adaptive_windows=(4,), adaptive_votes=("majority",))
    cfg = ProfileConfig("t", DatasetConfig("x"), PoolConfig(n=16, difficulty_samples=4), grid=grid).check()
    configs = adaptive_configs(cfg)
    names = [c.name for c in configs]
    assert names.count("adaptive_confidence") == 3 and names.count("adaptive_consistency") == 3
    rows = adaptive_consistency_rows(cfg, rollouts, CostModel("none", policy_params=1000, prm_params=10))
    pools = {p.problem: rollouts[rollouts.prompt_id == p.id].sort_values("sample_id").to_dict("records") for p in problems}
    prompt_tokens = {p.problem: int(pools[p.problem][0]["prompt_tokens"]) for p in problems}
    scores = {tuple(row["steps"]): (row["step_scores"], row["prm_tokens"]) for pool in pools.values() for row in pool}
    spent = {}
    for config in configs:
        live = run_search([(p.problem, config) for p in problems], _PoolPolicy(pools, prompt_tokens), _PoolPRM(scores))
        got = rows[(rows.strategy == config.name) & (rows.n == config.n)].set_index("prompt_id").loc[[p.id for p in problems]]
        for p, r, (_, row) in zip(problems, live, got.iterrows()):
            assert row.accuracy == float(is_equivalent(r.answer, p.answer))
            assert row.generations == r.cost.generations
        spent[(config.name, config.n)] = got.generations.mean()
    # confidence-weighted counts are below 1 per sample: the same agreement stops no sooner
    assert spent[("adaptive_confidence", 16)] >= spent[("adaptive_consistency", 16)]
    # a table row names it by its own strategy: its rule and vote are its own
    from selector.search.adaptive_consistency import AdaptiveConfidence

    back = AdaptiveConfidence.from_table_row(16, 4, "last", {"adaptive_rule": "beta", "adaptive_threshold": 0.9})
    assert (back.rule, back.vote, back.threshold, back.window) == ("confidence", "weighted", 0.9, 4)
