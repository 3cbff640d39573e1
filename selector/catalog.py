"""A catalog of table directories: the right table for a (policy, PRM, dataset), or the published prior.

``tables/`` is a catalog: every subdirectory holding a ``selection.parquet`` is a table
directory, and its metadata says which policy (id and parameter count), PRM and dataset it
was profiled on (selector/tables.py). ``TableCatalog(path).best_for(policy=..., prm=...,
dataset=...)`` picks, in order:

1. ``exact``: a profiled table of the same policy id, PRM id and dataset family; of several,
   the one profiled on the most prompts (its cells' CIs are the narrowest), then by name;
2. ``nearest_size``: a profiled table with the same PRM and dataset family whose policy is
   nearest in size on a log scale (|log(params_table / params_policy)|; so 8B is nearer to
   4B than 1B is). It needs the policy's parameter count (``policy_params=``, or the engine's
   ``num_parameters``); a table that does not declare its policy's size is only ever an exact
   match;
3. ``prior``: a published-prior table of that dataset family (``prior: true`` in its metadata,
   built by ``scripts/build_prior_table.py`` from Liu et al. 2025), keyed by policy size and
   offered for any PRM;

else a :class:`CatalogLookupError` that names the dataset family, lists what the catalog has
and says how to profile a table. Every choice carries ``kind`` and a ``reason`` in words.

The dataset family is what a table answers for: its metadata's ``dataset_family`` (written by
the profiler from the config's ``dataset.family``), or, for tables written before that key,
the registered family of its ``dataset`` name (selector/datasets.py ``FAMILIES``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from .errors import TTSError
from .datasets import dataset_family
from .tables import TableDir, TableError

__all__ = [
    "CatalogChoice", "CatalogEntry", "CatalogLookupError", "TableCatalog", "format_params", "is_catalog",
    "policy_size", "prior_rules", "rows_for_size", "table_family",
]

KINDS = ("exact", "nearest_size", "prior")
_FIX_PROFILE = "profile one with `tts-selector profile CONFIG --out {catalog}/<name>`"


class CatalogLookupError(TTSError, LookupError, ValueError):
    """No table in the catalog answers for the request (a ValueError too, so the CLI reports it)."""


def format_params(n: float | None) -> str:
    """A parameter count for people: 1.5e9 -> '1.5B', 134515008 -> '134.5M', None/0 -> 'unknown size'."""
    if not n:
        return "unknown size"
    if n >= 1e9:
        return f"{n / 1e9:.4g}B"
    return f"{n / 1e6:.4g}M"


def policy_size(policy: Any, policy_params: float | None = None) -> int | None:
    """The policy's parameter count: ``policy_params`` when given, else the engine's
    ``num_parameters``; None when neither is a positive number (a spec string has no size)."""
    n = policy_params if policy_params is not None else getattr(policy, "num_parameters", None)
    try:
        n = int(float(n)) if n is not None else None
    except (TypeError, ValueError):
        return None
    return n if n and n > 0 else None


def table_family(meta: dict) -> str:
    """A table's dataset family: ``dataset_family`` from its metadata, else the registered family
    of its ``dataset`` (tables written before the key existed)."""
    return meta.get("dataset_family") or dataset_family(str(meta.get("dataset", "")))


def _identity(engine_or_name: Any) -> str:
    """What a policy / PRM is matched by: an engine's ``id``; a string as given; no PRM is 'none'."""
    if engine_or_name is None:
        return "none"
    return engine_or_name if isinstance(engine_or_name, str) else str(engine_or_name.id)


