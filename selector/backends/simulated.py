"""A simulator of reasoning trees, for tests and benchmarks of search logic ONLY.

Nothing here is a language model and no result measured on it says anything about real
models; it is never a default. It exists so that search semantics (budgets, beam pruning,
subtree independence) and the profiler's statistics can be tested exactly and fast.

The world it simulates:

- Each question has a latent difficulty ``d`` in [0, 1]: the probability that a sampled
  solution is wrong, so the true pass@1 is ``1 - d``. A question written as
  ``"... (difficulty 0.35)"`` has that difficulty; any other question gets one from a hash
  of its text. :func:`make_questions` writes such questions.
- A solution has ``L`` steps (3 to 6, fixed per question). Each step of a still-correct path
  is correct with probability ``(1 - d) ** (1 / L)``; once a step is wrong, the path stays
  wrong (errors propagate). The last step states ``\\boxed{answer}``: the reference answer on
  a correct path, else a distractor drawn from a few wrong answers, the first of which is
  popular (so majority vote can be fooled on hard questions).
- Some steps carry a spurious "confident" style marker ``(!)`` regardless of correctness.
- A step's text records its latent state, e.g. ``"step 2 [+] (!) t17 #3fa9"`` (``+`` correct,
  ``-`` wrong, ``t17`` its token count, ``#3fa9`` a random tag). The policy is stateless: it
  reads the state of a path back from the prefix text.

:class:`SimulatedPRM` reads the latent correctness of each prefix and returns
``sigmoid(separation * (+1 | -1) + bias * confident + noise * eps)``, with ``eps`` a
deterministic standard normal per (seed, question, step tag): scoring the same path twice
gives the same scores. ``bias > 0`` makes the PRM over-reward the spurious marker, so
strong search can over-optimise it (as real PRMs are over-optimised on easy questions).
"""
from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from ..seeds import derive_seed
from .base import Continuation, SamplingParams, ScoreOutput, ScoreRequest, StepOutput, StepRequest

_Q_OPEN, _Q_CLOSE = "<question>", "</question>\n"
_DIFFICULTY = re.compile(r"\(difficulty ([0-9.]+)\)")
_STEP = re.compile(r"step (\d+) \[([+-])\]( \(!\))? t(\d+) #([0-9a-f]+)")
_INV_2_63 = 1.0 / float(1 << 63)
_STD_NORMAL = NormalDist()


def _uniform(*parts: object) -> float:
    """A deterministic uniform in (0, 1) from a tuple of parts."""
    return (derive_seed(*parts) + 0.5) * _INV_2_63


HINT_WORDS = ("trivial", "easy", "moderate", "hard", "brutal")


def make_questions(
    difficulties: Sequence[float], prefix: str = "sim problem", hint_noise: float | None = None, seed: int = 0
) -> list[str]:
    """Questions whose latent difficulty (1 - pass@1) is the given value.

    With ``hint_noise`` set, each question also carries a word (trivial .. brutal) read off its
    difficulty plus Gaussian noise of that standard deviation: text that partly reveals
    difficulty, as real prompts do, for prompt-only estimators to learn from.
    """
    for d in difficulties:
        if not 0.0 <= d <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {d}")
    out = []
    for i, d in enumerate(difficulties):
        hint = ""
        if hint_noise is not None:
            noisy = d + hint_noise * _STD_NORMAL.inv_cdf(_uniform("hint", seed, prefix, i))
            hint = f" looks {HINT_WORDS[min(max(int(noisy * len(HINT_WORDS)), 0), len(HINT_WORDS) - 1)]}"
        out.append(f"{prefix} {i}{hint} (difficulty {d:.4f})")
    return out


@dataclass(frozen=True)
class SimProblem:
    """The latent facts the simulator holds about one question."""

    question: str
    difficulty: float
    num_steps: int
    answer: str
    distractors: tuple[str, ...]

    @property
    def pass_at_1(self) -> float:
        return 1.0 - self.difficulty


@functools.lru_cache(maxsize=1 << 14)
def problem_for(question: str) -> SimProblem:
    """The latent problem behind a question (pure function of its text)."""
    match = _DIFFICULTY.search(question)
    d = float(match.group(1)) if match else _uniform("difficulty", question)
    num_steps = 3 + int(_uniform("steps", question) * 4)  # 3..6
    answer = str(10 + int(_uniform("answer", question) * 990))
    distractors = tuple(str(int(answer) + k) for k in (1, -1, 7, 11))
    return SimProblem(question, min(max(d, 0.0), 1.0), num_steps, answer, distractors)


