"""Issue 26: difficulty without a PRM (agreement) and answer-only pools.

An answer-only pool (each sample's final answer and token count, as an evaluation harness
writes them) imports into rollouts, is graded by the project's grader and profiles into a
valid table with agreement bins; its majority@N accuracies are checked against an
independent enumeration of every N-subset (ties to the answer seen first, in sample order,
as ``search/aggregate.select_answer`` documents), on generated fixtures and on the real Qwen
answers of ``../shared/data`` with their scores removed. A table profiled without a PRM
profiles majority and adaptive consistency; its agreement pilot bins prompts at run time as
the profiler did; ``evaluate``, the learning curve and ``train-estimator`` work on it.
"""
from __future__ import annotations

import itertools
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selector.binning import assign_bins, bin_edges
from selector.grading import group_keys, is_equivalent
from selector.profiler import load_config, run_profile
from selector.profiler.config import ConfigError
from selector.profiler.pool import PoolFileError
from selector.seeds import derive_seed
from selector.tables import TableDir

from test_profile import sim_config

K, N = 3, 6  # difficulty samples, evaluation samples (the fixtures' pool)


# --- independent references (no library voting code) ---------------------------------------

def modal_share(keys) -> float:
    """Share of the most frequent non-None key among all samples."""
    counts = Counter(k for k in keys if k is not None)
    return max(counts.values()) / len(keys) if counts else 0.0


