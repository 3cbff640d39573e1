"""Test doubles for what lies OUTSIDE the search logic: engines with scripted behaviour,
and recorders that wrap real engines to observe the calls search makes."""
from __future__ import annotations

from typing import Sequence

from selector.backends.base import Continuation, SamplingParams, ScoreOutput, ScoreRequest, StepOutput, StepRequest
from selector.seeds import derive_seed


def uniform(*parts) -> float:
    return (derive_seed(*parts) + 0.5) / float(1 << 63)


class RecordingPolicy:
    """Wraps a policy and records every batch of requests it receives."""

    def __init__(self, inner):
        self.inner = inner
        self.id = inner.id
        self.num_parameters = inner.num_parameters
        self.calls: list[list[StepRequest]] = []
        self.outputs: list[list[StepOutput]] = []

    def format_prompt(self, question):
        return self.inner.format_prompt(question)

    def default_sampling_params(self):
        return self.inner.default_sampling_params()

    def generate_steps(self, requests):
        self.calls.append(list(requests))
        out = self.inner.generate_steps(requests)
        self.outputs.append(out)
        return out


class RecordingPRM:
    def __init__(self, inner):
        self.inner = inner
        self.id = inner.id
        self.num_parameters = inner.num_parameters
        self.calls: list[list[ScoreRequest]] = []
        self.outputs: list[list[ScoreOutput]] = []

    def score(self, requests):
        self.calls.append(list(requests))
        out = self.inner.score(requests)
        self.outputs.append(out)
        return out


class ScriptedPolicy:
    """A policy whose paths end at a random depth: a step finishes the solution with
    probability ``p_finish`` (then it states ``\\boxed{<answer>}`` and stops at EOS)."""

    id = "scripted"
    num_parameters = 1000

    def __init__(self, p_finish: float = 0.3, answers: Sequence[str] = ("1", "2", "3")):
        self.p_finish = p_finish
        self.answers = list(answers)

    def format_prompt(self, question):
        return f"Q: {question}\n"

    def default_sampling_params(self):
        return SamplingParams(step_delimiter="\n\n")

    def generate_steps(self, requests: Sequence[StepRequest]):
        outs = []
        for r in requests:
            conts = []
            for j in range(r.n):
                u = uniform(r.seed, j)
                if u < self.p_finish or r.to_completion:
                    ans = self.answers[int(uniform(r.seed, j, "a") * len(self.answers))]
                    conts.append(Continuation(f"so \\boxed{{{ans}}}", 5, "eos"))
                else:
                    conts.append(Continuation(f"step {r.seed % 1000}-{j}\n\n", 3, "delimiter"))
            outs.append(StepOutput(tuple(conts), len(r.prefix.split())))
        return outs


class HashPRM:
    """Deterministic pseudo-random step scores (a function of the path text)."""

    id = "hash-prm"
    num_parameters = 10

    def score(self, requests):
        return [
            ScoreOutput(tuple(uniform("prm", r.question, "".join(r.steps[: i + 1])) for i in range(len(r.steps))), len(r.steps))
            for r in requests
        ]
