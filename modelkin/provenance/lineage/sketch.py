"""Per-tensor weight sketches: small, seeded, linear summaries that estimate distances between tensors.

A tensor of at most ``EXACT_LIMIT`` entries is kept exactly (the reference zoo's models are kept whole). A larger
matrix W (m x n; higher-order tensors are viewed as shape[0] x rest) becomes Y = A W Bᵀ with Gaussian A (r x m)
and B (r x n) seeded by m and n alone, so every model with that dimension uses the same projection: the sketch is
linear (sketch(c) - sketch(p) = sketch(c - p)), preserves Frobenius distances in expectation, never raises the rank
of a difference (the LoRA test still works), and sketch(Wᵀ) = sketch(W)ᵀ (transposed tensors still pair). A long
vector becomes a CountSketch. Exact statistics (norm, sparsity, quantisation levels, kurtosis) are measured on the
full tensor while it streams past, so one pass over the weights is all that registration pays.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 1
EXACT_LIMIT = 16384
RANK = 64
BUCKETS = RANK * RANK
COARSE = 64  # length of the per-tensor vector in the candidate index
SAMPLE = 4096  # seeded coordinates kept of a sketched tensor: where it is zero, what it kept (pruning)
SEED = 0x5EED
_GRID_ROWS = 8
_GRID_COLUMNS = 4096
FLOAT_BITS = 24.0


@dataclass(frozen=True)
class TensorSketch:
    """One tensor: its exact values or a seeded sketch, and exact statistics of the full tensor."""

    name: str
    shape: tuple[int, ...]
    values: np.ndarray  # float32; exact: the tensor itself; else (RANK, RANK) or (BUCKETS,)
    exact: bool
    norm: float
    zeros: float  # share of entries that are exactly zero
    bits: float  # median bits of the value grid per row: 24 for floats, <= 8 for int8/int4 dequantised weights
    kurtosis: float  # excess kurtosis of the non-zero entries
    digest: str  # sha256 of the tensor's float32 bytes: equal digests are identical tensors
    sample: np.ndarray | None = None  # a sketched tensor's values at SAMPLE seeded coordinates (None when exact)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def kept(self) -> np.ndarray:
        """Values at the same coordinates for every tensor of this shape: all of an exact one, else the sample."""
        return self.values if self.exact or self.sample is None else self.sample

    @property
    def matrix(self) -> np.ndarray | None:
        """The exact values (or the two-sided sketch) as a matrix, for rank tests; None for vectors."""
        if self.exact:
            return self.values.reshape(self.shape[0], -1) if len(self.shape) >= 2 else None
        return self.values if self.values.ndim == 2 else None


@dataclass(frozen=True)
class ModelSketch:
    """Every floating-point tensor of one model; ``skipped`` names tensors left out (and why)."""

    tensors: tuple[TensorSketch, ...]
    skipped: tuple[str, ...] = ()

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(t.digest for t in self.tensors)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([SEED, *key])


@functools.lru_cache(maxsize=256)
def _projection(dim: int) -> np.ndarray:
    """The r x dim Gaussian projection every model uses for a dimension of size ``dim``."""
    return (_rng(1, dim).standard_normal((RANK, dim)) / np.sqrt(RANK)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def _coordinates(size: int) -> np.ndarray:
    return np.sort(_rng(3, size).choice(size, SAMPLE, replace=False))


@functools.lru_cache(maxsize=256)
def _count_sketch(length: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(2, length, buckets)
    return rng.integers(0, buckets, length), rng.choice(np.array([-1.0, 1.0], dtype=np.float32), length)


def count_sketch(x: np.ndarray, buckets: int) -> np.ndarray:
    """A seeded CountSketch of a flat vector: each entry goes to one bucket with a random sign."""
    index, sign = _count_sketch(x.size, buckets)
    return np.bincount(index, weights=x * sign, minlength=buckets).astype(np.float32)


def _row_bits(row: np.ndarray) -> float:
    """Bits of the evenly spaced grid a row's values sit on (a dequantised int-k row: k), else FLOAT_BITS.

    The grid step is the smallest gap between distinct values or a small fraction of it (a row of few
    entries need not hold two neighbouring levels).
    """
    u = np.unique(row.astype(np.float64))
    if u.size < 2:
        return 1.0
    gaps = np.diff(u)
    span = u[-1] - u[0]
    for divisor in range(1, 9):
        step = gaps.min() / divisor
        if step <= span * 2.0**-FLOAT_BITS:
            break
        ratio = gaps / step
        if np.abs(ratio - np.round(ratio)).max() < 0.02:
            return float(min(FLOAT_BITS, np.log2(span / step + 1)))
    return FLOAT_BITS


def _grid_bits(flat2d: np.ndarray) -> float:
    rows = flat2d[:: max(1, len(flat2d) // _GRID_ROWS)][:_GRID_ROWS, :_GRID_COLUMNS]
    return float(np.median([_row_bits(r) for r in rows]))


def sketch_tensor(name: str, array: np.ndarray) -> TensorSketch:
    """Sketch one floating-point array (any shape); raises ValueError on NaN or infinity."""
    x = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"tensor {name!r} holds NaN or infinite values")
    shape = tuple(int(d) for d in x.shape)
    flat = x.reshape(-1)
    matrix = x.reshape(shape[0], -1) if len(shape) >= 2 else flat.reshape(1, -1)
    sample = None if flat.size <= EXACT_LIMIT else flat[_coordinates(flat.size)].copy()
    # kurtosis of the non-zero entries (pruning's zeros would swamp the shape of the weights), on the seeded
    # sample for large tensors: every model with this shape is measured on the same coordinates
    seen = flat if sample is None else sample
    nonzero = seen[seen != 0].astype(np.float64)
    centred = nonzero - nonzero.mean() if nonzero.size else nonzero
    var = float(np.mean(centred**2)) if centred.size else 0.0
    kurt = float(np.mean(centred**4) / var**2 - 3.0) if var > 0 else 0.0
    if flat.size <= EXACT_LIMIT:
        values, exact = flat.copy(), True
    elif len(shape) >= 2:
        values, exact = _projection(matrix.shape[0]) @ matrix @ _projection(matrix.shape[1]).T, False
    else:
        values, exact = count_sketch(flat, BUCKETS), False
    return TensorSketch(
        name=name,
        shape=shape,
        values=values.astype(np.float32),
        exact=exact,
        norm=float(np.linalg.norm(flat)),
        zeros=float(np.count_nonzero(flat == 0) / max(1, flat.size)),
        bits=_grid_bits(matrix) if flat.size else FLOAT_BITS,
        kurtosis=kurt,
        digest=hashlib.sha256(x.data).hexdigest(),
        sample=sample,
    )


def sketch_model(tensors: Iterable[tuple[str, Any]]) -> ModelSketch:
    """Sketch a stream of (name, tensor) pairs (torch tensors or arrays); non-float tensors are skipped.

    A tensor with NaN or infinity is skipped too and named in ``skipped``: it says nothing about ancestry.
    """
    out: list[TensorSketch] = []
    skipped: list[str] = []
    for name, tensor in tensors:
        array = _as_numpy(tensor)
        if array is None or array.size == 0:
            continue
        try:
            out.append(sketch_tensor(name, array))
        except ValueError:
            skipped.append(name)
    return ModelSketch(tuple(out), tuple(skipped))


def _as_numpy(tensor: Any) -> np.ndarray | None:
    """A float array, or None for integer and boolean tensors (position ids, masks, counters)."""
    if isinstance(tensor, np.ndarray):
        return tensor if np.issubdtype(tensor.dtype, np.floating) else None
    if not tensor.is_floating_point():
        return None
    return tensor.detach().to("cpu").float().numpy()


def coarse(t: TensorSketch) -> np.ndarray:
    """The fixed-length vector the candidate index compares (a CountSketch of the tensor's sketch)."""
    return count_sketch(t.values.reshape(-1), COARSE)


# -- serialisation: one .npz per model, no pickles ------------------------------------------------------------


def to_bytes(sketch: ModelSketch) -> bytes:
    meta = {
        "format": FORMAT,
        "skipped": list(sketch.skipped),
        "tensors": [
            {"name": t.name, "shape": list(t.shape), "exact": t.exact, "norm": t.norm, "zeros": t.zeros,
             "bits": t.bits, "kurtosis": t.kurtosis, "digest": t.digest}
            for t in sketch.tensors
        ],
    }  # fmt: skip
    arrays: dict[str, Any] = {f"v{i}": t.values for i, t in enumerate(sketch.tensors)}
    arrays.update({f"s{i}": t.sample for i, t in enumerate(sketch.tensors) if t.sample is not None})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def from_bytes(data: bytes) -> ModelSketch:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("format") != FORMAT:
            raise ValueError(f"lineage sketch format {meta.get('format')!r} is not {FORMAT}")
        tensors = tuple(
            TensorSketch(
                m["name"],
                tuple(m["shape"]),
                z[f"v{i}"],
                m["exact"],
                m["norm"],
                m["zeros"],
                m["bits"],
                m["kurtosis"],
                m["digest"],
            )  # fmt: skip
            for i, m in enumerate(meta["tensors"])
        )
    return ModelSketch(tensors, tuple(meta["skipped"]))
