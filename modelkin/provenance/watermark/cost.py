"""What a change of the marked tensor costs downstream, read from the weights alone.

Weight-space least norm treats every entry alike, but the next layer N reads the marked layer's units unequally
and in combination: a change d of column c of the marked weight (units' incoming weights from input c) moves
the next layer's pre-activations by N D d, with D the 0/1 pattern of units active for that input. Treating the
inputs as isotropic (nothing else is known without data) and two units as active together with probability
``together`` (each alone: 1), the expected squared change is d^T M d with
M = together * N^T N + (1 - together) * diag(N^T N). Directions N cannot see (N^T N is rank-deficient when the
next layer is narrower) then cost little, which is where the data-free embedding puts the mark. M is
normalised to mean diagonal 1, and ``floor`` * I is added so no direction is free: a mark packed into what the
next layer cannot see is cheap, but an attacker's mark (made by the same rule) lands in the same directions and
wipes it out, so the floor sets the fidelity / overwrite-resistance trade-off. Floor and ``together`` are
calibrated with the margin (benchmarks/ownership.py --calibration-zoo).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from modelkin.provenance.watermark.layer import depth_key

# calibrated with DEFAULT_MARGIN on zoo seed 0 (benchmarks/results/ownership.md)
DEFAULT_FLOOR = 0.2
DEFAULT_TOGETHER = 0.5


def _pattern(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def consumer(shapes: Mapping[str, Sequence[int]], layer: str) -> str | None:
    """The tensor that reads ``layer``'s outputs in a sequential stack: the next weight (>= 2 dims) in depth order,
    when its name differs from ``layer``'s only in its indices (``trunk.0.weight`` -> ``trunk.2.weight``) and its
    input width (dim 1) equals ``layer``'s output width (dim 0). Else None, and every entry costs the same: where
    names do not follow the order of computation (a transformer block's residual stream has many readers), the
    next name says nothing about who reads the outputs."""
    weights = sorted((n for n, s in shapes.items() if len(s) >= 2), key=depth_key)
    later = weights[weights.index(layer) + 1 :]
    if not later or _pattern(later[0]) != _pattern(layer):
        return None
    return later[0] if shapes[later[0]][1] == shapes[layer][0] else None


def unit_metric(
    next_weight: np.ndarray, floor: float = DEFAULT_FLOOR, together: float = DEFAULT_TOGETHER
) -> np.ndarray:
    """M (units x units of the marked layer): the expected downstream cost of a change, plus ``floor`` * I."""
    n = np.asarray(next_weight, dtype=np.float64)
    reads = np.moveaxis(n, 1, 0).reshape(n.shape[1], -1)  # unit i -> how the next layer reads it
    gram = reads @ reads.T
    metric = together * gram + (1.0 - together) * np.diag(np.diag(gram))
    scale = float(np.diag(metric).mean())
    return (metric / scale if scale > 0 else np.eye(len(gram))) + floor * np.eye(len(gram))
