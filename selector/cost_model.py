"""The one cost model every row of a table is priced by: FLOPs from token counts.

A configuration's cost on a prompt is computed from four token counts that every row source
records the same way (pooled best-of-N rows, adaptive consistency replayed on the pool, live
tree runs, a router's pilot):

``prompt_tokens``          P: the question's formatted prompt (chat template, few-shot turns,
                           question), as the policy tokenizes it.
``request_prompt_tokens``  R: the prefix tokens its requests read, summed over requests (a
                           request of ``n`` samples reads its prefix once; a tree search reads the
                           prompt plus the path so far at every expansion).
``generated_tokens``       G: tokens the policy sampled.
``prm_tokens``             the tokens the PRM read to score.

and one per-table count, ``shared_prefix_tokens`` S: the part of every prompt that is the same
for all questions (template and few-shot turns before the question), measured by the policy's
tokenizer when the pool is generated (:func:`measure_shared_prefix`).

``prefix_cache`` declares what an engine computes of those tokens:

``none``    every request computes its whole prefix: R + G policy tokens.
``prompt``  a question's prompt and a path's prefix are computed once per question (what any
            engine with a prefix cache does within one question's requests: vLLM's automatic
            prefix caching, SGLang's radix cache, our transformers backend): P + G.
``shared``  as ``prompt``, and a preamble common to all questions is computed once for the
            whole workload, so it costs nothing per question: (P - S) + G. The default: a
            deployed gateway serves one preset, whose preamble stays resident in any prefix
            cache (vLLM, SGLang, the transformers backend all keep it), so charging it to every
            question would price the preset's prompt design, not the strategy.

Policy FLOPs are ``2 x policy_params x computed tokens``; PRM FLOPs ``2 x prm_params x
prm_tokens`` under every model (PRM prefix reuse is not modelled: PRM tokens are counted as
read). Under every model a configuration that generates more tokens for the same prompt never
costs less (``tests/test_cost_model.py`` checks it on every shipped table).

What an engine reported it served from its cache (``policy_cached_tokens``) depends on batch
composition, eviction and which engine ran the profile; it stays in the tables as a
diagnostic and never prices a row.

A **budget** N is an amount of compute: N times :attr:`CostModel` ``unit`` (``sample_cost``:
the mean cost of one scored sample, a best-of-N row at n=1, over the profiling prompts). Any
configuration whose mean cost fits serves budget N. Where a table cannot price FLOPs (an
imported pool without token counts or parameter counts), the axis is generations instead and
the metadata says so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .errors import InputError

PREFIX_CACHE_MODELS = ("none", "prompt", "shared")
DEFAULT_PREFIX_CACHE = "shared"
TOKEN_COLUMNS = ("prompt_tokens", "request_prompt_tokens", "generated_tokens", "prm_tokens")
"""The token counts a row is priced from (see the module docstring)."""


def check_prefix_cache(name: Any) -> str:
    """``name`` if it is a known prefix-cache model, else an InputError naming the choices."""
    if name not in PREFIX_CACHE_MODELS:
        raise InputError(f"unknown prefix-cache model {name!r}: choose one of {list(PREFIX_CACHE_MODELS)} "
                         "(see selector/cost_model.py)")
    return str(name)


@dataclass(frozen=True)
class CostModel:
    """How a table prices its rows (see the module docstring).

    ``policy_params`` / ``prm_params``: parameter counts (FLOPs = 2 x parameters x tokens);
    ``shared_prefix_tokens``: S, tokens of the preamble common to all questions (0 when unknown:
    ``shared`` then prices like ``prompt``)."""

    prefix_cache: str = DEFAULT_PREFIX_CACHE
    policy_params: int = 0
    prm_params: int = 0
    shared_prefix_tokens: int = 0

    def __post_init__(self) -> None:
        check_prefix_cache(self.prefix_cache)
        for name in ("policy_params", "prm_params", "shared_prefix_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(f"cost model: {name} must be an integer >= 0, got {value!r}")

    @property
    def axis(self) -> str:
        """``flops``, or ``generations`` when the table has no parameter count to price FLOPs."""
        return "flops" if self.policy_params > 0 else "generations"

    def computed_policy_tokens(self, prompt_tokens, request_prompt_tokens, generated_tokens):
        """Policy tokens an engine computes under this model (arrays or scalars, tokens)."""
        if self.prefix_cache == "none":
            return request_prompt_tokens + generated_tokens
        question = prompt_tokens if self.prefix_cache == "prompt" else np.maximum(prompt_tokens - self.shared_prefix_tokens, 0)
        return question + generated_tokens

    def price(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with their cost columns (re)computed from :data:`TOKEN_COLUMNS`:
        ``computed_tokens`` (policy tokens computed), ``tokens`` (computed + PRM), ``flops``
        (this model), ``flops_no_cache`` (the ``none`` model: every request computes its prefix),
        ``cost`` (the table's axis: ``flops``, or ``generations`` without parameter counts)."""
        missing = [c for c in TOKEN_COLUMNS if c not in rows.columns]
        if missing:
            raise InputError(f"cannot price rows without token columns {missing}: re-finish the table "
                             "(`tts-selector reprice TABLE`) from its rollouts and tree runs")
        out = rows.copy()
        p, r, g, prm = (out[c].to_numpy(dtype=float) for c in TOKEN_COLUMNS)
        computed = self.computed_policy_tokens(p, r, g)
        out["computed_tokens"] = computed
        out["tokens"] = computed + prm
        out["flops"] = 2.0 * self.policy_params * computed + 2.0 * self.prm_params * prm
        out["flops_no_cache"] = 2.0 * self.policy_params * (r + g) + 2.0 * self.prm_params * prm
        out["cost"] = out["flops"] if self.axis == "flops" else out["generations"].astype(float)
        return out

    def pilot_flops(self, prompt_tokens, generated_tokens, prm_tokens) -> np.ndarray:
        """FLOPs a ``k``-sample pilot adds to the strategy that follows it: its samples' tokens
        and PRM scorings; its prompt only under ``none`` (otherwise the question's prompt is
        computed once for the pilot and the strategy together)."""
        p, g, prm = (np.asarray(x, dtype=float) for x in (prompt_tokens, generated_tokens, prm_tokens))
        computed = g + (p if self.prefix_cache == "none" else 0.0)
        return 2.0 * self.policy_params * computed + 2.0 * self.prm_params * prm

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "axis": self.axis,
                "formula": "flops = 2 x policy_params x computed policy tokens + 2 x prm_params x PRM tokens; computed = "
                           + {"none": "R + G", "prompt": "P + G", "shared": "(P - S) + G"}[self.prefix_cache]}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], prefix_cache: str | None = None) -> "CostModel":
        """The model a table declares (``cost_model`` in its metadata), optionally with another
        ``prefix_cache`` (re-pricing); tables written before the key use the default model."""
        declared = meta.get("cost_model") or {}
        if not isinstance(declared, Mapping):
            raise InputError(f"table metadata: cost_model must be a mapping, got {type(declared).__name__}")
        return cls(
            prefix_cache=check_prefix_cache(prefix_cache or declared.get("prefix_cache", DEFAULT_PREFIX_CACHE)),
            policy_params=int(meta.get("policy_params", 0) or 0), prm_params=int(meta.get("prm_params", 0) or 0),
            shared_prefix_tokens=int(declared.get("shared_prefix_tokens", 0) or 0),
        )


