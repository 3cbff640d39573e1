"""The profile config: one YAML file per (policy, PRM, dataset) profile, validated up front.

Every section is a frozen dataclass; unknown keys, wrong types and impossible values fail with
a message that names the key and the fix. ``config_hash`` identifies the settings that
decide a table's contents (it is stored in every table file's metadata).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TTSError
from ..datasets import FAMILIES, LEVELLED, dataset_family
from ..search.aggregate import AGGREGATIONS
from ..search.adaptive_consistency import STOP_RULES, VOTES, AdaptiveConsistency
from ..search.base import DEFAULT_MAX_STEPS, DEFAULT_TREE_ANSWER_RULE, DEFAULT_WIDTH, STRATEGIES
from ..typed_values import conform

_FAMILY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# The one replayed strategy: its grid keys (adaptive_*) are its own (selector/profiler/adaptive.py).
ADAPTIVE = AdaptiveConsistency.name


def of_kind(strategies: tuple[str, ...], *kinds: str) -> tuple[str, ...]:
    """The ``strategies`` whose declared kind (``StrategyConfig.kind``) is one of ``kinds``:
    ``pooled`` (scored from the pool), ``replayed`` (replayed on it) or ``live`` (run for real)."""
    return tuple(s for s in strategies if s in STRATEGIES and STRATEGIES[s].kind in kinds)


def with_width(strategies: tuple[str, ...]) -> tuple[str, ...]:
    """The live ``strategies`` that take a beam width ``m`` (their budgets must be multiples of it)."""
    return tuple(s for s in of_kind(strategies, "live") if "m" in STRATEGIES[s].takes())
# Where a strategy with its own grid keys (adaptive_*) is scored: replayed (selector/profiler/adaptive.py).
# Where a prompt's bin comes from: PRM-predicted pass@1 (mean final-step score) or graded
# pass@1 of its difficulty samples, the share of their modal answer (agreement: no PRM, no
# ground truth), or the data set's own difficulty label.
DIFFICULTY_SOURCES = ("predicted", "oracle", "level", "agreement")
# Strategies a pool without step scores can be scored on (no PRM, or an imported pool without
# scores): votes over answers only; adaptive consistency with the majority vote only.
SCORELESS_STRATEGIES = ("majority", "adaptive_consistency")


class ConfigError(TTSError, ValueError):
    """A profile config that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    size: int | None = None
    seed: int = 0
    heldout: float = 0.0  # fraction of prompts reserved for evaluation (never used to select)
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = None
    level_field: str | None = None  # a JSONL field with a difficulty label (e.g. MATH's "Level 3"), for difficulty: level
    # The dataset family the table answers for in a catalog (e.g. "math" for a JSONL file of
    # MATH problems); built-ins have one registered (selector/datasets.py FAMILIES). A label
    # for lookup, not part of the table's identity (left out of config_hash).
    family: str | None = None

    def check(self) -> None:
        if self.size is not None and self.size < 2:
            raise ConfigError(f"dataset.size must be >= 2 (or omitted for all), got {self.size}")
        if not 0.0 <= self.heldout < 1.0:
            raise ConfigError(f"dataset.heldout is a fraction in [0, 1), got {self.heldout}")
        if self.family is not None:
            if not isinstance(self.family, str) or not _FAMILY_RE.match(self.family):
                raise ConfigError(
                    f"dataset.family must be a short lowercase name (letters, digits, '.', '_', '-'), "
                    f"e.g. 'math', got {self.family!r}"
                )
            registered = FAMILIES.get(self.name)
            if registered is not None and registered != self.family:
                raise ConfigError(
                    f"dataset.family is {self.family!r} but the built-in data set {self.name!r} belongs to family "
                    f"{registered!r}: drop dataset.family (it is known) or fix it"
                )

    @property
    def family_name(self) -> str:
        """The family this data set's table answers for (see :func:`selector.datasets.dataset_family`)."""
        return dataset_family(self.name, self.family)

    @property
    def family_note(self) -> str | None:
        """Why the family is what it is, when it was not stated nor registered (else None)."""
        if self.family is None and self.name not in FAMILIES:
            return (
                f"dataset.family not set: the family defaults to the data set's name {self.family_name!r}, so only "
                f"lookups for that name find this table; set dataset.family (e.g. 'math') to share it across data sets"
            )
        return None


