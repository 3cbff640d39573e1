"""The ``self-confidence`` verifier: the policy's own token probabilities as step scores.

Most users have a policy and no process reward model. The policy already says how sure it was
of what it wrote: the probability it gave each token it sampled. This verifier scores a step
by the **geometric-mean probability of the tokens of the generation that wrote it**,

    confidence = exp( (1 / T) * sum_t log p(token_t | prefix) )   in (0, 1],

from the policy's unscaled distribution (temperature 1, before top-k/top-p), which every
backend returns with the generation when asked (``SamplingParams.logprobs``): transformers from
its own logits, vLLM from ``CompletionOutput.cumulative_logprob``, an OpenAI-compatible server
from ``logprobs.token_logprobs`` (a server that returns none is refused with a clear error).
In step-level search (beam search, DVTS, particle filtering) each step is one generation, so
every step has its own confidence; a whole solution sampled at once (the best-of-N family,
adaptive consistency) gives each of its steps the solution's confidence.

The usual aggregations then read as confidence measures of a solution: ``last`` (its last
generation's), ``mean`` (the mean over its steps), ``min`` (its **lowest-step confidence**: the
weakest group of tokens, as DeepConf's lowest group confidence, with steps as the groups) and
``prod``. Li et al.'s and DeepConf's confidence-filtered and confidence-weighted votes are the
best-of-N family's weighted and filtered votes over these scores.

It reads nothing and computes nothing: 0 parameters, 0 PRM tokens, so it adds no FLOPs to the
cost model (the log-probabilities come out of the forward pass that sampled the tokens).
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import EngineError
from .base import ScoreOutput, ScoreRequest


class SelfConfidencePRM:
    """Scores each step with the policy's own confidence in it (see the module docstring)."""

    id = "self-confidence"
    num_parameters = 0
    reads_policy_confidence = True  # the runner asks the policy for log-probabilities

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreOutput]:
        out = []
        for k, request in enumerate(requests):
            confidence = tuple(request.confidence)
            if len(confidence) != len(request.steps):
                raise EngineError(
                    f"self-confidence: request {k} has {len(request.steps)} steps but {len(confidence)} confidences: "
                    "the policy returned no token log-probabilities. Use a backend that reports them (transformers, "
                    "vLLM, an OpenAI-compatible server that returns `logprobs`), or another PRM"
                )
            if not all(isinstance(c, float) and math.isfinite(c) and 0.0 <= c <= 1.0 for c in confidence):
                raise EngineError(f"self-confidence: request {k} has confidences outside [0, 1]: {confidence[:4]}")
            out.append(ScoreOutput(confidence, 0))
        return out
