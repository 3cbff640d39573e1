"""The self-confidence verifier (issue 26): the policy's own token probabilities as step
scores, carried through the search runner for step-level and whole-solution sampling."""
from __future__ import annotations

import math

import pytest

from selector.backends.base import Continuation, StepOutput
from selector.backends.registry import make_prm
from selector.backends.self_confidence import SelfConfidencePRM
from selector.backends.simulated import SimulatedPolicy, make_questions
from selector.errors import EngineError
from selector.search import BeamSearch, FilteredVote, WeightedBestOfN, run_search


class LogprobPolicy(SimulatedPolicy):
    """The simulator, recording whether each call asked for log-probabilities."""

    def __init__(self, report: bool = True, **kw):
        super().__init__(**kw)
        self.report = report
        self.asked: list[bool] = []

    def generate_steps(self, requests):
        self.asked.extend(r.params.logprobs for r in requests)
        outs = super().generate_steps(requests)
        if self.report:
            return outs
        return [StepOutput(tuple(c._replace(logprob=None) for c in o.continuations), o.prompt_tokens, o.cached_tokens)
                for o in outs]


def test_step_scores_are_the_geometric_mean_token_probability_of_each_generation():
    policy = LogprobPolicy()
    q = make_questions([0.5])[0]
    prm = make_prm("self-confidence")
    assert isinstance(prm, SelfConfidencePRM) and prm.num_parameters == 0
    tree = run_search([(q, BeamSearch(n=8, m=4, max_steps=6))], policy, prm)[0]
    assert all(policy.asked)  # the runner asked because the verifier reads them
    assert tree.cost.prm_tokens == 0 and tree.cost.prm_flops == 0  # no model: no PRM compute
    for cand in tree.candidates:  # one confidence per step, each from the generation that wrote it
        assert len(cand.step_scores) == len(cand.steps)
        assert all(0 < s <= 1 for s in cand.step_scores)
    whole = run_search([(q, WeightedBestOfN(n=8))], LogprobPolicy(), prm)[0]
    for cand in whole.candidates:  # one generation wrote every step: one confidence for all
        assert len(set(cand.step_scores)) == 1


def test_the_confidence_equals_exp_of_the_mean_token_logprob():
    class Fixed(SimulatedPolicy):
        def generate_steps(self, requests):
            outs = super().generate_steps(requests)
            return [StepOutput(tuple(Continuation(c.text, c.num_tokens, c.finish_reason, -0.3 * c.num_tokens)
                                     for c in o.continuations), o.prompt_tokens, o.cached_tokens) for o in outs]

    res = run_search([(make_questions([0.3])[0], BeamSearch(n=4, m=2, max_steps=6))], Fixed(), SelfConfidencePRM())[0]
    for cand in res.candidates:
        assert cand.step_scores == pytest.approx((math.exp(-0.3),) * len(cand.steps))


def test_a_policy_without_logprobs_is_refused_with_the_reason():
    with pytest.raises(EngineError, match="returned no token log-probabilities"):
        run_search([(make_questions([0.5])[0], WeightedBestOfN(n=4))], LogprobPolicy(report=False), SelfConfidencePRM())


def test_confidence_separates_right_from_wrong_and_filtering_uses_it():
    # The simulator writes right steps at -0.2 nats per token and wrong ones at -0.5: confidence
    # should rank a right solution above a wrong one most of the time.
    qs = make_questions([0.5] * 30, prefix="conf")
    res = run_search([(q, WeightedBestOfN(n=8)) for q in qs], LogprobPolicy(), SelfConfidencePRM(), seed=3)
    right, wrong = [], []
    for r in res:
        for c in r.candidates:
            (right if "[-]" not in "".join(c.steps) else wrong).append(c.step_scores[-1])
    assert right and wrong and sum(right) / len(right) > sum(wrong) / len(wrong) + 0.1
    kept = run_search([(qs[0], FilteredVote(n=8, filter_keep=0.25))], LogprobPolicy(), SelfConfidencePRM())[0]
    everyone = run_search([(qs[0], WeightedBestOfN(n=8))], LogprobPolicy(), SelfConfidencePRM())[0]
    assert len(kept.candidates) == 2  # a quarter of 8, the most confident
    best_two = sorted(c.step_scores[-1] for c in everyone.candidates)[-2:]
    assert sorted(c.step_scores[-1] for c in kept.candidates) == best_two


