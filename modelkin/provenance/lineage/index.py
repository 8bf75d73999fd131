"""Candidate search over every registered model: coarse per-tensor sketches compared shape by shape.

Each model contributes one short vector per tensor (``sketch.coarse``). A query tensor is compared with every
registered tensor of the same shape in one matrix operation; a candidate's tensor distance is its closest
same-shaped tensor (names are not trusted), and its model distance the √numel-weighted median over the query's
tensors it covers. The best few candidates then get the precise comparison.

Nearest is not enough: many siblings fine-tuned from one parent on one task drift the same way, so every one of
them sits nearer a sibling than the parent, and with a few dozen siblings the parent falls out of the nearest
few altogether (it ranks last among 280 in the correlated-sibling benchmark). Fine-tuning grows a model's norm,
so the shortlist also takes the few lowest-norm models within reach (twice the last shortlisted distance): the
parent such a crowd hides is its least-trained member. The precise comparison then decides as for any candidate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

from modelkin.provenance.lineage.compare import TINY
from modelkin.provenance.lineage.sketch import ModelSketch, coarse

MIN_COVERAGE = 0.2
TIED = 5e-3  # coarse distances closer than this share of each other do not order two candidates
UPSTREAM = 2  # lowest-norm models within reach added to the shortlist
REACH = 2.0  # ... reach: this multiple of the last shortlisted model's coarse distance


def tie_cut(found: Sequence[tuple[Hashable, float]], k: int) -> int:
    """How many of ``found`` (nearest first) get the precise comparison: the first ``k`` and those the index
    cannot tell from the k-th (at most half as many more, a bound on the cost).

    A popular model's look-alike derivatives (quantised, frozen, head-only and near copies) sit at one coarse
    distance from a query; a cut inside that tie would keep or drop the model itself by index order alone.
    """
    if len(found) <= k or k <= 0:
        return min(len(found), max(k, 0))
    last = found[k - 1][1]
    n = k
    while n < min(len(found), k + (k + 1) // 2) and found[n][1] - last <= TIED * max(last, 1e-12):
        n += 1
    return n


@dataclass(frozen=True)
class Entry:
    """What the index keeps of one model: tensor shapes, sizes and coarse vectors."""

    key: Hashable
    shapes: tuple[tuple[int, ...], ...]
    vectors: np.ndarray  # (tensors, COARSE) float32

    @classmethod
    def of(cls, key: Hashable, sketch: ModelSketch) -> Entry:
        vectors = np.stack([coarse(t) for t in sketch.tensors]) if sketch.tensors else np.zeros((0, 0), np.float32)
        return cls(key, tuple(t.shape for t in sketch.tensors), vectors)


class CandidateIndex:
    def __init__(self, entries: Sequence[Entry]) -> None:
        self.keys = [e.key for e in entries]
        rows: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = defaultdict(list)
        for owner, e in enumerate(entries):
            for shape, vec in zip(e.shapes, e.vectors, strict=True):
                rows[tuple(sorted(shape))].append((owner, vec))
        self._groups = {
            shape: (np.array([o for o, _ in items]), np.stack([v for _, v in items]).astype(np.float32))
            for shape, items in rows.items()
        }
        self._norms = {shape: np.linalg.norm(m, axis=1) for shape, (_, m) in self._groups.items()}
        self._mass = np.array([_mass(e.vectors) for e in entries])

    def __len__(self) -> int:
        return len(self.keys)

    def shortlist(
        self, query: ModelSketch, k: int, pool: int, exclude: AbstractSet[Hashable] = frozenset()
    ) -> tuple[list[Hashable], list[Hashable]]:
        """(the models that get the precise comparison, the further ones only the two-parent fit may draw on):
        the ``k`` nearest and their ties (``tie_cut``), plus the lowest-norm models within reach (module note);
        the second list completes the ``pool`` nearest."""
        median = self._distances(query)
        ranked = [
            i for i in np.argsort(median, kind="stable") if np.isfinite(median[i]) and self.keys[i] not in exclude
        ]
        cut = tie_cut([(i, float(median[i])) for i in ranked[: max(k, pool)]], k)
        near = ranked[:cut]
        if near:
            reach = REACH * median[near[-1]]
            taken = set(near)
            within = [i for i in ranked[cut:] if median[i] <= reach and i not in taken]
            near += sorted(within, key=lambda i: self._mass[i])[:UPSTREAM]
        taken = set(near)
        far = [i for i in ranked[: max(k, pool)] if i not in taken]
        return [self.keys[i] for i in near], [self.keys[i] for i in far]

    def _distances(self, query: ModelSketch) -> np.ndarray:
        """Each registered model's coarse distance to ``query`` (inf: too little shared)."""
        n = len(self.keys)
        tensors = [t for t in query.tensors if t.numel >= TINY] or list(query.tensors)
        if not tensors or not self.keys:
            return np.full(n, np.inf)
        dist = np.full((n, len(tensors)), np.inf)
        for col, t in enumerate(tensors):
            group = self._groups.get(tuple(sorted(t.shape)))
            if group is None:
                continue
            owners, mat = group
            q = coarse(t)
            rel = np.linalg.norm(mat - q, axis=1) / np.maximum(
                0.5 * (np.linalg.norm(q) + self._norms[tuple(sorted(t.shape))]), 1e-30
            )
            np.minimum.at(dist[:, col], owners, rel)
        weights = np.sqrt([t.numel for t in tensors])
        covered = np.isfinite(dist)
        coverage = (covered * np.array([t.numel for t in tensors])).sum(1) / sum(t.numel for t in tensors)
        # weighted median per row over the covered columns
        order = np.argsort(dist, axis=1)
        sorted_d = np.take_along_axis(dist, order, axis=1)
        sorted_w = np.where(np.isfinite(sorted_d), weights[order], 0.0)
        cum = np.cumsum(sorted_w, axis=1)
        half = 0.5 * cum[:, -1:]
        pick = np.minimum((cum < half).sum(1), len(tensors) - 1)
        median = sorted_d[np.arange(n), pick]
        median[coverage < MIN_COVERAGE] = np.inf
        return median


def _mass(vectors: np.ndarray) -> float:
    """A model's squared norm as the index sees it (its coarse vectors: a CountSketch keeps norms on average)."""
    return float(np.sum(np.square(vectors, dtype=np.float64)))
