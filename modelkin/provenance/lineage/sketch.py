"""Per-tensor weight sketches: small, seeded, linear summaries that estimate distances between tensors.

A tensor of at most ``EXACT_LIMIT`` entries is kept exactly (the reference zoo's models are kept whole). A larger
matrix W (m x n; higher-order tensors are viewed as shape[0] x rest) keeps the block W[rows, cols] of ``BLOCK``
seeded rows and columns, chosen by m and n alone, so every model with that dimension keeps the same
coordinates. The sketch is linear (sketch(c) - sketch(p) = sketch(c - p)), estimates relative distances, never
raises the rank of a difference (the LoRA test still works), and sketch(Wᵀ) = sketch(W)ᵀ (transposed tensors
still pair). A long vector, or a matrix narrower than the block, keeps a seeded sample of its entries instead.
Norm, sparsity, quantisation grid and kurtosis of a large tensor are measured on what it keeps, the same
coordinates for every model, so comparisons stay like for like. Reading a memory-mapped file, a sketch touches
only the rows it keeps: a small share of a large model's bytes, which registration has just written (and may
already have dropped from the page cache). Identity is the sha256 of the tensor's bytes, which registration
has already computed, so nothing is read twice for it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 2  # 1: whole-matrix projections (its exact-only sketches still read as 2)
EXACT_LIMIT = 16384
COARSE = 64  # length of the per-tensor vector in the candidate index
BLOCK = 64  # rows and columns of a large matrix that its sketch keeps
SAMPLE = BLOCK * BLOCK  # seeded entries a long vector or narrow matrix keeps
SEED = 0x5EED
_GRID_ROWS = 8
_GRID_COLUMNS = 4096
FLOAT_BITS = 24.0


@dataclass(frozen=True)
class TensorSketch:
    """One tensor: its exact values or a seeded sketch, and exact statistics of the full tensor."""

    name: str
    shape: tuple[int, ...]
    values: np.ndarray  # float32; exact: the tensor itself; else a (BLOCK, BLOCK) block or (SAMPLE,) entries
    exact: bool
    norm: float
    zeros: float  # share of entries that are exactly zero
    bits: float  # median bits of the value grid per row: 24 for floats, <= 8 for int8/int4 dequantised weights
    kurtosis: float  # excess kurtosis of the non-zero entries
    digest: str  # sha256 of the tensor's bytes: equal digests are identical tensors

    @property
    def numel(self) -> int:
        return math.prod(self.shape)  # 1 for a scalar's empty shape

    @property
    def kept(self) -> np.ndarray:
        """Values at the same coordinates for every tensor of this shape (all of an exact one), flat."""
        return self.values.reshape(-1)

    @property
    def matrix(self) -> np.ndarray | None:
        """The exact values (or the kept block) as a matrix, for rank tests; None for vectors."""
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
def _block_indices(dim: int) -> np.ndarray:
    """The rows (or columns) of a dimension of size ``dim`` that every model's sketch keeps."""
    return np.sort(_rng(4, dim).choice(dim, BLOCK, replace=False))


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


_DIVISORS = np.arange(1, 9, dtype=np.float64)[:, None]


def row_step(row: np.ndarray) -> float | None:
    """The step of the evenly spaced grid a row's values sit on (a dequantised int-k row), or None.

    The grid step is the smallest gap between distinct values or a small fraction of it (a row of few
    entries need not hold two neighbouring levels); the divisors are tried all at once. A row of one value
    has no step (0.0: a grid of one level).
    """
    u = np.unique(row.astype(np.float64))
    if u.size < 2:
        return 0.0
    gaps = np.diff(u)
    span = u[-1] - u[0]
    steps = gaps.min() / _DIVISORS  # (8, 1)
    usable = steps[:, 0] > span * 2.0**-FLOAT_BITS
    ratio = gaps[None, :] / steps
    fits = usable & (np.abs(ratio - np.round(ratio)).max(axis=1) < 0.02)
    # divisors past the first too-fine step are not tried (the loop this replaces stopped there)
    fits &= np.cumprod(usable).astype(bool)
    return float(steps[int(np.argmax(fits)), 0]) if fits.any() else None


def _row_bits(row: np.ndarray) -> float:
    """Bits of the grid a row sits on (a dequantised int-k row: k), else FLOAT_BITS."""
    step = row_step(row)
    if step is None:
        return FLOAT_BITS
    if step == 0.0:
        return 1.0
    span = float(row.max()) - float(row.min())
    return float(min(FLOAT_BITS, np.log2(span / step + 1)))