def test_a_self_confidence_table_profiles_routes_and_serves_every_strategy_it_supports(tmp_path):
    """Acceptance 1 of issue 26 on the simulator (the CPU default's table ships; tests/test_evidence_table.py):
    a profile with `prm: self-confidence` has confidence-weighted and confidence-filtered votes,
    adaptive consistency stopping on confidence, tree searches scored by it, and routes."""
    from test_profile import sim_config

    from selector.router_evaluation import evaluate_router
    from selector.table_summary import inspect_table
    from selector.profiler import load_config, run_profile
    from selector.routing import Router
    from selector.tables import TableDir

    cfg = sim_config(tmp_path, prompts=32, prm="self-confidence",
                     grid={"strategies": ["majority", "weighted_best_of_n", "filtered_vote", "beam_search", "dvts",
                                          "adaptive_consistency", "adaptive_confidence"], "filter_keep": 0.5,
                           "adaptive_windows": [2]})
    run_profile(load_config(cfg), tmp_path / "t", progress=False)
    table = TableDir(tmp_path / "t")
    table.validate()
    ev = table.evaluations()
    assert {"weighted_best_of_n", "filtered_vote", "adaptive_confidence", "beam_search", "dvts"} <= set(ev["strategy"])
    assert (ev["prm_tokens"] == 0).all() and table.metadata["prm_params"] == 0  # a verifier that computes nothing
    scores = table.rollouts(["step_scores"])["step_scores"]
    assert all(0 < s <= 1 for row in scores for s in row)  # the policy's confidence, per step
    router = Router.load(tmp_path / "t", estimator="pilot:2")
    q = make_questions([0.4], prefix="routed")[0]
    result = router.solve(q, 4)
    assert result.answer is not None and result.cost.prm_flops == 0
    report = evaluate_router(tmp_path / "t", estimators=["pilot:2"], bootstrap=100, router="pilot:2")
    assert [v["budget"] for v in report.versus_profile_pick][-1] == "pooled"
    assert "pilot:2" in report.calibration and "bins:predicted" in report.calibration
    text = inspect_table(table, width=400)
    assert "prm_id" in text and "self-confidence" in text


def test_a_table_selects_for_an_agreement_pilot_beside_its_own_confidence_pilot(tmp_path):
    """`select.pilot_signals: [agreement]` on a self-confidence table: `pilot:2` bins by the
    mean confidence of two samples, `pilot:2:agreement` by their agreement; both route and are
    evaluated with their calibration, and no sample changes (the config hash stays)."""
    from test_profile import sim_config

    from selector.router_evaluation import evaluate_router
    from selector.profiler import load_config, run_profile
    from selector.routing import Router
    from selector.tables import TableDir

    grid = {"strategies": ["majority", "weighted_best_of_n", "filtered_vote"], "budgets": [1, 2, 4, 8]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = load_config(sim_config(tmp_path / "a", prompts=32, prm="self-confidence", grid=grid))
    both = load_config(sim_config(tmp_path / "b", prompts=32, prm="self-confidence", grid=grid,
                                  select={"pilot_signals": ["agreement"]}))
    assert plain.config_hash == both.config_hash
    run_profile(both, tmp_path / "t", progress=False)
    table = TableDir(tmp_path / "t")
    pilots = table.metadata["pilots"]
    assert pilots["pilot:2"]["signal"] == "prm_mean" and pilots["pilot:2:agreement"]["signal"] == "agreement"
    assert {"pilot:2", "pilot:2:agreement", "pilot:4:agreement"} <= set(table.selection_estimators())
    q = make_questions([0.4], prefix="agree")[0]
    for name in ("pilot:2", "pilot:2:agreement"):
        decision = Router.load(tmp_path / "t", estimator=name).route(q, 4)
        assert decision.estimator == name and decision.bin is not None
    report = evaluate_router(tmp_path / "t", bootstrap=100, router="pilot:2:agreement")
    assert {"pilot:2", "pilot:2:agreement", "bins:predicted"} <= set(report.calibration)
    assert report.versus_profile_pick and report.declared_router == "router (pilot:2:agreement)"
