#!/usr/bin/env python
"""Build the published-prior tables: Liu et al. 2025's compute-optimal strategy by policy size.

Liu et al. 2025, "Can 1B LLM Surpass 405B LLM? Rethinking Compute-Optimal Test-Time Scaling"
(arXiv 2502.06703), found the compute-optimal test-time scaling method to depend on the policy's
size and on the prompt's difficulty, with difficulty in absolute pass@1 bins (hard < 10%,
medium 10-50%, easy >= 50%):

- MATH-500: policies under 7B use beam search; 7B to under 32B use DVTS on easy and medium
  prompts and beam search on hard ones; 32B and above use best-of-N.
- AIME24: policies under 14B use DVTS; 14B and above use best-of-N.

This script writes those rules, and nothing else, as table directories in the schema of
profiled tables (selector/tables.py), one per dataset family:
``<out>/prior__liu2025__math/`` and ``<out>/prior__liu2025__aime/``. Each selection row is one
(policy size range, difficulty bin) with the range in ``policy_params_min`` /
``policy_params_max`` (parameters; max null = no upper bound). The prior has no measurements of
its own: accuracies, confidence intervals and FLOPs are null, and prompts / results /
evaluations are written empty (zero rows, the contract's columns), so ``TableDir.validate``
and every reader treat it like any table. Values the paper's text available to us did not give
(the budgets, the beam width, best-of-N's score aggregation) are null too; the metadata says so
and names the package defaults the router uses instead.

Rerunnable: the output is a pure function of the rules below (no timestamps), each file is
written atomically through ``selector.tables.write_table``.

Usage: python scripts/build_prior_table.py [--out tables]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from selector import __version__
from selector.binning import bin_labels
from selector.catalog import format_params
from selector.search import BeamSearch, BestOfN
from selector.tables import REQUIRED_COLUMNS, write_table

ROOT = Path(__file__).resolve().parents[1]
B = 1_000_000_000  # one billion parameters
PRIOR_PREFIX = "prior__liu2025__"  # + dataset family: the table directory's name

CITATION = (
    "Liu et al. 2025, Can 1B LLM Surpass 405B LLM? Rethinking Compute-Optimal Test-Time Scaling, arXiv 2502.06703"
)
CITATION_SHORT = "Liu et al. 2025 (arXiv 2502.06703)"
URL = "https://arxiv.org/abs/2502.06703"
BIN_EDGES = (0.1, 0.5)  # absolute pass@1 thresholds: bin 1 easy (>= 0.5), 2 medium, 3 hard (< 0.1)
DIFFICULTY = {1: "easy", 2: "medium", 3: "hard"}
# The PRMs the paper evaluated (its Setup section). Its finding depends on the PRM in general;
# the prior is offered for any PRM, and says so.
PRMS_IN_PAPER = (
    "Math-Shepherd-PRM-7B", "RLHFlow-PRM-Mistral-8B", "RLHFlow-PRM-Deepseek-8B", "Skywork-PRM-1.5B",
    "Skywork-PRM-7B", "Qwen2.5-Math-PRM-7B", "Qwen2.5-Math-PRM-72B",
)
STRATEGY_WORDS = {"beam_search": "beam search", "dvts": "DVTS", "best_of_n": "best-of-N"}


@dataclass(frozen=True)
class SizeRule:
    """One size range [min_params, max_params) (parameters; max None = no upper bound) and the
    strategy per difficulty bin."""

    min_params: int
    max_params: int | None
    strategy_by_bin: dict[int, str]

    def size_range(self) -> str:
        if self.min_params == 0:
            return f"< {format_params(self.max_params)}"
        if self.max_params is None:
            return f">= {format_params(self.min_params)}"
        return f"{format_params(self.min_params)} to < {format_params(self.max_params)}"


def _all_bins(strategy: str) -> dict[int, str]:
    return {b: strategy for b in DIFFICULTY}


@dataclass(frozen=True)
class PriorSpec:
    family: str
    dataset: str  # the data set the paper measured on (a name of selector/datasets.py)
    paper_dataset: str
    rules: tuple[SizeRule, ...]


PRIORS = (
    PriorSpec("math", "math500", "MATH-500", (
        SizeRule(0, 7 * B, _all_bins("beam_search")),
        SizeRule(7 * B, 32 * B, {1: "dvts", 2: "dvts", 3: "beam_search"}),
        SizeRule(32 * B, None, _all_bins("best_of_n")),
    )),
    PriorSpec("aime", "aime24", "AIME24", (
        SizeRule(0, 14 * B, _all_bins("dvts")),
        SizeRule(14 * B, None, _all_bins("best_of_n")),
    )),
)


def _rule_text(spec: PriorSpec, rule: SizeRule) -> str:
    """The rule in words, e.g. 'MATH-500, policies 7B to < 32B: DVTS on easy and medium prompts,
    beam search on hard ones'."""
    by_strategy: dict[str, list[str]] = {}
    for b, s in sorted(rule.strategy_by_bin.items()):
        by_strategy.setdefault(s, []).append(DIFFICULTY[b])
    if len(by_strategy) == 1:
        what = f"{STRATEGY_WORDS[next(iter(by_strategy))]} on every prompt"
    else:
        what = ", ".join(f"{STRATEGY_WORDS[s]} on {' and '.join(d)} prompts" for s, d in by_strategy.items())
    return f"{spec.paper_dataset}, policies {rule.size_range()}: {what}"


