"""One cost axis (issue 23): every row of every shipped table is priced by its declared cost
model from its token counts, and generating more never costs less under any model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selector.cost_model import PREFIX_CACHE_MODELS, CostModel, measure_shared_prefix, sample_cost
from selector.errors import InputError
from selector.tables import TableDir, rollout_shards

ROOT = Path(__file__).resolve().parents[1]
PROFILED = sorted(p for p in (ROOT / "tables").iterdir() if (p / "evaluations.parquet").is_file()
                  and not TableDir(p).metadata.get("prior"))


def _computed(model: str, rows: pd.DataFrame, shared: int) -> np.ndarray:
    """The policy tokens an engine computes, written out here apart from the library's code."""
    p, r, g = rows["prompt_tokens"], rows["request_prompt_tokens"], rows["generated_tokens"]
    return {"none": r + g, "prompt": p + g, "shared": (p - shared).clip(lower=0) + g}[model].to_numpy(dtype=float)


def test_every_shipped_table_declares_a_cost_model():
    assert len(PROFILED) >= 3
    for path in PROFILED:
        declared = TableDir(path).metadata["cost_model"]
        assert declared["prefix_cache"] in PREFIX_CACHE_MODELS and declared["sample_cost"] > 0, path
        assert declared["axis"] == ("flops" if TableDir(path).metadata["policy_params"] > 0 else "generations"), path


@pytest.mark.parametrize("path", PROFILED, ids=lambda p: p.name)
def test_every_row_is_priced_by_the_declared_model_from_its_token_counts(path):
    table = TableDir(path)
    meta, ev = table.metadata, table.evaluations()
    declared = meta["cost_model"]
    pp, rp, shared = int(meta["policy_params"]), int(meta["prm_params"]), int(declared["shared_prefix_tokens"])
    computed = _computed(declared["prefix_cache"], ev, shared)
    want = 2.0 * pp * computed + 2.0 * rp * ev["prm_tokens"].to_numpy(dtype=float)
    assert np.allclose(ev["flops"].to_numpy(dtype=float), want, rtol=1e-12, atol=0)
    no_cache = 2.0 * pp * _computed("none", ev, shared) + 2.0 * rp * ev["prm_tokens"].to_numpy(dtype=float)
    assert np.allclose(ev["flops_no_cache"].to_numpy(dtype=float), no_cache, rtol=1e-12, atol=0)
    axis = ev["flops"] if declared["axis"] == "flops" else ev["generations"]
    assert np.allclose(ev["cost"], axis)
    # One sample's compute: best-of-N at n=1 (one scored sample) over the profiling prompts.
    profile = set(table.prompts().query("split == 'profile'")["prompt_id"])
    assert declared["sample_cost"] == pytest.approx(sample_cost(ev[ev["prompt_id"].isin(profile)]))
    # Every source prices the prompt the same way: a row's P is its prompt's pooled prompt length.
    pooled = table.prompts().set_index("prompt_id")["prompt_tokens"]
    assert np.array_equal(ev["prompt_tokens"].to_numpy(dtype=float), ev["prompt_id"].map(pooled).to_numpy(dtype=float))
    if rollout_shards(path):  # a table shipped with its pool: the prompts table agrees with it
        first = table.rollouts(["prompt_id", "prompt_tokens"]).groupby("prompt_id")["prompt_tokens"].first()
        assert pooled.loc[first.index].equals(first.astype(pooled.dtype))
    # The engine's measured cache hits are kept as a diagnostic, never in the price.
    assert "policy_cached_tokens" in ev


@pytest.mark.parametrize("path", PROFILED, ids=lambda p: p.name)
@pytest.mark.parametrize("model", PREFIX_CACHE_MODELS)
def test_generating_more_never_costs_less(path, model):
    meta = TableDir(path).metadata
    ev = CostModel(model, int(meta["policy_params"]), int(meta["prm_params"]),
                   int(meta["cost_model"]["shared_prefix_tokens"])).price(TableDir(path).evaluations())
    if not (ev["generated_tokens"] > 0).any():
        pytest.skip(f"{path.name} records no token counts (an imported pool without them): every row costs 0")
    # The named case: a live tree search at N=4 never costs less than one best-of-N sample.
    one = ev[(ev["strategy"] == "best_of_n") & (ev["n"] == 1)].groupby("prompt_id")["flops"].first()
    tree = ev[ev["strategy"].isin(["beam_search", "dvts", "particle_filtering"]) & (ev["n"] == 4)]
    if not tree.empty:
        assert (tree["flops"].to_numpy() >= tree["prompt_id"].map(one).to_numpy()).all()
    # In general: on one prompt, a row that reads, generates and scores at least as much as
    # another (one of them strictly more) never costs less, checked over every pair.
    for _, rows in ev.groupby("prompt_id"):
        counts = rows[["request_prompt_tokens", "generated_tokens", "prm_tokens"]].to_numpy(dtype=float)
        flops = rows["flops"].to_numpy(dtype=float)
        more = (counts[:, None, :] >= counts[None, :, :]).all(axis=2) & (counts[:, None, :] > counts[None, :, :]).any(axis=2)
        assert (flops[:, None] >= flops[None, :] - 1e-6)[more].all()


def test_the_models_order_and_the_pilot_pays_its_prompt_only_without_a_cache():
    rows = pd.DataFrame({"prompt_tokens": [200.0], "request_prompt_tokens": [1600.0], "generated_tokens": [300.0],
                         "prm_tokens": [250.0], "generations": [16.0]})
    priced = {m: CostModel(m, 100, 10, shared_prefix_tokens=190).price(rows).iloc[0] for m in PREFIX_CACHE_MODELS}
    assert priced["none"]["computed_tokens"] == 1900 and priced["prompt"]["computed_tokens"] == 500
    assert priced["shared"]["computed_tokens"] == 310
    assert priced["shared"]["flops"] == 2 * 100 * 310 + 2 * 10 * 250
    assert all(p["flops_no_cache"] == priced["none"]["flops"] for p in priced.values())
    none, shared = (CostModel(m, 100, 10, 190) for m in ("none", "shared"))
    assert none.pilot_flops([200], [60], [40])[0] == 2 * 100 * 260 + 2 * 10 * 40
    assert shared.pilot_flops([200], [60], [40])[0] == 2 * 100 * 60 + 2 * 10 * 40
    # No parameter count (an imported pool): the axis is generations.
    assert CostModel("shared").price(rows).iloc[0]["cost"] == 16.0
    with pytest.raises(InputError, match="prefix-cache"):
        CostModel("lru")
    with pytest.raises(InputError, match="token columns"):
        CostModel().price(rows.drop(columns="generated_tokens"))


def test_the_shared_prefix_is_the_token_prefix_every_prompt_shares():
    class Words:
        def format_prompt(self, question):
            return "system: be brief. example: 1 + 1 = 2. user: " + question

        def encode(self, text):
            return text.split(" ")

    assert measure_shared_prefix(Words()) == 10  # "system:" .. "user:", the words before the question
    assert measure_shared_prefix(object()) is None  # cannot tokenize: unknown