@dataclass(frozen=True)
class PoolConfig:
    """Where the N_pool rollouts per prompt come from: ``generate`` them with the policy, or
    import them from a ``jsonl`` file of existing samples (best-of-N family and adaptive
    consistency only): completions with scores, or, with ``answers_field``, each sample's final
    answer and generated token count (an evaluation harness's output; text and scores
    optional). See ``selector/profile/pool.py`` ``import_pool``."""

    n: int
    # Samples per prompt that only decide its difficulty (its bin) and are never scored as a
    # strategy's samples; the best-of-N family is scored on the other ``n``. Drawn with the
    # same seed derivation, so a prompt holds ``difficulty_samples + n`` i.i.d. solutions,
    # the first ``difficulty_samples`` of them (by sample_id) for difficulty.
    difficulty_samples: int = 0
    source: str = "generate"
    path: str | None = None
    completions_field: str | None = "completions"  # null: no solution text (needs answers_field)
    scores_field: str | None = "scores"  # null: no scores (majority / adaptive majority only; prm: none)
    score_transform: str = "none"  # "sigmoid" maps unbounded logits into [0, 1]
    correct_field: str | None = None  # optional: the file's own correctness labels, for a check
    # Answer-only pools: per record, a list of each sample's final answer (string or null), its
    # generated token count, and optionally the prompt's token count (else estimated from the
    # problem text: ceil(characters / 4), stated in the table's metadata).
    answers_field: str | None = None
    tokens_field: str | None = None
    prompt_tokens_field: str | None = None

    def check(self) -> None:
        if self.n < 1:
            raise ConfigError(f"pool.n (N_pool) must be >= 1, got {self.n}")
        if self.difficulty_samples < 0:
            raise ConfigError(f"pool.difficulty_samples must be >= 0, got {self.difficulty_samples}")
        if self.source not in ("generate", "jsonl"):
            raise ConfigError(f"pool.source must be 'generate' or 'jsonl', got {self.source!r}")
        if self.source == "jsonl" and not self.path:
            raise ConfigError("pool.source is 'jsonl': set pool.path to the file of existing samples")
        if self.score_transform not in ("none", "sigmoid"):
            raise ConfigError(f"pool.score_transform must be 'none' or 'sigmoid', got {self.score_transform!r}")
        self._check_import_fields()

    def _check_import_fields(self) -> None:
        """The JSONL fields of an imported pool: which ones a pool needs, named once each."""
        named = {k: getattr(self, k) for k in ("completions_field", "scores_field", "correct_field", "answers_field",
                                               "tokens_field", "prompt_tokens_field")}
        if self.source != "jsonl":
            extra = sorted(k for k in ("answers_field", "tokens_field", "prompt_tokens_field") if named[k] is not None)
            if extra:
                raise ConfigError(f"pool.{extra[0]} describes an imported pool: set pool.source: jsonl, or remove it")
            return
        given = [v for v in named.values() if v is not None]
        if len(set(given)) != len(given):
            raise ConfigError(f"pool: each imported field needs its own name, got {named}")
        if self.answers_field is None and self.completions_field is None:
            raise ConfigError("pool: an imported pool needs the samples' final answers: set pool.answers_field (an "
                              "answer-only pool) or pool.completions_field (answers extracted from the text)")
        if self.answers_field is not None and self.tokens_field is None:
            raise ConfigError("pool.answers_field is set (an answer-only pool): set pool.tokens_field too, the field "
                              "with each sample's generated token count, which the cost model prices samples from")
        if self.prompt_tokens_field is not None and self.tokens_field is None:
            raise ConfigError("pool.prompt_tokens_field prices a sample's prompt beside its generated tokens: set "
                              "pool.tokens_field too")

    @property
    def has_scores(self) -> bool:
        """Whether the pool's samples carry scores (generated pools: the PRM's, if there is one)."""
        return self.source == "generate" or self.scores_field is not None


