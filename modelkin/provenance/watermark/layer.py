"""Which tensor carries the watermark, and with how many filter rounds: one deterministic rule.

The same rule runs at embedding and (when nothing is recorded) at verification, so the verifier tests exactly
one tensor and the p-value needs no correction for multiple tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelkin.provenance.watermark.filter import pool_size

MAX_ROUNDS = 4
PREFERRED_POOL = 32
SMALL_MODEL_POOL = 8
# heads, embeddings, norms and biases are replaced, tied or too small to hold a mark
_EXCLUDED = re.compile(
    r"(^|[._])(head|heads|classifier|lm_head|pooler|\w*embed\w*|wte|wpe|\w*norm\w*|ln_?\d*|bias)([._]|$)"
)
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16", "float64", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Plan:
    layer: str
    rounds: int
    pool: int


def eligible(name: str, shape: Sequence[int], dtype: str) -> bool:
    return len(shape) >= 2 and dtype in FLOAT_DTYPES and not _EXCLUDED.search(name.lower())


def plan_rounds(numel: int, bits: np.ndarray, rows: int) -> tuple[int, int]:
    """(R, m): the most rounds that keep m >= 32, else m >= 8, else one round (m = 0 when nothing fits)."""
    sizes = {r: pool_size(numel, bits, r, rows) for r in range(1, MAX_ROUNDS + 1)}
    for floor in (PREFERRED_POOL, SMALL_MODEL_POOL):
        fitting = [r for r, m in sizes.items() if m >= floor]
        if fitting:
            return max(fitting), sizes[max(fitting)]
    return 1, sizes[1]  # a small tensor: one round keeps the most entries per slot


def depth_key(name: str) -> list[object]:
    """Sort key putting tensor names in depth order: indices compare as numbers (``trunk.10`` after ``trunk.2``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def choose_layer(shapes: Mapping[str, tuple[Sequence[int], str]], bits: np.ndarray, rows: int) -> Plan:
    """The tensor to mark: among eligible tensors, the best pooling tier (m >= 32, >= 8, >= 1), then the
    largest, then the middle one in depth order (a mid-depth weight changes least under head replacement and
    feeds the most later layers)."""
    candidates = []
    for name, (shape, dtype) in shapes.items():
        if not eligible(name, shape, dtype):
            continue
        numel = int(np.prod(shape))
        rounds, m = plan_rounds(numel, bits, rows)
        if m >= 1:
            tier = 2 if m >= PREFERRED_POOL else 1 if m >= SMALL_MODEL_POOL else 0
            candidates.append((tier, numel, name, rounds, m))
    if not candidates:
        sizes = [(int(np.prod(s)), n) for n, (s, dtype) in shapes.items() if eligible(n, s, dtype)]
        largest = f"; the largest eligible one, {max(sizes)[1]}, has {max(sizes)[0]}" if sizes else ""
        raise ValueError(f"no weight matrix is large enough for a {rows}-row key (each needs >= {2 * rows} "
                         f"entries{largest})")  # fmt: skip
    best = max((c[0], c[1]) for c in candidates)
    ties = sorted((c for c in candidates if (c[0], c[1]) == best), key=lambda c: depth_key(c[2]))
    _, _, name, rounds, m = ties[(len(ties) - 1) // 2]
    return Plan(name, rounds, m)
