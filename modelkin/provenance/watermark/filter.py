"""The hashed filter and the pooling: which entries of the target tensor carry the watermark, and how.

For r = 1..R the flattened tensor is truncated to a multiple of n entries, the bits are tiled over it, and the
entries under a 1 bit are kept (in order). The first m*k0 survivors, reshaped to (m, k0), are averaged over m:
pooled slot j averages entries k0 apart. Because the bits decide which entries are read, another key reads
other entries: an attacker's watermark cannot be written onto the owner's coordinates.
"""

from __future__ import annotations

import numpy as np


def survivors(numel: int, bits: np.ndarray, rounds: int) -> np.ndarray:
    """Flat indices (into the tensor) of the entries that pass ``rounds`` rounds of the filter."""
    index = np.arange(numel, dtype=np.int64)
    n = len(bits)
    keep = bits.astype(bool)
    for _ in range(rounds):
        usable = (len(index) // n) * n
        index = index[:usable][np.tile(keep, usable // n)]
    return index


def pool_size(numel: int, bits: np.ndarray, rounds: int, rows: int) -> int:
    """m: how many entries each of the ``rows`` pooled slots averages (0 when the tensor is too small)."""
    return len(survivors(numel, bits, rounds)) // rows


def pool_indices(numel: int, bits: np.ndarray, rounds: int, rows: int, pool: int | None = None) -> np.ndarray:
    """An (m, rows) matrix of flat indices: column j lists the entries averaged into pooled slot j."""
    kept = survivors(numel, bits, rounds)
    available = len(kept) // rows
    m = available if pool is None else pool
    if m < 1 or m > available:
        raise ValueError(
            f"a tensor of {numel} entries keeps {len(kept)} after {rounds} filter round(s), "
            f"fewer than the {max(m, 1) * rows} that {max(m, 1)} x {rows} pooling needs"
        )
    return kept[: m * rows].reshape(m, rows)