@dataclass(frozen=True)
class CatalogEntry:
    """One table directory of a catalog, as its metadata describes it.

    ``policy_params`` is None when the table does not declare its policy's size (imported pools
    whose source does not say it): such a table is only an exact match. ``budgets`` is empty for
    a prior that names none. ``policy_spec`` / ``prm_spec`` are the spec strings it was profiled
    with (from its manifest), when recorded. ``n_prompts`` is how many profiling prompts its
    default selection's cells were chosen on (0 for a prior).
    """

    path: Path
    name: str
    policy_id: str
    policy_params: int | None
    prm_id: str
    dataset: str
    dataset_family: str
    binning_scheme: str
    bin_edges: tuple[float, ...]
    bins: tuple[int, ...]
    budgets: tuple[int, ...]
    prior: bool
    policy_spec: str | None = None
    prm_spec: str | None = None
    citation: str | None = None
    n_prompts: int = 0

    @classmethod
    def from_table(cls, path: str | Path) -> "CatalogEntry":
        """Describe a table directory from its selection file's metadata (footer) and its
        ``bin``/``budget`` columns.

        Raises:
            TableError: the selection file is missing, unreadable or not a tts-selector table.
        """
        path = Path(path)
        table = TableDir(path)
        meta = table.metadata
        cells = table.all_selections()[["estimator", "bin", "budget", "n_prompts"]]  # checked values (table_checks)
        config = table.config
        params = meta.get("policy_params")
        default = cells[cells["estimator"] == meta.get("default_selection")]
        # every prompt is in one bin of each budget: the largest per-budget sum is the prompt count
        n_prompts = default.groupby("budget")["n_prompts"].sum().max()  # NaN: no measured cells (a prior)
        return cls(
            path=path, name=path.name, policy_id=str(meta.get("policy_id")),
            policy_params=int(params) if params else None, prm_id=str(meta.get("prm_id")),
            dataset=str(meta.get("dataset")), dataset_family=table_family(meta),
            binning_scheme=str(meta.get("binning_scheme")), bin_edges=tuple(float(e) for e in meta.get("bin_edges", ())),
            bins=tuple(sorted(int(b) for b in cells["bin"].unique())),
            budgets=tuple(sorted(int(b) for b in cells["budget"].dropna().unique())),
            prior=bool(meta.get("prior", False)), policy_spec=config.get("policy"), prm_spec=config.get("prm"),
            citation=meta.get("citation"), n_prompts=int(n_prompts) if pd.notna(n_prompts) else 0,
        )

    def matches_policy(self, policy: Any) -> bool:
        return _identity(policy) in (self.policy_id, self.policy_spec)

    def matches_prm(self, prm: Any) -> bool:
        return _identity(prm) in (self.prm_id, self.prm_spec)

    def describe(self) -> str:
        if self.prior:
            return f"{self.name} (published prior)"
        return f"{self.name} (policy {self.policy_id!r}, {format_params(self.policy_params)}; PRM {self.prm_id!r})"


@dataclass(frozen=True)
class CatalogChoice:
    """What :meth:`TableCatalog.best_for` chose: the table, how it matched (``kind``: exact |
    nearest_size | prior), why (``reason``), and the policy size it matched with."""

    entry: CatalogEntry
    kind: str
    reason: str
    policy_params: int | None = None

    @property
    def path(self) -> Path:
        return self.entry.path

    @property
    def summary(self) -> str:
        """A few words for a routing decision's source, e.g. 'exact match'."""
        if self.kind == "exact":
            return "exact match"
        if self.kind == "nearest_size":
            return (f"nearest policy size with the same PRM (profiled with {self.entry.policy_id!r}, "
                    f"{format_params(self.entry.policy_params)}; routing a {format_params(self.policy_params)} policy)")
        return "published prior"


