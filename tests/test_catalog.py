"""The table catalog (exact / nearest size / published prior), the prior table and routing with it."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions
from selector.binning import assign_bins
from selector.catalog import (
    CatalogLookupError, TableCatalog, format_params, is_catalog, prior_rules, rows_for_size,
)
from selector.datasets import FAMILIES, dataset_family
from selector.estimators import Estimate
from selector.profiler import load_config, run_profile
from selector.profiler.config import ConfigError
from selector.routing import Router
from selector.tables import TableDir, read_metadata, write_table
from selector.records import Cost

from fakes import RecordingPolicy
from test_profile import sim_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "tables"
PRIORS = ("prior__liu2025__math", "prior__liu2025__aime")
B = 1_000_000_000
MATH_PROMPT = r"Find the remainder when $2^{100}$ is divided by $7$."


def sim(params: float, id: str = "sim-policy") -> SimulatedPolicy:
    return SimulatedPolicy(num_parameters=int(params), id=id)


def prm(id: str = "sim-prm") -> SimulatedPRM:
    return SimulatedPRM(id=id)


class FixedPass1:
    """An estimator stand-in (the estimator is outside the unit under test): every prompt gets
    ``pass1``, and a bin of its own numbering that the prior must ignore."""

    def __init__(self, pass1: float):
        self.pass1 = pass1

    def estimate_batch(self, prompts, ctx=None):
        return [Estimate(self.pass1, 7, {7: 1.0}, Cost(seconds=0.001), "fixed") for _ in prompts]


def write_fake_table(path: Path, *, policy: str, params: int, prm_id: str, family: str | None,
                     dataset: str = "math500", budgets=(1, 4), n_prompts: int = 10) -> Path:
    """A minimal profiled table written directly (selection only matters to the catalog)."""
    meta = {"policy_id": policy, "policy_params": params, "prm_id": prm_id, "prm_params": 0, "dataset": dataset,
            "binning_scheme": "quantile", "bin_edges": [0.5], "config_hash": f"h-{path.name}"}
    if family is not None:
        meta["dataset_family"] = family
    meta["default_selection"] = "bins:predicted"
    rows = [{"estimator": "bins:predicted", "policy": policy, "prm": prm_id, "bin": b, "budget": n, "strategy": "best_of_n", "n": n, "m": None,
             "aggregation": "last", "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_prompts": n_prompts, "mean_flops": 1e9}
            for b in (1, 2) for n in budgets]
    write_table(pd.DataFrame(rows), path / "selection.parquet", "selection", meta)
    return path


@pytest.fixture
def catalog_dir(tmp_path) -> Path:
    """Profiled fake tables of two PRMs (math family) plus the shipped priors."""
    c = tmp_path / "catalog"
    write_fake_table(c / "p1b", policy="pol-1b", params=1 * B, prm_id="prm-a", family="math")
    write_fake_table(c / "p8b", policy="pol-8b", params=8 * B, prm_id="prm-a", family="math")
    write_fake_table(c / "p3b-other-prm", policy="pol-3b", params=3 * B, prm_id="prm-b", family="math")
    write_fake_table(c / "arith", policy="pol-1b", params=1 * B, prm_id="prm-a", family=None, dataset="arithmetic")
    for name in PRIORS:
        shutil.copytree(SHIPPED / name, c / name)
    return c


# --- datasets and configs: the family is configuration -------------------------------------------

def test_builtin_families_and_explicit_family_in_configs(tmp_path):
    assert FAMILIES == {"math500": "math", "aime24": "aime", "gsm8k": "gsm8k", "arithmetic": "arithmetic"}
    assert dataset_family("math500") == "math" and dataset_family("math") == "math"
    assert dataset_family("data/qwen_rm8.jsonl") == "qwen_rm8" and dataset_family("x.jsonl", "math") == "math"
    assert load_config(ROOT / "configs" / "replay-qwen-rm8.yaml").dataset.family_name == "math"
    with pytest.raises(ConfigError, match="built-in data set 'math500' belongs to family 'math'"):
        load_config(sim_config(tmp_path, dataset={"name": "math500", "family": "aime"}))
    with pytest.raises(ConfigError, match="dataset.family must be a short lowercase name"):
        load_config(sim_config(tmp_path, dataset={"family": "Math 500"}))
    # a label for lookups, not part of the table's identity
    plain, labelled = load_config(sim_config(tmp_path)), load_config(sim_config(tmp_path, dataset={"family": "math"}))
    assert plain.config_hash == labelled.config_hash
    assert plain.dataset.family_name == "questions" and "dataset.family not set" in plain.dataset.family_note


def test_profiler_writes_the_family_into_the_metadata(tmp_path):
    run_profile(load_config(sim_config(tmp_path, prompts=8)), tmp_path / "plain", progress=False)
    meta = TableDir(tmp_path / "plain").metadata
    assert meta["dataset_family"] == "questions" and "dataset.family not set" in meta["dataset_family_note"]
    run_profile(load_config(sim_config(tmp_path, prompts=8, dataset={"family": "math"})), tmp_path / "math", progress=False)
    meta = read_metadata(tmp_path / "math" / "prompts.parquet")
    assert meta["dataset_family"] == "math" and "dataset_family_note" not in meta


# --- catalog lookup -------------------------------------------------------------------------------

def test_listing_summary_and_is_catalog(catalog_dir, tmp_path):
    cat = TableCatalog(catalog_dir)
    assert cat._entries is None  # nothing read in the constructor
    names = [e.name for e in cat]
    assert names == sorted(names) and len(names) == 6
    (catalog_dir / "in-progress" / "state").mkdir(parents=True)  # a profile that has not finished
    cat = TableCatalog(catalog_dir)
    assert len(cat) == 6 and [p.name for p, _ in cat.skipped] == ["in-progress"]
    summary = cat.summary()
    assert len(summary) == 6 and set(summary["kind"]) == {"prior", "profiled"}
    arith = summary.set_index("name").loc["arith"]
    assert arith["dataset_family"] == "arithmetic"  # no dataset_family key: the registry's family for "arithmetic"
    prior = summary.set_index("name").loc["prior__liu2025__math"]
    assert prior["prior"] and pd.isna(prior["policy_params"]) and prior["budgets"] == [] and "2502.06703" in prior["citation"]
    assert is_catalog(catalog_dir) and is_catalog(SHIPPED)
    assert not is_catalog(catalog_dir / "p1b") and not is_catalog(tmp_path / "nowhere")


def test_exact_match_wins_over_a_nearer_size(catalog_dir):
    choice = TableCatalog(catalog_dir).best_for(policy=sim(8 * B, id="pol-1b"), prm=prm("prm-a"), dataset="math500")
    assert choice.kind == "exact" and choice.entry.name == "p1b" and "exact match" in choice.reason
    # ids as strings work too; the family, not the data set's name, is what matches
    choice = TableCatalog(catalog_dir).best_for(policy="pol-8b", prm="prm-a", dataset="math")
    assert choice.kind == "exact" and choice.entry.name == "p8b"


def test_of_several_exact_matches_the_one_profiled_on_most_prompts_wins(tmp_path):
    c = tmp_path / "cat"
    write_fake_table(c / "a-small", policy="pol-1b", params=1 * B, prm_id="prm-a", family="math", n_prompts=10)
    write_fake_table(c / "b-large", policy="pol-1b", params=1 * B, prm_id="prm-a", family="math", n_prompts=150)
    cat = TableCatalog(c)
    assert {e.name: e.n_prompts for e in cat} == {"a-small": 20, "b-large": 300}  # 2 bins per budget
    choice = cat.best_for(policy="pol-1b", prm="prm-a", dataset="math500")
    assert choice.kind == "exact" and choice.entry.name == "b-large"
    assert "most prompts (300) of 2" in choice.reason and "a-small (20 prompts)" in choice.reason
    assert cat.summary().set_index("name")["n_prompts"].to_dict() == {"a-small": 20, "b-large": 300}


def test_nearest_size_is_on_a_log_scale_and_needs_the_same_prm(catalog_dir):
    cat = TableCatalog(catalog_dir)
    # 4B: 8B is a factor 2 away, 1B a factor 4 (linear distance would pick 1B); the 3B table has another PRM
    choice = cat.best_for(policy=sim(4 * B, id="new"), prm=prm("prm-a"), dataset="math500")
    assert choice.kind == "nearest_size" and choice.entry.name == "p8b"
    assert "nearest policy size with the same PRM 'prm-a'" in choice.reason and "the policy differs" in choice.reason
    assert cat.best_for(policy=sim(1.5 * B, id="new"), prm=prm("prm-a"), dataset="math500").entry.name == "p1b"
    assert cat.best_for(policy="new", prm="prm-a", dataset="math500", policy_params=7e9).entry.name == "p8b"


def test_a_table_without_a_declared_size_is_only_an_exact_match(tmp_path):
    c = tmp_path / "cat"
    write_fake_table(c / "replay", policy="qwen (size not stated)", params=0, prm_id="rm", family="math")
    shutil.copytree(SHIPPED / PRIORS[0], c / PRIORS[0])
    cat = TableCatalog(c)
    assert cat.best_for(policy="qwen (size not stated)", prm="rm", dataset="math500").kind == "exact"
    choice = cat.best_for(policy=sim(7.6 * B, id="other"), prm="rm", dataset="math500")
    assert choice.kind == "prior"
    assert "do not declare their policy's size, so they can only be exact matches" in choice.reason


def test_fallback_to_the_prior_says_it_applies_to_any_prm(catalog_dir):
    cat = TableCatalog(catalog_dir)
    choice = cat.best_for(policy=sim(1.5 * B, id="unprofiled"), prm=prm("prm-z"), dataset="math500")
    assert choice.kind == "prior" and choice.entry.name == "prior__liu2025__math" and choice.policy_params == 1_500_000_000
    assert "applies to any PRM" in choice.reason and "Math-Shepherd" in choice.reason and "2502.06703" in choice.reason
    assert cat.best_for(policy=sim(70 * B), prm=prm(), dataset="aime24").entry.name == "prior__liu2025__aime"
    with pytest.raises(ValueError, match="keyed by policy size.*pass policy_params="):
        cat.best_for(policy="a-spec-without-size", prm="prm-z", dataset="math500")


def test_no_table_and_no_prior_is_a_clear_error(catalog_dir):
    with pytest.raises(CatalogLookupError) as info:
        TableCatalog(catalog_dir).best_for(policy=sim(1.5 * B), prm=prm(), dataset="gsm8k")
    msg = str(info.value)
    assert "dataset family 'gsm8k'" in msg and "family 'math'" in msg and "family 'aime'" in msg
    assert "p8b" in msg and "tts-selector profile" in msg
    assert isinstance(info.value, ValueError)  # the CLI reports ValueErrors as errors, not tracebacks
    with pytest.raises(FileNotFoundError, match="no such catalog directory"):
        TableCatalog(catalog_dir / "missing").entries()


# --- the published prior table --------------------------------------------------------------------

def test_shipped_prior_tables_cite_the_paper_and_validate():
    for name, family in zip(PRIORS, ("math", "aime")):
        t = TableDir(SHIPPED / name)
        t.validate()
        meta = t.metadata
        assert meta["prior"] is True and meta["dataset_family"] == family
        assert "Can 1B LLM Surpass 405B LLM" in meta["citation"] and "2502.06703" in meta["citation"]
        assert meta["note"].startswith("no accuracies") and meta["rules"] and meta["prms_in_paper"]
        assert meta["binning_scheme"] == "absolute" and meta["bin_edges"] == [0.1, 0.5]
        sel = t.selection()
        # never an invented number: no measurements, no budgets, no beam width the paper did not give
        assert sel[["accuracy", "ci_low", "ci_high", "mean_flops"]].isna().all().all()
        assert sel["budget"].isna().all() and sel["m"].isna().all() and sel["aggregation"].isna().all()
        assert set(meta["not_found_in_paper"]) == {"budgets", "beam_width", "best_of_n_aggregation"}
        assert len(t.prompts()) == len(t.results()) == len(t.evaluations()) == 0


def test_prior_rules_encode_the_published_findings():
    math_rules = prior_rules(SHIPPED / PRIORS[0])

    def strategies(rules, params):
        return dict(zip(rows_for_size(rules, params)["bin"], rows_for_size(rules, params)["strategy"]))

    assert strategies(math_rules, 1.5e9) == {1: "beam_search", 2: "beam_search", 3: "beam_search"}
    assert strategies(math_rules, 6.9e9) == {1: "beam_search", 2: "beam_search", 3: "beam_search"}
    assert strategies(math_rules, 7e9) == {1: "dvts", 2: "dvts", 3: "beam_search"}
    assert strategies(math_rules, 14e9) == {1: "dvts", 2: "dvts", 3: "beam_search"}
    assert strategies(math_rules, 32e9) == {1: "best_of_n", 2: "best_of_n", 3: "best_of_n"}
    aime_rules = prior_rules(SHIPPED / PRIORS[1])
    assert set(strategies(aime_rules, 13.9e9).values()) == {"dvts"}
    assert set(strategies(aime_rules, 14e9).values()) == {"best_of_n"}
    assert set(strategies(aime_rules, 405e9).values()) == {"best_of_n"}
    assert list(math_rules.drop_duplicates("bin").sort_values("bin")["difficulty"]) == ["easy", "medium", "hard"]
    with pytest.raises(ValueError, match="profiled table, not a published prior"):
        prior_rules(SHIPPED / "smollm2-135m__arith-check__arithmetic")


def test_the_build_script_reproduces_the_shipped_priors(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_prior_table.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT)
    for name in PRIORS:
        built, shipped = TableDir(tmp_path / name), TableDir(SHIPPED / name)
        pd.testing.assert_frame_equal(built.selection(), shipped.selection())
        assert built.metadata == shipped.metadata
        built.validate()


# --- routing with the catalog and the prior -------------------------------------------------------

def test_unprofiled_1_5b_policy_gets_beam_search_from_the_published_prior():
    """Issue 8, acceptance 2 (with the shipped catalog)."""
    policy = RecordingPolicy(sim(1.5e9, id="my-new-1.5b"))
    router = Router.load(SHIPPED, policy=policy, prm=prm("my-prm"), dataset="math500")
    assert router.choice.kind == "prior" and router.choice.entry.name == "prior__liu2025__math"
    d = router.route(MATH_PROMPT, 8)
    assert d.strategy.name == "beam_search" and (d.strategy.n, d.strategy.m) == (8, 4)
    assert d.source.startswith("published prior: Liu et al. 2025 (arXiv 2502.06703): policy 1.5B < 7B → beam search")
    assert d.bin is None and d.pass1 is None and "no estimate was made" in d.estimator
    assert "m=4" in d.fallback and "not found in the paper" in d.fallback
    assert math.isnan(d.expected_accuracy)
    out = d.to_dict()
    assert out["expected_accuracy"] is None and out["source"] == d.source
    json.dumps(out, allow_nan=False)
    assert policy.calls == []  # routing made no generation (no estimate was needed)
    result = router.solve(MATH_PROMPT, 8)
    assert result.estimate_cost.generations == 0 and result.decision.strategy.name == "beam_search"
    assert all(sum(r.n for r in call) <= 8 for call in policy.calls)  # at most N generations per round


@pytest.mark.parametrize("pass1, strategy, difficulty", [(0.8, "dvts", "easy"), (0.3, "dvts", "medium"),
                                                         (0.05, "beam_search", "hard")])
def test_14b_policy_on_math_routes_by_estimated_difficulty(pass1, strategy, difficulty):
    router = Router.load(SHIPPED / PRIORS[0], policy=sim(14e9), prm=prm(), estimator=FixedPass1(pass1))
    d = router.route(MATH_PROMPT, 16)
    assert d.strategy.name == strategy and d.pass1 == pass1
    assert d.bin == int(assign_bins(pass1, [0.1, 0.5])[0]) and d.bin_proba == {d.bin: 1.0}  # not the estimator's bin 7
    assert f"policy 7B <= 14B < 32B → {'DVTS' if strategy == 'dvts' else 'beam search'} on {difficulty} prompts" in d.source


def test_70b_gets_best_of_n_and_aime_rules_likewise():
    d = Router.load(SHIPPED, policy=sim(70e9), prm=prm(), dataset="math500").route(MATH_PROMPT, 16)
    assert d.strategy.name == "best_of_n" and d.strategy.n == 16 and "policy 70B >= 32B → best-of-N" in d.source
    assert "aggregation='last'" in d.fallback
    for params, strategy in ((1.5e9, "dvts"), (7e9, "dvts"), (14e9, "best_of_n"), (32e9, "best_of_n")):
        d = Router.load(SHIPPED, policy=sim(params), prm=prm(), dataset="aime24").route(MATH_PROMPT, 8)
        assert d.strategy.name == strategy and d.bin is None, params
    # the override for engines that cannot count: the size decides, not the engine's own count
    d = Router.load(SHIPPED, policy=sim(1e9), prm=prm(), dataset="aime24", policy_params=20e9).route(MATH_PROMPT, 8)
    assert d.strategy.name == "best_of_n"


def test_prior_budgets_estimators_and_errors():
    router = Router.load(SHIPPED / PRIORS[0], policy=sim(1.5e9), prm=prm())
    assert router.route(MATH_PROMPT, 6).strategy.n == 4 and "not a multiple of m=4: used n=4" in router.route(MATH_PROMPT, 6).fallback
    assert router.route(MATH_PROMPT, 2).strategy.m == 2  # beam width lowered to a small budget
    with pytest.raises(ValueError, match="below 1"):
        router.route(MATH_PROMPT, 0)
    with pytest.raises(ValueError, match="no accuracies to trade budgets"):
        router.solve_batch([MATH_PROMPT], average_budget=4)
    with pytest.raises(ValueError, match="no trained estimator 'prompt:tfidf'.*pilot:<k>"):
        Router.load(SHIPPED / PRIORS[0], policy=sim(14e9), prm=prm())  # needs an estimate, default estimator
    with pytest.raises(ValueError, match="give policy= and prm="):
        Router.load(SHIPPED / PRIORS[0])
    with pytest.raises(ValueError, match="reports no parameter count"):
        Router.load(SHIPPED / PRIORS[0], policy=sim(0), prm=prm())
    with pytest.raises(ValueError, match="answers for dataset family 'math', not 'aime'"):
        Router.load(SHIPPED / PRIORS[0], policy=sim(1e9), prm=prm(), dataset="aime24")
    with pytest.raises(ValueError, match="catalog of tables: give policy=.*dataset="):
        Router.load(SHIPPED, policy=sim(1e9), prm=prm())


def test_pilot_on_a_prior_uses_the_mean_final_step_score_without_fitting():
    policy = RecordingPolicy(sim(14e9))
    router = Router.load(SHIPPED / PRIORS[0], policy=policy, prm=prm(), estimator="pilot:4")
    qs = make_questions([0.05, 0.5, 0.97], prefix="pilot")
    ests = router.estimate_batch(qs)
    for q, e in zip(qs, ests):
        scores = [c.step_scores[-1] for c in e.pilot]
        assert len(e.pilot) == 4 and e.pass1 == pytest.approx(np.mean(scores))
        d = router.route(q, 8)
        assert d.bin == int(assign_bins(d.pass1, [0.1, 0.5])[0])
        assert d.strategy.name == ("beam_search" if d.bin == 3 else "dvts")
    res = router.solve(qs[1], 8)
    assert res.estimate_cost.generations == 4


def test_prior_pilot_is_calibrated_on_a_profiled_table_with_the_same_prm(tmp_path):
    # Liu et al.'s thresholds are on true pass@1; a raw PRM mean is not that. With a profiled
    # table of the same PRM in the catalog (here of another family, so the prior still decides),
    # the pilot's mean is mapped to pass@1 by that table's calibration; without one it says so.
    c = tmp_path / "catalog"
    shutil.copytree(SHIPPED / PRIORS[0], c / PRIORS[0])
    alone = Router.load(c, policy=sim(14e9), prm=prm(), dataset="math500", estimator="pilot:4")
    assert "uncalibrated" in alone.estimator_name
    run_profile(load_config(sim_config(tmp_path, prompts=24)), c / "sim-questions", progress=False)
    router = Router.load(c, policy=sim(14e9), prm=prm(), dataset="math500", estimator="pilot:4")
    assert router.choice.kind == "prior" and "calibrated to pass@1 on" in router.estimator_name
    q = make_questions([0.5], prefix="calibrated")[0]
    est = router.estimate_batch([q])[0]
    raw = float(np.mean([c.step_scores[-1] for c in est.pilot]))
    assert est.pass1 == pytest.approx(float(router.estimator.calibration_.predict([raw])[0]))
    assert router.route(q, 8).bin == int(assign_bins(est.pass1, [0.1, 0.5])[0])


def test_nearest_size_table_routes_a_different_policy_and_says_so(tmp_path):
    c = tmp_path / "catalog"
    run_profile(load_config(sim_config(tmp_path, prompts=16, dataset={"family": "math"})), c / "sim-1.5b", progress=False)
    shutil.copytree(SHIPPED / PRIORS[0], c / PRIORS[0])
    spec = "sim:separation=2.0,noise=1.0,bias=1.0"
    exact = Router.load(c, policy="sim", prm=spec, dataset="math500", estimator="pilot:2")
    assert exact.choice.kind == "exact"
    d = exact.route(make_questions([0.4])[0], 8)
    assert d.source == f"table {c / 'sim-1.5b'}: exact match" and not math.isnan(d.expected_accuracy)
    bigger = SimulatedPolicy(num_parameters=3 * B, id="sim-policy-3b")
    router = Router.load(c, policy=bigger, prm=spec, dataset="math500", estimator="pilot:2")
    assert router.choice.kind == "nearest_size" and router.policy is bigger
    d = router.route(make_questions([0.4])[0], 8)
    assert "nearest policy size with the same PRM" in d.source and "'sim-policy', 1.5B" in d.source
    # another PRM: the sim table is not a match at any size, so the prior decides
    other = Router.load(c, policy=bigger, prm=prm("other-prm"), dataset="math500")
    assert other.choice.kind == "prior" and "no table with PRM 'other-prm'" in other.choice.reason


def test_cli_route_with_a_catalog(capsys):
    from selector.cli import main

    args = ["route", MATH_PROMPT, "--tables", str(SHIPPED), "--dataset", "math500", "--policy", "sim",
            "--prm", "sim", "--policy-params", "1.5e9", "--budget", "8"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "beam_search" and out["source"].startswith("published prior: Liu et al. 2025")
    assert out["expected_accuracy"] is None
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "source: published prior" in text and "no expected accuracy" in text
    assert main(["route", "q", "--tables", str(SHIPPED), "--dataset", "gsm8k", "--policy", "sim", "--prm", "sim",
                 "--budget", "8"]) == 2
    assert "no table for dataset family 'gsm8k'" in capsys.readouterr().err
    # On the command line only --dataset can be missing (--policy/--prm default): say that flag.
    assert main(["route", "q", "--tables", str(SHIPPED), "--budget", "8"]) == 2
    err = capsys.readouterr().err
    assert "give --dataset NAME" in err and "policy=" not in err


def test_format_params():
    assert [format_params(x) for x in (1.5e9, 7e9, 134515008, 405e9, 0)] == ["1.5B", "7B", "134.5M", "405B", "unknown size"]
