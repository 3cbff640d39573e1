"""Search semantics pinned on the simulator and scripted engines (no model involved)."""
from __future__ import annotations


import pytest

from selector import DVTS, BeamSearch, BestOfN, Majority, WeightedBestOfN, make_strategy, solve, solve_batch
from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.search import aggregate, select_answer
from selector.search.base import SearchContext
from selector.search.runner import run_search
from selector.seeds import derive_seed
from selector.records import Candidate

from fakes import HashPRM, RecordingPolicy, RecordingPRM, ScriptedPolicy

QUESTIONS = make_questions([0.05, 0.3, 0.5, 0.7, 0.95])


def sim_engines(**prm_kwargs):
    return RecordingPolicy(SimulatedPolicy()), RecordingPRM(SimulatedPRM(**prm_kwargs))


# --- aggregation and answer rules, hand-computed -------------------------------------------

def test_aggregations_hand_computed():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "prod") == pytest.approx(0.36)
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([0.25], "prod") == 0.25
    with pytest.raises(ValueError, match="empty"):
        aggregate([], "last")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(s, "median")


def _cand(key, scores):
    return Candidate(("x",), tuple(scores), key, key, True, "eos", 1)


def test_answer_rules_hand_computed():
    cands = [_cand("a", [0.9]), _cand("b", [0.95]), _cand("a", [0.2]), _cand("c", [0.6]), _cand("c", [0.6]), _cand(None, [1.0])]
    # counts a=2, b=1, c=2 -> tie a/c goes to first seen: a
    assert select_answer(cands, "majority") == ("a", "a")
    # best single score 0.95 (the None candidate with 1.0 takes no part)
    assert select_answer(cands, "best") == ("b", "b")
    # weighted: a=1.1, b=0.95, c=1.2
    assert select_answer(cands, "weighted") == ("c", "c")
    # aggregation matters: min over two steps
    two = [_cand("a", [0.9, 0.3]), _cand("b", [0.5, 0.5])]
    assert select_answer(two, "best", "last") == ("b", "b")  # 0.3 < 0.5
    assert select_answer(two, "best", "min") == ("b", "b")  # 0.3 < 0.5
    assert select_answer(two, "best", "mean") == ("a", "a")  # 0.6 > 0.5
    assert select_answer(two, "best", "prod") == ("a", "a")  # 0.27 > 0.25
    assert select_answer([_cand(None, [0.5])], "majority") == (None, None)


# --- budget semantics ----------------------------------------------------------------------

@pytest.mark.parametrize("cls", [Majority, BestOfN, WeightedBestOfN])
def test_best_of_n_family_is_one_round_of_n_whole_solutions(cls):
    policy, prm = sim_engines()
    res = run_search([(q, cls(n=16)) for q in QUESTIONS], policy, prm)
    assert len(policy.calls) == 1  # one batched call for all questions
    assert all(r.to_completion and r.n == 16 for r in policy.calls[0])
    for r in res:
        assert r.rounds == (16,)
        assert r.cost.generations == 16
        assert len(r.candidates) == 16
    if cls is Majority:
        assert prm.calls == []  # majority never pays for the PRM
        assert all(r.cost.prm_tokens == 0 and r.cost.prm_flops == 0 for r in res)
    else:
        assert len(prm.calls) == 1 and len(prm.calls[0]) == 16 * len(QUESTIONS)


@pytest.mark.parametrize("cls", [BeamSearch, DVTS])
@pytest.mark.parametrize("n,m", [(8, 4), (16, 4), (8, 2), (4, 4), (6, 3)])
def test_tree_search_spends_exactly_n_per_round_on_fixed_depth_trees(cls, n, m):
    # Every simulated path of a question has exactly L steps, so no path finishes early and
    # every round must spend exactly n generations, for L rounds.
    policy, prm = sim_engines()
    res = run_search([(q, cls(n=n, m=m)) for q in QUESTIONS], policy, prm)
    for q, r in zip(QUESTIONS, res):
        L = problem_for(q).num_steps
        assert r.rounds == (n,) * L, (q, r.rounds)
        assert r.cost.generations == n * L
        assert 0 < len(r.candidates) <= n
    # All questions advance together: one policy call per round, not per question.
    assert len(policy.calls) == max(problem_for(q).num_steps for q in QUESTIONS)


def test_n_not_multiple_of_m_is_a_clear_error():
    for cls in (BeamSearch, DVTS):
        with pytest.raises(ValueError, match=r"n=6 must be a multiple of beam width m=4.*n=4 or n=8"):
            cls(n=6, m=4)
    with pytest.raises(ValueError, match="positive integer"):
        BeamSearch(n=0, m=1)
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("beam", n=4)
    with pytest.raises(ValueError, match="unknown"):
        make_strategy("majority", n=4, m=2)


