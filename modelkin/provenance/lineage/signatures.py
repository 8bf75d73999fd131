"""Exact signatures that a transform leaves between a child and its own parent, and not between relatives.

Distances alone cannot separate a parent from its near-copies or from siblings that kept its trunk: they all
sit at the same distance from the child. What a transform leaves is sharper:

* kept weights (frozen layers, a pruned child's untouched survivors, a head-only child's trunk) equal the
  parent's bit for bit, and a near-copy's nowhere;
* a quantised child's values are the parent's rounded to the child's own per-row grid: re-quantised on that
  grid, the true parent gives the child's levels everywhere, a near-copy of the parent only almost everywhere;
* a model trained a little from a quantised one still sits within a small fraction of a step of its grid
  (a float parent's values fall anywhere between levels), which says which way the edge points;
* a magnitude-pruned child's zeros are exactly the parent's smallest weights;
* a merged LoRA update is exactly low-rank against the true parent, and full-rank (if small) against anything
  else.

Each test reads only what both sketches keep at the same coordinates (all of a small tensor, the seeded block of
a large one), so it works on stored sketches as well as on whole tensors.
"""

from __future__ import annotations

import numpy as np

from modelkin.provenance.lineage.sketch import TensorSketch, row_step

GRID_BITS = 8.5  # at most this many grid bits: integer-quantised (int8, int4); float16 values measure 11 or more
SNAP = 0.05  # within this share of a step of a level, a value sits on the grid
RANK_SHARE = 4  # a low-rank update has rank at most min(shape) / RANK_SHARE
REGROWN = 2.0  # regrown weights are at most this many times the size of the movement of the others
BELOW = 0.25  # ... and at most this share of the sparse model's smallest weight (pruned ones average about half)
_STEPS: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
_STEPS_LIMIT = 20000


def rows(t: TensorSketch, transposed: bool = False) -> np.ndarray | None:
    """The kept values as rows (output channels, where a quantiser's grid lives); None for vectors."""
    if t.exact:
        m = t.values.reshape(t.shape[0], -1) if len(t.shape) >= 2 else None
    else:
        m = t.values if t.values.ndim == 2 else None
    return None if m is None else (m.T if transposed else m)


def grid_steps(t: TensorSketch) -> np.ndarray | None:
    """Per-row grid steps of a quantised tensor's kept rows (NaN where a row has none); None if not quantised.

    Cached by content digest: the kept rows of a tensor are a function of its bytes.
    """
    m = rows(t)
    if m is None or t.bits > GRID_BITS:
        return None
    key = (t.digest, t.values.shape)
    if key not in _STEPS:
        if len(_STEPS) > _STEPS_LIMIT:
            _STEPS.clear()
        found = [row_step(r) for r in m]
        _STEPS[key] = np.array([s if s else np.nan for s in found], dtype=np.float64)
    return _STEPS[key]


def equal_share(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(entries of x equal to y's, entries of x that count): x's non-zero entries (zeros prove nothing kept)."""
    live = x != 0
    return int(np.count_nonzero(live & (x == y))), int(np.count_nonzero(live))


def level_mismatch(child: np.ndarray, parent: np.ndarray, steps: np.ndarray) -> float | None:
    """Share of a quantised child's entries whose level differs from the parent's re-quantised on the child's grid."""
    ok = np.isfinite(steps) & (steps > 0)
    if not ok.any():
        return None
    s = steps[ok][:, None]
    return float(np.mean(np.round(child[ok] / s) != np.round(parent[ok] / s)))


def snap(values: np.ndarray, steps: np.ndarray) -> float | None:
    """How much more than chance ``values`` sit on another tensor's grid: 1 for a model trained a little from it,
    about 0 for anything else (a parent's values fall anywhere between the levels). Exact zeros are left out."""
    ok = np.isfinite(steps) & (steps > 0)
    if not ok.any():
        return None
    ratio = values[ok] / steps[ok][:, None]
    live = values[ok] != 0  # an exact zero (a pruned weight) sits on every grid and says nothing
    if not live.any():
        return None
    close = float(np.mean(np.abs(ratio - np.round(ratio))[live] < SNAP))
    chance = 2 * SNAP
    return float(np.clip((close - chance) / (1 - chance), 0.0, 1.0))


def mask_fit(child: np.ndarray, parent: np.ndarray) -> float | None:
    """1 when the child's new zeros are exactly the parent's smallest-magnitude weights (magnitude pruning),
    falling towards 0 with the share of them that are not. None when the child has (almost) no new zeros.

    A relative of the true parent misorders the weights near the threshold. A dense model regrown from a
    sparse one can fit the reverse reading (its regrown weights are small); grown_from tells the two apart.
    """
    zeros = child == 0
    k = int(zeros.sum()) - int((parent == 0).sum())
    if k < max(4, 0.05 * child.size) or k >= child.size:
        return None
    magnitude = np.abs(parent)
    threshold = np.partition(magnitude.reshape(-1), k - 1)[k - 1]
    outside = float(np.mean(magnitude[zeros & (parent != 0)] > threshold * (1 + 1e-6)))
    return float(np.clip(-np.log10(outside + 1e-4) / 4, 0.0, 1.0))


def grown_from(child: np.ndarray, parent: np.ndarray) -> bool:
    """The child is the sparse parent trained without its mask: its weights at the parent's zeros are no larger
    than REGROWN times the distance its other weights moved, nor than BELOW of the parent's smallest weight.

    A regrown weight started at zero and was moved by the same optimiser as every other weight, so it is about
    as large as their movement; a magnitude-pruned weight is one of the dense model's own weights, as large as
    the weights themselves, which exceed any fine-tuning movement by the inverse of its relative distance (and
    a pruned copy that was not retrained moved nothing at all). A dense ancestor further up (a fine-tune, then
    the pruning) moved as much as it is large, so the grown weights must also sit far below the cut: pruned
    ones average about half of the smallest kept weight, regrown ones start at zero. Grid-valued tensors are
    for the grid tests: a value rounded to zero is as large as the rounding of the others.
    """
    grown = (parent == 0) & (child != 0)
    both = (parent != 0) & (child != 0)
    if grown.sum() < max(4, 0.05 * child.size) or both.sum() < 4:
        return False
    moved = float(np.mean(np.abs(child[both] - parent[both])))
    size = float(np.mean(np.abs(child[grown])))
    return moved > 0 and size <= REGROWN * moved and size <= BELOW * float(np.min(np.abs(parent[parent != 0])))


def lowrank_fit(s: np.ndarray, side: int) -> float:
    """1 when a difference is exactly low-rank (its energy beyond rank side/4 is numerical noise), towards 0 as
    that energy grows: an exact LoRA update scores 1, the same update seen from a near-copy less. ``s``: the
    difference's singular values, descending; ``side``: its smaller dimension."""
    total = float(np.sum(s**2))
    if total == 0:
        return 0.0
    tail = float(np.sum(s[max(1, side // RANK_SHARE) :] ** 2)) / total
    return float(np.clip(-np.log10(tail + 1e-10) / 10, 0.0, 1.0))
