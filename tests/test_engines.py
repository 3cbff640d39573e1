"""The embedded arith-check PRM, the simulator, step splitting and the registry."""
from __future__ import annotations

import json
import statistics

import pytest

from selector import Majority
from selector.backends import SamplingParams, ScoreRequest, StepRequest, make_policy, make_prm
from selector.backends.arith_check import ArithCheckPRM, evaluate
from selector.backends.simulated import SimulatedPolicy, SimulatedPRM, make_questions, problem_for
from selector.cli import main as cli_main
from selector.grading import is_equivalent
from selector.search.runner import run_search
from selector.steps import cut_at_delimiter, split_steps


# --- steps ---------------------------------------------------------------------------------

def test_step_cutting_and_splitting_agree():
    text = "a = 1.\n\nb = 2.\n\n\\boxed{3}"
    assert split_steps(text, "\n\n") == ["a = 1.\n\n", "b = 2.\n\n", "\\boxed{3}"]
    assert "".join(split_steps(text, "\n\n")) == text
    assert cut_at_delimiter("a = 1.\n\nb", "\n\n") == "a = 1.\n\n"
    assert cut_at_delimiter("a = 1.", "\n\n") is None
    # leading blank lines do not make an empty step
    assert cut_at_delimiter("\nx\n", "\n") == "\nx\n"
    assert split_steps("x\ny\n\n", "\n") == ["x\n", "y\n\n"]
    assert split_steps("whole", None) == ["whole"]
    assert split_steps("", "\n") == []


# --- arith-check ------------------------------------------------------------------------------

def scores(*steps):
    return ArithCheckPRM().score([ScoreRequest("q", tuple(steps))])[0].step_scores


def test_arith_check_scores_prefixes():
    good = scores("17 + 25 = 42.\n", "The final answer is \\boxed{42}.")
    wrong_sum = scores("17 + 25 = 41.\n", "The final answer is \\boxed{41}.")
    wrong_box = scores("17 + 25 = 42.\n", "The final answer is \\boxed{24}.")
    unverified = scores("The final answer is \\boxed{42}.")
    assert len(good) == 2 and all(0 <= s <= 1 for s in good + wrong_sum + wrong_box + unverified)
    assert good[1] > unverified[0] > wrong_box[1]
    assert good[0] == wrong_box[0] > wrong_sum[0]
    assert max(wrong_sum) <= 0.2 and wrong_box[1] <= 0.2  # a false claim sinks the prefix
    assert unverified == (0.5,)
    # multi-step: error in step 2 is caught there and stays
    s = scores("6 * 4 = 24.\n", "24 - 7 = 18.\n", "The final answer is \\boxed{18}.")
    assert s[0] > 0.5 and s[1] <= 0.2 and s[2] <= 0.2


def test_arith_check_parsing_rules():
    assert evaluate("2(3+4)^2") == 98
    assert evaluate("\\frac{1}{2} + 0.5") == 1
    assert evaluate("3 \\times 4 - 2") == 10
    with pytest.raises(ValueError):
        evaluate("x + 1")
    # rounding tolerance, thousands separators, LaTeX, words around the numbers
    assert scores("22/7 = 3.14")[0] > 0.5
    assert scores("22/7 = 3.15")[0] < 0.5
    assert scores("$1,000 \\times 3 = 3,000$ apples")[0] > 0.5
    assert scores("Tom has 9 - 2 = 7 apples left.")[0] > 0.5
    # not plain arithmetic: ignored rather than judged
    assert scores("f(2) = 7 and 3x = 12")[0] == 0.5
    assert scores("10% of 50 = 5")[0] == 0.5
    assert ArithCheckPRM.num_parameters == 0


@pytest.mark.parametrize("step, verdict", [
    ("7 + 7 equals 28", "false"), ("7 + 7 equals 14", "true"), ("7 + 7 is 28.", "false"),
    ("(3 + 4) is equal to 7\n", "true"), ("7 + 7 Equals 14!", "true"), ("3 * 4 makes 12, so", "true"),
    ("12 + 2 gives 15.", "false"), ("6 / 2 yields 3;", "true"), ("9 - 4 results in 6", "false"),
    # not equations: nothing to judge
    ("The answer is 42.", "none"), ("12 is 3 times 4.", "none"), ("Question 3 is 7.", "none"),
])
def test_arith_check_reads_equations_stated_in_words(step, verdict):
    (score,) = scores(step)
    assert {"false": score <= 0.2, "true": score > 0.5, "none": score == 0.5}[verdict], score


# --- simulator ----------------------------------------------------------------------------------

def test_simulator_pass_at_1_matches_latent_difficulty():
    qs = make_questions([0.1, 0.5, 0.9])
    res = run_search([(q, Majority(n=400)) for q in qs], SimulatedPolicy(), None)
    for q, r in zip(qs, res):
        p = problem_for(q)
        rate = statistics.mean(c.answer == p.answer for c in r.candidates)
        assert abs(rate - p.pass_at_1) < 0.08, (q, rate)
        assert all(len(c.steps) == p.num_steps for c in r.candidates)


