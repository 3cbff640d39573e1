"""The tts-selector command line."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from . import strict_json
from .backends.registry import DEFAULT_POLICY, DEFAULT_PRM


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy spec (default {DEFAULT_POLICY}; 'sim' = simulator)")
    p.add_argument("--prm", default=DEFAULT_PRM, help=f"PRM spec (default {DEFAULT_PRM}; 'sim' = simulator)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--temperature", type=float, default=None, help="override the policy's sampling temperature")


def _add_routing_args(p: argparse.ArgumentParser, estimator_prefix: str = "") -> None:
    """The arguments of routed commands: the difficulty estimator and, with a catalog, what to pick a table for."""
    p.add_argument("--estimator", default="prompt:tfidf", help=f"{estimator_prefix}prompt:<features> | pilot:<k>")
    p.add_argument("--dataset", default=None, help="with a catalog: the data set (e.g. math500) or family (e.g. math) to pick a table for")
    p.add_argument("--policy-params", dest="policy_params", type=_parameter_count, default=None,
                   help="the policy's parameter count (e.g. 1.5e9), for engines that cannot count their own")


def _parameter_count(text: str) -> float:
    """--policy-params: a finite count >= 1 (argparse turns the error into exit 2 with the message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a parameter count such as 1.5e9, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"a parameter count must be finite and >= 1 (e.g. 1.5e9), got {text!r}")
    return value


