"""Labels and cell text shared by the text view (``inspect``) and the figures (``plots``).

One place for how a configuration, a bin, a FLOPs figure, a table's provenance and its
profiling cost are written, so both views say the same thing.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from .binning import bin_labels

__all__ = [
    "FEW_PROMPTS", "bin_titles", "cell_lines", "check_budget", "config_label", "cost_text", "flops_known",
    "format_flops", "present", "provenance_rows", "selection_columns",
]

FEW_PROMPTS = 10
"""A (bin, budget) cell selected from fewer profiling prompts than this is flagged as noisy:
with 2-fold cross-fitting and a bootstrap over so few prompts, its choice and CI are unstable."""

# Metadata keys shown first in the provenance listing, in this order; other keys follow.
_PROVENANCE_KEYS = (
    "policy_id", "policy_params", "prm_id", "prm_params", "dataset", "dataset_sha256", "grader",
    "grader_version", "pool_source", "n_pool", "difficulty", "binning_scheme", "bin_edges", "prior",
    "config_name", "config_hash", "package_version", "schema_version", "created_at",
)
_PROVENANCE_SKIP = {"kind", "bin_labels", "ledger", "estimators", "profiling_cost"}


def present(x: Any) -> bool:
    """Whether a table value is there (not None, NaN or pandas NA)."""
    return x is not None and x is not pd.NA and not (isinstance(x, float) and math.isnan(x))


def config_label(row: Any, *, with_n: bool = True) -> str:
    """``strategy/n/m/aggregation`` of a results or selection row, e.g. ``beam_search/8/2/last``
    (the profiler summary's naming); ``with_n=False`` drops n and writes ``M=`` (a
    configuration across budgets, e.g. ``beam_search/M=2/last``)."""
    get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k, None))
    parts = [str(get("strategy"))]
    if with_n:
        parts.append(str(int(get("n"))))
    if present(get("m")):
        parts.append(str(int(get("m"))) if with_n else f"M={int(get('m'))}")
    if isinstance(get("aggregation"), str):
        parts.append(get("aggregation"))
    return "/".join(parts)


def flops_known(meta: dict) -> bool:
    """Whether the table's FLOPs mean anything: imported pools without parameter counts record 0."""
    return bool(meta.get("policy_params") or meta.get("prm_params"))


def bin_titles(meta: dict, bins: Sequence[int]) -> dict[int, str]:
    """``{bin: "bin 1 (easiest): pass@1 >= 0.66"}`` from the table's ``bin_labels`` (or its
    ``bin_edges``); the first and last bins say easiest and hardest."""
    labels = {int(k): v for k, v in (meta.get("bin_labels") or {}).items()}
    if not labels and meta.get("bin_edges") is not None:
        labels = bin_labels(meta["bin_edges"])
    bins = sorted(int(b) for b in bins)
    k = max(bins + [len(meta.get("bin_edges") or []) + 1]) if bins else 0
    out = {}
    for b in bins:
        name = f"bin {b}" + (" (easiest)" if b == 1 and k > 1 else " (hardest)" if b == k and k > 1 else "")
        out[b] = f"{name}: {labels[b]}" if b in labels else name
    return out


def format_flops(value: Any, known: bool = True) -> str | None:
    """``"5.7e10 FLOPs"``; None where FLOPs are missing or not recorded (unknown parameter counts)."""
    if not known or not present(value):
        return None
    mantissa, exponent = f"{float(value):.1e}".split("e")
    return f"{mantissa}e{int(exponent)} FLOPs"


def _value_text(value: Any) -> str:
    if isinstance(value, float):  # bin edges: up to 4 decimals; anything large in short scientific form
        return f"{value:.4g}" if abs(value) >= 1e4 else (f"{value:.4f}".rstrip("0").rstrip(".") or "0")
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) if value else "{}"
    return str(value)


def provenance_rows(meta: dict) -> list[tuple[str, str]]:
    """``(key, text)`` pairs of a table's metadata: the keys of :mod:`selector.tables` first,
    then any others, the trained estimators, and one ``ledger <stage>`` row per profiling stage
    (generations, FLOPs, seconds)."""
    keys = [k for k in _PROVENANCE_KEYS if k in meta] + sorted(
        k for k in meta if k not in _PROVENANCE_KEYS and k not in _PROVENANCE_SKIP)
    rows = [(k, _value_text(meta[k])) for k in keys]
    if meta.get("estimators"):
        rows.append(("estimators", ", ".join(sorted(meta["estimators"]))))
    for stage, cost in (meta.get("ledger") or {}).items():
        rows.append((f"ledger {stage}", f"{cost.get('generations', 0):.0f} generations, "
                     f"{cost.get('flops', 0):.3g} FLOPs, {cost.get('seconds', 0):.0f} s"))
    if meta.get("profiling_cost"):
        rows.append(("profiling cost", cost_text(meta["profiling_cost"])))
    return rows


