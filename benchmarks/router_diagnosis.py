"""Why does (or doesn't) the router beat the best fixed strategy? Evidence from a table, no generation.

For a table with a held-out split and difficulty samples. Sections 1, 3 and 4 are on the
held-out prompts (95% bootstrap CI over them, the same resamples for every row, so differences
are paired); section 2 is in-sample on the profiling prompts, without CIs (the chosen
configuration was picked on those prompts, so its margin there is optimistic). Everything is
exploratory: many rows, no multiplicity correction, and no row here is a headline figure
(those are ``tts-selector evaluate``'s, for the declared router).

1. **Headroom**: per budget, the profile pick (one configuration for all, chosen on the
   profiling prompts within N samples' compute), the **split-half per-prompt choice** of the
   pool-scored configurations (best-of-N family and adaptive consistency): each held-out
   prompt's evaluation samples are split in two halves, the configuration best on one half
   is scored on the other (and the other way round), against the single configuration best
   on the same halves of all prompts. It is a lower bound on the per-prompt headroom (each
   half's per-prompt estimates are noisy, so the choice is partly noise); the in-sample
   maximum over noisy per-prompt outcomes is an upper bound inflated by that noise, and is not
   reported as headroom. And pass@N of the pool's evaluation samples (the best-of-N family's
   ceiling; tree strategies draw other samples).
2. **Heterogeneity**: per budget, each bin's chosen configuration and its in-sample accuracy
   against the one-strategy choice on the same bin's profiling prompts: routing can only gain
   where bins want different configurations.
3. **Estimator quality**: the table's own selection routed by the bins of (a) the declared
   prompt estimator's prediction, (b) the PRM-predicted pass@1 of the difficulty samples (a
   K-sample pilot, the table's own bins), (c) the graded pass@1 of the same difficulty samples
   (oracle bins: what a perfect K-sample difficulty reading would give; not deployable);
   cells always chosen on the profiling prompts' bins of the same kind.
4. **Bin count**: PRM-predicted pass@1 bins with k = 1, 2, 3, 5, 8 quantile bins,
   re-selected on the profiling prompts.

5. **PRM**: AUROC of the PRM's final-step score for a correct final answer over the held-out
   prompts' evaluation samples, pooled and within a prompt (mean over prompts with both
   outcomes; what best-of-N's choice depends on), with a bootstrap CI over prompts.

Sections 3 and 4 compare accuracy at the same budget N: a pilot's or an embedder's own cost
is left out (``evaluate`` prices it).

    python benchmarks/router_diagnosis.py tables/smollm2-135m__arith-check__arithmetic-400 [--json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selector.binning import assign_bins, bin_edges  # noqa: E402
from selector.heldout import HeldoutSetup, config_key, select_cells  # noqa: E402
from selector.learning_curve import refit_router  # noqa: E402
from selector.profiler import config_from_manifest  # noqa: E402
from selector.profiler.adaptive import adaptive_consistency_rows  # noqa: E402
from selector.profiler.manifest import profiled_settings  # noqa: E402
from selector.profiler.outcomes import best_of_n_family_rows  # noqa: E402
from selector.stats import auroc, bootstrap_indices, ci95  # noqa: E402


def _split_half(cfg, scored: pd.DataFrame, ids: list[str]) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """Per budget b (up to half the pool): per prompt, the accuracy on one half of its evaluation
    samples of the pool-scored configuration (best-of-N family, adaptive consistency) at b that
    was best on the other half, averaged over both directions; the same for the single
    configuration best on that half over all prompts; and how many configurations competed."""
    order = scored.sort_values(["prompt_id", "sample_id"])
    position = order.groupby("prompt_id").cumcount()
    parts = [order[position % 2 == h].assign(sample_id=lambda d: d.groupby("prompt_id").cumcount()) for h in (0, 1)]
    size = int(min(p.groupby("prompt_id").size().min() for p in parts))
    cfg = dataclasses.replace(cfg, pool=dataclasses.replace(cfg.pool, n=size),
                              grid=dataclasses.replace(cfg.grid, budgets=tuple(b for b in cfg.grid.budgets if b <= size)))
    tables = []
    for part in parts:
        ev = pd.concat([best_of_n_family_rows(cfg, part), adaptive_consistency_rows(cfg, part)], ignore_index=True)
        ev["config"] = [config_key(r) for r in ev.itertuples(index=False)]
        tables.append(ev)
    out = {}
    for b in cfg.grid.budgets:
        acc = [t[t["budget"] == b].pivot(index="prompt_id", columns="config", values="accuracy").reindex(ids)
               .dropna(axis=1) for t in tables]
        common = sorted(set(acc[0].columns) & set(acc[1].columns))
        a, c = acc[0][common].to_numpy(), acc[1][common].to_numpy()
        per_prompt = (c[np.arange(len(ids)), a.argmax(axis=1)] + a[np.arange(len(ids)), c.argmax(axis=1)]) / 2
        one = (c[:, a.mean(axis=0).argmax()] + a[:, c.mean(axis=0).argmax()]) / 2
        out[int(b)] = (per_prompt, one, len(common))
    return out


def _row(acc: np.ndarray, boot: np.ndarray, base: np.ndarray | None = None) -> dict:
    out = {"accuracy": float(acc.mean()), "ci": ci95(acc[boot].mean(axis=1))}
    if base is not None:
        out.update(margin=float((acc - base).mean()), margin_ci=ci95((acc - base)[boot].mean(axis=1)))
    return out


def diagnose(table_dir: str, bootstrap: int = 1000, seed: int = 0) -> dict:
    setup = HeldoutSetup.of(table_dir)
    table, meta, held, prof = setup.table, setup.meta, setup.target, setup.profile
    binning, sel = profiled_settings(table.path)
    k = int(meta.get("difficulty_samples", 0))
    if not k:
        # Without difficulty samples, oracle pass@1 is read from the scored samples themselves.
        raise SystemExit(f"{table_dir}: needs difficulty samples (pool.difficulty_samples)")
    budgets, ids, ev_prof = setup.budgets, setup.ids, setup.ev_profile
    boot = bootstrap_indices(len(ids), bootstrap, seed)

    def routed(cells, bins, name):
        # Same budget N for every method: a pilot's or an embedder's own cost is left out here.
        return setup.route(name, bins, cells)

    one_cells = select_cells(ev_prof, pd.Series(1, index=prof["prompt_id"]), sel, meta, "one")
    one = routed(one_cells, np.ones(len(ids), int), "one")
    out: dict = {"table": table_dir, "n_heldout": len(ids), "n_profile": len(prof), "budgets": budgets}

    # 1. Headroom: the profile pick, the split-half per-prompt choice, pass@N of the pool.
    rollouts = table.rollouts()
    scored = rollouts[(rollouts["sample_id"] >= k) & rollouts["prompt_id"].isin(set(ids))]
    halves = _split_half(config_from_manifest(table_dir), scored, ids)
    head = {}
    for b in budgets:
        # pass@b of the evaluation samples: 1 - C(n - c, b) / C(n, b) per prompt
        g = scored.groupby("prompt_id")["correct"].agg(["sum", "count"]).reindex(ids)
        n, c = g["count"].to_numpy(), g["sum"].to_numpy()
        pass_at = np.array([1.0 - np.prod([(nn - cc - i) / (nn - i) for i in range(b)]) if nn - cc >= b else 1.0
                            for nn, cc in zip(n, c)]) if b <= n.min() else None
        split = halves.get(b)
        head[str(b)] = {"one_strategy": _row(one.accuracy[b], boot),
                        "split_half": ({"per_prompt": _row(split[0], boot, split[1]), "one_config": _row(split[1], boot),
                                        "configs": split[2]} if split is not None else None),
                        "pass_at_n": _row(pass_at, boot) if pass_at is not None else None}
    out["headroom"] = head

    # 2. Heterogeneity: per bin, the chosen configuration vs the one-strategy choice, in-sample.
    own = table.selection()
    hetero = {}
    for b in budgets:
        one_cfg = config_key(one_cells.cell(1, b)[0])
        rows = []
        for r in own[own["budget"] == b].itertuples(index=False):
            in_bin = set(prof.loc[prof["bin"] == r.bin, "prompt_id"])
            e = ev_prof[(ev_prof["budget"] == b) & ev_prof["prompt_id"].isin(in_bin)]
            by = e.groupby("config")["accuracy"].mean()
            rows.append({"bin": int(r.bin), "chosen": config_key(r), "chosen_in_sample": float(by.get(config_key(r), np.nan)),
                         "one_strategy": one_cfg, "one_strategy_in_sample": float(by.get(one_cfg, np.nan)),
                         "n_prompts": len(in_bin)})
        hetero[str(b)] = rows
    out["heterogeneity"] = hetero

    # 3. Estimator quality: cells and routing from the same kind of bins.
    def by_scores(col_prof, col_held, name):
        edges = bin_edges(col_prof, binning.scheme, binning.k, binning.thresholds)
        cells = select_cells(ev_prof, pd.Series(assign_bins(col_prof, edges), index=prof["prompt_id"]), sel, meta, name)
        return routed(cells, assign_bins(col_held, edges), name)

    quality = {
        "pilot (PRM-predicted pass@1 of the difficulty samples)": by_scores(
            prof["predicted_pass1"].to_numpy(float), held["predicted_pass1"].to_numpy(float), "pilot"),
        "oracle bins (graded pass@1 of the difficulty samples)": by_scores(
            prof["oracle_pass1"].to_numpy(float), held["oracle_pass1"].to_numpy(float), "oracle"),
    }
    declared = meta.get("declared_router", "prompt:tfidf")
    if declared.startswith("prompt:"):
        cells, bins, _, _ = refit_router(declared, None, prof, held, table, ev_prof, binning, sel, meta)
        quality[f"declared router ({declared})"] = routed(cells, bins, declared)
    out["estimator_quality"] = {name: {str(b): _row(m.accuracy[b], boot, one.accuracy[b]) for b in budgets}
                                for name, m in quality.items()}
    if declared.startswith("prompt:"):
        rec = meta.get("estimators", {}).get(declared, {})
        out["estimator_cv"] = {"metrics": rec.get("cv_metrics"), "baseline": rec.get("baseline_metrics")}

    # 4. Bin count.
    counts = {}
    for kk in (1, 2, 3, 5, 8):
        scores = prof["predicted_pass1"].to_numpy(float)
        edges = bin_edges(scores, "quantile", kk, ())
        cells = select_cells(ev_prof, pd.Series(assign_bins(scores, edges), index=prof["prompt_id"]), sel, meta, f"k{kk}")
        m = routed(cells, assign_bins(held["predicted_pass1"].to_numpy(float), edges), f"k{kk}")
        counts[str(kk)] = {str(b): _row(m.accuracy[b], boot, one.accuracy[b]) for b in budgets}
    out["bin_count"] = counts

    # 5. PRM: does the final-step score separate correct from wrong answers?
    samples = table.rollouts(["prompt_id", "sample_id", "correct", "step_scores"])
    samples = samples[(samples["sample_id"] >= k) & samples["prompt_id"].isin(set(ids))]
    samples = samples.assign(score=[float(x[-1]) if len(x) else 0.0 for x in samples["step_scores"]])
    within = samples.groupby("prompt_id").apply(lambda g: auroc(g["score"], g["correct"]), include_groups=False)
    within = within.dropna()
    rng = np.random.default_rng(seed)
    by_prompt = {pid: g for pid, g in samples.groupby("prompt_id")}
    pids = list(by_prompt)
    pooled_boot = []
    for _ in range(200):  # AUROC is not a mean over prompts: resample prompts, recompute
        pick = pd.concat([by_prompt[pids[i]] for i in rng.integers(0, len(pids), len(pids))])
        pooled_boot.append(auroc(pick["score"], pick["correct"]))
    w = within.to_numpy()
    out["prm"] = {"pooled_auroc": float(auroc(samples["score"], samples["correct"])), "pooled_ci": ci95(np.array(pooled_boot)),
                  "within_prompt_auroc": float(w.mean()) if len(w) else None,
                  "within_ci": ci95(w[rng.integers(0, len(w), (1000, len(w)))].mean(axis=1)) if len(w) else None,
                  "prompts_with_both_outcomes": int(len(w)), "samples": int(len(samples))}
    return out


def render(d: dict) -> str:
    f = lambda r: f"{r['accuracy']:.3f} [{r['ci'][0]:.2f},{r['ci'][1]:.2f}]"  # noqa: E731
    g = lambda r: f"{r['margin']:+.3f} [{r['margin_ci'][0]:+.2f},{r['margin_ci'][1]:+.2f}]"  # noqa: E731
    lines = [f"{d['table']}: {d['n_heldout']} held-out prompts, {d['n_profile']} profiling prompts"]
    lines.append("1. headroom per budget: profile pick | split-half per-prompt choice of the pool-scored configurations "
                 "(margin over the one configuration best on the same halves) | pass@N of the pool")
    for b, h in d["headroom"].items():
        p = f(h["pass_at_n"]) if h["pass_at_n"] else "-"
        s = h["split_half"]
        half = f"{f(s['per_prompt'])} ({g(s['per_prompt'])}, {s['configs']} configurations)" if s else "-"
        lines.append(f"   N={b:<3} {f(h['one_strategy'])} | {half} | {p}")
    lines.append("2. per bin: chosen configuration (in-sample accuracy) vs the one strategy on the same bin's prompts")
    for b, rows in d["heterogeneity"].items():
        cells = "; ".join(f"bin {r['bin']} ({r['n_prompts']}): {r['chosen']} {r['chosen_in_sample']:.2f} vs "
                          f"{r['one_strategy_in_sample']:.2f}" for r in rows)
        lines.append(f"   N={b:<3} one strategy {rows[0]['one_strategy'] if rows else '-'}; {cells}")
    lines.append("3. routed held-out accuracy by the bins' source (margin over one strategy, paired 95% CI)")
    for name, per in d["estimator_quality"].items():
        lines.append(f"   {name}:")
        lines.append("     " + "  ".join(f"N={b} {f(r)} {g(r)}" for b, r in per.items()))
    if d.get("estimator_cv"):
        lines.append(f"   declared estimator CV: {d['estimator_cv']}")
    lines.append("4. bin count (PRM-predicted pass@1, k quantile bins): held-out accuracy, margin over one strategy")
    for kk, per in d["bin_count"].items():
        lines.append(f"   k={kk}: " + "  ".join(f"N={b} {f(r)} {g(r)}" for b, r in per.items()))
    p = d["prm"]
    lines.append(f"5. PRM final-step score vs correctness ({p['samples']} held-out evaluation samples): AUROC pooled "
                 f"{p['pooled_auroc']:.3f} [{p['pooled_ci'][0]:.3f},{p['pooled_ci'][1]:.3f}], within a prompt "
                 + (f"{p['within_prompt_auroc']:.3f} [{p['within_ci'][0]:.3f},{p['within_ci'][1]:.3f}] "
                    f"({p['prompts_with_both_outcomes']} prompts with both outcomes)" if p["within_prompt_auroc"] is not None
                    else "n/a (no prompt has both outcomes)"))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("table")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    d = diagnose(args.table, args.bootstrap)
    print(json.dumps(d, indent=1, default=float) if args.json else render(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
