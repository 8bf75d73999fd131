"""What a change of each output unit of the marked tensor costs downstream, read from the weights alone.

Weight-space least norm treats every entry alike, but a unit whose output the next layer barely reads can move
far more than one it leans on. With the next layer's weight N (inputs along dim 1) and inputs treated as
isotropic (nothing else is known without data), changing row i of the marked tensor by d_i changes the next
layer's pre-activations by |N[:, i]| |d_i|, so the data-free embedding weighs row i by |N[:, i]|^2 (normalised
to mean 1). The floor keeps the cheapest rows from taking the whole change: a mark packed into a few rows is
cheap, but an attacker's mark (made by the same rule) lands on the same rows and wipes it out, so the floor
sets the fidelity / overwrite-resistance trade-off and is calibrated with the margin
(benchmarks/ownership.py --calibration-zoo).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

# calibrated with DEFAULT_MARGIN on zoo seed 0 (benchmarks/results/ownership.md)
DEFAULT_FLOOR = 0.4


def _natural(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def consumer(shapes: Mapping[str, Sequence[int]], layer: str) -> str | None:
    """The tensor that reads ``layer``'s outputs in a sequential stack: the next weight (>= 2 dims) in depth order,
    when its name differs from ``layer``'s only in its indices (``trunk.0.weight`` -> ``trunk.2.weight``) and its
    input width (dim 1) equals ``layer``'s output width (dim 0). Else None, and every row costs the same: where
    names do not follow the order of computation (a transformer block's residual stream has many readers), the
    next name says nothing about who reads the outputs."""
    weights = sorted((n for n, s in shapes.items() if len(s) >= 2), key=_natural)
    later = weights[weights.index(layer) + 1 :]
    if not later or _pattern(later[0]) != _pattern(layer):
        return None
    return later[0] if shapes[later[0]][1] == shapes[layer][0] else None


def _pattern(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def row_cost(next_weight: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Per output unit of the marked tensor: |N[:, i]|^2 over the mean, floored (N = the consumer's weight)."""
    n = np.asarray(next_weight, dtype=np.float64)
    energy = (np.moveaxis(n, 1, 0).reshape(n.shape[1], -1) ** 2).sum(axis=1)
    mean = float(energy.mean())
    return np.maximum(energy / mean, floor) if mean > 0 else np.ones(len(energy))