def majority_winner(keys: list) -> int | None:
    """Index (into ``keys``) of the sample whose answer wins the vote: most votes, ties to the
    answer seen first; None when no sample answered."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(i for i, k in enumerate(keys) if k is not None and counts[k] == top)


def exact_majority(keys: list, correct: list[bool], n: int) -> float:
    """Mean correctness of the majority vote over every n-subset of the samples (in sample order)."""
    hits = []
    for subset in itertools.combinations(range(len(keys)), n):
        winner = majority_winner([keys[i] for i in subset])
        hits.append(winner is not None and correct[subset[winner]])
    return float(np.mean(hits))


# --- fixtures --------------------------------------------------------------------------------

def write_fixture_pool(tmp: Path, prompts: int = 30, seed: int = 0) -> None:
    """problems.jsonl (id, problem, answer) and pool.jsonl (per problem: answers, token counts,
    the prompt's token count): answers right with a per-prompt rate, else one of two wrong
    ones (ties happen), sometimes missing, sometimes an equivalent spelling of the right one."""
    rng = np.random.default_rng(seed)
    with (tmp / "problems.jsonl").open("w") as probs, (tmp / "pool.jsonl").open("w") as pool:
        for i in range(prompts):
            a, b = int(rng.integers(10, 99)), int(rng.integers(10, 99))
            text = f"Problem {i}: what is {a} + {b}?" + " Show your work." * int(rng.integers(0, 4))
            probs.write(json.dumps({"id": f"p{i}", "problem": text, "answer": str(a + b)}) + "\n")
            rate = rng.beta(1.0, 1.0)
            answers = []
            for _ in range(K + N):
                u = rng.random()
                if u < 0.1:
                    answers.append(None if u < 0.05 else "")  # no answer (null, or empty)
                elif rng.random() < rate:
                    answers.append(f"{a + b}.0" if rng.random() < 0.2 else f" {a + b} ")
                else:
                    answers.append(str(a + b + int(rng.choice([1, -1]))))
            pool.write(json.dumps({"id": f"p{i}", "final": answers,
                                   "ntok": [int(t) for t in rng.integers(5, 400, K + N)],
                                   "ptok": int(rng.integers(30, 90))}) + "\n")


def answer_config(tmp: Path, **overrides) -> Path:
    cfg = {
        "name": "answers", "policy": "harness-model (answers only)", "prm": "none", "policy_params": 1_000_000,
        "dataset": {"name": "problems.jsonl", "id_field": "id", "heldout": 0.2},
        "pool": {"n": N, "difficulty_samples": K, "source": "jsonl", "path": "pool.jsonl", "completions_field": None,
                 "scores_field": None, "answers_field": "final", "tokens_field": "ntok", "prompt_tokens_field": "ptok"},
        "grid": {"strategies": ["majority", "adaptive_consistency"], "budgets": [1, 2, 3, 6],
                 "adaptive_windows": [2], "adaptive_rule": "unanimous", "adaptive_votes": ["majority"]},
        "difficulty": "agreement",
        "binning": {"scheme": "quantile", "k": 3},
        "evaluate": {"subsamples": 20, "router": "pilot:2"},  # C(6, 3) = 20: every budget exact
        "select": {"bootstrap": 50, "pilots": [1, 2]},
        "shard_size": 8,
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path = tmp / "answers.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def fixture_table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("answers")
    write_fixture_pool(tmp)
    run_profile(load_config(answer_config(tmp)), tmp / "out", progress=False)
    return tmp


def check_majority_and_agreement(table: TableDir, records: dict[str, tuple[list, str]], budgets) -> None:
    """The table's agreement bins and majority@N rows against independent computations from the
    pool file's answers (``records``: prompt id -> (the first K + N answers, reference))."""
    prompts = table.prompts().set_index("prompt_id")
    ev = table.evaluations()
    meta = table.metadata
    k = int(meta["difficulty_samples"])
    for pid, (answers, reference) in records.items():
        keys = group_keys([a.strip() if isinstance(a, str) and a.strip() else None for a in answers])
        correct = [key is not None and is_equivalent(a.strip(), reference) for a, key in zip(answers, keys)]
        assert prompts.loc[pid, "difficulty_score"] == pytest.approx(modal_share(keys[:k]), abs=1e-12)
        assert list(prompts.loc[pid, "difficulty_answers"]) == keys[:k]
        for n in budgets:
            row = ev[(ev["prompt_id"] == pid) & (ev["strategy"] == "majority") & (ev["n"] == n)]
            assert len(row) == 1
            assert row["accuracy"].iloc[0] == pytest.approx(exact_majority(keys[k:], correct[k:], n), abs=1e-12), (pid, n)
    # bins: the config's quantile scheme fitted on the profiling prompts' agreement, as predicted bins are
    profile = prompts[prompts["split"] == "profile"]
    edges = bin_edges(profile["difficulty_score"].to_numpy(), "quantile", 3)
    assert meta["bin_edges"] == pytest.approx(edges)
    assert (prompts["bin"].to_numpy() == assign_bins(prompts["difficulty_score"].to_numpy(), edges)).all()


# --- answer-only pools -----------------------------------------------------------------------

def test_an_answer_only_pool_profiles_into_a_valid_table_with_agreement_bins(fixture_table):
    tmp = fixture_table
    table = TableDir(tmp / "out")
    table.validate()
    meta = table.metadata
    records = {}
    pool = {r["id"]: r for r in map(json.loads, (tmp / "pool.jsonl").open())}
    for r in map(json.loads, (tmp / "problems.jsonl").open()):
        records[r["id"]] = (pool[r["id"]]["final"], r["answer"])
    check_majority_and_agreement(table, records, [1, 2, 3, 6])
    assert meta["difficulty"] == "agreement" and meta["default_selection"] == "bins:agreement"
    assert all(label.startswith("agreement") or "<= agreement" in label for label in meta["bin_labels"].values())
    assert meta["pool_supports"]["strategies"] == ["adaptive_consistency", "majority"]
    assert meta["pool_supports"]["adaptive_votes"] == ["majority"]
    assert meta["pool_tokens"] == {"generated": "the file's field 'ntok'", "prompt": "the file's field 'ptok'"}
    assert {p["signal"] for p in meta["pilots"].values()} == {"agreement"}
    assert table.selection_estimators() == ["bins:agreement", "pilot:1", "pilot:2"]
    # the cost model prices samples from the file's token counts (P + G under `shared`, S = 0)
    rollouts = table.rollouts()
    first = rollouts[rollouts["prompt_id"] == "p0"].sort_values("sample_id")
    assert first["tokens"].tolist() == pool["p0"]["ntok"][: K + N]
    assert (first["prompt_tokens"] == pool["p0"]["ptok"]).all() and (first["prm_tokens"] == 0).all()
    ev = table.evaluations()
    row = ev[(ev["prompt_id"] == "p0") & (ev["strategy"] == "majority") & (ev["n"] == 2)].iloc[0]
    mean_gen = np.mean(pool["p0"]["ntok"][K: K + N])
    assert row["flops"] == pytest.approx(2 * 1_000_000 * (pool["p0"]["ptok"] + 2 * mean_gen))
    assert meta["cost_model"]["axis"] == "flops"


def test_adaptive_consistency_replays_the_stated_answers(fixture_table):
    """Adaptive consistency (unanimous rule, window 2, cap 6) on the answer-only samples equals
    an independent replay: windows of 2 in sample order until one window agrees."""
    tmp = fixture_table
    ev = TableDir(tmp / "out").evaluations()
    pool = {r["id"]: r for r in map(json.loads, (tmp / "pool.jsonl").open())}
    refs = {r["id"]: r["answer"] for r in map(json.loads, (tmp / "problems.jsonl").open())}
    checked = 0
    for pid, rec in pool.items():
        answers = [a.strip() if isinstance(a, str) and a.strip() else None for a in rec["final"]]
        keys = group_keys(answers)[K:]
        for cap in (2, 3, 6):
            drawn = 0
            while drawn < cap:
                width = min(2, cap - drawn)  # the last window is cut to the cap
                drawn += width
                window = keys[drawn - width:drawn]
                if drawn < cap and window[0] is not None and all(k == window[0] for k in window):
                    break
            winner = majority_winner(keys[:drawn])
            hit = winner is not None and is_equivalent(answers[K + winner], refs[pid])
            row = ev[(ev["prompt_id"] == pid) & (ev["strategy"] == "adaptive_consistency") & (ev["n"] == cap)].iloc[0]
            assert (row["generations"], row["accuracy"]) == (drawn, float(hit)), (pid, cap)
            checked += 1
    assert checked == 3 * len(pool)


def test_real_qwen_answers_without_scores_profile_into_an_agreement_table(shared_data, tmp_path):
    """The Qwen2.5-Math file's harness answers (`pred`) with its scores removed, token counts
    stood in by whitespace-separated words of each solution; prompt tokens estimated."""
    rows = [json.loads(line) for line in (shared_data / "qwen25math_rm8_math_cot_100.jsonl").open()]
    with (tmp_path / "problems.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps({"id": r["idx"], "problem": r["question"], "answer": r["gt"], "pred": r["pred"],
                                 "words": [len(c.split()) for c in r["code"]], "label": r["score"]}) + "\n")
    path = answer_config(tmp_path, dataset={"name": "problems.jsonl", "heldout": 0.2},
                         pool={"n": N, "difficulty_samples": 2, "path": "problems.jsonl", "answers_field": "pred",
                               "tokens_field": "words", "prompt_tokens_field": None, "correct_field": "label"},
                         grid={"budgets": [1, 2, 4, 6]}, policy="qwen2.5-math-cot (harness answers)")
    summary = run_profile(load_config(path), tmp_path / "out", progress=False)
    table = TableDir(tmp_path / "out")
    table.validate()
    records = {str(r["idx"]): (r["pred"][: 2 + N], r["gt"]) for r in rows}
    check_majority_and_agreement(table, records, [1, 2, 4, 6])
    rollouts = table.rollouts().set_index(["prompt_id", "sample_id"])
    # the known label error: our grader finds 10000 equal to 10{,}000, the file's label does not
    assert rollouts.loc[("72", 7), "answer"] == "10000" and bool(rollouts.loc[("72", 7), "correct"])
    assert rows[72]["score"][7] is False
    a = summary.grading_agreement
    assert a["labelled"] == 800 and a["agree"] <= 799
    # no token count for prompts in the file: estimated from the problem text, and said so
    assert rollouts.loc[("0", 0), "prompt_tokens"] == math.ceil(len(rows[0]["question"]) / 4)
    assert "characters of the problem text / 4" in table.metadata["pool_tokens"]["prompt"]