@dataclass(frozen=True)
class GridConfig:
    strategies: tuple[str, ...] = ("majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts")
    budgets: tuple[int, ...] = (1, 2, 4, 8, 16)
    tree_budgets: tuple[int, ...] | None = None  # budgets of the live strategies (default: budgets)
    beam_widths: tuple[int, ...] = (DEFAULT_WIDTH,)
    aggregations: tuple[str, ...] = ("last",)
    # Aggregations of the (expensive) live strategies; default: ``aggregations``.
    tree_aggregations: tuple[str, ...] | None = None
    max_steps: int = DEFAULT_MAX_STEPS
    answer_rule: str = DEFAULT_TREE_ANSWER_RULE
    # Adaptive consistency (one stop rule per table: the rule is not part of a table row's key;
    # the window is its m column, the vote its aggregation column: None = majority vote).
    adaptive_windows: tuple[int, ...] = (4,)
    adaptive_rule: str = "beta"
    adaptive_threshold: float = 0.95
    adaptive_votes: tuple[str, ...] = ("majority", "weighted")
    # A filtered vote's share of the samples (highest aggregated score first) it votes among.
    filter_keep: float = 0.5

    def check(self, pool: PoolConfig) -> None:
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ConfigError(f"grid.strategies: unknown strategy {s!r}; choose from {sorted(STRATEGIES)}")
        for a in self.aggregations + (self.tree_aggregations or ()):
            if a not in AGGREGATIONS:
                raise ConfigError(f"grid.aggregations: unknown aggregation {a!r}; choose from {sorted(AGGREGATIONS)}")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ConfigError(f"grid.budgets must be positive integers, got {list(self.budgets)}")
        too_big = [b for b in self.budgets if b > pool.n and of_kind(self.strategies, "pooled", "replayed")]
        if too_big:
            raise ConfigError(
                f"grid.budgets {too_big} exceed pool.n={pool.n}: the best-of-N family is evaluated from the pool; "
                f"raise pool.n or drop those budgets"
            )
        live = of_kind(self.strategies, "live")
        if pool.source == "jsonl" and live:
            raise ConfigError(
                f"imported pools hold whole solutions only: remove {'/'.join(live)} from grid.strategies "
                "(they need the policy to expand steps)"
            )
        self._check_adaptive()
        if self.filters and (isinstance(self.filter_keep, bool) or not 0 < self.filter_keep <= 1):
            raise ConfigError(f"grid.filter_keep is the share of samples a filtered vote counts, in (0, 1], "
                              f"got {self.filter_keep!r}")
        for n in self.tree_budget_list if with_width(self.strategies) else ():
            if not any(n % m == 0 and n >= m for m in self.beam_widths):
                raise ConfigError(f"tree budget {n} is not a multiple of any beam width {list(self.beam_widths)}")

    @property
    def filters(self) -> bool:
        """Whether a pooled strategy of the grid takes ``filter_keep`` (a filtered vote)."""
        return any("filter_keep" in STRATEGIES[s].takes() for s in of_kind(self.strategies, "pooled"))

    @property
    def tree_budget_list(self) -> tuple[int, ...]:
        """Budgets of the live strategies: ``tree_budgets``, else the budgets that a beam width
        divides (any budget when no live strategy takes a width)."""
        if not of_kind(self.strategies, "live"):
            return ()
        if self.tree_budgets is not None:
            return self.tree_budgets
        if not with_width(self.strategies):
            return self.budgets  # e.g. particle filtering alone takes any budget
        return tuple(b for b in self.budgets if any(b % m == 0 and b >= m for m in self.beam_widths))

    def _check_adaptive(self) -> None:
        if not of_kind(self.strategies, "replayed"):
            return
        if not self.adaptive_windows or any(not isinstance(w, int) or w < 1 for w in self.adaptive_windows):
            raise ConfigError(f"grid.adaptive_windows must be positive integers (samples per window), got {list(self.adaptive_windows)}")
        if self.adaptive_rule not in STOP_RULES:
            raise ConfigError(f"grid.adaptive_rule must be one of {list(STOP_RULES)}, got {self.adaptive_rule!r}")
        if not isinstance(self.adaptive_threshold, (int, float)) or not 0.5 < self.adaptive_threshold < 1:
            raise ConfigError(f"grid.adaptive_threshold is a probability in (0.5, 1), got {self.adaptive_threshold!r}")
        if not self.adaptive_votes or any(v not in VOTES for v in self.adaptive_votes):
            raise ConfigError(f"grid.adaptive_votes: each one of {list(VOTES)}, got {list(self.adaptive_votes)}")

    @property
    def adaptive_budget_list(self) -> tuple[int, ...]:
        """Budgets (caps) of adaptive consistency: those a window fits in (a smaller one is plain voting)."""
        if not of_kind(self.strategies, "replayed"):
            return ()
        return tuple(b for b in self.budgets if b >= min(self.adaptive_windows))


