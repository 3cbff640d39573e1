"""The online router on a simulator table: decisions, fallbacks, pilot reuse, batching, threads."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions
from selector.estimators import EstimatorIntegrityError
from selector.estimators.train import train_on_table
from selector.profiler import load_config, run_profile
from selector.routing import Router, SelectionCells
from selector.tables import TableDir

from fakes import RecordingPolicy

PRM_SPEC = "sim:separation=2.0,noise=1.0,bias=1.0"


def test_load_checks_the_engines_match_the_table(sim_table):
    with pytest.raises(ValueError, match=r"profiled with PRM 'sim-prm', but the PRM given is 'arith-check'"):
        Router.load(sim_table, prm="arith-check")
    with pytest.raises(ValueError, match="no estimator 'prompt:minilm'.*train-estimator"):
        Router.load(sim_table, estimator="prompt:minilm")


def test_route_reads_the_selection_cell_and_falls_back_to_lower_budgets(sim_table):
    router = Router.load(sim_table)
    sel = TableDir(sim_table).selection("prompt:tfidf")  # the cells chosen on this estimator's own bins
    q = make_questions([0.5])[0]
    d = router.route(q, 8)
    row = sel[(sel["bin"] == d.bin) & (sel["budget"] == 8)].iloc[0]
    assert (d.strategy.name, d.strategy.n, d.expected_accuracy) == (row["strategy"], row["n"], row["accuracy"])
    assert d.fallback is None and abs(sum(d.bin_proba.values()) - 1) < 1e-9
    later = router.route(q, 100)
    assert later.budget == 8 and "nearest lower budget 8" in later.fallback
    with pytest.raises(ValueError, match="below the table's smallest budget 1"):
        router.route(q, 0)


def test_a_forced_strategy_is_a_router_call_with_the_tables_tree_settings(sim_table):
    router = Router.load(sim_table)
    max_steps = TableDir(sim_table).config["grid"]["max_steps"]
    assert router.tree_settings["max_steps"] == max_steps
    d = router.force("beam_search", 6)  # width lowered to the class default 4, n rounded down to a multiple
    assert d.forced and d.bin is None and (d.strategy.n, d.strategy.m, d.strategy.max_steps) == (4, 4, max_steps)
    assert (d.budget, d.requested_budget) == (4, 6) and "routing bypassed" in d.source
    assert "forced" in d.expectation() and d.to_dict()["forced"] is True
    small = router.force("dvts", 2)
    assert (small.strategy.n, small.strategy.m) == (2, 2)
    assert router.force("particle_filtering", 3).strategy.max_steps == max_steps  # every tree strategy gets them
    assert not router.route(make_questions([0.5])[0], 8).forced
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        router.force("nope", 4)
    (result,) = router.solve_decided(["What is 2 + 2?"], [router.force("majority", 2)], [None])
    assert result.cost.generations == 2 and result.estimate_cost.generations == 0
    with pytest.raises(TypeError):
        router.tree_settings["max_steps"] = 1  # read-only: the table's settings, not the caller's


def test_solve_counts_the_pilot_in_the_ledger_and_never_reuses_its_samples(sim_table):
    policy = RecordingPolicy(SimulatedPolicy())
    router = Router.load(sim_table, policy=policy, prm=SimulatedPRM(separation=2.0, noise=1.0, bias=1.0), estimator="pilot:2")
    for q in make_questions([0.2, 0.5, 0.8], prefix="routed"):
        before = sum(r.n for call in policy.calls for r in call)
        res = router.solve(q, 8)
        spent = sum(r.n for call in policy.calls for r in call) - before
        assert res.estimate_cost.generations == 2
        assert res.cost.generations == res.estimate_cost.generations + res.search.cost.generations == spent
        # The samples that decided the bin are not the strategy's samples (nor redrawn by it).
        pilot = {c.text for c in router.estimate_batch([q])[0].pilot}
        assert pilot and not pilot & {c.text for c in res.candidates}
        assert res.decision.estimator == "pilot:2"


def test_solve_batch_shares_rounds_and_matches_single_solves(sim_table):
    qs = make_questions([0.1, 0.3, 0.5, 0.7, 0.9], prefix="batch")
    router = Router.load(sim_table)
    batch = router.solve_batch(qs, budget=8)
    single = [router.solve(q, 8) for q in qs]
    assert [r.answer for r in batch] == [r.answer for r in single]
    assert [r.candidates for r in batch] == [r.candidates for r in single]
    policy = RecordingPolicy(SimulatedPolicy())
    recorded = Router.load(sim_table, policy=policy, prm=SimulatedPRM(separation=2.0, noise=1.0, bias=1.0))
    res = recorded.solve_batch(qs, budget=8)
    assert len(policy.calls) == max(len(r.search.rounds) for r in res)  # one policy call per round


def test_average_budget_allocation(sim_table):
    router = Router.load(sim_table)
    qs = make_questions([0.05, 0.3, 0.5, 0.7, 0.95, 0.99], prefix="alloc")
    ests = router.estimate_batch(qs)
    cells = SelectionCells.of(TableDir(sim_table), "prompt:tfidf")
    unit = TableDir(sim_table).metadata["cost_model"]["sample_cost"]

    def spent(bins, budgets):  # mean compute of the cells, in budget units (scored samples' compute)
        return sum(cells.cell(b, n)[0].mean_cost / unit for b, n in zip(bins, budgets)) / len(budgets)

    bins = [e.bin for e in ests]
    cheapest = spent(bins, [min(router.budgets)] * len(bins))
    for avg in (1, 2, 4, 8):
        budgets = router.allocate(ests, avg)
        assert spent(bins, budgets) <= max(avg, cheapest) + 1e-9  # compute, not nominal budgets
        assert all(b in router.budgets for b in budgets)
    generous = router.allocate(ests, 8)
    assert spent(bins, generous) > spent(bins, router.allocate(ests, 1))  # more compute buys costlier cells
    results = router.solve_batch(qs, average_budget=4)
    assert spent(bins, [r.decision.budget for r in results]) <= 4 + 1e-9
    with pytest.raises(ValueError, match="exactly one of"):
        router.solve_batch(qs, budget=4, average_budget=4)


def test_concurrent_solves_are_safe(sim_table):
    router = Router.load(sim_table)
    qs = make_questions([0.2, 0.4, 0.6, 0.8] * 3, prefix="thread")
    sequential = [router.solve(q, 4).answer for q in qs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda q: router.solve(q, 4).answer, qs))
    assert parallel == sequential


def test_tampered_estimator_is_refused_at_load(sim_table, tmp_path):
    copy = tmp_path / "table"
    shutil.copytree(sim_table, copy)
    est = copy / "estimator-tfidf.npz"
    est.write_bytes(est.read_bytes()[:-1] + b"x")
    with pytest.raises(EstimatorIntegrityError, match="does not match the recorded"):
        Router.load(copy)


def test_evaluate_scores_routers_and_fixed_strategies_on_held_out_prompts(sim_table, tmp_path, capsys):
    from selector.cli import main as cli_main
    from selector.router_evaluation import evaluate_router

    report = evaluate_router(sim_table, bootstrap=200)
    prompts = TableDir(sim_table).prompts()
    assert report.n_prompts == (prompts["split"] == "heldout").sum() == 10
    methods = {r["method"] for r in report.rows}
    assert {"router (bins:predicted)", "router (prompt:tfidf)", "router (pilot:4)", "fixed majority",
            "router (prompt:tfidf, allocated)"} <= methods
    assert any(m.startswith("fixed beam_search") for m in methods) and any(m.startswith("fixed dvts") for m in methods)
    for r in report.rows:
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["mean_flops"] > 0
    # the pilot router pays for its pilot whatever follows: k generations, and its FLOPs
    at1 = {r["method"]: r for r in report.rows if r["budget"] == 1}
    pilot1, own1, tfidf1 = at1["router (pilot:4)"], at1["router (bins:predicted)"], at1["router (prompt:tfidf)"]
    assert pilot1["mean_generations"] == tfidf1["mean_generations"] + 4
    assert pilot1["mean_flops"] > tfidf1["mean_flops"]
    # the table's own bins are a 4-sample pilot's (4 difficulty samples): same bins, same price
    assert (own1["accuracy"], own1["mean_generations"], own1["mean_flops"]) == (
        pilot1["accuracy"], pilot1["mean_generations"], pilot1["mean_flops"])
    # headline: the declared router against the profile pick, per budget and pooled, paired CIs
    assert report.declared_router == "router (prompt:tfidf)"
    versus = report.versus_profile_pick
    assert [v["budget"] for v in versus] == report.budgets + ["pooled"]
    cells = TableDir(sim_table).selection("prompt:tfidf")
    picks = TableDir(sim_table).metadata["profile_picks"]
    pick_rows = {r["budget"]: r for r in report.rows if r["method"] == "profile pick"}
    for v in versus[:-1]:
        assert set(v) >= {"budget", "router_accuracy", "fixed", "fixed_accuracy", "router_flops", "fixed_flops",
                          "margin", "margin_ci"}
        pick = picks[str(v["budget"])]
        assert v["fixed"].startswith(f"{pick['strategy']}/{pick['n']}")  # chosen on the profiling prompts
        assert v["fixed_accuracy"] == pytest.approx(pick_rows[v["budget"]]["accuracy"])
        assert v["margin"] == pytest.approx(v["router_accuracy"] - v["fixed_accuracy"])
        assert v["margin_ci"][0] <= v["margin"] <= v["margin_ci"][1]
        at = cells[cells["budget"] == v["budget"]]
        if (at["choice"] == "profile_pick").all():  # the router is the profile pick there: exactly 0
            assert v["identical"] and v["margin"] == 0 and v["margin_ci"] == [0.0, 0.0]
            assert v["router_flops"] == v["fixed_flops"]
    pooled = versus[-1]
    assert pooled["differs_at"] == [v["budget"] for v in versus[:-1] if not v["identical"]]
    assert pooled["margin"] == pytest.approx(np.mean([v["margin"] for v in versus[:-1]]))
    assert pooled["margin_ci"][0] <= pooled["margin"] <= pooled["margin_ci"][1]
    declared = [v for v in report.versus_fixed if v["method"] == report.declared_router]
    assert [v["budget"] for v in declared] == report.budgets
    for v in declared:
        if v["best_fixed"] is None:  # nothing fixed is that cheap: no margin rather than one against 0
            assert v["margin"] is None and v["margin_ci"] is None
            continue
        lo, hi = v["margin_ci"]
        assert lo <= v["margin"] <= hi
    assert len(report.efficiency["ratio_ci"]) == 2
    assert {"prompt:tfidf", "pilot:4", "bins:predicted"} <= set(report.calibration)
    for c in report.calibration.values():
        assert c["ci"][0] <= c["realized"] <= c["ci"][1] and c["gap_ci"][0] <= c["gap"] <= c["gap_ci"][1]
    out = tmp_path / "eval.json"
    assert cli_main(["evaluate", "--tables", str(sim_table), "--out", str(out), "--bootstrap", "100"]) == 0
    assert json.loads(out.read_text())["n_prompts"] == 10
    capsys.readouterr()
    assert cli_main(["evaluate", "--tables", str(sim_table), "--out", str(out), "--bootstrap", "100", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert printed["efficiency"].keys() >= {"ratio_ci"} and "margin_ci" in printed["versus_fixed"][0]


def test_evaluate_writes_into_a_table_only_when_asked(sim_table, tmp_path, capsys):
    from selector.cli import main as cli_main

    table = tmp_path / "copy"
    shutil.copytree(sim_table, table)
    before = sorted(p.name for p in table.iterdir())
    assert cli_main(["evaluate", "--tables", str(table), "--bootstrap", "50"]) == 0
    assert "not written (--save writes it beside the table" in capsys.readouterr().out
    assert sorted(p.name for p in table.iterdir()) == before  # a report command left the table alone
    assert cli_main(["evaluate", "--tables", str(table), "--bootstrap", "50", "--save"]) == 0
    assert f"written {table / 'evaluation-heldout.json'}" in capsys.readouterr().out
    assert json.loads((table / "evaluation-heldout.json").read_text())["n_prompts"] == 10
    assert cli_main(["evaluate", "--tables", str(table), "--save", "--out", str(tmp_path / "e.json")]) == 2


@pytest.mark.slow
def test_router_never_loses_to_the_profile_pick_on_the_simulator(tmp_path):
    """Issue 23 on configs/sim-router.yaml (a PRM with a blind spot that search over-optimises,
    prompts whose wording partly reveals difficulty, 90 held-out prompts): the declared router
    against the profile pick, per budget and pooled; the larger world (configs/sim-router-2000.yaml)
    is checked on its shipped table in tests/test_evidence_table.py."""
    from pathlib import Path

    from selector.router_evaluation import evaluate_router

    root = Path(__file__).resolve().parents[1]
    run_profile(load_config(root / "configs" / "sim-router.yaml"), tmp_path / "t", progress=False)
    report_cv, _, _ = train_on_table(tmp_path / "t", features="tfidf", folds=5)
    assert report_cv.metrics["spearman_rho"] > 0.6
    report = evaluate_router(tmp_path / "t", estimators=["prompt:tfidf"], bootstrap=400)
    versus = {v["budget"]: v for v in report.versus_profile_pick}
    assert set(versus) == {1, 2, 4, 8, 16, 32, 64, "pooled"}
    for budget, v in versus.items():
        assert v["margin_ci"][0] <= v["margin"] <= v["margin_ci"][1]
        assert v["margin_ci"][0] >= -0.02, v  # never significantly worse than what a user would deploy
        if budget != "pooled":
            assert v["router_flops"] <= v["fixed_flops"] * 1.25, v  # the same compute, moved between bins
    assert versus["pooled"]["margin"] >= 0
    gap = report.calibration["prompt:tfidf"]["gap_ci"]
    assert gap[0] <= 0 <= gap[1], report.calibration["prompt:tfidf"]


def test_route_builds_no_engine_and_solve_builds_them_once(sim_table, monkeypatch):
    from selector import api

    built = []

    def counting(factory):
        def make(spec):
            built.append(spec)
            return factory(spec)
        return make

    monkeypatch.setattr(api, "_ENGINES", {})  # nothing cached from other tests
    monkeypatch.setattr(api, "make_policy", counting(api.make_policy))
    monkeypatch.setattr(api, "make_prm", counting(api.make_prm))
    router = Router.load(sim_table)  # prompt:tfidf
    q = make_questions([0.5], prefix="lazy")[0]
    decision = router.route(q, 8)
    router.route_batch([q, q], 4)
    assert built == [] and not router.engines_loaded
    first, second = router.solve(q, 8), router.solve(q, 4)
    assert len(built) == 2 and router.engines_loaded  # one policy, one PRM, built once for both solves
    assert first.decision == decision and second.cost.generations > 0


def test_cli_route_on_the_shipped_table_imports_no_torch_and_builds_no_engine():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import selector.api as api\n"
        "def refuse(spec): raise AssertionError(f'engine built: {spec}')\n"
        "api.make_policy = api.make_prm = refuse\n"
        "from selector.cli import main\n"
        "rc = main(['route', '--tables', 'tables/smollm2-135m__arith-check__arithmetic', 'What is 3 + 4?', '--budget', '4'])\n"
        "print('torch imported:', 'torch' in sys.modules, 'rc', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.returncode == 0, out.stderr
    assert "torch imported: False rc 0" in out.stdout
    assert " n=4 " in out.stdout and "{" not in out.stdout  # a readable strategy, not a dict


def test_an_engine_object_given_to_the_router_loads_on_the_first_solve_only(sim_table):
    class CountingLoads(SimulatedPolicy):
        loads = 0

        def load(self):
            self.loads += 1
            return self

    policy = CountingLoads()
    router = Router.load(sim_table, policy=policy)  # checked against the table's id without loading
    q = make_questions([0.3], prefix="loads")[0]
    router.route(q, 4)
    assert policy.loads == 0
    router.solve(q, 4)
    router.solve(q, 8)
    assert policy.loads == 1


def test_a_bin_without_cells_routes_to_the_nearest_bin_and_says_so():
    # A prompt estimator fitted on all profiling prompts can predict a bin its out-of-fold
    # predictions never gave, so that estimator's selection has no cells there.
    import pandas as pd

    from selector.routing import SelectionCells

    rows = pd.DataFrame([{"bin": b, "budget": n, "strategy": "majority", "n": n, "m": None, "aggregation": None,
                          "accuracy": 0.1 * b, "ci_low": 0.0, "ci_high": 1.0, "mean_flops": 1.0}
                         for b in (1, 3, 5) for n in (1, 4)])
    cells = SelectionCells(rows)
    row, note = cells.cell(2, 4)
    assert (int(row.bin), int(row.budget)) == (1, 4) and "nearest bin 1" in note
    row, note = cells.cell(4, 2)
    assert int(row.bin) == 3 and "nearest bin 3" in note and "nearest lower budget 1" in note
    assert cells.cell(5, 4)[1] is None
    assert cells.allocate([2, 4, 6], 4)  # allocation uses the same fallback


def test_a_table_is_repriced_and_reselected_without_generating(sim_table, tmp_path):
    from selector.router_evaluation import evaluate_router
    from selector.profiler import reprice_table

    in_memory = evaluate_router(sim_table, estimators=["prompt:tfidf"], bootstrap=100, prefix_cache="none")
    assert in_memory.cost_model["prefix_cache"] == "none" and in_memory.cost_model["repriced"]
    assert TableDir(sim_table).metadata["cost_model"]["prefix_cache"] == "shared"  # the table was not touched
    copy = tmp_path / "table"
    shutil.copytree(sim_table, copy)
    before = TableDir(copy)
    old_ev, old_tfidf = before.evaluations(), before.selection("prompt:tfidf")
    reprice_table(copy, prefix_cache="none", progress=False)
    after = TableDir(copy)
    ev = after.evaluations()
    assert after.metadata["cost_model"]["prefix_cache"] == "none"
    assert np.allclose(ev["flops"], ev["flops_no_cache"])  # every request computes its prefix
    assert (ev["flops"].to_numpy() >= old_ev["flops"].to_numpy() - 1e-6).all()
    assert (ev["flops"] > old_ev["flops"] + 1e-6).any()
    assert ev["accuracy"].equals(old_ev["accuracy"])  # the same samples, priced again
    # the trained estimator survives, its cells re-chosen from the out-of-fold bins it recorded
    tfidf = after.selection("prompt:tfidf")
    assert "prompt:tfidf" in after.metadata["estimators"] and len(tfidf) == len(old_tfidf)
    # one sample is one request, priced alike (the simulator's prompts share no preamble: S = 0);
    # a tree search re-reads its prefixes, which only the cache made free
    assert np.allclose(tfidf["cap"], old_tfidf["cap"])
    tree = ev["strategy"].isin(["beam_search", "dvts"]).to_numpy()
    assert (ev["flops"].to_numpy()[tree] > old_ev["flops"].to_numpy()[tree]).all()
    # and evaluate on the re-priced table equals evaluate re-pricing in memory
    again = evaluate_router(copy, estimators=["prompt:tfidf"], bootstrap=100)
    assert again.versus_profile_pick == in_memory.versus_profile_pick


def test_the_efficiency_reference_is_the_configs_declared_strategy(tmp_path):
    """evaluate.efficiency_reference names the fixed strategy whose accuracy at the largest
    budget the efficiency ratio targets (issue 27: majority on GSM8K); it prices no sample, so
    the config hash ignores it, and a name that is no strategy is refused at load."""
    from selector.profiler import ConfigError, load_config, run_profile
    from selector.router_evaluation import evaluate_router
    from test_profile import sim_config

    path = sim_config(tmp_path, prompts=24, grid={"strategies": ["majority", "best_of_n"]},
                      evaluate={"efficiency_reference": "majority"})
    cfg = load_config(path)
    (tmp_path / "d").mkdir()
    (tmp_path / "b").mkdir()
    default = load_config(sim_config(tmp_path / "d", prompts=24, grid={"strategies": ["majority", "best_of_n"]}))
    assert cfg.evaluate.efficiency_reference == "majority" and cfg.config_hash == default.config_hash
    run_profile(cfg, tmp_path / "t", progress=False)
    e = evaluate_router(tmp_path / "t", router="pilot:4", bootstrap=100).efficiency
    assert e["reference"] == "majority" and e["reference_budget"] == 8
    with pytest.raises(ConfigError, match="efficiency_reference must name a strategy"):
        load_config(sim_config(tmp_path / "b", evaluate={"efficiency_reference": "best_of_everything"}))