def _whole(low: int, high: int | None, what: str):
    """An argparse type: an integer in [low, high] (argparse turns the error into exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{what} must be {'between ' + str(low) + ' and ' + str(high) if high is not None else f'>= {low}'}"
                                             f", got {text!r}")
        return value
    return parse


def _positive(what: str, zero: bool = False):
    """An argparse type: a finite number > 0 (>= 0 with ``zero``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number {'>= 0' if zero else '> 0'}, got {text!r}")
        return value
    return parse


def _add_question_args(p: argparse.ArgumentParser) -> None:
    """The question: an argument, '-' for stdin, or --prompt-file (a long prompt cannot pass a shell)."""
    p.add_argument("question", nargs="?", default=None, help="the question; '-' reads it from stdin")
    p.add_argument("--prompt-file", dest="prompt_file", default=None, help="read the question from this UTF-8 file")


def _question(args: argparse.Namespace) -> str:
    from .prompts import read_question

    return read_question(args.question, args.prompt_file)


def _build_strategy(args: argparse.Namespace):
    from .search import make_strategy

    params = {"n": args.n}
    for key in ("m", "aggregation", "max_steps", "answer_rule", "window", "rule", "threshold", "vote", "resampling", "keep"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    if args.pf_temperature is not None:
        params["temperature"] = args.pf_temperature
    return make_strategy(args.strategy, **params)


def _strategy_text(strategy) -> str:
    """'weighted_best_of_n n=8 aggregation=prod': the strategy and its set hyperparameters."""
    params = strategy.params()
    keys = ["n", "m", "aggregation"] + [k for k in params if k not in ("n", "m", "aggregation")]
    return " ".join([strategy.name] + [f"{k}={params[k]}" for k in keys if params.get(k) is not None])


def _load_router(args: argparse.Namespace):
    from .catalog import is_catalog
    from .errors import InputError
    from .router import Router
    from .tables import TableDir

    if args.temperature is not None:
        # The table's cells were measured at its own sampling settings: another temperature would
        # route by expectations that no longer hold, so it is refused rather than ignored.
        raise InputError("--temperature is not used with --tables: the table's strategies and expected accuracies were "
                         "profiled at its own sampling settings (state/manifest.json's sampling); drop --temperature, "
                         "or solve without --tables (`tts-selector solve QUESTION --strategy ... --temperature T`)")
    if is_catalog(args.tables) and args.dataset is None:
        raise InputError(f"{args.tables} is a catalog of tables: give --dataset NAME (e.g. --dataset math500, or a family "
                         f"such as --dataset math) so it can pick a table, or pass one table directory to --tables")
    _check_table(args.tables)

    # A profiled table defaults to the engines it was profiled with; a catalog or a published
    # prior has none of its own, so they get --policy/--prm (whose defaults are the CPU default's).
    table = TableDir(args.tables)
    explicit = is_catalog(args.tables) or (table.file("selection").is_file() and table.metadata.get("prior", False))
    return Router.load(args.tables, estimator=args.estimator,
                       policy=args.policy if args.policy_given or explicit else None,
                       prm=args.prm if args.prm_given or explicit else None,
                       dataset=args.dataset, policy_params=args.policy_params)


def _check_table(path: str) -> None:
    """Check a whole table directory (every file any command reads) before a command uses it,
    so a tampered table fails the same way everywhere: exit 2 naming the file and the field."""
    from .catalog import is_catalog
    from .table_checks import check_table_dir

    if Path(path).is_dir() and not is_catalog(path):
        check_table_dir(path)


def _cmd_route(args: argparse.Namespace) -> int:
    question = _question(args)
    decision = _load_router(args).route(question, args.budget)
    if args.json:
        print(strict_json.dumps(decision.to_dict(), indent=2))
    else:
        where = (f"no bin ({decision.estimator})" if decision.bin is None else
                 f"bin {decision.bin} (p={decision.bin_proba.get(decision.bin, 0):.2f}, by {decision.estimator})")
        print(f"{where} -> {_strategy_text(decision.strategy)} at budget {decision.budget}: {decision.expectation()}")
        print(f"source: {decision.source}")
        if decision.fallback:
            print(f"note: {decision.fallback}")
    return 0


def _cmd_routed_solve(args: argparse.Namespace) -> int:
    question = _question(args)
    result = _load_router(args).solve(question, args.budget, seed=args.seed)
    if args.json:
        print(strict_json.dumps(result.to_dict(), indent=2))
        return 0
    d, c = result.decision, result.cost
    print(f"answer:      {result.answer}")
    print(f"routed:      {'no bin' if d.bin is None else f'bin {d.bin}'} -> {_strategy_text(d.strategy)} "
          f"({d.expectation()})")
    print(f"source:      {d.source}")
    if d.fallback:
        print(f"note:        {d.fallback}")
    print(f"cost:        {c.generations} generations ({result.estimate_cost.generations} for estimation), "
          f"{c.policy_tokens} policy tokens, {c.prm_tokens} PRM tokens, {c.flops:.3g} FLOPs, {c.seconds:.2f} s")
    return 0


def _cmd_solve(args: argparse.Namespace) -> int:
    from .api import resolve_engines
    from .backends.base import SamplingParams
    from .errors import InputError
    from .search.runner import run_search

    if args.tables:
        if args.budget is None:
            raise InputError("a routed solve (--tables) needs --budget N")
        return _cmd_routed_solve(args)

    question = _question(args)
    strategy = _build_strategy(args)
    if args.temperature is not None:  # checked before a model loads
        SamplingParams(temperature=args.temperature)
    policy, prm = resolve_engines(args.policy, args.prm)
    sampling = policy.default_sampling_params()
    if args.temperature is not None:
        sampling = sampling.replace(temperature=args.temperature)
    result = run_search([(question, strategy)], policy, prm, sampling=sampling, seed=args.seed)[0]
    if args.json:
        out = result.to_dict()
        out["policy"], out["prm"] = policy.id, (prm.id if prm is not None else None)
        print(strict_json.dumps(out, indent=2))
        return 0
    c = result.cost
    print(f"answer:      {result.answer}")
    print(f"strategy:    {_strategy_text(strategy)}")
    print(f"engines:     policy={policy.id} prm={prm.id if prm else None}")
    print(f"rounds:      {list(result.rounds)} generations per round")
    print(
        f"cost:        {c.generations} generations, {c.policy_prompt_tokens} prompt + "
        f"{c.policy_generated_tokens} generated policy tokens, {c.prm_tokens} PRM tokens, "
        f"{c.flops:.3g} FLOPs, {c.seconds:.2f} s"
    )
    print(f"candidates:  {len(result.candidates)}")
    for cand in result.candidates[: args.show]:
        score = f"{cand.step_scores[-1]:.3f}" if cand.step_scores else "-"
        print(f"  [{cand.answer_key!s:>8}] last-step score {score}: {cand.text.strip()!r}")
    return 0


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes i/k (e.g. 0/4), got {text!r}") from None
    return i, k


def _default_out(cfg) -> str:
    return str(Path("tables") / cfg.name)


def _cmd_profile(args: argparse.Namespace) -> int:
    from .profile import load_config, run_profile

    cfg = _with_executor(load_config(args.config), args.executor, args.ray_address)
    summary = run_profile(cfg, args.out or _default_out(cfg), shard=_parse_shard(args.shard), progress=not args.quiet,
                          force=args.force)
    print(summary.render())
    return 0


def _with_executor(cfg, kind: str | None, address: str | None):
    """The config with --executor / --ray-address applied over its ``executor:`` section."""
    import dataclasses

    ex = cfg.executor
    if kind is not None:
        ex = dataclasses.replace(ex, kind=kind)
    if address is not None:
        if ex.kind != "ray":
            from .errors import InputError

            raise InputError("--ray-address needs the Ray executor: add --executor ray (or executor: {kind: ray})")
        ex = dataclasses.replace(ex, address=address)
    return dataclasses.replace(cfg, executor=ex)


def _cmd_merge(args: argparse.Namespace) -> int:
    from .profile import merge_profiles

    summary = merge_profiles(args.out, args.dirs, progress=not args.quiet, force=args.force)
    print(summary.render())
    return 0


def _cmd_reprice(args: argparse.Namespace) -> int:
    from .profile import reprice_table

    summary = reprice_table(args.table, prefix_cache=args.prefix_cache, shared_prefix_tokens=args.shared_prefix_tokens,
                            progress=not args.quiet)
    print(summary.render())
    return 0


def _cmd_train_estimator(args: argparse.Namespace) -> int:
    from .estimators.train import report_json, train_on_dataset_levels, train_on_table

    progress = None if args.quiet else __import__("tqdm.auto", fromlist=["tqdm"]).tqdm
    out = []
    for features in args.features:
        if args.target == "level":
            if not args.dataset:
                raise ValueError("--target level trains on a data set's own levels: pass --dataset math500")
            report = train_on_dataset_levels(args.dataset, features=features, folds=args.folds, seed=args.seed, progress=progress)
            print(report.render())
        else:
            if not args.table:
                raise ValueError("give a table directory (or --dataset NAME --target level)")
            report, path, sha = train_on_table(args.table, features=features, folds=args.folds, seed=args.seed, progress=progress)
            print(report.render())
            print(f"saved {path} (sha256 {sha[:16]}...), recorded with its metrics in {args.table}/selection.parquet")
        out.append(report_json(report))
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .tables import atomic_write_text

    _check_table(args.tables)
    _check_out(args.out, "--out")
    if args.learning_curve:
        from .learning_curve import learning_curve, learning_curve_path

        progress = None if (args.json or args.quiet) else __import__("tqdm.auto", fromlist=["tqdm"]).tqdm
        report = learning_curve(args.tables, sizes=args.sizes, draws=args.draws, split=args.split, router=args.router,
                                bootstrap=args.bootstrap, progress=progress)
        out = Path(args.out) if args.out else learning_curve_path(args.tables, args.split)
    else:
        from .evaluate import evaluate_router

        report = evaluate_router(args.tables, split=args.split, estimators=args.estimators, bootstrap=args.bootstrap,
                                 router=args.router, prefix_cache=args.prefix_cache)
        out = Path(args.out) if args.out else Path(args.tables) / f"evaluation-{args.split}.json"
    atomic_write_text(out, report.to_json())
    if args.json:  # stdout is the one JSON object, nothing else (`evaluate --json | jq`)
        print(report.to_json())
        print(f"written {out}", file=sys.stderr)
        return 0
    print(report.render())
    print(f"written {out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import FEW_PROMPTS, inspect_path, write_plots

    few = FEW_PROMPTS if args.few_prompts is None else args.few_prompts
    _check_table(args.dir)
    _check_out(args.plot, "--plot")
    print(inspect_path(args.dir, budget=args.budget, few_prompts=few))
    if args.plot:
        for what, path in write_plots(args.dir, args.plot, budget=args.budget, few_prompts=few):
            print(f"wrote {what}: {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeConfig, serve
    from .serve.auth import resolve_api_key
    from .serve.server import bind

    # Everything that can be refused is checked before a model loads: the settings, the key,
    # the address (a busy port or a bad --host), then the table.
    config = ServeConfig(budget=args.budget, average_budget=args.average_budget, max_budget=args.max_budget,
                         batch_window_ms=args.batch_window_ms, max_batch=args.max_batch, timeout_s=args.timeout,
                         max_prompt_chars=args.max_prompt_chars, api_key=args.api_key, seed=args.seed)
    resolve_api_key(config.api_key)
    sock = bind(args.host, args.port)
    try:
        router = _load_router(args)
        serve(router, config, host=args.host, port=args.port, sock=sock)
    finally:
        sock.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts-selector", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: the cores this process may use, or TTS_SELECTOR_THREADS)")
    parser.add_argument("--verbose", action="store_true", help="log engine loading, with the model-loading progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("solve", help="solve one question with a search strategy")
    _add_question_args(p)
    p.add_argument("--strategy", default="beam_search",
                   help="majority | best_of_n | weighted_best_of_n | filtered_vote | beam_search | dvts | particle_filtering | "
                        "adaptive_consistency | adaptive_confidence")
    p.add_argument("--n", type=int, default=8, help="budget N: generations per round (default 8)")
    p.add_argument("--m", type=int, default=None, help="beam width M (beam_search, dvts); N must be a multiple")
    p.add_argument("--aggregation", default=None, help="step-score aggregation: last | min | prod | mean")
    p.add_argument("--max-steps", dest="max_steps", type=int, default=None, help="max search rounds (tree strategies)")
    p.add_argument("--answer-rule", dest="answer_rule", default=None, help="final-answer rule of tree strategies: weighted | best | majority")
    p.add_argument("--window", type=int, default=None, help="adaptive_consistency: samples per window (default 4)")
    p.add_argument("--rule", default=None, help="adaptive_consistency stop rule: beta (default) | unanimous | confidence")
    p.add_argument("--keep", type=float, default=None, help="filtered_vote: share of samples (highest score first) voted (default 0.5)")
    p.add_argument("--threshold", type=float, default=None, help="adaptive_consistency: beta rule's posterior threshold (default 0.95)")
    p.add_argument("--vote", default=None, help="adaptive_consistency final vote: majority (default) | weighted")
    p.add_argument("--resampling", default=None, help="particle_filtering: multinomial (default) | systematic")
    p.add_argument("--pf-temperature", dest="pf_temperature", type=float, default=None,
                   help="particle_filtering: temperature of the PRM likelihood (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--show", type=int, default=5, help="candidates to print (text mode)")
    p.add_argument("--tables", default=None,
                   help="route with this table directory, or a catalog of them (e.g. tables/), instead of --strategy")
    p.add_argument("--budget", type=int, default=None, help="with --tables: the budget N to route at")
    _add_routing_args(p, "with --tables: ")
    _add_engine_args(p)
    p.set_defaults(func=_cmd_solve)

    p = sub.add_parser("route", help="decide strategy and budget for a question from a table (no generation)")
    _add_question_args(p)
    p.add_argument("--tables", required=True, help="table directory, or a catalog of them (e.g. tables/)")
    p.add_argument("--budget", type=int, required=True, help="budget N (generations per round)")
    p.add_argument("--json", action="store_true")
    _add_routing_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_cmd_route)

    p = sub.add_parser("profile", help="profile every strategy per difficulty bin and budget into a table directory")
    p.add_argument("config", help="profile config YAML (see configs/)")
    p.add_argument("--out", default=None, help="table directory (default tables/<config name>); resumes if it exists")
    p.add_argument("--shard", default=None, help="run only slice i of k (i/k) of the prompts, for many machines")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where the shards run: this process, or Ray actors (default: the config's executor:, else local)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to join: auto or HOST:PORT of `ray start --head` (default: start one here)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true",
                   help="rerun on a finished table even if its bins changed (drops its trained estimators' records)")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("train-estimator", help="cross-validate and fit a prompt difficulty estimator")
    p.add_argument("table", nargs="?", default=None, help="table directory (targets: its oracle bins and pass@1)")
    p.add_argument("--features", nargs="+", default=["tfidf"], choices=["tfidf", "minilm", "hidden"])
    p.add_argument("--target", default="bin", choices=["bin", "level"],
                   help="bin: the table's oracle bins; level: a data set's own difficulty label (--dataset)")
    p.add_argument("--dataset", default=None, help="with --target level: a data set with levels (math500)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train_estimator)

    p = sub.add_parser("evaluate", help="score the router vs fixed strategies on the held-out prompts of a table")
    p.add_argument("--tables", required=True, help="table directory")
    p.add_argument("--split", default="heldout", help="which prompts to score (default heldout)")
    p.add_argument("--estimators", nargs="+", default=None,
                   help="router estimators to compare (default: every trained prompt estimator and pilot:4)")
    p.add_argument("--bootstrap", type=_whole(10, 1_000_000, "--bootstrap"), default=1000,
                   help="bootstrap resamples of the confidence intervals (10 to 1000000; default 1000)")
    p.add_argument("--out", default=None, help="JSON report path (default <tables>/evaluation-<split>.json)")
    p.add_argument("--router", default=None,
                   help="the declared router of the headline figures (default: the table's declared_router)")
    p.add_argument("--json", action="store_true", help="print the JSON report (only) to stdout")
    p.add_argument("--learning-curve", action="store_true",
                   help="held-out accuracy vs number of profiling prompts: subsample them, re-select, score on the "
                        "same split (no generation); writes <tables>/learning-curve-<split>.json unless --out")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="--learning-curve: profiling-prompt counts (default 50 100 200 300, and always all)")
    p.add_argument("--draws", type=int, default=5, help="--learning-curve: random subsets per size (default 5)")
    p.add_argument("--prefix-cache", dest="prefix_cache", default=None, choices=["none", "prompt", "shared"],
                   help="re-price the table under this cost model and re-select its cells, in memory (default: the "
                        "table's declared model; see selector/cost_model.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("reprice", help="re-price a table's rows under a cost model and re-select its cells (no generation)")
    p.add_argument("table", help="a profiled table directory (with its rollouts/ and state/)")
    p.add_argument("--prefix-cache", dest="prefix_cache", default=None, choices=["none", "prompt", "shared"],
                   help="none: every request computes its prefix; prompt: once per question; shared: a preamble common "
                        "to all questions once in all (default: the config's cost.prefix_cache)")
    p.add_argument("--shared-prefix-tokens", dest="shared_prefix_tokens", type=int, default=None,
                   help="tokens of the preamble every prompt shares, for tables whose pool did not measure it")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_reprice)

    p = sub.add_parser("merge", help="join --shard output directories of one config and finish the tables")
    p.add_argument("dirs", nargs="+", help="shard output directories")
    p.add_argument("--out", required=True, help="merged table directory")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--force", action="store_true", help="as for profile: rewrite a finished table whose bins changed")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("inspect", help="summarise a table directory (or a directory of them); optionally plot it")
    p.add_argument("dir", help="table directory (e.g. tables/smollm2-135m__arith-check__arithmetic) or a catalog of them")
    p.add_argument("--budget", type=int, default=None, help="show only this budget N's column")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="write the selection heatmap to OUT.png and the accuracy curves to OUT-curves.png")
    p.add_argument("--few-prompts", dest="few_prompts", type=int, default=None,
                   help="warn about cells selected from fewer prompts than this (default 10)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP gateway that routes every request through the tables")
    p.add_argument("--tables", required=True, help="table directory, or a catalog of them (e.g. tables/)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=_whole(1, None, "--budget"), default=None,
                        help="default budget N per request (default: the table's largest)")
    budget.add_argument("--average-budget", dest="average_budget", type=_positive("--average-budget"), default=None,
                        help="instead: per-bin budgets averaging at most B scored samples' compute over the table's prompt mix")
    p.add_argument("--max-budget", dest="max_budget", type=_whole(1, 4096, "--max-budget"), default=64, help="with a published prior: the largest budget served")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    p.add_argument("--port", type=_whole(0, 65535, "--port"), default=8000, help="TCP port (0 to 65535; default 8000)")
    p.add_argument("--batch-window-ms", dest="batch_window_ms", type=_positive("--batch-window-ms", zero=True), default=5.0,
                   help="milliseconds a batch waits for more requests (default 5)")
    p.add_argument("--max-batch", dest="max_batch", type=_whole(1, 4096, "--max-batch"), default=64, help="most questions per batched search (default 64)")
    p.add_argument("--timeout", type=_positive("--timeout"), default=300.0, help="seconds a request may wait for its answer (default 300)")
    p.add_argument("--max-prompt-chars", dest="max_prompt_chars", type=_whole(1, None, "--max-prompt-chars"), default=8000, help="longest prompt accepted (characters)")
    p.add_argument("--api-key", dest="api_key", default=None,
                   help="require 'Authorization: Bearer KEY' (default: $TTS_SELECTOR_API_KEY; unset: no auth, said loudly "
                        "beyond loopback; an empty key is an error)")
    _add_routing_args(p)
    _add_engine_args(p)
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # stdout carries our results (--json); vLLM logs to stdout unless told otherwise.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    parser = build_parser()
    args = parser.parse_args(argv)
    # Routed commands take engines from the table unless --policy/--prm were given explicitly.
    raw = list(argv) if argv is not None else sys.argv[1:]
    args.policy_given = any(a == "--policy" or a.startswith("--policy=") for a in raw)
    args.prm_given = any(a == "--prm" or a.startswith("--prm=") for a in raw)
    from .errors import TTSError
    from .threads import configure_threads

    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        os.environ["TTS_SELECTOR_VERBOSE"] = "1"  # read by the backends' loaders (selector/backends/hf_common.py)
    try:
        configure_threads(args.threads)  # before any engine imports torch
        return args.func(args)
    except (TTSError, ValueError, FileNotFoundError, ModuleNotFoundError) as exc:  # includes ConfigError, TableError
        if args.debug:
            raise
        message = str(exc) if not isinstance(exc, OSError) or exc.filename is None else _os_error_text(exc)
        print(f"tts-selector: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk or the file system refused (full, read-only, a file where a folder goes)
        if args.debug:
            raise
        print(f"tts-selector: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2


def _os_error_text(exc: OSError) -> str:
    """What went wrong with which path, and what to do about it."""
    import errno

    fixes = {
        errno.ENOSPC: "the disk is full: free some space or write elsewhere (--out), then run the command again "
                      "(a profile resumes where it stopped)",
        errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere (--out), then run it again",
        errno.EROFS: "the file system is read-only: write to a writable directory (--out)",
        errno.EACCES: "no permission: write to a directory you can write to (--out), or fix its permissions",
        errno.EPERM: "no permission: write to a directory you can write to (--out), or fix its permissions",
        errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
        errno.EEXIST: "a part of the path is a file, not a directory: choose another path",
        errno.EISDIR: "the path is a directory: give a file path",
        errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
    }
    where = exc.filename if exc.filename is not None else "a file"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and exc.filename is not None:
        blocker = _blocking_file(Path(str(exc.filename)))
        if blocker is not None:
            return f"{where}: {blocker} is a file, not a directory: choose another path"
    fix = fixes.get(exc.errno, "check the path and the disk, then run the command again")
    return f"{where}: {exc.strerror or exc}: {fix}"


def _blocking_file(path: Path) -> Path | None:
    """The first existing part of ``path`` (itself or a parent) that is not a directory."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def _check_out(path: str | None, flag: str) -> None:
    """Refuse an output path under a regular file before any work is done (not after it)."""
    if path is not None:
        blocker = _blocking_file(Path(path).parent)
        if blocker is not None:
            from .errors import InputError

            raise InputError(f"{flag} {path}: {blocker} is a file, not a directory: choose another path")


if __name__ == "__main__":
    sys.exit(main())
