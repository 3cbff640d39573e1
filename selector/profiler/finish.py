"""Stages 2-5 from the written shards: difficulty and bins, every configuration's rows, their
prices under the table's cost model, each router's selection; then the four tables.

``finish_tables`` runs after a local profile, after ``merge`` of ``--shard`` slices and for
``reprice``; it regenerates nothing (the shards hold every sample and live tree run).
"""
from __future__ import annotations

import hashlib
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..binning import assign_bins, bin_edges, bin_labels
from ..cost_model import CostModel, sample_cost
from ..datasets import Problem
from ..records import Cost
from ..tables import read_rollouts, write_table
from .adaptive import adaptive_consistency_rows
from .config import ConfigError, ProfileConfig
from .difficulty import DESCRIPTIONS, pilot_bins, pilot_name, pilot_signal, prompt_difficulty, table_estimator
from .manifest import kept_metadata
from .metadata import family_metadata, grader_timeouts, pool_seconds
from .outcomes import best_of_n_family_rows, read_tree_runs, tree_rows
from .selection import pick_table, select_tables
from .summary import ProfileSummary
from .pool import pool_metadata


def progress_bar(enabled: bool):
    """tqdm when ``enabled`` (progress bars on stderr), else None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm


def assign_splits(problems: list[Problem], heldout: float, seed: int) -> dict[str, str]:
    """prompt_id -> "profile" | "heldout"; a seeded share of prompts is never used to select."""
    k = int(round(heldout * len(problems)))
    order = np.random.default_rng([seed, 7]).permutation(len(problems))
    held = {problems[i].id for i in order[:k]}
    return {p.id: ("heldout" if p.id in held else "profile") for p in problems}


def _ledger(rollouts: pd.DataFrame, runs: pd.DataFrame, policy_params: int, prm_params: int,
            pool_seconds: float = 0.0) -> dict[str, dict[str, float]]:
    prompt_tokens = int(rollouts.groupby("prompt_id")["prompt_tokens"].first().sum())
    generated, prm_tokens = int(rollouts["tokens"].sum()), int(rollouts["prm_tokens"].sum())
    pool = Cost(
        generations=len(rollouts), policy_prompt_tokens=prompt_tokens, policy_generated_tokens=generated,
        prm_tokens=prm_tokens, policy_flops=2.0 * policy_params * (prompt_tokens + generated),
        prm_flops=2.0 * prm_params * prm_tokens, seconds=pool_seconds,
    )
    tree = Cost()
    if not runs.empty:
        policy = int(runs["policy_tokens"].sum())
        # Runs written before generated tokens were kept separately count every token as generated.
        generated = int(runs["policy_generated_tokens"].sum()) if "policy_generated_tokens" in runs else policy
        tree = Cost(
            generations=int(runs["generations"].sum()), policy_prompt_tokens=policy - generated,
            policy_cached_tokens=int(runs["policy_cached_tokens"].sum()) if "policy_cached_tokens" in runs else 0,
            policy_generated_tokens=generated, prm_tokens=int(runs["prm_tokens"].sum()),
            policy_flops=float(runs["policy_flops"].sum()), prm_flops=float(runs["prm_flops"].sum()),
            seconds=float(runs["seconds"].sum()) if "seconds" in runs else 0.0,
        )
    # The best-of-N family is evaluated from the pool: it spends nothing beyond stage 1.
    return {"pool": pool.to_dict(), "best_of_n_family (from pool)": Cost().to_dict(), "beam_search/dvts (live)": tree.to_dict()}


def _check_tree_runs(cfg: ProfileConfig, runs: pd.DataFrame, ids: list[str], out_dir: Path) -> None:
    """Refuse to finish while a prompt lacks a live tree run the grid asks for (a slice that
    has not finished its tree stage): selection would silently drop those configurations."""
    from .outcomes import tree_configs

    configs = tree_configs(cfg)
    if not configs:
        return
    want = len(configs) * len(cfg.evaluate.seeds)
    have = runs.groupby("prompt_id").size() if not runs.empty else pd.Series(dtype=int)
    short = [pid for pid in ids if int(have.get(pid, 0)) < want]
    if short:
        raise ConfigError(
            f"{out_dir}: the live tree strategies have not run on {len(short)} of {len(ids)} prompts yet "
            f"(e.g. {short[:3]}): resume the --shard slices that hold them (rerun the same `tts-selector profile "
            "--shard i/k` commands; they resume), then `tts-selector merge` again"
        )


def profiling_cost(out_dir: Path, ledger: dict[str, dict[str, float]]) -> dict[str, Any]:
    """What profiling spent, per stage and in total: wall seconds (summed over the shards, so
    engine start-up and the finishing stages are not in it), of which inside policy and PRM
    calls, the rest being the profiler's own (batching, search bookkeeping, grading, writing);
    tokens generated, prompt tokens read (and served from a prefix cache), PRM tokens.
    Shards written before the time breakdown was recorded count as unknown (``None``)."""
    from ..tables import read_metadata, rollout_shards

    stages = {"pool": (rollout_shards(out_dir), ledger.get("pool", {})),
              "tree": (sorted((out_dir / "state").glob("tree-shard-*.parquet")), ledger.get("beam_search/dvts (live)", {}))}
    out: dict[str, Any] = {}
    for stage, (files, cost) in stages.items():
        metas = [read_metadata(f) for f in files]
        known = bool(metas) and all("shard_policy_seconds" in m for m in metas)
        seconds, policy, prm = (float(sum(m.get(key, 0.0) for m in metas))
                                for key in ("shard_seconds", "shard_policy_seconds", "shard_prm_seconds"))
        out[stage] = {
            "shards": len(files), "wall_seconds": seconds,
            "policy_seconds": policy if known else None, "prm_seconds": prm if known else None,
            "profiler_seconds": seconds - policy - prm if known else None,
            "generations": int(cost.get("generations", 0)),
            "generated_tokens": int(cost.get("policy_generated_tokens", 0)),
            "prompt_tokens": int(cost.get("policy_prompt_tokens", 0)),
            "cached_prompt_tokens": int(cost.get("policy_cached_tokens", 0)),
            "prm_tokens": int(cost.get("prm_tokens", 0)),
        }
    total = {key: sum(out[s][key] for s in out) for key in ("shards", "wall_seconds", "generations", "generated_tokens",
                                                              "prompt_tokens", "cached_prompt_tokens", "prm_tokens")}
    known = all(out[s]["profiler_seconds"] is not None for s in out if out[s]["shards"])
    profiler = sum(out[s]["profiler_seconds"] or 0.0 for s in out)
    total["profiler_seconds"] = profiler if known else None
    total["profiler_share"] = profiler / total["wall_seconds"] if known and total["wall_seconds"] > 0 else None
    out["total"] = total
    return out


def _cost_model(cfg: ProfileConfig, metadata: dict[str, Any], out_dir: Path) -> CostModel:
    """The table's cost model: the config's ``cost`` section, with S (shared prefix tokens) as
    the config states it, else as the pool's policy measured it, else as the finished table in
    ``out_dir`` recorded it (shards written before S was measured), else 0."""
    shared = cfg.cost.shared_prefix_tokens
    if shared is None:
        shared = metadata.get("shared_prefix_tokens")
    if shared is None:
        from ..tables import TableDir, TableError

        try:
            shared = (TableDir(out_dir).metadata.get("cost_model") or {}).get("shared_prefix_tokens")
        except (TableError, OSError):
            shared = None
    return CostModel(prefix_cache=cfg.cost.prefix_cache, policy_params=int(metadata.get("policy_params", 0) or 0),
                     prm_params=int(metadata.get("prm_params", 0) or 0), shared_prefix_tokens=int(shared or 0))


def _level_labels(prompts: pd.DataFrame) -> dict[int, str]:
    """'level 3' or 'levels 1-2' per bin, for bins of the data set's difficulty label."""
    out = {}
    for b, levels in prompts.groupby("bin")["level"]:
        lo, hi = int(levels.min()), int(levels.max())
        out[int(b)] = f"level {lo}" if lo == hi else f"levels {lo}-{hi}"
    return out