def cost_text(cost: dict) -> str:
    """One line of a table's ``profiling_cost`` (wall time, tokens, the profiler's own share)."""
    t = cost.get("total", {})
    share = t.get("profiler_share")
    parts = [f"{t.get('wall_seconds', 0) / 60:.1f} min over {t.get('shards', 0)} shards"]
    for stage in ("pool", "tree"):
        if stage in cost and cost[stage].get("shards"):
            parts.append(f"{stage} {cost[stage]['wall_seconds'] / 60:.1f} min")
    parts += [f"{t.get('generated_tokens', 0):,} tokens generated", f"{t.get('prompt_tokens', 0):,} prompt tokens "
              f"({t.get('cached_prompt_tokens', 0):,} from the prefix cache)", f"{t.get('prm_tokens', 0):,} PRM tokens",
              "profiler's own share of the time " + (f"{share:.1%}" if share is not None else "not recorded")]
    return ", ".join(parts)


def cell_lines(r: Any, *, known_flops: bool, few_prompts: int = FEW_PROMPTS, every_count: bool = True) -> list[str]:
    """Text of one selection cell: strategy; n, M, aggregation; held-out accuracy [95% CI] (or
    "no accuracy"); mean FLOPs (if recorded); the prompts it was selected from (always, or with
    ``every_count=False`` only when fewer than ``few_prompts``)."""
    parts = ([f"n={int(r.n)}"] if present(r.n) else []) + ([f"M={int(r.m)}"] if present(r.m) else []) + (
        [r.aggregation] if isinstance(r.aggregation, str) else [])
    lines = [str(r.strategy), " ".join(parts) or "any n"]  # a prior's rules leave n, M, aggregation open
    if present(r.accuracy):
        ci = f" [{r.ci_low:.2f},{r.ci_high:.2f}]" if present(r.ci_low) and present(r.ci_high) else ""
        lines.append(f"acc {r.accuracy:.2f}{ci}")
    else:
        lines.append("no accuracy")
    flops = format_flops(getattr(r, "mean_flops", None), known_flops)
    if flops:
        lines.append(flops)
    n = getattr(r, "n_prompts", None)
    if present(n) and int(n) > 0 and (every_count or int(n) < few_prompts):  # 0: a prior, nothing was profiled
        lines.append(f"{int(n)} prompts" + (" (few!)" if int(n) < few_prompts else ""))
    return lines


def selection_columns(selection: pd.DataFrame) -> tuple[pd.DataFrame, list[Any], list[str], str]:
    """The columns of a selection grid: the budgets N of a profiled table or, for a prior whose
    rules hold at any budget (null ``budget``), its policy size ranges (``size_range``).

    Returns ``(selection with a "column" key, keys in order, header labels, axis label)``.
    """
    sel = selection.copy()
    if sel["budget"].notna().all():
        sel["column"] = sel["budget"].astype(int)
        keys = sorted(int(b) for b in sel["column"].unique())
        return sel, keys, [f"N={b}" for b in keys], "budget N (generations per round)"
    if "size_range" in sel:
        order = sel.sort_values("policy_params_min") if "policy_params_min" in sel else sel
        sel["column"] = sel["size_range"].astype(str)
        keys = list(dict.fromkeys(order["size_range"].astype(str)))
        return sel, keys, [f"policy {k}" for k in keys], "policy size (the rules apply at any budget)"
    sel["column"] = [int(b) if present(b) else "any" for b in sel["budget"]]
    keys = sorted({k for k in sel["column"] if k != "any"}) + (["any"] if (sel["column"] == "any").any() else [])
    return sel, keys, [f"N={k}" for k in keys], "budget N (generations per round)"


def check_budget(selection: pd.DataFrame, budget: int | None, where: Any) -> None:
    """Raise a ValueError naming the table's budgets when ``budget`` (if given) is not one of them."""
    if budget is not None and selection["budget"].isna().all():
        raise ValueError(f"{where}: a prior table's rules apply at any budget and it has no budget columns: drop --budget")
    if budget is not None and budget not in set(selection["budget"].dropna()):
        raise ValueError(f"{where}: budget {budget} is not in the table (budgets "
                         f"{', '.join(map(str, sorted(selection['budget'].dropna().unique())))}): pick one of them")