@pytest.mark.parametrize("aggregation", ["last", "min", "prod", "mean"])
def test_beam_keeps_exactly_top_n_over_m(aggregation):
    n, m = 12, 3
    policy, prm = sim_engines(noise=1.5)
    q = QUESTIONS[2]
    run_search([(q, BeamSearch(n=n, m=m, aggregation=aggregation))], policy, prm)
    prompt = policy.format_prompt(q)
    for r in range(len(policy.calls) - 1):
        # children of round r with their scores, as the PRM returned them
        scored = [("".join(req.steps), out.step_scores) for req, out in zip(prm.calls[r], prm.outputs[r])]
        unfinished = [(t, s) for (t, s), c in zip(scored, [c for o in policy.outputs[r] for c in o.continuations])
                      if c.finish_reason != "eos"]
        ranked = sorted(unfinished, key=lambda ts: -aggregate(ts[1], aggregation))
        expected = [t for t, _ in ranked[: n // m]]
        expanded = [req.prefix[len(prompt):] for req in policy.calls[r + 1]]
        assert expanded == expected
        assert all(req.n == m for req in policy.calls[r + 1])


def test_dvts_subtrees_share_no_state():
    n, m = 8, 2
    q = QUESTIONS[3]
    policy, prm = sim_engines(noise=1.5)
    full = run_search([(q, DVTS(n=n, m=m))], policy, prm, seed=5)[0]
    ctx = SearchContext(q, derive_seed(5, q))
    # Identify each request's subtree by its seed; subtree i at depth d+1 must continue one of
    # the children of subtree i's own request at depth d (never another subtree's).
    prefix_of = {}
    for d, (calls, outs) in enumerate(zip(policy.calls, policy.outputs)):
        for req, out in zip(calls, outs):
            i = next(i for i in range(n // m) if ctx.seed_for("dvts", i, d) == req.seed)
            prefix_of[i, d] = (req.prefix, [req.prefix + c.text for c in out.continuations])
    for (i, d), (prefix, _) in prefix_of.items():
        if d > 0:
            assert prefix in prefix_of[i, d - 1][1]
            for j in range(n // m):
                if j != i and (j, d - 1) in prefix_of:
                    assert prefix not in prefix_of[j, d - 1][1]
    # A subtree's path does not depend on the others: subtree 0 alone (n = m) is identical.
    alone = run_search([(q, DVTS(n=m, m=m))], SimulatedPolicy(), SimulatedPRM(noise=1.5), seed=5)[0]
    assert alone.candidates and [c.text for c in alone.candidates] == [c.text for c in full.candidates[: len(alone.candidates)]]
    assert all(c.finished for c in full.candidates)
    assert len(full.candidates) <= n


@pytest.mark.parametrize("p_finish", [0.1, 0.4, 0.8])
@pytest.mark.parametrize("strategy", [BeamSearch(n=8, m=2), BeamSearch(n=16, m=4), DVTS(n=8, m=2), DVTS(n=16, m=4)])
def test_no_strategy_exceeds_its_budget_when_paths_finish_early(strategy, p_finish):
    policy = RecordingPolicy(ScriptedPolicy(p_finish=p_finish))
    questions = [f"q{i}" for i in range(12)]
    results = run_search([(q, strategy) for q in questions], policy, HashPRM(), seed=7)
    for r in results:
        assert max(r.rounds) <= strategy.n
        assert sum(r.rounds) == r.cost.generations
        assert len(r.candidates) <= strategy.n
        assert all(c.finished for c in r.candidates)
        assert len(r.rounds) <= strategy.max_steps
    # With early finishers, later rounds shrink only because fewer paths are live.
    if strategy.name == "beam_search":
        assert all(r.rounds[0] == strategy.n for r in results)
        assert all(k % strategy.m == 0 for r in results for k in r.rounds[1:])


def test_beam_stops_once_n_candidates_finished_and_returns_at_most_n():
    # p_finish high: many beams finish in round 2; more than n may finish in the last round.
    policy = RecordingPolicy(ScriptedPolicy(p_finish=0.5))
    s = BeamSearch(n=8, m=2)
    results = run_search([(f"q{i}", s) for i in range(30)], policy, HashPRM())
    assert any(sum(1 for _ in r.candidates) == 8 for r in results)
    assert all(len(r.candidates) <= 8 for r in results)


def test_max_steps_bounds_rounds():
    policy = ScriptedPolicy(p_finish=0.0)  # never finishes by itself
    r = run_search([("q", BeamSearch(n=4, m=2, max_steps=5))], policy, HashPRM())[0]
    assert r.rounds == (4, 4, 4, 4, 4)


@pytest.mark.parametrize("strategy", [BeamSearch(n=8, m=2, max_steps=4), DVTS(n=8, m=2, max_steps=4)])
def test_last_round_completes_every_spent_path(strategy):
    # A policy whose steps never finish a solution within max_steps: the old code spent 32
    # generations and returned no candidate. The last allowed round now samples each live
    # path to the end, so the search returns candidates and an answer within its budget.
    policy = RecordingPolicy(ScriptedPolicy(p_finish=0.0))
    r = run_search([("q", strategy)], policy, HashPRM())[0]
    assert len(r.rounds) == 4 and all(g <= 8 for g in r.rounds)
    assert r.cost.generations == sum(r.rounds)
    assert r.candidates and r.answer is not None
    assert all(c.finished and len(c.steps) == 4 for c in r.candidates)  # 3 steps + the completion
    last = policy.calls[-1]
    assert all(req.to_completion for req in last) and not any(req.to_completion for call in policy.calls[:-1] for req in call)
    # Completions extend their node: the candidate keeps the steps before the last round.
    assert all(req.prefix.count("step") == 3 for req in last)


# --- ledger, determinism, batching --------------------------------------------------------

def test_cost_ledger_adds_up():
    policy, prm = SimulatedPolicy(), SimulatedPRM()
    r = solve(QUESTIONS[1], BeamSearch(n=8, m=4), policy=policy, prm=prm)
    c = r.cost
    assert c.generations == sum(r.rounds)
    # FLOPs count computed tokens: the simulator serves every non-root prefix from its cache.
    assert 0 < c.policy_cached_tokens < c.policy_prompt_tokens and c.cache_unreported_requests == 0
    assert c.policy_flops == 2 * policy.num_parameters * (
        c.policy_prompt_tokens - c.policy_cached_tokens + c.policy_generated_tokens)
    assert c.policy_computed_tokens == c.policy_tokens - c.policy_cached_tokens
    assert c.prm_flops == 2 * prm.num_parameters * c.prm_tokens
    assert c.flops == c.policy_flops + c.prm_flops
    assert c.seconds > 0
    d = c.to_dict()
    for key in ("generations", "policy_tokens", "prm_tokens", "flops", "seconds"):
        assert key in d
    assert (c + c).generations == 2 * c.generations and sum([c, c]).prm_tokens == 2 * c.prm_tokens


def test_result_does_not_depend_on_batch():
    strategies = [BeamSearch(n=8, m=4), DVTS(n=8, m=2), WeightedBestOfN(n=8, aggregation="min")]
    for s in strategies:
        alone = [solve(q, s, policy="sim", prm="sim", seed=3) for q in QUESTIONS]
        batch = solve_batch(QUESTIONS, s, policy="sim", prm="sim", seed=3)
        for a, b in zip(alone, batch):
            assert a.candidates == b.candidates and a.answer == b.answer and a.rounds == b.rounds
    # a different seed gives different samples
    other = solve(QUESTIONS[2], strategies[2], policy="sim", prm="sim", seed=4)
    assert other.candidates != alone[2].candidates


def test_mixed_strategies_share_rounds():
    policy, prm = sim_engines()
    probs = [(QUESTIONS[0], BeamSearch(n=8, m=2)), (QUESTIONS[1], Majority(n=4)), (QUESTIONS[2], DVTS(n=4, m=2))]
    res = run_search(probs, policy, prm)
    assert [r.strategy.name for r in res] == ["beam_search", "majority", "dvts"]
    # round 1 of all three went out in the same policy call
    assert sorted(req.n for req in policy.calls[0]) == [2, 2, 4, 8]


def test_search_finds_better_answers_than_one_sample_with_a_good_prm():
    # Sanity of direction on the simulator: with a strong PRM, beam search beats pass@1.
    qs = make_questions([0.5] * 40)
    refs = [problem_for(q).answer for q in qs]
    prm = SimulatedPRM(separation=3.0, noise=0.5)
    beam = solve_batch(qs, BeamSearch(n=16, m=4), policy="sim", prm=prm)
    single = solve_batch(qs, Majority(n=1), policy="sim", prm=None)
    acc = lambda rs: sum(r.answer == a for r, a in zip(rs, refs)) / len(refs)
    assert acc(beam) > acc(single) + 0.2
