"""Diverse verifier tree search (DVTS) with budget ``n`` and subtree width ``m``.

The budget is split into ``n / m`` independent subtrees. Each round, every live subtree
expands its current node ``m`` ways (so a round spends at most ``n`` generations) and moves to
its best child by aggregated PRM score. Finished children are the subtree's leaves; a
subtree ends when its best child is finished, when no child is unfinished, or after
``max_steps`` rounds; that last allowed round samples each subtree's node to the end of the
solution (as beam search does), so every spent path leaves a leaf. Subtrees share no state:
each one's seeds derive from its own index and depth only, so a subtree's path is the same
whatever the others do. Leaves are returned (finished ones, and the last round's completions
even when the token cap cut them): the best ``m`` of each subtree, so at most ``n`` in all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .aggregate import aggregate
from .base import ROOT, Expansion, Node, SearchContext, SearchGenerator, top_k
from .beam import _TreeSearch


@dataclass(frozen=True)
class DVTS(_TreeSearch):
    """Diverse verifier tree search: ``n/m`` independent greedy subtrees of width ``m``."""

    name: ClassVar[str] = "dvts"
    label: ClassVar[str] = "DVTS"

    def search(self, ctx: SearchContext) -> SearchGenerator:
        subtrees = self.n // self.m
        current: dict[int, Node] = {i: ROOT for i in range(subtrees)}  # live subtrees only
        leaves: list[list[Node]] = [[] for _ in range(subtrees)]
        depth = 0
        while current and depth < self.max_steps:
            ids = list(current)
            last = depth + 1 >= self.max_steps  # the last allowed round completes every path
            expanded = yield [
                Expansion(current[i], self.m, ctx.seed_for("dvts", i, depth), to_completion=last) for i in ids
            ]
            depth += 1
            for i, children in zip(ids, expanded):
                if last:  # completed (or cut by the token cap): all are leaves
                    leaves[i].extend(children)
                    del current[i]
                    continue
                leaves[i].extend(c for c in children if c.finished)
                best = max(children, key=lambda c: aggregate(c.scores, self.aggregation))
                live = [c for c in children if not c.finished]
                if best.finished or not live:
                    del current[i]
                else:
                    current[i] = best
        return [leaf for tree in leaves for leaf in top_k(tree, self.m, self.aggregation)]
