"""What a profile run produced: the summary ``tts-selector profile`` prints and tests read."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..binning import bin_labels
from .executors import ExecutorReport


@dataclass
class ProfileSummary:
    """What a profile run produced, for printing and tests."""

    out_dir: Path
    complete: bool
    ledger: dict[str, dict[str, float]] = field(default_factory=dict)
    bin_sizes: dict[int, int] = field(default_factory=dict)
    bin_edges: list[float] = field(default_factory=list)
    selection: pd.DataFrame | None = None
    pass1_histogram: list[int] = field(default_factory=list)
    grading_agreement: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    bin_labels: dict[int, str] = field(default_factory=dict)
    executor: ExecutorReport | None = None  # how the pool and tree shards ran
    cost: dict[str, Any] = field(default_factory=dict)  # the table's profiling_cost

    def render(self) -> str:
        lines = [f"table directory: {self.out_dir}"]
        if self.executor is not None:
            lines.append(self.executor.render())
        if not self.complete:
            lines.append("shards written; run `tts-selector merge` over all shard directories to finish the tables")
        for stage, cost in self.ledger.items():
            lines.append(
                f"ledger {stage:<30} {cost['generations']:>9.0f} generations  {cost['policy_tokens']:>10.0f} policy tokens"
                f"  {cost['prm_tokens']:>10.0f} PRM tokens  {cost['flops']:.3g} FLOPs  {cost.get('seconds', 0.0):.1f} s"
            )
        if self.grading_agreement.get("labelled"):
            a = self.grading_agreement
            lines.append(f"grading agrees with the pool's own labels on {a['agree']}/{a['labelled']} samples")
        if self.pass1_histogram:
            lines.append("pass@1 histogram (10 buckets of 0.1, profiling split): " + " ".join(map(str, self.pass1_histogram)))
        if self.bin_sizes:
            labels = self.bin_labels or bin_labels(self.bin_edges)
            total = sum(self.bin_sizes.values())
            lines.append("bins (1 = easiest): " + ", ".join(
                f"{b}: {n} prompts ({n / total:.0%}, {labels[b]})" for b, n in sorted(self.bin_sizes.items())))
        if self.selection is not None and not self.selection.empty:
            lines.append("selection (held-out accuracy [95% CI], strategy n/m/aggregation):")
            budgets = sorted(self.selection["budget"].unique())
            lines.append("bin  " + " ".join(f"{'N=' + str(b):<36}" for b in budgets))
            for b, rows in self.selection.groupby("bin"):
                cells = []
                for budget in budgets:
                    r = rows[rows["budget"] == budget]
                    if r.empty:
                        cells.append(f"{'-':<36}")
                        continue
                    r = r.iloc[0]
                    name = f"{r['strategy']}/{r['n']}" + (f"/{r['m']}" if pd.notna(r["m"]) else "") + (
                        f"/{r['aggregation']}" if isinstance(r["aggregation"], str) else "")
                    cells.append(f"{name} {r['accuracy']:.2f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]".ljust(36))
                lines.append(f"{b:<5}" + " ".join(cells))
        if self.cost:
            from ..labels import cost_text

            lines.append("profiling cost: " + cost_text(self.cost))
        lines.append(f"wall time: {self.seconds:.1f} s")
        return "\n".join(lines)