def _defaults() -> dict[str, object]:
    """The package defaults the router fills in where the prior leaves a value null (read from the
    strategy classes, so they cannot drift from what a search actually runs)."""
    beam = {f.name: f.default for f in fields(BeamSearch)}
    bon = {f.name: f.default for f in fields(BestOfN)}
    return {
        "n": "the requested budget (generations per round)",
        "m": beam["m"],
        "m_rule": "m is lowered to the budget when the budget is smaller, and n rounded down to a multiple of m",
        "aggregation_tree": beam["aggregation"], "aggregation_best_of_n": bon["aggregation"],
        "answer_rule_tree": beam["answer_rule"], "max_steps": beam["max_steps"],
    }


def selection_frame(spec: PriorSpec) -> pd.DataFrame:
    """One row per (size range, difficulty bin): the strategy, the size range, null measurements."""
    labels = bin_labels(BIN_EDGES)
    rows = []
    for rule in spec.rules:
        for b, strategy in sorted(rule.strategy_by_bin.items()):
            rows.append({
                "estimator": "prior", "policy": "*", "prm": "*", "bin": b, "budget": None, "strategy": strategy, "n": None, "m": None,
                "aggregation": None, "accuracy": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_prompts": 0,
                "mean_flops": math.nan,
                "policy_params_min": rule.min_params,
                "policy_params_max": rule.max_params,
                "size_range": rule.size_range(), "difficulty": DIFFICULTY[b], "pass1_range": labels[b],
                "dataset_family": spec.family, "rule": _rule_text(spec, rule),
            })
    df = pd.DataFrame(rows)
    df["policy_params_max"] = df["policy_params_max"].astype("Int64")  # null = no upper bound
    return df


def metadata(spec: PriorSpec) -> dict[str, object]:
    rules = [_rule_text(spec, r) for r in spec.rules]
    identity = {"citation": CITATION, "family": spec.family, "rules": rules, "bin_edges": list(BIN_EDGES)}
    return {
        "prior": True,
        "citation": CITATION, "citation_short": CITATION_SHORT, "url": URL,
        "rules": rules,
        "note": (
            "no accuracies: this table encodes the published rules only; accuracy, ci_low, ci_high and mean_flops "
            "are null and prompts/results/evaluations have no rows. Profile a table with `tts-selector profile` "
            "to measure your own (policy, PRM) pair."
        ),
        "policy_id": "*", "policy_params": 0, "prm_id": "*", "prm_params": 0,
        "policy_size_rule": (
            "a row applies when policy_params_min <= the policy's parameter count < policy_params_max (no upper "
            "bound when null); the count is the engine's num_parameters (or policy_params=), compared with the "
            "paper's nominal sizes"
        ),
        "prms_in_paper": list(PRMS_IN_PAPER),
        "prm_applicability": (
            "the paper found the compute-optimal strategy to depend on the PRM; these rules summarise its findings "
            "over the PRMs listed in prms_in_paper and are offered for any PRM"
        ),
        "dataset": spec.dataset, "dataset_family": spec.family, "paper_dataset": spec.paper_dataset,
        "binning_scheme": "absolute", "bin_edges": list(BIN_EDGES),
        "bin_labels": {str(k): v for k, v in bin_labels(BIN_EDGES).items()}, "difficulty": "oracle",
        "n_pool": 0, "grader": None, "dataset_sha256": None,
        "not_found_in_paper": {
            "budgets": "the compute budgets the paper evaluated were not found in the paper text we could consult "
                       "(its abstract and setup); budget is null and the rules apply at any budget",
            "beam_width": "the beam width of beam search / DVTS was not found; m is null",
            "best_of_n_aggregation": "the PRM score aggregation and answer rule of best-of-N were not found; "
                                     "aggregation is null",
        },
        "router_defaults": _defaults(),
        "config_hash": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
        "config_name": f"{PRIOR_PREFIX}{spec.family}", "package_version": __version__,
        "built_by": "scripts/build_prior_table.py",
    }


def empty_frame(kind: str) -> pd.DataFrame:
    """Zero rows with the contract's columns: the prior measured nothing per prompt."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in REQUIRED_COLUMNS[kind]})


def build_prior_tables(out: str | Path) -> list[Path]:
    """Write one prior table directory per dataset family under ``out``; return their paths."""
    written = []
    for spec in PRIORS:
        d = Path(out) / f"{PRIOR_PREFIX}{spec.family}"
        meta = metadata(spec)
        for kind in ("prompts", "results", "evaluations"):
            write_table(empty_frame(kind), d / f"{kind}.parquet", kind, meta)
        write_table(selection_frame(spec), d / "selection.parquet", "selection", meta)
        written.append(d)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "tables"), help="catalog directory to write into (default tables/)")
    args = parser.parse_args(argv)
    for d in build_prior_tables(args.out):
        print(f"wrote {d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
