"""Near-copies: models a few tiny optimiser steps apart, and which of them is the original.

Their distance is symmetric and their statistics agree, so the pair's own weights cannot order them. The
family can, through what training does: a near-copy is a few steps down the loss from its original, and the
original's other children moved down the same loss, further. So the near-copy sits between its original and
the rest of the family, and the original is the end the family is farther from (the upstream end). Each
relative of the cluster votes for the member it is farthest from; a strict plurality names the original.
Parsimony does the rest: a query far from the cluster carries no trace of a near-copy's few steps (its own
training swamps them), so it is read as the original's child.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelkin.provenance.lineage.compare import AGREE, Comparison
from modelkin.provenance.lineage.pairing import _values, pair_tensors
from modelkin.provenance.lineage.sketch import ModelSketch

NEAR_COPY = 1e-3  # relative distance under which two models are near-copies (weights alone cannot order them)


def near_copy(c: Comparison) -> bool:
    """Every tensor moved a little and none kept exactly: the two cannot be ordered from the weights alone."""
    return c.mean_distance < NEAR_COPY and c.equal < 0.5 and abs(c.bits) < 1 and abs(c.zeros) < 0.01


def _distances(other: ModelSketch, members: Sequence[ModelSketch]) -> np.ndarray | None:
    """‖other − member‖ / ‖member‖ over the tensors ``other`` shares with every member (the same ones for all)."""
    found = [{p.a: p for p in pair_tensors(other, m)} for m in members]
    common = sorted(set.intersection(*(set(f) for f in found)))
    if not common:
        return None
    x = np.concatenate([other.tensors[i].values.reshape(-1) for i in common]).astype(np.float64)
    out = []
    for m, f in zip(members, found, strict=True):
        y = np.concatenate([_values(m.tensors[f[i].b], f[i].transposed) for i in common]).astype(np.float64)
        out.append(np.linalg.norm(x - y) / max(float(np.linalg.norm(y)), 1e-12))
    return np.array(out)


def upstream(members: Sequence[ModelSketch], family: Sequence[ModelSketch]) -> int | None:
    """The index of the original among near-copies of one another, or None when the family does not say."""
    if len(members) < 2:
        return None
    votes = np.zeros(len(members), dtype=int)
    for other in family:
        d = _distances(other, members)
        if d is not None and d.min() < AGREE and np.count_nonzero(d == d.max()) == 1:
            votes[int(np.argmax(d))] += 1
    best = int(votes.max())
    return int(np.argmax(votes)) if best > 0 and np.count_nonzero(votes == best) == 1 else None
