"""A new strategy is declared in one place: this file. Its kind and hyperparameters (class
attributes, dataclass fields) are all the profiler, the router, the CLI and the plots read, so
it profiles, routes, solves and plots without an edit to any other module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from selector.search.base import (ROOT, STRATEGIES, Expansion, SearchContext, SearchGenerator, StrategyConfig,
                                  parameter, top_k)

from test_profile import sim_config


@pytest.fixture(scope="module")
def branch_vote():
    """A tiny live strategy, registered for this module only (so no other test sees it)."""

    @dataclass(frozen=True)
    class BranchVote(StrategyConfig):
        """Round 1: ``m`` first steps; round 2: the ``keep`` best unfinished ones (0: all) each
        sampled ``n // m`` ways to the end. At most ``n`` generations a round."""

        name: ClassVar[str] = "branch_vote"
        kind: ClassVar[str] = "live"
        answer_rule: ClassVar[str] = "weighted"
        m: int = parameter(2, "branch_vote: first steps to branch from")
        aggregation: str = parameter("last", "step-score aggregation: last | min | prod | mean")
        keep: int = parameter(0, "branch_vote: branches kept after the first step (0: all)")

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.n % self.m:
                raise ValueError(f"{self.name}: n={self.n} must be a multiple of m={self.m}")

        def search(self, ctx: SearchContext) -> SearchGenerator:
            firsts = (yield [Expansion(ROOT, self.m, ctx.seed_for("branch", 0))])[0]
            live = top_k([f for f in firsts if not f.finished], self.keep or self.m, self.aggregation)
            if not live:
                return firsts
            grown = yield [Expansion(f, self.n // self.m, ctx.seed_for("branch", i), to_completion=True)
                           for i, f in enumerate(live)]
            return [f for f in firsts if f.finished] + [c for group in grown for c in group]

    yield BranchVote
    STRATEGIES.pop(BranchVote.name)


@pytest.fixture(scope="module")
def table(branch_vote, tmp_path_factory):
    from selector.profiler import load_config, run_profile

    tmp = tmp_path_factory.mktemp("extension")
    # One scored sample (best_of_n at n=1: the table's budget unit) beside the new strategy, so
    # the selection has something to choose it over.
    cfg = sim_config(tmp, prompts=24, grid={"strategies": ["best_of_n", "branch_vote"], "budgets": [1],
                                            "tree_budgets": [2, 4], "beam_widths": [2], "aggregations": ["last"]},
                     pool={"n": 1, "difficulty_samples": 2}, select={"pilots": [2]})
    run_profile(load_config(cfg), tmp / "table", progress=False)
    return tmp / "table"


def test_the_profiler_runs_it_live_from_its_declared_kind_and_fields(branch_vote, table):
    from selector.tables import TableDir

    ev = TableDir(table).evaluations()
    rows = ev[ev["strategy"] == "branch_vote"]
    # Live at the tree budgets, its m over the grid's beam widths, one row per prompt and configuration.
    assert sorted({(int(r.n), int(r.m), r.aggregation) for r in rows.itertuples()}) == [(2, 2, "last"), (4, 2, "last")]
    assert set(ev["strategy"]) == {"best_of_n", "branch_vote"}
    assert len(rows) == 2 * ev["prompt_id"].nunique() and (rows["generations"] > 0).all()
    assert (rows["generations"] <= 2 * rows["n"]).all()  # two rounds of at most n generations


def test_the_router_decides_forces_and_solves_it(branch_vote, table):
    from selector.backends.simulated import make_questions
    from selector.routing import Router
    from selector.tables import TableDir

    router = Router.load(table, estimator="pilot:2")
    sel = TableDir(table).selection("pilot:2")
    # At four samples' compute the profile pick is the new strategy (it beats one scored sample).
    assert set(sel.loc[sel["budget"] == 4, "strategy"]) == {"branch_vote"}
    q = make_questions([0.5], prefix="extension")[0]
    routed = router.solve(q, 4)
    d = routed.decision
    assert isinstance(d.strategy, branch_vote) and (d.strategy.n, d.strategy.m) == (2, 2) and not d.forced
    assert d.expected_accuracy == float(sel[(sel["bin"] == d.bin) & (sel["budget"] == 4)]["accuracy"].iloc[0])
    assert routed.search.rounds[0] == 2 and routed.estimate_cost.generations == 2  # its m first steps; the pilot's 2
    forced = router.force("branch_vote", 4)
    assert isinstance(forced.strategy, branch_vote) and (forced.strategy.n, forced.strategy.m) == (4, 2)
    assert router.tree_settings["max_steps"] == 8 and "branch vote" == branch_vote.words()
    (result,) = router.solve_decided([q], [forced], [None])
    assert result.decision.strategy.name == "branch_vote" and result.search.rounds[0] == 2
    assert result.answer is not None and len(result.candidates) <= 4


def test_the_cli_derives_its_flags_from_its_fields(branch_vote, capsys):
    from selector.cli import build_parser, main

    args = build_parser().parse_args(["solve", "q", "--strategy", "branch_vote", "--keep", "1", "--m", "2"])
    assert (args.strategy_keep, args.strategy_m) == (1, 2)
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    help_text = capsys.readouterr().out
    assert "branch_vote" in help_text and "--keep KEEP" in help_text and "branches kept after the first step" in help_text
    assert main(["solve", "sim problem 3 (difficulty 0.3)", "--strategy", "branch_vote", "--n", "4", "--keep", "1",
                 "--policy", "sim", "--prm", "sim", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"strategy": "branch_vote"' in out and '"keep": 1' in out


def test_the_plots_draw_it_with_a_default_style(branch_vote, table):
    pytest.importorskip("matplotlib")
    from selector import plots

    legend = [t.get_text() for ax in plots.accuracy_curves(table, lines="configuration").axes
              for leg in ([ax.get_legend()] if ax.get_legend() else []) for t in leg.get_texts()]
    legend += [t.get_text() for leg in plots.accuracy_curves(table).legends for t in leg.get_texts()]
    assert any("branch_vote" in t for t in legend)
    assert plots.strategy_color("branch_vote") not in {plots.strategy_color(s) for s in ("majority", "best_of_n")}
    plots.selection_heatmap(table)  # draws whatever the selection holds
