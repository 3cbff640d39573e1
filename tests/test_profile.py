"""The offline profiler: semantics of each stage, resumability, sharding, and the tables."""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.binning import assign_bins, quantile_edges
from selector.profiler import load_config, merge_profiles, run_profile
from selector.profiler.config import ConfigError
from selector.profiler.outcomes import _best, _vote, subsets
from selector.search.aggregate import select_answer
from selector.tables import TableDir, rollout_shards
from selector.records import Candidate

from fakes import RecordingPolicy

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("prompts", "results", "selection", "evaluations")


def sim_config(tmp_path: Path, *, prompts: int = 24, latency: float = 0.0, **overrides) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "questions.jsonl"
    with data.open("w") as fh:
        for i, q in enumerate(make_questions(list(rng.beta(1.2, 1.2, prompts)))):
            fh.write(json.dumps({"id": f"sim-{i}", "problem": q, "answer": problem_for(q).answer}) + "\n")
    cfg = {
        "name": "sim-test",
        "policy": f"sim:latency={latency}" if latency else "sim",
        "prm": "sim:separation=2.0,noise=1.0,bias=1.0",
        "dataset": {"name": "questions.jsonl", "id_field": "id", "heldout": 0.25},
        "pool": {"n": 8, "difficulty_samples": 4},
        "grid": {"strategies": ["majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts"],
                 "budgets": [1, 2, 4, 8], "tree_budgets": [4, 8], "beam_widths": [4], "aggregations": ["last", "min"],
                 "max_steps": 8},
        "binning": {"scheme": "quantile", "k": 3},
        "evaluate": {"subsamples": 50, "seeds": [0]},
        "select": {"folds": 2, "bootstrap": 100, "pilots": [2, 4]},
        "shard_size": 4,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_tables(d: Path) -> dict[str, pd.DataFrame]:
    t = TableDir(d)
    return {k: getattr(t, k)() for k in TABLES}


# --- vectorized voting == the strategies' select_answer ---------------------------------------

def test_vectorized_evaluation_matches_select_answer():
    rng = np.random.default_rng(3)
    for trial in range(200):
        size, n = int(rng.integers(2, 9)), None
        n = int(rng.integers(1, size + 1))
        n_keys = int(rng.integers(1, 4))
        ids = rng.integers(-1, n_keys, size)  # -1: no answer
        scores = rng.choice([0.2, 0.5, 0.5, 0.9], size)  # ties on purpose
        idx = subsets(size, n, 30, trial)
        got_vote = _vote(ids[idx], np.ones(idx.shape), n_keys)
        got_weighted = _vote(ids[idx], scores[idx], n_keys)
        got_best = _best(ids[idx], scores[idx])
        for row, members in enumerate(idx):
            cands = [Candidate(("x",), (float(scores[j]),), None if ids[j] < 0 else str(ids[j]),
                               None if ids[j] < 0 else str(ids[j]), True, "eos", 1) for j in members]
            for rule, got in (("majority", got_vote), ("weighted", got_weighted), ("best", got_best)):
                _, key = select_answer(cands, rule)
                assert (None if got[row] < 0 else str(got[row])) == key, (rule, ids[members], scores[members])


def test_vectorized_filtered_vote_matches_the_strategy():
    from selector.profiler.outcomes import _top_share
    from selector.search.base import Node
    from selector.search.best_of_n import kept_count, keep_top

    rng = np.random.default_rng(4)
    for trial in range(200):
        size = int(rng.integers(2, 9))
        n = int(rng.integers(1, size + 1))
        keep = float(rng.choice([0.25, 0.5, 0.75, 1.0]))
        n_keys = int(rng.integers(1, 4))
        ids = rng.integers(-1, n_keys, size)
        scores = rng.choice([0.2, 0.5, 0.5, 0.9], size)  # ties on purpose
        idx = subsets(size, n, 30, trial)
        kept = _top_share(scores[idx], kept_count(n, keep))
        got = _vote(np.where(kept, ids[idx], -1), scores[idx], n_keys)
        for row, members in enumerate(idx):
            nodes = [Node(("x",), (float(scores[j]),)) for j in members]
            chosen = keep_top(nodes, keep, "last")
            # keep_top returns the kept nodes in sample order: map them back to their members
            positions = [k for k, node in enumerate(nodes) if any(node is c for c in chosen)]
            cands = [Candidate(("x",), (float(scores[members[k]]),), None if ids[members[k]] < 0 else str(ids[members[k]]),
                               None if ids[members[k]] < 0 else str(ids[members[k]]), True, "eos", 1) for k in positions]
            _, key = select_answer(cands, "weighted")
            assert (None if got[row] < 0 else str(got[row])) == key, (ids[members], scores[members], keep)


def test_subsets_are_exact_when_few_and_without_replacement():
    assert len(subsets(8, 4, 100, 0)) == math.comb(8, 4)
    many = subsets(20, 5, 300, 1)
    assert many.shape == (300, 5)
    assert all(len(set(r)) == 5 and list(r) == sorted(r) for r in many)
    assert len({tuple(r) for r in many}) > 250  # random, not the first n samples


# --- binning -----------------------------------------------------------------------------------

def test_quantile_bins_never_split_ties_nor_leave_bins_empty():
    values = [0.0] * 30 + list(np.linspace(0.05, 1.0, 70))
    edges = quantile_edges(values, 5)
    bins = assign_bins(values, edges)
    assert len(set(bins[:30])) == 1  # all the zeros share one bin (the hardest)
    assert bins[0] == len(edges) + 1
    assert set(np.bincount(bins)[1:]) and min(np.bincount(bins)[1:]) > 0
    assert list(assign_bins([0.05, 0.1, 0.49, 0.5, 0.9], [0.1, 0.5])) == [3, 2, 2, 1, 1]


# --- the profile on the simulator ----------------------------------------------------------------

def test_profile_writes_consistent_tables(tmp_path):
    cfg = load_config(sim_config(tmp_path))
    summary = run_profile(cfg, tmp_path / "out", progress=False)
    t = TableDir(tmp_path / "out")
    t.validate()
    prompts, results, selection, ev = (t.prompts(), t.results(), t.selection(), t.evaluations())
    assert len(prompts) == 24 and set(prompts["split"]) == {"profile", "heldout"}
    assert (prompts["split"] == "heldout").sum() == 6
    # selection never sees held-out prompts: n_prompts per bin = profiling prompts in that bin
    per_bin = prompts[prompts["split"] == "profile"].groupby("bin").size()
    for _, row in selection.iterrows():
        assert row["n_prompts"] == per_bin[row["bin"]]
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
        assert row["cross_fitted"]
        same = results[(results["bin"] == row["bin"]) & (results["strategy"] == row["strategy"])
                       & (results["n"] == row["n"])]
        assert len(same) >= 1
    assert set(selection["budget"]) == {1, 2, 4, 8}
    # a budget is compute: each budget's cells fit its cap on average over the profiling prompts
    unit = t.metadata["cost_model"]["sample_cost"]
    for budget, cells in selection.groupby("budget"):
        share = cells["n_prompts"] / cells["n_prompts"].sum()
        assert np.allclose(cells["cap"], budget * unit)
        if (cells["choice"] == "profile_pick").all():
            assert cells[["strategy", "n"]].nunique().max() == 1  # one configuration everywhere
        else:
            assert (share * cells["mean_cost"]).sum() <= budget * unit * (1 + 1e-9)
    # one evaluation row per (prompt, configuration, budget), for all prompts
    keys = ["prompt_id", "strategy", "n", "m", "aggregation", "budget"]
    assert not ev.duplicated(keys).any() and ev["prompt_id"].nunique() == 24
    n_family = 1 + 2 * 2  # majority + (best, weighted) x 2 aggregations
    n_tree = 2 * 2 * 2  # (beam, dvts) x (4, 8) x 2 aggregations
    assert len(ev) == 24 * (4 * n_family) + 24 * n_tree
    meta = t.metadata
    assert meta["n_pool"] == 8 and meta["policy_id"] == "sim-policy" and len(meta["bin_edges"]) <= 2
    assert summary.complete and "selection" in summary.render()
    # one selection per deployable router: the table's own bins and each pilot's
    assert t.selection_estimators() == ["bins:predicted", "pilot:2", "pilot:4"]
    assert meta["default_selection"] == "bins:predicted" and set(meta["pilots"]) == {"pilot:2", "pilot:4"}
    # bins come from the 4 difficulty samples, which no strategy is scored on
    rollouts = t.rollouts()
    assert (rollouts.groupby("prompt_id").size() == 12).all()
    assert set(rollouts.loc[rollouts["sample_id"] < 4, "role"]) == {"difficulty"}
    assert set(rollouts.loc[rollouts["sample_id"] >= 4, "role"]) == {"evaluation"}
    from selector.profiler.difficulty import final_scores

    diff = rollouts[rollouts["role"] == "difficulty"].sort_values("sample_id").groupby("prompt_id")
    want = diff["step_scores"].apply(lambda s: float(np.mean(final_scores(s))))
    got = prompts.set_index("prompt_id")["predicted_pass1"]
    assert np.allclose(got.loc[want.index], want)
    # the pilot:4 selection is the table's own bins (a 4-sample pilot computes the same mean)
    pd.testing.assert_frame_equal(t.selection("pilot:4").drop(columns="estimator"),
                                  t.selection().drop(columns="estimator"))


def test_best_of_n_family_costs_no_generations_beyond_the_pool(tmp_path):
    cfg = load_config(sim_config(tmp_path, grid={"strategies": ["majority", "best_of_n", "weighted_best_of_n"]}))
    policy = RecordingPolicy(SimulatedPolicy())
    summary = run_profile(cfg, tmp_path / "out", policy=policy, prm=SimulatedPRM(), progress=False)
    asked = sum(r.n for call in policy.calls for r in call)
    assert asked == 24 * (4 + 8)  # exactly the pool: difficulty + evaluation samples per prompt, nothing more
    assert summary.ledger["pool"]["generations"] == 24 * 12
    assert summary.ledger["best_of_n_family (from pool)"]["generations"] == 0
    assert summary.ledger["beam_search/dvts (live)"]["generations"] == 0


def test_the_ledger_records_the_pool_stages_wall_seconds(tmp_path):
    from selector.tables import read_metadata, rollout_shards

    out = tmp_path / "t"
    summary = run_profile(load_config(sim_config(tmp_path, latency=0.002)), out, progress=False)
    pool = TableDir(out).metadata["ledger"]["pool"]
    shards = [read_metadata(p)["shard_seconds"] for p in rollout_shards(out)]
    assert pool["seconds"] > 0 and pool["seconds"] == pytest.approx(sum(shards))
    assert summary.ledger["pool"]["seconds"] == pool["seconds"] and " s\n" in summary.render().split("ledger pool")[1]


def test_the_profiling_cost_report_adds_up(tmp_path):
    """metadata["profiling_cost"]: per stage and in total, the shards' wall seconds split into
    engine calls and the profiler's own time, and the tokens generated / read / scored."""
    from selector.tables import read_metadata, rollout_shards

    out = tmp_path / "t"
    # latency: engine time the report must attribute to the policy, not to the profiler
    summary = run_profile(load_config(sim_config(tmp_path, latency=0.002)), out, progress=False)
    meta = TableDir(out).metadata
    cost = meta["profiling_cost"]
    ledger = meta["ledger"]
    trees = _tree_checkpoints(out)
    assert cost["pool"]["shards"] == len(rollout_shards(out)) and cost["tree"]["shards"] == len(trees) > 0
    for stage, files in (("pool", rollout_shards(out)), ("tree", trees)):
        c = cost[stage]
        assert c["wall_seconds"] == pytest.approx(sum(read_metadata(f)["shard_seconds"] for f in files))
        assert c["policy_seconds"] > 0 and c["prm_seconds"] >= 0 and c["profiler_seconds"] >= 0
        assert c["policy_seconds"] + c["prm_seconds"] + c["profiler_seconds"] == pytest.approx(c["wall_seconds"])
    rollouts = TableDir(out).rollouts()
    assert cost["pool"]["generated_tokens"] == int(rollouts["tokens"].sum())
    runs = pd.concat([pd.read_parquet(f) for f in trees])
    assert cost["tree"]["generated_tokens"] == int(runs["policy_generated_tokens"].sum()) > 0
    assert cost["tree"]["generated_tokens"] + cost["tree"]["prompt_tokens"] == int(runs["policy_tokens"].sum())
    assert ledger["beam_search/dvts (live)"]["policy_generated_tokens"] == cost["tree"]["generated_tokens"]
    total = cost["total"]
    for key in ("wall_seconds", "generated_tokens", "prm_tokens", "generations"):
        assert total[key] == pytest.approx(cost["pool"][key] + cost["tree"][key])
    assert 0.0 <= total["profiler_share"] < 1.0
    assert total["profiler_share"] == pytest.approx(total["profiler_seconds"] / total["wall_seconds"])
    assert "profiling cost: " in summary.render() and "tokens generated" in summary.render()


def test_tree_generations_match_the_ledger(tmp_path):
    cfg = load_config(sim_config(tmp_path))
    policy = RecordingPolicy(SimulatedPolicy())
    summary = run_profile(cfg, tmp_path / "out", policy=policy, prm=SimulatedPRM(separation=2.0, noise=1.0, bias=1.0), progress=False)
    asked = sum(r.n for call in policy.calls for r in call)
    assert asked == summary.ledger["pool"]["generations"] + summary.ledger["beam_search/dvts (live)"]["generations"]


def _tree_checkpoints(out: Path) -> list[Path]:
    return sorted((out / "state").glob("tree-shard-*.parquet"))


@pytest.mark.parametrize("stage,wait_until", [
    ("pool", lambda out: len(rollout_shards(out)) >= 3),
    ("beam search / DVTS", lambda out: len(_tree_checkpoints(out)) >= 2),
])
def test_resume_after_kill_gives_the_same_tables(tmp_path, stage, wait_until):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_path = sim_config(tmp_path / "a", latency=0.05)
    reference = run_profile(load_config(sim_config(tmp_path / "b", latency=0.0)), tmp_path / "ref", progress=False)
    assert reference.complete
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "selector.cli", "profile", str(cfg_path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and wait_until(out)):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = {p: p.stat().st_mtime_ns for p in rollout_shards(out) + _tree_checkpoints(out)}
    assert written and not (out / "selection.parquet").exists(), f"killed too late in stage {stage}"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # nothing already written was generated again
    assert all(p.stat().st_mtime_ns == t for p, t in written.items())
    got, want = read_tables(out), read_tables(tmp_path / "ref")
    for kind in TABLES:
        pd.testing.assert_frame_equal(got[kind], want[kind])


def test_shards_merge_into_the_full_table(tmp_path):
    cfg = load_config(sim_config(tmp_path))
    run_profile(cfg, tmp_path / "full", progress=False)
    for i in range(3):
        part = run_profile(cfg, tmp_path / f"part{i}", shard=(i, 3), progress=False)
        assert not part.complete
    with pytest.raises(ConfigError, match="remaining --shard slices"):
        merge_profiles(tmp_path / "partial", [tmp_path / "part0"], progress=False)
    # A slice whose tree stage has not finished (its pool is complete) is refused, not merged
    # into a table whose cells silently lack the live strategies on its prompts.
    unfinished = tmp_path / "part2-unfinished"
    shutil.copytree(tmp_path / "part2", unfinished)
    _tree_checkpoints(unfinished)[-1].unlink()
    with pytest.raises(ConfigError, match="live tree strategies have not run on .* resume the --shard slices"):
        merge_profiles(tmp_path / "early", [tmp_path / "part0", tmp_path / "part1", unfinished], progress=False)
    assert not (tmp_path / "early" / "selection.parquet").exists()
    merge_profiles(tmp_path / "merged", [tmp_path / f"part{i}" for i in range(3)], progress=False)
    got, want = read_tables(tmp_path / "merged"), read_tables(tmp_path / "full")
    for kind in TABLES:
        pd.testing.assert_frame_equal(got[kind], want[kind])
    # a shard's own figures (seconds, timeouts) stay in its file; the table has profiling_cost
    meta = TableDir(tmp_path / "merged").metadata
    assert not [k for k in meta if k.startswith("shard_")] and meta["profiling_cost"]["pool"]["shards"] > 0


def test_a_different_config_in_the_same_directory_is_refused(tmp_path):
    run_profile(load_config(sim_config(tmp_path)), tmp_path / "out", progress=False)
    other = load_config(sim_config(tmp_path, pool={"n": 16}, grid={"budgets": [1, 2]}))
    with pytest.raises(ConfigError, match="different config"):
        run_profile(other, tmp_path / "out", progress=False)


@pytest.mark.parametrize("override,message", [
    ({"pool": {"n": 4}}, r"exceed pool.n=4"),
    ({"grid": {"strategies": ["majority", "beam"]}}, "unknown strategy 'beam'"),
    ({"grid": {"aggregations": ["median"]}}, "unknown aggregation"),
    ({"binning": {"scheme": "absolute", "thresholds": [0.5, 0.1]}}, "increasing"),
    ({"select": {"folds": 1}}, "folds must be >= 2"),
    ({"difficulty": "guess"}, "oracle"),
    ({"pool": {"n": 8, "difficulty_samples": 0}}, "pool.difficulty_samples"),
    ({"select": {"pilots": [5]}}, r"select.pilots \[5\]"),
    ({"select": {"rule": "fastest"}}, "select.rule"),
    ({"grid": {"tree_budgets": [6]}}, "not a multiple"),
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
])
def test_config_errors_name_the_problem(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(sim_config(tmp_path, **override))


# --- importing existing rollouts: the real Qwen2.5-Math samples -------------------------------

def test_replay_of_real_qwen_samples_matches_exact_expectation(shared_data, tmp_path):
    cfg = load_config(ROOT / "configs" / "replay-qwen-rm8.yaml")
    summary = run_profile(cfg, tmp_path / "replay", progress=False)
    assert summary.grading_agreement["agree"] >= 795 and summary.grading_agreement["labelled"] == 800
    assert summary.ledger["pool"]["seconds"] > 0  # importing and grading the samples
    ev = TableDir(tmp_path / "replay").evaluations()
    rows = [json.loads(l) for l in (shared_data / "qwen25math_rm8_math_cot_100.jsonl").open()]
    rollouts = TableDir(tmp_path / "replay").rollouts()
    for n in (1, 2, 4, 8):
        # Independent reference: enumerate every n-subset and pick with select_answer.
        exact = []
        for pid, pool in rollouts.sort_values("sample_id").groupby("prompt_id"):
            cands = [Candidate(tuple(s), tuple(sc), a, k, True, "eos", 0) for s, sc, a, k in
                     zip(pool["steps"], pool["step_scores"], pool["answer"], pool["answer_key"])]
            correct = dict(zip(pool["answer_key"], pool["correct"]))
            hits = [bool(correct.get(select_answer([cands[i] for i in sub], "best")[1], False))
                    for sub in itertools.combinations(range(len(cands)), n)]
            exact.append(np.mean(hits))
        got = ev[(ev["strategy"] == "best_of_n") & (ev["n"] == n)]["accuracy"].mean()
        assert abs(got - np.mean(exact)) < 0.01, (n, got, np.mean(exact))
    assert len(rows) == 100
    # imported pools cost nothing new and can only hold the best-of-N family
    assert summary.ledger["beam_search/dvts (live)"]["generations"] == 0


def test_shipped_demo_table_is_valid_and_reproducible_from_its_config():
    table = ROOT / "tables" / "smollm2-135m__arith-check__arithmetic"
    t = TableDir(table)
    t.validate()
    meta = t.metadata
    cfg = load_config(ROOT / "configs" / "demo-cpu.yaml")
    assert meta["config_hash"] == cfg.config_hash  # the shipped table is what the config produces
    from selector.datasets import load_dataset

    _, sha = load_dataset("arithmetic", size=cfg.dataset.size, seed=cfg.dataset.seed)
    assert meta["dataset_sha256"] == sha
    prompts = t.prompts()
    profile = prompts[prompts["split"] == "profile"]
    shares = profile["bin"].value_counts(normalize=True)
    assert (shares >= 0.10).sum() >= 3  # non-degenerate quantile bins
    assert set(t.selection()["budget"]) == {1, 2, 4, 8, 16}
    assert {"prompt:tfidf", "prompt:minilm"} <= set(meta.get("estimators", {}))


def test_arithmetic_generator_handles_large_counts():
    from selector.datasets import arithmetic_problems

    problems = arithmetic_problems(1000, seed=1)
    assert len({p.problem for p in problems}) == 1000
    assert sum(p.level == 1 for p in problems) == 81  # every distinct one-digit sum, then the level retires
    with pytest.raises(ValueError, match="fewer than"):
        arithmetic_problems(100, seed=0, levels=(1,))


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_names_real_engine_specs(path):
    """A config in configs/ must load (the README points users at them), and its engine specs
    must be ones the registry knows (building them would need the models, so only the name)."""
    from selector.backends.registry import POLICY_SPECS, PRM_SPECS, available_presets

    cfg = load_config(path)
    if cfg.pool.source == "jsonl":  # imported samples: the ids only name where they came from
        return
    policy_name = cfg.policy.partition(":")[0]
    assert policy_name in POLICY_SPECS or cfg.policy in available_presets() or policy_name == "sim", cfg.policy
    assert cfg.prm.partition(":")[0] in PRM_SPECS, cfg.prm