def _grid_bits(flat2d: np.ndarray) -> float:
    rows = flat2d[:: max(1, len(flat2d) // _GRID_ROWS)][:_GRID_ROWS, :_GRID_COLUMNS]
    return float(np.median([_row_bits(r) for r in rows]))


def _kept(array: np.ndarray) -> np.ndarray:
    """What a large tensor's sketch keeps, as float32: its block, or a seeded sample of its entries."""
    if array.ndim >= 2:
        matrix = array.reshape(array.shape[0], -1)
        if min(matrix.shape) >= BLOCK:
            rows, columns = _block_indices(matrix.shape[0]), _block_indices(matrix.shape[1])
            return np.asarray(matrix[rows][:, columns], dtype=np.float32)  # a memory map reads only these rows
    flat = array.reshape(-1)
    return np.asarray(flat[_coordinates(flat.size)], dtype=np.float32)


def sketch_tensor(name: str, array: np.ndarray, digest: str | None = None) -> TensorSketch:
    """Sketch one floating-point array (any shape, in memory or memory-mapped); ValueError on NaN or infinity.

    ``digest`` is the sha256 of the tensor's bytes when the caller has it; otherwise it is computed here.
    """
    shape = tuple(int(d) for d in array.shape)
    size = int(np.prod(shape)) if shape else 1
    exact = size <= EXACT_LIMIT
    values = np.array(array, dtype=np.float32).reshape(-1) if exact else _kept(array)
    if not np.isfinite(values).all():
        raise ValueError(f"tensor {name!r} holds NaN or infinite values")
    flat = values.reshape(-1)
    rows = values if values.ndim == 2 else flat.reshape(shape[0], -1) if exact and len(shape) >= 2 else flat[None]
    # kurtosis of the non-zero entries (pruning's zeros would swamp the shape of the weights); a large tensor's
    # on what it keeps: every model with this shape is measured on the same coordinates
    nonzero = flat[flat != 0].astype(np.float64)
    centred = nonzero - nonzero.mean() if nonzero.size else nonzero
    var = float(np.mean(centred**2)) if centred.size else 0.0
    kurt = float(np.mean(centred**4) / var**2 - 3.0) if var > 0 else 0.0
    if digest is None:
        digest = hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()
    return TensorSketch(
        name=name,
        shape=shape,
        values=values,
        exact=exact,
        norm=float(np.linalg.norm(flat) * np.sqrt(size / max(1, flat.size))),
        zeros=float(np.count_nonzero(flat == 0) / max(1, flat.size)),
        bits=_grid_bits(rows) if len(shape) >= 2 else FLOAT_BITS,  # quantisers' grids are per output row
        kurtosis=kurt,
        digest=digest,
    )


def sketch_model(tensors: Iterable[tuple[str, Any]], digests: Mapping[str, str] | None = None) -> ModelSketch:
    """Sketch a stream of (name, tensor) pairs (torch tensors or arrays); non-float tensors are skipped.

    ``digests`` (name -> sha256 of the tensor's bytes) spares hashing what registration already hashed. A tensor
    with NaN or infinity is skipped too and named in ``skipped``: it says nothing about ancestry.
    """
    out: list[TensorSketch] = []
    skipped: list[str] = []
    for name, tensor in tensors:
        array = _as_numpy(tensor)
        if array is None or array.size == 0:
            continue
        try:
            out.append(sketch_tensor(name, array, (digests or {}).get(name)))
        except ValueError:
            skipped.append(name)
    return ModelSketch(tuple(out), tuple(skipped))


_NUMPY_FLOATS = {"torch.float16", "torch.float32", "torch.float64"}


def _as_numpy(tensor: Any) -> np.ndarray | None:
    """A float array, or None for integer and boolean tensors (position ids, masks, counters)."""
    if isinstance(tensor, np.ndarray):
        return tensor if np.issubdtype(tensor.dtype, np.floating) else None
    if not tensor.is_floating_point():
        return None
    tensor = tensor.detach().to("cpu")
    return tensor.numpy() if str(tensor.dtype) in _NUMPY_FLOATS else tensor.float().numpy()


def coarse(t: TensorSketch) -> np.ndarray:
    """The fixed-length vector the candidate index compares (a CountSketch of the tensor's sketch)."""
    return count_sketch(t.values.reshape(-1), COARSE)


# -- serialisation: one .npz per model, no pickles ------------------------------------------------------------


def to_bytes(sketch: ModelSketch) -> bytes:
    """One .npz: every tensor's values concatenated in one array (a zip member per tensor costs more than it)."""
    meta = {
        "format": FORMAT,
        "skipped": list(sketch.skipped),
        "tensors": [
            {"name": t.name, "shape": list(t.shape), "exact": t.exact, "norm": t.norm, "zeros": t.zeros,
             "bits": t.bits, "kurtosis": t.kurtosis, "digest": t.digest, "values": list(t.values.shape)}
            for t in sketch.tensors
        ],
    }  # fmt: skip
    values = [t.values.reshape(-1) for t in sketch.tensors]
    buf = io.BytesIO()
    np.savez(buf, values=np.concatenate(values) if values else np.zeros(0, np.float32),
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))  # fmt: skip
    return buf.getvalue()


class StaleSketch(ValueError):
    """A stored sketch made by another sketch format: the version must be sketched again."""


def from_bytes(data: bytes) -> ModelSketch:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta.get("format") == 1 and all(m["exact"] for m in meta["tensors"]):  # exact values read the same
            arrays = [z[f"v{i}"] for i in range(len(meta["tensors"]))]
        elif meta.get("format") == FORMAT:
            flat = z["values"]
            sizes = [int(np.prod(m["values"])) for m in meta["tensors"]]
            cuts = np.cumsum([0, *sizes])
            arrays = [flat[cuts[i] : cuts[i + 1]].reshape(m["values"]) for i, m in enumerate(meta["tensors"])]
        else:
            raise StaleSketch(f"lineage sketch format {meta.get('format')!r} is not {FORMAT}")
    tensors = tuple(
        TensorSketch(
            m["name"], tuple(m["shape"]), v, m["exact"], m["norm"], m["zeros"], m["bits"], m["kurtosis"], m["digest"]
        )  # fmt: skip
        for m, v in zip(meta["tensors"], arrays, strict=True)
    )
    return ModelSketch(tensors, tuple(meta["skipped"]))