class SimulatedPolicy:
    """Synthetic policy over reasoning trees (see module docstring). For tests/benchmarks only.

    ``step_tokens`` is the (min, max) token count of a step; ``num_parameters`` is nominal
    and only feeds FLOPs accounting. ``popular_distractor`` is the probability that a wrong
    path ends on the question's most popular wrong answer. ``confident_error`` raises the
    per-step success probability of a confident-style step to that power (> 1: confident steps
    err more often; with a PRM ``bias`` for that style, strong step search over-optimises the
    PRM, as Snell et al. saw on easy questions). ``latency`` (seconds) is slept
    per ``generate_steps`` call, to stand in for an engine in resume and overhead tests.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        step_tokens: tuple[int, int] = (8, 40),
        confident_rate: float = 0.3,
        confident_error: float = 1.0,
        popular_distractor: float = 0.6,
        num_parameters: int = 1_500_000_000,
        step_delimiter: str = "\n\n",
        latency: float = 0.0,
        id: str = "sim-policy",
    ) -> None:
        self.seed = seed
        self.step_tokens = step_tokens
        self.confident_rate = confident_rate
        self.confident_error = confident_error
        self.popular_distractor = popular_distractor
        self.num_parameters = num_parameters
        self.step_delimiter = step_delimiter
        self.latency = latency
        self.id = id

    # -- Policy protocol -------------------------------------------------------------
    def format_prompt(self, question: str) -> str:
        return f"{_Q_OPEN}{question}{_Q_CLOSE}"

    def default_sampling_params(self) -> SamplingParams:
        return SamplingParams(step_delimiter=self.step_delimiter)

    def generate_steps(self, requests: Sequence[StepRequest]) -> list[StepOutput]:
        if self.latency:
            time.sleep(self.latency)
        return [self._generate_one(r) for r in requests]

    # -- internals --------------------------------------------------------------------
    def _generate_one(self, request: StepRequest) -> StepOutput:
        question, solution = _split_prefix(request.prefix)
        problem = problem_for(question)
        depth, ok = _path_state(solution)
        delimiter = request.params.step_delimiter or "\n\n"
        conts = []
        report = request.params.logprobs
        for j in range(request.n):
            key = (self.seed, request.seed, j)
            if request.to_completion:
                conts.append(self._complete(problem, depth, ok, key, delimiter, request.params.max_tokens, report))
            else:
                text, ntok, last, step_ok = self._step(problem, depth, ok, key, delimiter)
                cap = request.params.max_step_tokens
                ntok_kept = min(ntok, cap)
                logprob = _step_logprob(text, step_ok, ntok_kept, key, depth + 1) if report else None
                if ntok > cap:
                    conts.append(Continuation(text.rstrip(delimiter), cap, "length", logprob))
                else:
                    conts.append(Continuation(text, ntok, "eos" if last else "delimiter", logprob))
        prompt_tokens = 16 + sum(_step_tokens(solution))
        # An ideal prefix cache, as vLLM's within one search: a prefix that extends a path was
        # prefilled (prompt) or generated (its steps) in earlier rounds, so only a root request
        # computes its prompt. Stateless, so a request costs the same in any batch or process.
        return StepOutput(tuple(conts), prompt_tokens, prompt_tokens if solution else 0)

    def _step(self, problem: SimProblem, depth: int, ok: bool, key: tuple, delimiter: str):
        """Sample step number ``depth + 1`` of a path; returns (text, tokens, is_last, ok)."""
        k = depth + 1
        confident = " (!)" if _uniform("style", *key, k) < self.confident_rate else ""
        p_step = problem.pass_at_1 ** (1.0 / problem.num_steps)
        if confident:  # over-confident steps err more often (confident_error > 1)
            p_step **= self.confident_error
        ok = ok and _uniform("ok", *key, k) < p_step
        lo, hi = self.step_tokens
        ntok = lo + int(_uniform("len", *key, k) * (hi - lo + 1))
        tag = derive_seed("tag", *key, k) & 0xFFFF
        text = f"step {k} [{'+' if ok else '-'}]{confident} t{ntok} #{tag:04x}"
        last = k >= problem.num_steps
        if last:
            if ok:
                answer = problem.answer
            elif _uniform("distractor", *key, k) < self.popular_distractor:
                answer = problem.distractors[0]
            else:
                answer = problem.distractors[1 + int(_uniform("which", *key, k) * (len(problem.distractors) - 1))]
            text += f" so the answer is \\boxed{{{answer}}}"
        else:
            text += delimiter
        return text, ntok, last, ok

    def _complete(self, problem, depth, ok, key, delimiter, max_tokens, report: bool) -> Continuation:
        """A whole solution; its log-probability only when ``report`` (else None)."""
        parts, total, logprob = [], 0, 0.0 if report else None
        while True:
            text, ntok, last, ok = self._step(problem, depth, ok, key, delimiter)
            if total + ntok > max_tokens:
                return Continuation("".join(parts), total, "length", logprob)
            parts.append(text)
            total += ntok
            depth += 1
            if report:
                logprob += _step_logprob(text, ok, ntok, key, depth)
            if last:
                return Continuation("".join(parts), total, "eos", logprob)


class SimulatedPRM:
    """Synthetic PRM over :class:`SimulatedPolicy` paths. For tests/benchmarks only.

    ``separation`` is the logit gap between correct and wrong prefixes (larger = better PRM),
    ``noise`` the standard deviation of per-step logit noise, ``bias`` the logit bonus given
    to steps with the spurious confident marker (reward-hacking strength), ``blind`` the
    probability that a path's first error, when made in a confident step, looks correct to it,
    along with every step built on it (an error it cannot see, which more search finds and
    exploits).
    """

    def __init__(
        self,
        *,
        separation: float = 2.0,
        noise: float = 1.0,
        bias: float = 0.0,
        blind: float = 0.0,
        seed: int = 0,
        num_parameters: int = 7_000_000_000,
        id: str = "sim-prm",
    ) -> None:
        self.separation = separation
        self.noise = noise
        self.bias = bias
        self.blind = blind
        self.seed = seed
        self.num_parameters = num_parameters
        self.id = id

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        return [self._score_one(r) for r in requests]

    def _score_one(self, request: ScoreRequest) -> ScoreOutput:
        scores = []
        ok = True
        tokens = 16
        hidden = False
        for index, step in enumerate(request.steps):
            step_ok, confident, ntok, tag = _parse_step(step)
            # A blind spot: the first error of a path, made in a confident step, can look right
            # to this PRM; the steps built on it then look locally valid too (hidden).
            if not step_ok and (hidden or (ok and confident and self.blind
                                           and _uniform("blind", self.seed, tag, index) < self.blind)):
                step_ok = hidden = True
            ok = ok and step_ok
            tokens += ntok
            # Beam search re-scores whole paths every round; the per-step draw is memoized
            # (it is a pure function) so the simulator's cost stays linear in new steps.
            eps = _step_noise(self.seed, request.question, index, tag)
            logit = self.separation * (1.0 if ok else -1.0) + self.bias * confident + self.noise * eps
            scores.append(1.0 / (1.0 + math.exp(-logit)))
        return ScoreOutput(tuple(scores), tokens)


# The simulated policy's own confidence (token log-probabilities, when asked): a step written
# on a still-correct path averages -0.2 nats per token, a wrong one -0.5, with per-step noise;
# the spurious confident style adds +0.08 whatever its correctness (self-confidence can be fooled
# too). Mean log-probabilities of this size are what small models show on easy and hard steps.
_LOGPROB_RIGHT, _LOGPROB_WRONG, _LOGPROB_STYLE, _LOGPROB_NOISE = -0.2, -0.5, 0.08, 0.1


def _step_logprob(text: str, ok: bool, ntok: int, key: tuple, index: int) -> float:
    """Sum of the token log-probabilities of one simulated step of ``ntok`` tokens."""
    mean = (_LOGPROB_RIGHT if ok else _LOGPROB_WRONG) + (_LOGPROB_STYLE if " (!)" in text else 0.0)
    mean += _LOGPROB_NOISE * _STD_NORMAL.inv_cdf(_uniform("logprob", *key, index))
    return ntok * min(mean, -1e-3)


@functools.lru_cache(maxsize=1 << 16)
def _parse_step(step: str) -> tuple[bool, bool, int, str]:
    """(correct, confident marker, tokens, tag) of a simulated step."""
    m = _STEP.search(step)
    if m is None:
        raise ValueError(f"SimulatedPRM can only score SimulatedPolicy steps, got {step[:60]!r}")
    return m.group(2) == "+", m.group(3) is not None, int(m.group(4)), m.group(5)


@functools.lru_cache(maxsize=1 << 16)
def _step_noise(seed: int, question: str, index: int, tag: str) -> float:
    return _STD_NORMAL.inv_cdf(_uniform("prm", seed, question, index, tag))


def clear_caches() -> None:
    """Forget memoized per-question and per-step draws (benchmarks start each run cold)."""
    problem_for.cache_clear()
    _parse_step.cache_clear()
    _step_noise.cache_clear()


def _split_prefix(prefix: str) -> tuple[str, str]:
    start = prefix.find(_Q_OPEN)
    end = prefix.find(_Q_CLOSE)
    if start < 0 or end < 0:
        raise ValueError("SimulatedPolicy got a prefix it did not format; use its format_prompt()")
    return prefix[start + len(_Q_OPEN) : end], prefix[end + len(_Q_CLOSE) :]


def _path_state(solution: str) -> tuple[int, bool]:
    """(number of steps so far, whether the path is still correct)."""
    marks = _STEP.findall(solution)
    return len(marks), all(m[1] == "+" for m in marks)


def _step_tokens(solution: str) -> list[int]:
    return [int(m[3]) for m in _STEP.findall(solution)]