class TableCatalog:
    """The table directories under ``path`` (see module docstring). Nothing is read until asked;
    the listing is cached after its first read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries: tuple[CatalogEntry, ...] | None = None
        self._skipped: tuple[tuple[Path, str], ...] = ()

    # -- listing ---------------------------------------------------------------------------
    def entries(self) -> tuple[CatalogEntry, ...]:
        """Every usable table directory, sorted by name.

        Raises:
            FileNotFoundError: ``path`` is not a directory.
        """
        if self._entries is None:
            if not self.path.is_dir():
                raise FileNotFoundError(f"{self.path}: no such catalog directory; {_FIX_PROFILE.format(catalog=self.path)}")
            entries, skipped = [], []
            for sub in sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if not (sub / "selection.parquet").is_file():
                    # A profile in progress (a colleague's, or a killed run) has rollouts or
                    # state but no selection yet: not a table, but worth saying why it is left out.
                    if any(sub.glob("*.parquet")) or (sub / "state").is_dir() or (sub / "rollouts").is_dir():
                        skipped.append((sub, "no selection.parquet yet (profile not finished)"))
                    continue
                try:
                    entries.append(CatalogEntry.from_table(sub))
                except TableError as exc:
                    skipped.append((sub, str(exc)))
            self._entries, self._skipped = tuple(entries), tuple(skipped)
        return self._entries

    @property
    def skipped(self) -> tuple[tuple[Path, str], ...]:
        """Subdirectories that look like tables but cannot be used, with the reason."""
        self.entries()
        return self._skipped

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def summary(self) -> pd.DataFrame:
        """One row per table: name, kind (profiled | prior), policy, size, PRM, dataset, family,
        profiling prompts, binning, bins, budgets, citation, path (for ``tts-selector inspect`` and notebooks)."""
        rows = []
        for e in self.entries():
            row = dataclasses.asdict(e)
            row.update(kind="prior" if e.prior else "profiled", path=str(e.path), bins=list(e.bins),
                       budgets=list(e.budgets), bin_edges=list(e.bin_edges))
            rows.append(row)
        columns = ["name", "kind", "policy_id", "policy_params", "prm_id", "dataset", "dataset_family", "n_prompts",
                   "binning_scheme", "bin_edges", "bins", "budgets", "prior", "citation", "policy_spec", "prm_spec", "path"]
        out = pd.DataFrame(rows, columns=columns)
        out["policy_params"] = out["policy_params"].astype("Int64")  # null: the table declares no size
        return out

    # -- lookup ----------------------------------------------------------------------------
    def best_for(self, *, policy: Any, prm: Any, dataset: str, policy_params: float | None = None) -> CatalogChoice:
        """The table to route ``policy`` (an engine, or a policy id / spec string) with ``prm``
        (an engine, an id / spec string, or None for no PRM) on ``dataset`` (a data set name,
        a JSONL path, or a family name), by the rules of the module docstring.

        ``policy_params`` (parameters) overrides the engine's ``num_parameters``; nearest-size
        matching and the prior need one of them.

        Raises:
            CatalogLookupError: nothing answers for the dataset's family (the message lists the
                catalog and the fix).
            ValueError: only the prior answers and the policy's size is unknown.
        """
        family = dataset_family(dataset)
        pid, prm_id = _identity(policy), _identity(prm)
        size = policy_size(policy, policy_params)
        profiled = [e for e in self.entries() if not e.prior and e.dataset_family == family]

        exact = sorted((e for e in profiled if e.matches_policy(policy) and e.matches_prm(prm)),
                       key=lambda e: (-e.n_prompts, e.name))
        if exact:
            others = (f"; the one profiled on the most prompts ({exact[0].n_prompts}) of {len(exact)}, not used: "
                      f"{[f'{e.name} ({e.n_prompts} prompts)' for e in exact[1:]]}") if len(exact) > 1 else ""
            return CatalogChoice(exact[0], "exact", (
                f"table {exact[0].path}: exact match (policy {pid!r}, PRM {prm_id!r}, dataset family {family!r}){others}"
            ), size)

        why: list[str] = [f"no table of policy {pid!r} with PRM {prm_id!r}"]
        same_prm = [e for e in profiled if e.matches_prm(prm)]
        sized = [e for e in same_prm if e.policy_params]
        unsized = [e for e in same_prm if not e.policy_params]
        if unsized:
            why.append(f"{[e.name for e in unsized]} have PRM {prm_id!r} but do not declare their policy's size, "
                       "so they can only be exact matches")
        if sized and size:
            best = min(sized, key=lambda e: (abs(math.log(e.policy_params / size)), e.name))
            distance = abs(math.log(best.policy_params / size))
            return CatalogChoice(best, "nearest_size", (
                f"table {best.path}: nearest policy size with the same PRM {prm_id!r} and dataset family {family!r}: "
                f"profiled with {best.policy_id!r} ({format_params(best.policy_params)}), routing {pid!r} "
                f"({format_params(size)}; log-size distance {distance:.2f}); the policy differs from the table's"
                + (f" ({'; '.join(why[1:])})" if len(why) > 1 else "")
            ), size)
        if sized:
            why.append(f"tables with PRM {prm_id!r} exist ({[e.name for e in sized]}) but the policy's size is unknown: "
                       "pass policy_params= for nearest-size matching")
        elif not same_prm:
            why.append(f"no table with PRM {prm_id!r} in family {family!r}")

        priors = [e for e in self.entries() if e.prior and e.dataset_family == family]
        if priors:
            prior = priors[0]
            if not size:
                raise ValueError(
                    f"{self.path}: only the published prior {prior.name} answers for dataset family {family!r} "
                    f"({'; '.join(why)}), and it is keyed by policy size, but policy {pid!r} reports no parameter "
                    f"count: pass policy_params= (parameters, e.g. 1.5e9) or --policy-params"
                )
            meta = TableDir(prior.path).metadata
            prms = ", ".join(meta.get("prms_in_paper", [])) or "not recorded"
            return CatalogChoice(prior, "prior", (
                f"published prior {prior.path} ({meta.get('citation_short', prior.citation)}) for dataset family "
                f"{family!r} and a {format_params(size)} policy: {'; '.join(why)}. The prior applies to any PRM "
                f"(the paper's finding depends on the PRM; it used {prms}), so {prm_id!r} gets its rules as published"
            ), size)

        raise CatalogLookupError(
            f"{self.path}: no table for dataset family {family!r} (dataset {dataset!r}) and no published prior for it "
            f"({'; '.join(why)}). The catalog has: {self._listing()}. To fix: "
            f"{_FIX_PROFILE.format(catalog=self.path)} on a data set of family {family!r} (a built-in, or a JSONL "
            f"file with dataset.family: {family} in the config), or route with a table directory instead of the catalog"
        )

    def _listing(self) -> str:
        by_family: dict[str, list[str]] = {}
        for e in self.entries():
            by_family.setdefault(e.dataset_family, []).append(e.describe())
        if not by_family:
            return "no tables"
        text = "; ".join(f"family {f!r}: {', '.join(names)}" for f, names in sorted(by_family.items()))
        if self.skipped:
            text += "; not usable: " + ", ".join(f"{p.name} ({why})" for p, why in self.skipped)
        return text

    def __repr__(self) -> str:
        return f"TableCatalog({str(self.path)!r})"


def is_catalog(path: str | Path) -> bool:
    """Whether ``path`` is a catalog (a directory of table directories) rather than a table
    directory itself (which holds ``selection.parquet``)."""
    path = Path(path)
    if not path.is_dir() or (path / "selection.parquet").exists():
        return False
    return any((sub / "selection.parquet").is_file() for sub in path.iterdir() if sub.is_dir())


# ----------------------------------------------------------------------------- priors

_RULE_COLUMNS = [
    "dataset_family", "size_range", "policy_params_min", "policy_params_max", "bin", "difficulty", "pass1_range",
    "strategy", "n", "m", "aggregation", "budget", "rule",
]


def _table(source: CatalogEntry | TableDir | str | Path) -> TableDir:
    if isinstance(source, TableDir):
        return source
    return TableDir(source.path if isinstance(source, CatalogEntry) else source)


def prior_rules(source: CatalogEntry | TableDir | str | Path) -> pd.DataFrame:
    """The rules a published-prior table encodes, one row per (policy size range, difficulty bin):
    size range (parameters, ``policy_params_max`` null = no upper bound), bin and its pass@1
    range, strategy, the (null) n / m / aggregation / budget, and the rule in words.

    Raises:
        ValueError: the table is a profiled table, not a prior.
    """
    table = _table(source)
    if not table.metadata.get("prior"):
        raise ValueError(f"{table.path} is a profiled table, not a published prior: read its winners with "
                         f"TableDir({str(table.path)!r}).selection()")
    sel = table.selection()
    out = sel[[c for c in _RULE_COLUMNS if c in sel.columns]]
    return out.sort_values(["policy_params_min", "bin"]).reset_index(drop=True)


def rows_for_size(selection: pd.DataFrame, policy_params: int) -> pd.DataFrame:
    """A prior's selection rows whose size range holds ``policy_params``:
    ``policy_params_min <= policy_params < policy_params_max`` (no upper bound when null)."""
    lo = selection["policy_params_min"]
    hi = selection["policy_params_max"]
    inside = (lo <= policy_params) & (hi.isna() | (policy_params < hi.fillna(0)))
    return selection[inside.astype(bool)]
