"""The two protocols every engine implements, and the request/response records they speak.

The split follows vLLM: an engine object (a :class:`Policy` or :class:`PRM`) is built once;
each call carries requests with their own :class:`SamplingParams` and seed.

The per-request and per-continuation records are typed ``NamedTuple``s rather than frozen
dataclasses: search builds one per tree node, and a frozen dataclass costs about 3x more to
construct, which showed up as a third of beam search's orchestration time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple, Protocol, Sequence, runtime_checkable

FinishReason = Literal["delimiter", "eos", "length"]
# Far above any useful temperature (the distribution is near uniform by 5): a larger value is a typo.
MAX_TEMPERATURE = 100.0


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one continuation.

    ``step_delimiter`` ends a step and is kept in its text (``None``: never cut at a
    delimiter). ``max_step_tokens`` caps one step (tokens); ``max_tokens`` caps a whole
    solution sampled in one go (tokens). ``top_k=0`` and ``top_p=1.0`` disable those filters;
    ``temperature=0`` is greedy decoding. ``logprobs``: return with each continuation the
    log-probability the policy gave its own sampled tokens (:class:`Continuation`), which the
    ``self-confidence`` verifier reads; the search runner turns it on when its PRM needs it.
    """

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    max_step_tokens: int = 256
    max_tokens: int = 1024
    step_delimiter: str | None = "\n\n"
    logprobs: bool = False

    def __post_init__(self) -> None:
        from ..errors import InputError

        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        for name in ("top_k", "max_step_tokens", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{name} must be an integer, got {value!r}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise InputError(f"temperature must be in [0, {MAX_TEMPERATURE}] (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InputError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if self.max_step_tokens < 1 or self.max_tokens < 1:
            raise InputError(f"max_step_tokens and max_tokens must be >= 1, got {self.max_step_tokens} and {self.max_tokens}")
        if self.step_delimiter is not None and (not isinstance(self.step_delimiter, str) or not self.step_delimiter):
            raise InputError(f"step_delimiter must be a non-empty string or None, got {self.step_delimiter!r}")
        if not isinstance(self.logprobs, bool):
            raise InputError(f"logprobs must be true or false, got {self.logprobs!r}")

    def replace(self, **changes) -> "SamplingParams":
        return replace(self, **changes)


class StepRequest(NamedTuple):
    """Ask for ``n`` continuations of ``prefix`` (the formatted prompt plus the partial solution).

    With ``to_completion=False`` each continuation stops at the step delimiter, EOS or
    ``params.max_step_tokens``; with ``to_completion=True`` it runs to EOS or
    ``params.max_tokens`` (a whole solution, as best-of-N samples). Continuation ``j`` is
    sampled from ``seed`` and ``j`` alone, so results do not depend on batch composition.
    """

    prefix: str
    n: int
    params: SamplingParams
    seed: int
    to_completion: bool = False


def check_step_requests(requests: Sequence[StepRequest]) -> list[StepRequest]:
    """``requests`` as a list, or a TypeError/ValueError naming the first malformed one
    (engines call this before spending anything on a batch)."""
    requests = list(requests)
    for k, req in enumerate(requests):
        if not isinstance(req, StepRequest):
            raise TypeError(f"requests[{k}] is a {type(req).__name__}, not a StepRequest")
        if not isinstance(req.prefix, str):
            raise TypeError(f"requests[{k}].prefix must be a string")
        if isinstance(req.n, bool) or not isinstance(req.n, int) or req.n < 0:
            raise ValueError(f"requests[{k}].n must be an int >= 0, got {req.n!r}")
        if not isinstance(req.params, SamplingParams):
            raise TypeError(f"requests[{k}].params must be a SamplingParams")
    return requests


class Continuation(NamedTuple):
    """One sampled continuation. ``logprob``: the sum over its ``num_tokens`` sampled tokens of
    the natural-log probability the policy's own distribution gave each (unscaled: temperature
    1, before top-k/top-p), when the request asked for it (``SamplingParams.logprobs``) and the
    engine reports it; else None."""

    text: str
    num_tokens: int
    finish_reason: FinishReason
    logprob: float | None = None


class StepOutput(NamedTuple):
    """The continuations of one request and the prompt tokens it read (counted once per
    request: the ``n`` continuations share the prefix, as with vLLM's prefix caching).

    ``cached_tokens``: how many of ``prompt_tokens`` the engine served from a prefix cache
    instead of computing them; ``None`` when the engine does not say (then all count as
    computed)."""

    continuations: tuple[Continuation, ...]
    prompt_tokens: int
    cached_tokens: int | None = None


class ScoreRequest(NamedTuple):
    """Score the ``steps`` of a solution to ``question``. ``confidence``: one value in (0, 1] per
    step, the policy's own confidence in it (the geometric-mean probability of the tokens that
    wrote it), when the policy reported log-probabilities; what the ``self-confidence``
    verifier returns as its scores (other PRMs ignore it)."""

    question: str
    steps: tuple[str, ...]
    confidence: tuple[float, ...] = ()


class ScoreOutput(NamedTuple):
    """One score in [0, 1] per step, and the tokens the PRM read to produce them."""

    step_scores: tuple[float, ...]
    num_tokens: int


@runtime_checkable
class Policy(Protocol):
    """A language model that samples reasoning steps, batched across many prompts."""

    id: str
    num_parameters: int  # for FLOPs; 0 for programs

    def format_prompt(self, question: str) -> str:
        """The text that precedes the solution (chat template, worked examples)."""

    def default_sampling_params(self) -> SamplingParams:
        """Sampling parameters that match this model's prompt format (e.g. its step delimiter)."""

    def generate_steps(self, requests: Sequence[StepRequest]) -> list[StepOutput]:
        """One output per request, in order. Implementations batch all requests together."""


@runtime_checkable
class PRM(Protocol):
    """A process reward model: one score in [0, 1] per step of each solution.

    A neural PRM scores all steps of a solution in one forward pass; the protocol passes the
    whole solution so it can.
    """

    id: str
    num_parameters: int

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        """One output per request, in order, with ``len(step_scores) == len(steps)``."""