def test_scores_let_an_answer_only_pool_profile_best_of_n(shared_data, tmp_path):
    """With the file's reward scores as well, the best-of-N family is profiled too (and said so)."""
    rows = [json.loads(line) for line in (shared_data / "qwen25math_rm8_math_cot_100.jsonl").open()][:20]
    with (tmp_path / "problems.jsonl").open("w") as fh:
        for r in rows:
            fh.write(json.dumps({"id": r["idx"], "problem": r["question"], "answer": r["gt"], "pred": r["pred"],
                                 "words": [len(c.split()) for c in r["code"]], "rm": r["pred_score"]}) + "\n")
    path = answer_config(tmp_path, dataset={"name": "problems.jsonl", "heldout": 0.0}, prm="qwen2.5-math-rm",
                         pool={"difficulty_samples": 2, "path": "problems.jsonl", "answers_field": "pred",
                               "tokens_field": "words",
                               "prompt_tokens_field": None, "scores_field": "rm", "score_transform": "sigmoid"},
                         grid={"strategies": ["majority", "best_of_n", "weighted_best_of_n"]},
                         evaluate={"router": "prompt:tfidf"})
    run_profile(load_config(path), tmp_path / "out", progress=False)
    table = TableDir(tmp_path / "out")
    table.validate()
    assert table.metadata["pool_supports"]["strategies"] == ["adaptive_confidence", "adaptive_consistency", "best_of_n",
                                                              "filtered_vote", "majority", "weighted_best_of_n"]
    ev = table.evaluations()
    rollouts = table.rollouts()
    # best-of-6 takes the highest-scored evaluation sample's answer (first on ties)
    for pid, pool in rollouts[rollouts["role"] == "evaluation"].sort_values("sample_id").groupby("prompt_id"):
        scores = [s[-1] for s in pool["step_scores"]]
        answered = [i for i, k in enumerate(pool["answer_key"]) if k is not None]
        best = max(answered, key=lambda i: (scores[i], -i))
        got = ev[(ev["prompt_id"] == pid) & (ev["strategy"] == "best_of_n") & (ev["n"] == N)]["accuracy"].iloc[0]
        assert got == float(pool["correct"].iloc[best])