@dataclass(frozen=True)
class BinningConfig:
    scheme: str = "quantile"
    k: int = 5
    thresholds: tuple[float, ...] = (0.1, 0.5)

    def check(self) -> None:
        if self.scheme not in ("quantile", "absolute"):
            raise ConfigError(f"binning.scheme must be 'quantile' (Snell et al.) or 'absolute' (Liu et al.), got {self.scheme!r}")
        if self.scheme == "quantile" and self.k < 1:
            raise ConfigError(f"binning.k must be >= 1, got {self.k}")
        if self.scheme == "absolute":
            t = list(self.thresholds)
            if not t or t != sorted(set(t)) or not all(0 < x < 1 for x in t):
                raise ConfigError(f"binning.thresholds must be increasing pass@1 values in (0, 1), got {t}")


@dataclass(frozen=True)
class EvaluateConfig:
    subsamples: int = 200  # random subsets per (prompt, budget); exact when C(N_pool, n) is smaller
    seeds: tuple[int, ...] = (0,)  # seeds of the real beam-search / DVTS runs
    # The one router `tts-selector evaluate` reports its headline for (margin, efficiency),
    # declared before the held-out split is looked at.
    router: str = "prompt:tfidf"
    # The fixed strategy whose accuracy at the largest budget the report's efficiency ratio
    # targets (with the grid's first aggregation where it has one), declared, not picked.
    efficiency_reference: str = "best_of_n"

    def check(self) -> None:
        if not isinstance(self.efficiency_reference, str) or self.efficiency_reference not in STRATEGIES:
            raise ConfigError(f"evaluate.efficiency_reference must name a strategy ({sorted(STRATEGIES)}), "
                              f"got {self.efficiency_reference!r}")
        if not isinstance(self.router, str) or not self.router.startswith(("prompt:", "pilot:")):
            raise ConfigError(
                f"evaluate.router (the router evaluate's headline is for) must be a deployable estimator, "
                f"'prompt:<features>' or 'pilot:<k>', got {self.router!r}"
            )
        if self.subsamples < 1:
            raise ConfigError(f"evaluate.subsamples must be >= 1, got {self.subsamples}")
        if not self.seeds:
            raise ConfigError("evaluate.seeds must name at least one seed")


SELECT_METHODS = ("guarded", "per_bin", "profile_pick")