def sample_cost(rows: pd.DataFrame) -> float:
    """The unit of a budget: the mean cost (``cost`` column) of one scored sample, a best-of-N
    row at n=1 (``majority`` at n=1 when the table has no PRM strategy), over ``rows``' prompts.
    Without n=1 rows, the smallest best-of-N family row's cost per sample. Raises InputError when
    the rows hold no best-of-N family configuration to define one sample."""
    family = rows[rows["strategy"].isin(("best_of_n", "weighted_best_of_n", "majority"))]
    if family.empty:
        raise InputError("a budget is counted in samples' compute, and these rows hold no best-of-N family "
                         "configuration to price one sample: add majority or best_of_n to grid.strategies")
    n_min = int(family["n"].min())
    for strategy in ("best_of_n", "weighted_best_of_n", "majority"):
        rows_s = family[(family["strategy"] == strategy) & (family["n"] == n_min)]
        if not rows_s.empty:
            # One aggregation is enough: every aggregation of one sample costs the same.
            first = rows_s["aggregation"].dropna().iloc[0] if rows_s["aggregation"].notna().any() else None
            if first is not None:
                rows_s = rows_s[rows_s["aggregation"] == first]
            return float(rows_s["cost"].mean()) / n_min
    raise AssertionError("unreachable")  # pragma: no cover


def measure_shared_prefix(policy: Any) -> int | None:
    """S for a policy: the token count of the prefix that every formatted prompt shares (the
    common token prefix of two unrelated questions' prompts), or None when the policy cannot
    tokenize (no ``encode``; e.g. a remote server or the simulator)."""
    encode = getattr(policy, "encode", None)
    if encode is None or not hasattr(policy, "format_prompt"):
        return None
    a, b = (list(encode(policy.format_prompt(q))) for q in ("7 + 5", "Which prime follows 89?"))
    shared = 0
    for x, y in zip(a, b):
        if x != y:
            break
        shared += 1
    return shared
