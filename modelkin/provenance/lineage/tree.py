"""The ancestry forest: a minimum spanning arborescence over every model plus a virtual root.

Each model's verdict gives a calibrated distribution over its parent (each nearby candidate, or "no registered
parent"). Edge c -> v costs -log P(parent of v = c) and ROOT -> v costs -log P(v has no registered parent), so
the arborescence (Edmonds' algorithm) is the most probable forest in which every model has one parent and no
cycles, and "no known parent" is a real answer. As in a single verdict, a model whose no-parent probability is
below one half keeps a parent: its root edge costs as much as an edge ten times less likely than "no parent",
so it is taken to break a cycle, not to avoid a plausible edge. A merge verdict adds its
second parent afterwards. Registration order enters only as a tie-break of 1e-9, and below it the verdict's own
ranking (1e-12 a place), so that exactly equal costs (re-headed twins, a merge's two parents) do not leave the
choice to the arborescence algorithm's internals.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from modelkin.provenance.lineage.arborescence import minimum_arborescence
from modelkin.provenance.lineage.decide import Verdict, relation_of

ROOT = ("__virtual_root__",)
_TIE = 1e-9
_RANK = 1e-12  # equal costs: the candidate the verdict ranked first (its own tie-breaks) wins
_CUT = float(np.log(10.0))  # a model likely to have a parent is made a root only instead of a 10x weaker edge


@dataclass(frozen=True)
class TreeEdge:
    parent: Hashable
    child: Hashable
    relation: str | None
    confidence: float


@dataclass(frozen=True)
class Forest:
    edges: tuple[TreeEdge, ...]
    roots: tuple[Hashable, ...]

    def parents(self) -> dict[Hashable, list[Hashable]]:
        out: dict[Hashable, list[Hashable]] = {}
        for e in self.edges:
            out.setdefault(e.child, []).append(e.parent)
        return out


def _cost(p: float) -> float:
    return float(-np.log(max(p, 1e-300)))


def recover_forest(nodes: Sequence[Hashable], verdicts: Mapping[Hashable, Verdict]) -> Forest:
    """``nodes`` in registration order; ``verdicts[v]`` is v's parent verdict over candidates among ``nodes``."""
    if not nodes:
        return Forest((), ())
    order = {v: i for i, v in enumerate(nodes)}
    weights: dict[tuple[Hashable, Hashable], float] = {}
    for v in nodes:
        verdict = verdicts[v]
        # a model more likely than not to have a registered parent is a root only to break a cycle: its
        # parent probability may be split between look-alike candidates, none of which beats "no parent" alone
        rooted = verdict.none_probability >= 0.5
        root_cost = _cost(verdict.none_probability) + (0.0 if rooted else _CUT)
        weights[ROOT, v] = root_cost
        merged = verdict.relation == "merge"  # a merge's tree edge comes from one of its two parents
        for rank, c in enumerate(verdict.candidates):
            if c.key in order and c.key != v and (not merged or c.key in verdict.parents):
                later = order[c.key] > order[v]
                p = 1.0 - verdict.none_probability if merged else c.probability  # a merge's parents come jointly
                cost = _cost(p) + _TIE * later + _RANK * rank
                # an edge dearer than v's root edge is in no minimum arborescence (hanging v from the root
                # instead is cheaper and cannot close a cycle), so leaving it out changes nothing but the time
                if cost <= root_cost:
                    weights[c.key, v] = cost
    parent_of = minimum_arborescence(ROOT, ((u, v, w) for (u, v), w in weights.items()))
    tree = nx.DiGraph()
    tree.add_nodes_from(nodes)
    tree.add_edges_from((parent_of[v], v) for v in nodes)
    by_key = {v: {c.key: c for c in verdicts[v].candidates} for v in nodes}
    edges: list[TreeEdge] = []
    roots: list[Hashable] = []
    for v in nodes:
        parent = parent_of[v]  # merge edges are added only to the node being read
        if parent == ROOT:
            roots.append(v)
            continue
        verdict, cand = verdicts[v], by_key[v][parent]
        merged = verdict.relation == "merge" and parent in verdict.parents
        if merged:
            other = next(p for p in verdict.parents if p != parent)
            if other in order and not nx.has_path(tree, v, other):
                tree.add_edge(other, v)
                edges.append(TreeEdge(other, v, "merge", verdict.confidence))
        edges.append(TreeEdge(parent, v, "merge" if merged else relation_of(cand.comparison), cand.confidence))
    return Forest(tuple(edges), tuple(roots))


def ancestors(forest: Forest, node: Hashable) -> list[tuple[Hashable, int]]:
    """(ancestor, generation) breadth first; 1 = parent. Each ancestor once, at its nearest generation."""
    parents = forest.parents()
    seen = {node}
    frontier, out, generation = [node], [], 0
    while frontier:
        generation += 1
        nxt = []
        for v in frontier:
            for p in parents.get(v, []):
                if p not in seen:
                    seen.add(p)
                    out.append((p, generation))
                    nxt.append(p)
        frontier = nxt
    return out