@dataclass(frozen=True)
class SelectConfig:
    """How each router's cells are chosen at each budget (see ``selector/profiler/selection.py``).

    ``method``: ``guarded`` (default) starts from the profile pick (the one configuration most
    accurate over all profiling prompts within the budget's compute) and replaces it by a
    per-bin allocation only when repeated cross-fitting on the profiling prompts says the
    allocation is better (the lower end of the ``confidence`` CI of its gain above 0);
    ``per_bin`` always takes the allocation, ``profile_pick`` never (references).
    ``shrinkage``: prompts' worth of weight pulling a bin's accuracy estimate of a configuration
    toward its pooled estimate (0: raw per-bin means). ``repeats`` x ``folds``: the cross-fitting
    splits of the guard and of each cell's reported (held-out) accuracy."""

    folds: int = 2  # K-fold cross-fitting (Snell et al. used 2)
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    method: str = "guarded"
    shrinkage: float = 20.0
    repeats: int = 5
    # Pilot sizes k for which a selection is written on the bins a k-sample pilot assigns
    # (``pilot:<k>`` routers); each k <= pool.difficulty_samples.
    pilots: tuple[int, ...] = (4,)
    # Other pilot signals than the table's own to select for too (``pilot:<k>:<signal>``, e.g.
    # ``agreement`` on a table binned by PRM or self-confidence scores): routers to compare.
    pilot_signals: tuple[str, ...] = ()
    # The per-cell rule of tables before the guarded selection; accepted at its old defaults so
    # their recorded configs load, and refused otherwise (it chose worse configurations).
    rule: str = "cheapest"
    tolerance: float = 0.0

    def check(self) -> None:
        if self.rule != "cheapest" or self.tolerance != 0.0:
            raise ConfigError(
                "select.rule and select.tolerance were replaced by select.method (guarded | per_bin | profile_pick): "
                "the per-cell 'cheapest not significantly worse' rule took worse configurations; delete them"
            )
        from .difficulty import PILOT_SIGNALS

        unknown = [x for x in self.pilot_signals if x not in PILOT_SIGNALS]
        if unknown:
            raise ConfigError(f"select.pilot_signals {unknown}: each one of {list(PILOT_SIGNALS)}")
        if self.method not in SELECT_METHODS:
            raise ConfigError(f"select.method must be one of {list(SELECT_METHODS)}, got {self.method!r}")
        if not 0.0 <= self.shrinkage <= 1e6:
            raise ConfigError(f"select.shrinkage is a weight in prompts, >= 0, got {self.shrinkage}")
        if not 1 <= self.repeats <= 100:
            raise ConfigError(f"select.repeats must be between 1 and 100 cross-fitting repeats, got {self.repeats}")
        if self.folds < 2:
            raise ConfigError(f"select.folds must be >= 2 (choose on K-1 folds, score on the held-out one), got {self.folds}")
        if self.bootstrap < 10:
            raise ConfigError(f"select.bootstrap must be >= 10 resamples, got {self.bootstrap}")
        if not 0.5 < self.confidence < 1:
            raise ConfigError(f"select.confidence must be in (0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class CostConfig:
    """The cost model a table's rows are priced by (``selector/cost_model.py``). It prices the
    same samples differently and changes none of them, so it is not part of ``config_hash``: a
    table can be re-priced without generating (``tts-selector reprice``)."""

    prefix_cache: str = "shared"
    # Tokens of the preamble every prompt shares; None: measured by the policy's tokenizer when
    # the pool is generated (0 when it cannot tokenize: ``shared`` then prices like ``prompt``).
    shared_prefix_tokens: int | None = None

    def check(self) -> None:
        from ..cost_model import PREFIX_CACHE_MODELS

        if self.prefix_cache not in PREFIX_CACHE_MODELS:
            raise ConfigError(f"cost.prefix_cache must be one of {list(PREFIX_CACHE_MODELS)}, got {self.prefix_cache!r}")
        if self.shared_prefix_tokens is not None and self.shared_prefix_tokens < 0:
            raise ConfigError(f"cost.shared_prefix_tokens must be >= 0 tokens (or null: measured), got {self.shared_prefix_tokens}")


EXECUTOR_KINDS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the pool and tree shards run: in this process (``local``) or as Ray tasks on
    actors that each hold one copy of the engines (``ray``). Changes no table contents, so it
    is not part of ``config_hash``."""

    kind: str = "local"
    address: str | None = None  # ray: "auto", "HOST:PORT", or None to start a cluster here
    num_actors: int | None = None  # ray: engine copies; None = as many as the cluster's GPUs/CPUs allow
    num_gpus: float = 0.0  # ray: GPUs per actor
    num_cpus: float = 1.0  # ray: CPUs per actor
    max_retries: int = 3  # ray: restarts of a dead actor and retries of the shard it was running

    def check(self) -> None:
        if self.kind not in EXECUTOR_KINDS:
            raise ConfigError(f"executor.kind must be one of {list(EXECUTOR_KINDS)}, got {self.kind!r}")
        if self.num_actors is not None and (isinstance(self.num_actors, bool) or not isinstance(self.num_actors, int)
                                            or self.num_actors < 1):
            raise ConfigError(f"executor.num_actors must be an int >= 1 (or omitted), got {self.num_actors!r}")
        for key in ("num_gpus", "num_cpus"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"executor.{key} must be a number >= 0, got {value!r}")
        if self.num_gpus == 0 and self.num_cpus == 0:
            raise ConfigError("executor: num_gpus and num_cpus are both 0; give each actor a GPU or a CPU")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"executor.max_retries must be an int >= 0, got {self.max_retries!r}")


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    dataset: DatasetConfig
    pool: PoolConfig
    policy: str = "smollm2-135m"
    prm: str = "arith-check"
    sampling: dict[str, Any] = field(default_factory=dict)
    grid: GridConfig = GridConfig()
    binning: BinningConfig = BinningConfig()
    difficulty: str = "predicted"
    evaluate: EvaluateConfig = EvaluateConfig()
    select: SelectConfig = SelectConfig()
    policy_params: int | None = None  # parameter counts for imported pools (no engine to ask)
    prm_params: int | None = None
    seed: int = 0  # seed of the pool's samples
    shard_size: int = 16  # prompts per rollout shard and checkpoint
    # Folder that relative file paths in the config are read from; not part of the identity.
    base_dir: str = field(default=".", compare=False)
    # Where the shards run; not part of the identity either (see ExecutorConfig).
    executor: ExecutorConfig = field(default=ExecutorConfig(), compare=False)
    # How rows are priced; re-pricing changes no sample, so not part of the identity (CostConfig).
    cost: CostConfig = field(default=CostConfig(), compare=False)

    def check(self) -> "ProfileConfig":
        self.dataset.check()
        self.pool.check()
        self.grid.check(self.pool)
        self.binning.check()
        self.evaluate.check()
        self.select.check()
        self.executor.check()
        self.cost.check()
        if self.difficulty not in DIFFICULTY_SOURCES:
            raise ConfigError(
                f"difficulty must be 'predicted' (mean final PRM score), 'oracle' (graded pass@1), 'agreement' (share "
                f"of the modal answer) or 'level' (the data set's difficulty label), got {self.difficulty!r}"
            )
        k = self.pool.difficulty_samples
        if self.difficulty != "level" and k < 1:
            raise ConfigError(
                f"difficulty {self.difficulty!r} is computed from samples no strategy is scored on: set "
                f"pool.difficulty_samples (e.g. 8) so bins and strategy scores share no sample, or use "
                f"difficulty: level with dataset.level_field"
            )
        if self.difficulty == "level" and self.dataset.level_field is None and self.dataset.name not in LEVELLED:
            raise ConfigError(
                f"difficulty 'level' bins by the data set's difficulty label: set dataset.level_field (e.g. 'level'), "
                f"or use a built-in data set with levels ({sorted(LEVELLED)})"
            )
        too_big = [p for p in self.select.pilots if p > k or p < 1]
        if too_big and k:
            raise ConfigError(
                f"select.pilots {too_big} must be between 1 and pool.difficulty_samples={k}: a pilot's bin is "
                f"read from the difficulty samples"
            )
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")
        self._check_sampling()
        self._check_pool_supports()
        return self

    @property
    def has_scores(self) -> bool:
        """Whether the pool's samples carry (PRM or reward) scores: not with ``prm: none``, nor
        for an imported pool without ``pool.scores_field``."""
        return self.prm != "none" and self.pool.has_scores

    def pool_supports(self) -> dict[str, Any]:
        """What this pool can be scored on (written to the table's metadata as ``pool_supports``):
        ``strategies`` and adaptive consistency's ``adaptive_votes``, with the ``reason``."""
        if self.has_scores:
            strategies = sorted(s for s in STRATEGIES if self.pool.source == "generate" or STRATEGIES[s].kind != "live")
            reason = ("samples generated with a PRM" if self.pool.source == "generate" else
                      "imported whole solutions with scores: no tree search (it needs the policy to expand steps)")
            return {"strategies": strategies, "adaptive_votes": list(VOTES), "reason": reason}
        reason = ("no PRM (prm: none)" if self.prm == "none" else "imported samples without scores")
        return {"strategies": sorted(SCORELESS_STRATEGIES), "adaptive_votes": ["majority"],
                "reason": reason + ": votes over answers only"}

    def _check_pool_supports(self) -> None:
        """Refuse strategies (and difficulty sources) the pool cannot be scored on, with the reason."""
        if self.pool.source == "jsonl" and not self.pool.has_scores and self.prm != "none":
            raise ConfigError(f"pool.scores_field is null (a pool without scores) but prm is {self.prm!r}: set prm: "
                              "none, so the table does not name a scorer its samples never met")
        supports = self.pool_supports()
        unsupported = [s for s in self.grid.strategies if s not in supports["strategies"]]
        if unsupported:
            raise ConfigError(f"grid.strategies {unsupported}: this pool cannot score them ({supports['reason']}); "
                              f"profile only {supports['strategies']}")
        votes = [v for v in self.grid.adaptive_votes if v not in supports["adaptive_votes"]]
        if ADAPTIVE in self.grid.strategies and votes:
            raise ConfigError(f"grid.adaptive_votes {votes}: this pool cannot weight votes ({supports['reason']}); set "
                              f"grid.adaptive_votes: {supports['adaptive_votes']}")
        if self.difficulty == "predicted" and not self.has_scores:
            raise ConfigError(f"difficulty 'predicted' is the mean PRM score of the difficulty samples, and this pool "
                              f"has none ({supports['reason']}): use difficulty: agreement (the share of their modal "
                              "answer), oracle or level")

    def _check_sampling(self) -> None:
        """``sampling`` overrides the policy's SamplingParams: its keys and values are checked now,
        not after the pool has been generated."""
        from ..backends.base import SamplingParams

        allowed = sorted(f.name for f in dataclasses.fields(SamplingParams))
        unknown = sorted(set(map(str, self.sampling)) - set(allowed))
        if unknown:
            raise ConfigError(f"sampling: unknown key(s) {unknown}; allowed: {allowed}")
        try:
            SamplingParams(**self.sampling)
        except TTSError as exc:
            raise ConfigError(f"sampling: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        out.pop("executor")
        return out

    def resolve(self, value: str) -> str:
        """A file named in the config, relative to the config's folder; names stay names."""
        if value.endswith(".jsonl") and not Path(value).is_absolute():
            return str((Path(self.base_dir) / value).resolve())
        return value

    @property
    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every setting (the table's identity).

        ``dataset.family`` is left out: it labels the table for catalog lookups and changes
        none of its numbers, so stating it does not invalidate a profile in progress (and
        tables profiled before the key existed keep their hash)."""
        settings = self.to_dict()
        settings["dataset"].pop("family", None)
        if not of_kind(self.grid.strategies, "replayed"):  # unused keys: older tables keep their hash
            for key in [k for k in settings["grid"] if k.startswith("adaptive_")]:
                settings["grid"].pop(key)
        if not self.grid.filters:  # an unused key: older tables keep their hash
            settings["grid"].pop("filter_keep")
        settings.pop("cost")  # pricing, not samples (CostConfig)
        settings["evaluate"].pop("efficiency_reference")  # names the report's reference: no sample depends on it
        # Keys added with the guarded selection, at their defaults: older tables keep their hash.
        for key, default in (("method", "guarded"), ("shrinkage", 20.0), ("repeats", 5)):
            if settings["select"].get(key) == default:
                settings["select"].pop(key)
        settings["select"].pop("pilot_signals")  # which routers to select for: no sample depends on it
        for key in ("answers_field", "tokens_field", "prompt_tokens_field"):  # answer-only pools' keys, likewise
            if settings["pool"].get(key) is None:
                settings["pool"].pop(key, None)
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()


_SECTIONS = {
    "dataset": DatasetConfig, "pool": PoolConfig, "grid": GridConfig, "binning": BinningConfig,
    "evaluate": EvaluateConfig, "select": SelectConfig, "executor": ExecutorConfig, "cost": CostConfig,
}


def build_section(cls: type, raw: Any, where: str) -> Any:
    """A config dataclass ``cls`` (a section, or the whole :class:`ProfileConfig`) from the
    mapping ``raw`` read from ``where``: unknown keys and values of the wrong type (checked
    against the fields' annotations, :func:`selector.typed_values.conform`) are a ConfigError
    naming the key; missing keys take the defaults. Not checked for ranges: ``.check()`` is."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    values = {}
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if key in _SECTIONS and cls is ProfileConfig:
            value = build_section(_SECTIONS[key], value, key)
        else:
            value = conform(value, hints[key], key if cls is ProfileConfig else f"{where}.{key}", _config_error)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _config_error(message: str) -> ConfigError:
    return ConfigError(f"{message}: fix it in the config")


def load_config(path: str | Path) -> ProfileConfig:
    """Read and validate a profile config YAML; relative file paths in it (dataset, pool)
    resolve against the config file's folder (see :meth:`ProfileConfig.resolve`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    from ..safe_yaml import load_yaml

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    raw = load_yaml(text, str(path), ConfigError)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile config is a mapping with at least 'name', 'dataset' and 'pool'")
    for key in ("name", "dataset", "pool"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}")
    raw.setdefault("name", path.stem)
    if "base_dir" in raw:
        raise ConfigError(f"{path}: 'base_dir' is set by the loader, not in the file")
    cfg = build_section(ProfileConfig, raw, str(path))
    return dataclasses.replace(cfg, base_dir=str(path.resolve().parent)).check()
