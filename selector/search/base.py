"""The search tree records and the strategy contract that every strategy implements.

A strategy is a frozen, typed config (its hyperparameters) with a ``search`` method written
as a generator: it yields one *round* at a time — a list of :class:`Expansion` requests
("sample ``n`` continuations of this node") — and receives, for each expansion, the scored
child nodes. It finally returns the candidate nodes. The strategy never sees an engine: the
runner (``search/runner.py``) batches the rounds of many questions, possibly under
different strategies, into one policy call and one PRM call per round.

Budget semantics (Snell et al. 2024), enforced by tests: a budget ``n`` is the number of
sampled generations per round. Best-of-N family: one round of ``n`` whole solutions. Beam
search and DVTS: ``n`` frontier paths per step, so at most ``n`` generations in every round.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Generator, NamedTuple

from ..seeds import derive_seed


class Node(NamedTuple):
    """A partial (or complete) solution in the search tree.

    ``scores`` holds one PRM score per step of the whole path (empty when unscored);
    ``tokens`` counts generated tokens along the path; ``prm_tokens`` what the PRM read to
    score it; ``confidence`` one value per step, the policy's own confidence in it (the
    geometric-mean probability of the tokens of the generation that wrote it; a whole solution
    sampled at once gives each of its steps the same value), empty when the policy reported no
    log-probabilities. (A NamedTuple: immutable and cheap to build, since search makes one per
    sampled step.)
    """

    steps: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    tokens: int = 0
    finished: bool = False
    stop_reason: str | None = None
    prm_tokens: int = 0  # tokens the PRM read for this node's latest scoring
    confidence: tuple[float, ...] = ()


ROOT = Node()


class Expansion(NamedTuple):
    """Ask for ``n`` continuations of ``node``.

    ``to_completion``: sample whole solutions instead of one step. ``score``: have the PRM
    score the children (majority vote does not need it and saves the PRM's cost).
    """

    node: Node
    n: int
    seed: int
    to_completion: bool = False
    score: bool = True


# What a strategy's generator yields, is sent, and returns.
Round = list[Expansion]
Children = list[list[Node]]
SearchGenerator = Generator[Round, Children, list[Node]]


@dataclass(frozen=True)
class SearchContext:
    """Per-question facts a strategy may use: the question, its run seed, and pilot samples
    already drawn for it (whole solutions, scored) that a strategy may reuse inside its
    budget instead of sampling them again."""

    question: str
    seed: int
    pilot: tuple[Node, ...] = ()

    def seed_for(self, *path: object) -> int:
        """Seed of an expansion identified by its place in the search (never batch position)."""
        return derive_seed(self.seed, *path)


STRATEGIES: dict[str, type["StrategyConfig"]] = {}

# How the profiler scores a strategy's configurations (``StrategyConfig.kind``):
# ``pooled``: from the pool's whole-solution samples, by subsets voted with the strategy's
# answer rule (no generation beyond the pool); ``replayed``: its own search replayed on the
# pool's samples in order (adaptive consistency); ``live``: run for real, step by step.
KINDS = ("pooled", "replayed", "live")

# Defaults of the tree strategies' settings, written once: the strategy classes and the
# profile config's grid (selector/profiler/config.py) both take them from here.
DEFAULT_WIDTH = 4  # beam width m
DEFAULT_MAX_STEPS = 40  # rounds
DEFAULT_TREE_ANSWER_RULE = "weighted"


def parameter(default: Any, help: str, *, flag: str | None = None) -> Any:
    """A strategy hyperparameter declared once: its default, the help text the CLI shows for it,
    and its flag when the field's own name would clash with another option (``flag``, e.g.
    particle filtering's ``temperature`` is ``--pf-temperature``, since ``--temperature`` is
    the policy's sampling temperature). ``tts-selector solve`` derives its flags from these."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class StrategyConfig:
    """Base class of the strategy configs. Subclasses register under their ``name``.

    A strategy declares, once: its hyperparameters (dataclass fields, with :func:`parameter`
    for their help), its ``kind`` (how the profiler scores it, see :data:`KINDS`), its
    ``label`` (words for people; default: the name with spaces) and, for a strategy with a
    secondary size, which field a table's ``m`` column holds (``m`` itself for beam widths).
    The CLI's flags, the profiler's grid and the router's words are derived from these."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "live"
    label: ClassVar[str] = ""
    reuses_pilot: ClassVar[bool] = False  # whether pilot samples count inside the budget
    n: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.kind not in KINDS:
                raise TypeError(f"strategy {cls.name!r}: kind must be one of {list(KINDS)}, got {cls.kind!r}")
            STRATEGIES[cls.name] = cls

    @classmethod
    def words(cls) -> str:
        """The strategy in words (its ``label``, else its name with spaces), e.g. 'beam search'."""
        return cls.label or cls.name.replace("_", " ")

    @classmethod
    def takes(cls) -> frozenset[str]:
        """The names of the hyperparameters this strategy takes (its dataclass fields)."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def default(cls, name: str) -> Any:
        """This strategy's default for hyperparameter ``name`` (what runs when it is not set)."""
        return {f.name: f.default for f in fields(cls)}[name]

    @classmethod
    def at_budget(cls, budget: int, settings: dict[str, Any] | None = None, *, m: int | None = None,
                  aggregation: str | None = None) -> "StrategyConfig":
        """The strategy at ``budget`` generations per round: a beam width ``m`` (default: the
        class's, lowered to the budget when larger) with ``n`` rounded down to a multiple of it;
        ``settings`` (e.g. a table's ``max_steps``) as in :meth:`from_table_row`. What a forced
        strategy and a published prior's rule run."""
        n = int(budget)
        if "m" in cls.takes():
            m = int(m) if m is not None else min(int(cls.default("m")), n)
            n -= n % m
        return cls.from_table_row(n, m if "m" in cls.takes() else None, aggregation, settings or {})

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"{self.name}: budget n must be a positive integer, got {self.n!r}")

    # How the final answer is chosen among candidates: a rule of ``search/aggregate.py``
    # (a class constant for the best-of-N family, a field of tree strategies).
    answer_rule: ClassVar[str] = "weighted"

    @property
    def selection_aggregation(self) -> str:
        return getattr(self, "aggregation", "last")

    @property
    def m(self) -> int | None:
        return None

    def params(self) -> dict[str, Any]:
        """Hyperparameters as a flat dict (JSON/Parquet friendly), always with ``n`` and ``m``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.setdefault("m", self.m)
        out.setdefault("aggregation", getattr(self, "aggregation", None))
        return out

    @classmethod
    def from_table_row(
        cls, n: int, m: int | None, aggregation: str | None, settings: dict[str, Any]
    ) -> "StrategyConfig":
        """The config a table row ``(strategy, n, m, aggregation)`` names; ``settings`` are the
        profile's grid settings (e.g. ``max_steps``), of which those this strategy takes apply."""
        takes = cls.takes()
        params: dict[str, Any] = {k: v for k, v in settings.items() if k in takes}
        params["n"] = n
        if m is not None:
            params["m"] = m
        if aggregation is not None:
            params["aggregation"] = aggregation
        return cls(**params)

    def search(self, ctx: SearchContext) -> SearchGenerator:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.name, **asdict(self)}


def make_strategy(name: str, **params: Any) -> StrategyConfig:
    """Build a strategy config from its registered name and hyperparameters."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
    allowed = cls.takes()
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"strategy {name!r} takes {sorted(allowed)}; unknown: {sorted(unknown)}")
    return cls(**params)


def top_k(nodes: list[Node], k: int, aggregation: str) -> list[Node]:
    """The ``k`` nodes with the highest aggregated score; stable (ties keep sample order)."""
    from .aggregate import AGGREGATIONS, check_aggregation

    agg = AGGREGATIONS[check_aggregation(aggregation)]
    ranked = sorted(nodes, key=lambda node: -agg(node.scores))
    return ranked[:k]