@pytest.mark.parametrize("override,message", [
    ({"grid": {"strategies": ["majority", "best_of_n"]}}, r"grid.strategies \['best_of_n'\]: this pool cannot score"),
    ({"grid": {"adaptive_votes": ["majority", "weighted"]}}, r"grid.adaptive_votes \['weighted'\]"),
    ({"difficulty": "predicted"}, "use difficulty: agreement"),
    ({"prm": "arith-check"}, "set prm: none"),
    ({"pool": {"tokens_field": None, "prompt_tokens_field": None}}, "set pool.tokens_field too"),
    ({"pool": {"answers_field": None}}, "needs the samples' final answers"),
    ({"pool": {"answers_field": "ntok"}}, "its own name"),
])
def test_config_check_refuses_what_the_pool_cannot_support(tmp_path, override, message):
    write_fixture_pool(tmp_path, prompts=4)
    with pytest.raises(ConfigError, match=message):
        load_config(answer_config(tmp_path, **override))


@pytest.mark.parametrize("override,message", [
    ({"prm": "none"}, r"grid.strategies \['best_of_n', 'weighted_best_of_n', 'beam_search', 'dvts'\].*no PRM"),
    ({"prm": "none", "grid": {"strategies": ["majority"]}}, "use difficulty: agreement"),
    ({"pool": {"answers_field": "final"}}, "pool.answers_field describes an imported pool"),
])
def test_config_check_refuses_prm_free_and_misplaced_settings(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(sim_config(tmp_path, **override))


def _mutate(tmp: Path, change) -> None:
    lines = (tmp / "pool.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    lines[1] = change(record) if callable(change) else change
    if isinstance(lines[1], dict):
        lines[1] = json.dumps(lines[1])
    (tmp / "pool.jsonl").write_text("\n".join(lines) + "\n")


def _set(field, index, value):
    def change(record):
        if index is None:
            record[field] = value
        else:
            record[field][index] = value
        return record
    return change


@pytest.mark.parametrize("change,message", [
    (_set("final", 0, 42), "final answer as a string"),
    (_set("final", 2, "x" * 1001), "1001 characters long"),
    (_set("final", 1, "a{b"), "not a well-formed answer"),
    (_set("ntok", 3, -1), "token count"),
    (_set("ntok", 3, 2 ** 30), "token count"),
    (_set("ntok", 3, True), "token count"),
    (_set("ntok", 3, "12"), "token count"),
    (_set("ptok", None, -5), "token count"),
    (_set("final", None, "123"), "must be a list"),
    (lambda r: {**r, "final": r["final"][:5], "ntok": r["ntok"][:5]}, "needs at least 9"),
    (lambda r: {**r, "ntok": r["ntok"] + [1]}, "paired"),
    (lambda r: {k: v for k, v in r.items() if k != "final"}, "no field 'final'"),
    ("[1, 2, 3]", "must be a JSON object"),
    ('{"id": "p1", "final": [', "not valid JSON"),
])
def test_untrusted_pool_values_are_refused_naming_the_line(tmp_path, change, message):
    write_fixture_pool(tmp_path, prompts=4)
    _mutate(tmp_path, change)
    cfg = load_config(answer_config(tmp_path))
    with pytest.raises(PoolFileError, match=message) as err:
        run_profile(cfg, tmp_path / "out", progress=False)
    assert "pool.jsonl:2" in str(err.value)  # the line to fix
    assert not (tmp_path / "out" / "selection.parquet").exists()


@pytest.mark.parametrize("value,message", [(float("nan"), "finite number"), (3.0, r"outside \[0, 1\]"),
                                           ([], "non-empty list")])
def test_untrusted_scores_are_refused(tmp_path, value, message):
    write_fixture_pool(tmp_path, prompts=4)
    lines = [json.loads(line) for line in (tmp_path / "pool.jsonl").read_text().splitlines()]
    for r in lines:
        r["rm"] = [0.5] * (K + N)
    lines[2]["rm"][4] = value
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))  # NaN as JSON's NaN token
    cfg = load_config(answer_config(tmp_path, prm="rm", pool={"scores_field": "rm"}))
    with pytest.raises(PoolFileError, match=message):
        run_profile(cfg, tmp_path / "out", progress=False)


