"""Near-copies: models a few tiny optimiser steps apart, and which of them is the original.

Their distance is symmetric and their statistics agree, so the pair's own weights cannot order them. The
family can, through what training does: a near-copy is a few steps down the loss from its original, and the
original's other children moved down the same loss, further. So the near-copy sits between its original and
the rest of the family, and the original is the end the family is farther from (the upstream end).
Parsimony does the rest: a query far from the cluster carries no trace of a near-copy's few steps (its own
training swamps them), so it is read as the original's child.

Where the family is silent (no trained relative among the candidates), the pair's norms still speak: training
grows a trained model's norm (its steps push weights outward: every near-copy edge of the seed-0 zoo, 8 of 8)
and noise added to it grows the norm on average by the noise's own energy, so the heavier of two near-copies is
the copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelkin.provenance.lineage.compare import Comparison
from modelkin.provenance.lineage.pairing import aligned
from modelkin.provenance.lineage.signatures import GRID_BITS
from modelkin.provenance.lineage.sketch import ModelSketch

NEAR_COPY = 1e-3  # relative distance under which two models are near-copies (weights alone cannot order them)
# a relative votes only from within this distance: in the seed-0 zoo every voter of another family sat at 0.6
# or beyond and voted wrong 18 times in 22 (kin there: 7 right of 7; nearer kin 46 of 55)
FAMILY_REACH = 0.6


def near_copy(c: Comparison) -> bool:
    """Every tensor moved a little and none kept exactly: the two cannot be ordered from the weights alone. (A
    model that lacks some of the query's tensors, a head of another shape, is no near-copy however close the
    rest.)"""
    near = c.mean_distance < NEAR_COPY and c.coverage >= 0.99
    return near and c.equal < 0.5 and abs(c.bits) < 1 and abs(c.zeros) < 0.01


def _distances(other: ModelSketch, members: Sequence[ModelSketch]) -> np.ndarray | None:
    """‖other − member‖ / ‖member‖ over the tensors ``other`` shares with every member (the same ones for all)."""
    found = aligned(other, members)
    if found is None:
        return None
    x, ys = found
    return np.array([np.linalg.norm(x - y) / max(float(np.linalg.norm(y)), 1e-12) for y in ys])


def _trained_away(other: ModelSketch, members: Sequence[ModelSketch]) -> bool:
    """A relative whose every weight moved by training (the argument above needs one): it keeps no member's
    tensor bit for bit (a head-only or frozen child sits at its parent), gained no exact zeros and sits on no
    integer grid (a pruned or quantised child is its parent rounded or masked, not moved down the loss)."""
    if any(other.digests & m.digests for m in members):
        return False
    zeros = max((t.zeros for t in other.tensors if len(t.shape) >= 2), default=0.0)
    kept = max((t.zeros for m in members for t in m.tensors if len(t.shape) >= 2), default=0.0)
    return zeros <= kept + 0.01 and all(t.bits > GRID_BITS for t in other.tensors if len(t.shape) >= 2)


def heavier(query: ModelSketch, copies: Sequence[ModelSketch]) -> list[bool | None]:
    """For each of the query's near-copies: True when it carries more squared norm than the query over the
    tensors they all share (so it is the copy, the query the original), False when less, None when exactly
    equal (or nothing shared): float64 sums of the very same coordinates, so only an exact tie is silent."""
    found = aligned(query, copies)
    if found is None:
        return [None] * len(copies)
    x, ys = found
    mass = float(x @ x)
    return [None if float(y @ y) == mass else float(y @ y) > mass for y in ys]


def upstream(members: Sequence[ModelSketch], family: Sequence[ModelSketch]) -> int | None:
    """The index of the original among near-copies of one another, or None when the family does not say.

    Each pair of members is put to the family: a relative votes for the one it is farther from. The original
    wins every one of its pairs (two near-copies of one original are each downhill from it, in directions of
    their own, so a plurality over three or more would split).
    """
    if len(members) < 2:
        return None
    moved = [other for other in family if _trained_away(other, members)]
    rows = [d for d in (_distances(other, members) for other in moved) if d is not None and d.min() < FAMILY_REACH]
    if not rows:
        return None
    far = np.array(rows)  # (relatives, members)
    for a in range(len(members)):
        if all(np.count_nonzero(far[:, a] > far[:, b]) > np.count_nonzero(far[:, b] > far[:, a])
               for b in range(len(members)) if b != a):  # fmt: skip
            return a
    return None