def test_simulated_prm_separates_and_is_deterministic():
    qs = make_questions([0.5] * 30)
    res = run_search([(q, Majority(n=8)) for q in qs], SimulatedPolicy(), None)
    prm = SimulatedPRM(separation=2.0, noise=0.5)
    good, bad = [], []
    for q, r in zip(qs, res):
        for c in r.candidates:
            out = prm.score([ScoreRequest(q, c.steps)])[0]
            assert out == prm.score([ScoreRequest(q, c.steps)])[0]
            (good if c.answer == problem_for(q).answer else bad).append(out.step_scores[-1])
    assert statistics.mean(good) > 0.8 > 0.2 > statistics.mean(bad)
    with pytest.raises(ValueError, match="SimulatedPolicy steps"):
        prm.score([ScoreRequest("q", ("17 + 25 = 42",))])


def test_simulator_step_requests_follow_the_protocol():
    pol = SimulatedPolicy()
    prefix = pol.format_prompt(make_questions([0.3])[0])
    out = pol.generate_steps([StepRequest(prefix, 5, SamplingParams(), seed=1)])[0]
    assert len(out.continuations) == 5
    assert all(c.finish_reason == "delimiter" and c.text.endswith("\n\n") for c in out.continuations)
    capped = pol.generate_steps([StepRequest(prefix, 3, SamplingParams(max_step_tokens=8), seed=1)])[0]
    assert all(c.num_tokens <= 8 for c in capped.continuations)
    again = pol.generate_steps([StepRequest(prefix, 5, SamplingParams(), seed=1)])[0]
    assert again == out


# --- registry and CLI ----------------------------------------------------------------------------

def test_registry_specs_and_errors():
    assert isinstance(make_policy("sim:step_tokens=[4, 8],seed=3"), SimulatedPolicy)
    prm = make_prm("sim:noise=0.3,bias=1.5")
    assert (prm.noise, prm.bias) == (0.3, 1.5)
    assert make_prm("none") is None
    assert make_prm("arith-check").id == "arith-check"
    with pytest.raises(ValueError, match="unknown policy spec 'gpt-5'.*smollm2-135m"):
        make_policy("gpt-5")
    with pytest.raises(ValueError, match="unknown PRM spec"):
        make_prm("shepherd")
    with pytest.raises(ValueError, match="key=value"):
        make_prm("sim:noise")


def test_cli_solve_json_on_the_simulator(capsys):
    q = make_questions([0.2])[0]
    assert cli_main(["solve", q, "--strategy", "beam_search", "--n", "8", "--m", "4", "--policy", "sim", "--prm", "sim", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "beam_search" and out["n"] == 8 and out["m"] == 4
    assert set(out["cost"]) >= {"generations", "policy_tokens", "prm_tokens", "flops", "seconds"}
    assert out["cost"]["generations"] == sum(out["rounds"]) == 8 * problem_for(q).num_steps
    assert is_equivalent(out["answer"], problem_for(q).answer)


def test_cli_reports_bad_input_clearly(capsys):
    assert cli_main(["solve", "q", "--strategy", "beam_search", "--n", "6", "--m", "4", "--policy", "sim", "--prm", "sim"]) == 2
    assert "multiple of beam width" in capsys.readouterr().err
    assert cli_main(["solve", "q", "--strategy", "majority", "--m", "4", "--policy", "sim", "--prm", "sim"]) == 2
    assert "unknown: ['m']" in capsys.readouterr().err


def test_simulator_confident_steps_can_be_made_error_prone():
    from selector.backends.simulated import _STEP

    q = make_questions([0.3])[0]
    prefix = SimulatedPolicy().format_prompt(q)

    def flaw_rates(policy):
        out = policy.generate_steps([StepRequest(prefix, 4000, SamplingParams(), seed=3)])[0]
        marks = [_STEP.search(c.text) for c in out.continuations]
        rate = lambda conf: statistics.mean(m.group(2) == "-" for m in marks if (m.group(3) is not None) == conf)
        return rate(True), rate(False)

    same_conf, same_plain = flaw_rates(SimulatedPolicy(confident_rate=0.5))
    worse_conf, worse_plain = flaw_rates(SimulatedPolicy(confident_rate=0.5, confident_error=4.0))
    assert abs(same_conf - same_plain) < 0.03
    assert worse_conf > 2.5 * worse_plain and abs(worse_plain - same_plain) < 0.03


def test_simulated_prm_blind_spot_hides_some_flawed_confident_steps():
    from selector.backends.simulated import _STEP

    q = make_questions([0.6])[0]
    pol = SimulatedPolicy(confident_rate=1.0)  # every step carries the confident marker
    out = pol.generate_steps([StepRequest(pol.format_prompt(q), 2000, SamplingParams(), seed=5)])[0]
    flawed = [c.text for c in out.continuations if _STEP.search(c.text).group(2) == "-"]
    assert len(flawed) > 200

    def mean_score(prm):
        return statistics.mean(prm.score([ScoreRequest(q, (t,))])[0].step_scores[0] for t in flawed)

    seeing, half_blind = SimulatedPRM(noise=0.0), SimulatedPRM(noise=0.0, blind=0.5)
    assert mean_score(seeing) < 0.2  # sigmoid(-2)
    assert abs(mean_score(half_blind) - (0.5 * 0.119 + 0.5 * 0.881)) < 0.05  # half now look right


def test_cli_text_mode_prints_strategies_as_words_and_help_as_plain_text(capsys):
    from selector.cli import build_parser

    assert cli_main(["solve", "q", "--strategy", "weighted_best_of_n", "--n", "8", "--aggregation", "prod",
                     "--policy", "sim", "--prm", "sim"]) == 0
    out = capsys.readouterr().out
    assert "strategy:    weighted_best_of_n n=8 aggregation=prod" in out and "{" not in out.split("candidates:")[0]
    assert "``" not in build_parser().format_help()