def test_the_cli_exits_2_on_a_bad_pool_file(tmp_path, capsys):
    from selector.cli import main

    write_fixture_pool(tmp_path, prompts=4)
    _mutate(tmp_path, _set("ntok", 0, -3))
    assert main(["profile", str(answer_config(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pool.jsonl:2" in err and "token count" in err


# --- a table profiled without a PRM: agreement pilots at run time -----------------------------

PILOT_SEED = derive_seed(0, "pilot")  # the seed a router's pilot draws with (router seed 0)


def agreement_sim_config(tmp: Path, **overrides) -> Path:
    """A simulator profile binned by agreement. Its pool is drawn with the seed a router's pilot
    uses, so the pilot's samples at run time are the profile's first k difficulty samples."""
    base = dict(prm="none", difficulty="agreement", seed=PILOT_SEED,
                grid={"strategies": ["majority", "adaptive_consistency"], "budgets": [1, 2, 4, 8], "tree_budgets": None,
                      "aggregations": ["last"], "adaptive_windows": [2], "adaptive_votes": ["majority"]},
                evaluate={"subsamples": 50, "seeds": [0], "router": "pilot:2"})
    base.update(overrides)
    return sim_config(tmp, prompts=40, **base)


@pytest.fixture(scope="module")
def prm_free_table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prm-free")
    run_profile(load_config(agreement_sim_config(tmp)), tmp / "table", progress=False)
    return tmp / "table"


def _pilot_bins(table: TableDir, name: str) -> np.ndarray:
    """Bins the profiler's pilot record assigns: the modal share of the first k difficulty answers."""
    record = table.metadata["pilots"][name]
    shares = [modal_share(list(keys)[: record["k"]]) for keys in table.prompts()["difficulty_answers"]]
    return assign_bins(shares, record["edges"])


def test_a_prm_free_profile_holds_majority_and_adaptive_consistency(prm_free_table):
    table = TableDir(prm_free_table)
    table.validate()
    meta = table.metadata
    assert meta["prm_id"] == "none" and meta["pool_supports"]["reason"].startswith("no PRM")
    assert set(table.evaluations()["strategy"]) == {"majority", "adaptive_consistency"}
    assert table.rollouts()["step_scores"].map(len).eq(0).all()  # nothing scored the samples
    # pilot:K (K = all difficulty samples) bins as the table's own agreement bins
    k = meta["difficulty_samples"]
    assert (_pilot_bins(table, f"pilot:{k}") == table.prompts()["bin"].to_numpy()).all()


@pytest.mark.parametrize("name", ["pilot:2", "pilot:4"])
def test_the_agreement_pilot_routes_as_the_profiler_binned(prm_free_table, name):
    from selector.estimators import AgreementPilot
    from selector.routing import Router

    table = TableDir(prm_free_table)
    router = Router.load(prm_free_table, estimator=name)  # the table's own engines: sim, prm none
    assert isinstance(router.estimator, AgreementPilot)
    prompts = table.prompts()
    estimates = router.estimate_batch(prompts["text"].tolist())
    k = table.metadata["pilots"][name]["k"]
    assert [e.bin for e in estimates] == _pilot_bins(table, name).tolist()
    assert all(e.cost.generations == k and e.cost.prm_tokens == 0 and len(e.pilot) == k for e in estimates)
    d = router.route(prompts["text"].iloc[0], 4)
    cell = table.selection(name).query("budget == 4 and bin == @d.bin").iloc[0]
    assert (d.strategy.name, d.expected_accuracy) == (cell["strategy"], cell["accuracy"])


def test_an_agreement_pilot_never_calls_the_prm(tmp_path):
    """On a table with a PRM but agreement bins, the pilot votes: no PRM token is spent, and its
    bins are the profiler's."""
    from selector.routing import Router

    cfg = agreement_sim_config(tmp_path, prm="sim:separation=2.0,noise=1.0,bias=1.0",
                               grid={"strategies": ["majority", "best_of_n"], "budgets": [1, 2, 4], "tree_budgets": None,
                                     "aggregations": ["last"]})
    run_profile(load_config(cfg), tmp_path / "t", progress=False)
    table = TableDir(tmp_path / "t")
    assert table.metadata["pilots"]["pilot:2"]["signal"] == "agreement"
    router = Router.load(tmp_path / "t", estimator="pilot:2")
    estimates = router.estimate_batch(table.prompts()["text"].tolist())
    assert [e.bin for e in estimates] == _pilot_bins(table, "pilot:2").tolist()
    assert sum(e.cost.prm_tokens for e in estimates) == 0


def test_evaluate_routes_agreement_bins_and_pilots_and_reports_their_calibration(prm_free_table):
    from selector.router_evaluation import evaluate_router

    table = TableDir(prm_free_table)
    report = evaluate_router(prm_free_table, bootstrap=200)
    assert set(report.calibration) == {"bins:agreement", "pilot:2", "pilot:4"}
    prompts = table.prompts()
    held = prompts["split"] == "heldout"
    for name in ("pilot:2", "bins:agreement"):
        # reported = the mean expected accuracy of the cells the held-out prompts are routed to
        bins = (prompts["bin"].to_numpy() if name == "bins:agreement" else _pilot_bins(table, name))[held.to_numpy()]
        sel = table.selection(name).set_index(["bin", "budget"])["accuracy"]
        want = np.mean([[sel[(b, budget)] for b in bins] for budget in report.budgets])
        assert report.calibration[name]["reported"] == pytest.approx(want, abs=1e-12)
    # the table's own bins are a 4-sample agreement pilot's: priced as one, like pilot:4
    rows = {(r["method"], r["budget"]): r for r in report.rows}
    for b in report.budgets:
        own, pilot = rows[("router (bins:agreement)", b)], rows[("router (pilot:4)", b)]
        assert own["mean_generations"] == pilot["mean_generations"] and own["accuracy"] == pilot["accuracy"]
        assert own["mean_generations"] >= 4 + 1  # the pilot's 4 samples and at least one more
    assert report.declared_router == "router (pilot:2)" and report.versus_profile_pick


def test_the_learning_curve_refits_the_agreement_pilot(prm_free_table):
    from selector.router_evaluation import evaluate_router
    from selector.learning_curve import learning_curve

    curve = learning_curve(prm_free_table, sizes=[12], draws=2, bootstrap=100)
    assert curve.declared_router == "pilot:2"
    report = evaluate_router(prm_free_table, estimators=["pilot:2"], bootstrap=100)
    for b in curve.budgets:
        full = next(r for r in curve.rows if r["method"] == "router (pilot:2)" and r["n_profile"] == curve.n_profile
                    and r["budget"] == b)
        want = next(r for r in report.rows if r["method"] == "router (pilot:2)" and r["budget"] == b)
        assert full["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
        assert full["mean_flops"] == pytest.approx(want["mean_flops"], rel=1e-9)


def test_train_estimator_on_an_agreement_table(prm_free_table, tmp_path, capsys):
    from selector.cli import main
    from selector.routing import Router

    copy = tmp_path / "table"
    shutil.copytree(prm_free_table, copy)
    assert main(["train-estimator", str(copy), "--features", "tfidf"]) == 0
    table = TableDir(copy)
    assert "prompt:tfidf" in table.selection_estimators()
    record = table.metadata["estimators"]["prompt:tfidf"]
    profile = table.prompts().query("split == 'profile'")
    assert set(record["oof_bins"]) == set(profile["prompt_id"])
    decision = Router.load(copy, estimator="prompt:tfidf").route(profile["text"].iloc[0], 4)
    assert decision.bin in set(table.selection("prompt:tfidf")["bin"])
    capsys.readouterr()


def test_a_sample_without_an_answer_reads_back_as_none(tmp_path):
    """pandas' string dtype reads a null back as NaN; the vote would count NaN as an answer, so
    the rollouts' answers come back as None, as written."""
    from selector.profiler.outcomes import best_of_n_family_rows
    from selector.tables import read_rollouts, write_rollout_shard

    rows = pd.DataFrame([
        {"prompt_id": "q", "sample_id": j, "role": "evaluation", "steps": [], "step_scores": [], "answer": a,
         "answer_key": a, "correct": a == "1", "tokens": 1, "prm_tokens": 0, "prompt_tokens": 1, "finished": True}
        for j, a in enumerate([None, None, "1"])])
    write_rollout_shard(rows, tmp_path, 0, {"config_hash": "x"})
    back = read_rollouts(tmp_path)
    assert back["answer"].tolist() == [None, None, "1"] and back["answer_key"].tolist() == [None, None, "1"]
    cfg = load_config(answer_config(tmp_path, pool={"n": 3, "difficulty_samples": 0}, difficulty="level",
                                    dataset={"level_field": "level"}, grid={"budgets": [3]}, select={"pilots": []}))
    # majority of 3: the one answer wins (the two answerless samples take no part)
    ev = best_of_n_family_rows(cfg, back)
    assert ev.loc[ev["strategy"] == "majority", "accuracy"].tolist() == [1.0]