def finish_tables(
    cfg: ProfileConfig, out_dir: Path, problems: list[Problem], metadata: dict[str, Any], progress: bool = True,
    force: bool = False,
) -> ProfileSummary:
    """Stages 2-4 from the written shards, then the four tables (each written atomically)."""
    bar = progress_bar(progress)
    rollouts = read_rollouts(out_dir)
    have = set(rollouts["prompt_id"].unique())
    missing = [p.id for p in problems if p.id not in have]
    if missing:
        raise ConfigError(
            f"{out_dir}: no rollouts yet for {len(missing)} prompts (e.g. {missing[:3]}): run the remaining "
            "--shard slices, then `tts-selector merge`"
        )
    splits = assign_splits(problems, cfg.dataset.heldout, cfg.dataset.seed)
    ids = [p.id for p in problems]
    profile_ids = [pid for pid in ids if splits[pid] == "profile"]

    # Stage 2: difficulty, from the difficulty samples only (see profile/difficulty.py).
    k = cfg.pool.difficulty_samples
    difficulty = prompt_difficulty(cfg, problems, rollouts)
    edges = bin_edges(difficulty.loc[profile_ids, "difficulty_score"].to_numpy(), cfg.binning.scheme, cfg.binning.k,
                      cfg.binning.thresholds)
    bins = pd.Series(assign_bins(difficulty["difficulty_score"].to_numpy(), edges), index=ids)
    pool_sizes = rollouts.groupby("prompt_id").size()
    prompts = pd.DataFrame({
        "prompt_id": ids,
        "text_sha256": [hashlib.sha256(p.problem.encode()).hexdigest() for p in problems],
        "text": [p.problem for p in problems], "reference": [p.answer for p in problems],
        "level": pd.array([p.level for p in problems], dtype="Int64"),
        "split": [splits[pid] for pid in ids],
        "oracle_pass1": difficulty["oracle_pass1"].to_numpy(dtype=float),
        "predicted_pass1": difficulty["predicted_pass1"].to_numpy(dtype=float),
        "difficulty_score": difficulty["difficulty_score"].to_numpy(dtype=float),
        # Graded pass@1 of the evaluation samples: independent of the difficulty samples, so a
        # pilot's calibration (its mean score -> pass@1) is fitted against a target it never saw.
        "evaluation_pass1": rollouts[rollouts["sample_id"] >= k].groupby("prompt_id")["correct"].mean()
                            .reindex(ids).to_numpy(dtype=float),
        "difficulty_scores": [list(map(float, x)) for x in difficulty["difficulty_scores"]],
        # What a pilot of the first k difficulty samples spends (tokens), and the prompt's length.
        "difficulty_tokens": [list(map(int, x)) for x in difficulty["difficulty_tokens"]],
        "difficulty_prm_tokens": [list(map(int, x)) for x in difficulty["difficulty_prm_tokens"]],
        # Their answer keys in order (None: no answer) and modal share: what an agreement pilot reads.
        "difficulty_answers": [list(x) for x in difficulty["difficulty_answers"]],
        "agreement": difficulty["agreement"].to_numpy(dtype=float),
        "prompt_tokens": rollouts.groupby("prompt_id")["prompt_tokens"].first().reindex(ids).to_numpy(dtype=int),
        "bin": bins.to_numpy(dtype=int),
        "pool_size": [int(pool_sizes[pid]) for pid in ids],
    })

    # Stage 3: evaluations (all prompts; selection below only sees the profiling split). The
    # best-of-N family is scored on the evaluation samples only.
    runs = read_tree_runs(out_dir)
    _check_tree_runs(cfg, runs, ids, out_dir)
    cost_model = _cost_model(cfg, metadata, out_dir)
    scored = rollouts[rollouts["sample_id"] >= k]
    prompt_tokens = rollouts.groupby("prompt_id")["prompt_tokens"].first()
    evaluations = pd.concat(
        [best_of_n_family_rows(cfg, scored, cost_model, bar), adaptive_consistency_rows(cfg, scored, cost_model, bar),
         tree_rows(runs, prompt_tokens, cost_model)],
        ignore_index=True,
    )

    # Stage 4: selection, once per router that can be deployed on this table's prompts: the
    # table's own bins and each k-sample pilot's bins. A budget's compute is counted in scored
    # samples of the profiling prompts (cost_model.sample_cost).
    profile_evals = evaluations[evaluations["prompt_id"].isin(set(profile_ids))]
    unit = sample_cost(profile_evals)
    own = table_estimator(cfg.difficulty)

    def select(router_bins: pd.Series, name: str, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
        return select_tables(profile_evals, router_bins, cfg.select, metadata["policy_id"], metadata["prm_id"],
                             progress, estimator=name, unit=unit)

    results, selection = select(bins.loc[profile_ids], own, bar)
    selections, pilots = [selection], {}
    own_signal = pilot_signal(cfg)
    extra = [s for s in cfg.select.pilot_signals if s != own_signal]
    for pk in (cfg.select.pilots if k else ()):
        for signal in [None, *extra]:  # the table's own pilot signal, then any other asked for
            pbins, pedges = pilot_bins(cfg, difficulty, pk, profile_ids, signal)
            name = pilot_name(pk, signal)
            selections.append(select(pbins.loc[profile_ids], name)[1])
            pilots[name] = {"k": int(pk), "edges": pedges, "signal": signal or own_signal}
    selection = pd.concat(selections, ignore_index=True)
    ledger = _ledger(rollouts, runs, cost_model.policy_params, cost_model.prm_params, pool_seconds(out_dir))
    # The family comes from the config, not from the shards: merged shards may predate the key.
    metadata = {key: v for key, v in metadata.items() if key != "dataset_family_note"}
    # agreement bins' edges are on the modal answer's share, not on pass@1
    labels = (_level_labels(prompts[prompts["split"] == "profile"]) if cfg.difficulty == "level"
              else bin_labels(edges, "agreement" if cfg.difficulty == "agreement" else "pass@1"))
    meta = dict(metadata, **family_metadata(cfg), **pool_metadata(cfg), bin_edges=edges,
                bin_labels={str(b): v for b, v in labels.items()},
                ledger=ledger, profiling_cost=profiling_cost(out_dir, ledger), grader_timeouts=grader_timeouts(out_dir), created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                difficulty_samples=k, difficulty_source=DESCRIPTIONS[cfg.difficulty].format(k=k),
                default_selection=own, pilots=pilots, declared_router=cfg.evaluate.router,
                efficiency_reference=cfg.evaluate.efficiency_reference,
                aggregations=list(cfg.grid.aggregations),
                cost_model={**cost_model.to_dict(), "sample_cost": unit},
                profile_picks={str(b): v for b, v in pick_table(profile_evals, sorted(evaluations["budget"].unique()),
                                                                 unit).items()},
                select_method={"method": cfg.select.method, "shrinkage": cfg.select.shrinkage,
                               "repeats": cfg.select.repeats, "folds": cfg.select.folds,
                               "confidence": cfg.select.confidence})
    meta.pop("select_rule", None)
    meta.pop("shared_prefix_tokens", None)  # the pool's measurement; cost_model holds the one used
    # A rerun keeps the trained estimators' records and re-selects their cells from the
    # out-of-fold bins they recorded (the costs or the selection may have changed).
    kept = kept_metadata(out_dir, prompts, force)
    kept_cells = []
    for name, entry in dict(kept.get("estimators", {})).items():
        oof = entry.get("oof_bins") if isinstance(entry, dict) else None
        if not isinstance(oof, dict):
            kept["estimators"].pop(name)  # trained before its bins were recorded: retrain it
            print(f"{out_dir}: estimator {name} recorded no out-of-fold bins, so its cells cannot be re-selected: "
                  f"its record was dropped; retrain it (`tts-selector train-estimator {out_dir} --features "
                  f"{name.partition(':')[2]}`)", file=sys.stderr)
            continue
        kept_cells.append(select(pd.Series(oof).astype(int).reindex(profile_ids).dropna().astype(int), name)[1])
    if not kept.get("estimators"):
        kept.pop("estimators", None)
    meta.update(kept)
    selection = pd.concat([selection, *kept_cells], ignore_index=True)
    write_table(prompts, out_dir / "prompts.parquet", "prompts", meta)
    write_table(evaluations, out_dir / "evaluations.parquet", "evaluations", meta)
    write_table(results, out_dir / "results.parquet", "results", meta)
    write_table(selection, out_dir / "selection.parquet", "selection", meta)
    hist = np.histogram(difficulty.loc[profile_ids, "oracle_pass1"].to_numpy(), bins=10, range=(0.0, 1.0))[0].tolist()
    return ProfileSummary(
        out_dir, True, ledger=ledger, bin_sizes=bins.loc[profile_ids].value_counts().sort_index().to_dict(),
        bin_edges=edges, selection=selection[selection["estimator"] == own], pass1_histogram=hist, bin_labels=labels,
        cost=meta["profiling_cost"],
    )
