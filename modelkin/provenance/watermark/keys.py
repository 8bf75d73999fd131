"""NeuralMark keys: a secret Gaussian matrix K, the watermark bits hashed from it, and a commitment to it.

The bits are ``SHAKE-256(tag ‖ k0 ‖ n ‖ K)`` read most significant bit first, as in the authors' code (which
hashes K alone); the filter rounds are left out of the hash because they are chosen per model at embedding
time, after the key exists. Because the bits are a hash of K, a forger cannot pick bits that suit a model and
then solve for a key: a key optimised against a model no longer hashes to the bits it was optimised for.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from dataclasses import dataclass

import numpy as np

BITS_TAG = b"modelkin/neuralmark/bits/v1"
COMMIT_TAG = b"modelkin/neuralmark/commitment/v1"
DEFAULT_ROWS = 512
DEFAULT_BITS = 256


@dataclass(frozen=True, eq=False)
class WatermarkKey:
    """K (rows x bits, float32) and the bits it was generated with (``claimed_bits``, checked against H(K))."""

    matrix: np.ndarray
    claimed_bits: np.ndarray

    def __post_init__(self) -> None:
        self.matrix.flags.writeable = False  # the cached bits below stay those of this very matrix

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def bits(self) -> int:
        return int(self.matrix.shape[1])

    def watermark(self) -> np.ndarray:
        """The bits recomputed from K (never trusted from storage; hashed once per key object)."""
        return self._bits

    @functools.cached_property
    def _bits(self) -> np.ndarray:
        bits = watermark_bits(self.matrix)
        bits.flags.writeable = False
        return bits

    def hash_ok(self) -> bool:
        """Whether K still hashes to the bits it claims: false for a key optimised (forged) after generation."""
        return bool(np.array_equal(self.watermark(), self.claimed_bits))

    def commitment(self) -> str:
        return commitment(self.matrix)


def check_shape(rows: int, bits: int) -> None:
    """Bits are whole bytes, and no more bits than rows (each bit is one linear constraint on ``rows`` values)."""
    if bits < 8 or bits % 8:
        raise ValueError(f"a watermark has a positive multiple of 8 bits, not {bits}")
    if rows < bits:
        raise ValueError(f"a key needs at least as many rows as bits ({rows} rows < {bits} bits)")


def generate_key(rows: int = DEFAULT_ROWS, bits: int = DEFAULT_BITS, seed: bytes | None = None) -> WatermarkKey:
    """A key with N(0, 1) entries from SHAKE-256 of 32 bytes of OS entropy (or of ``seed``, for reproducible
    benchmarks), turned into Gaussians by the Box-Muller transform."""
    check_shape(rows, bits)
    count = rows * bits
    stream = hashlib.shake_256(b"modelkin/neuralmark/key/v1" + (os.urandom(32) if seed is None else seed))
    raw = np.frombuffer(stream.digest(16 * ((count + 1) // 2)), dtype="<u8").reshape(2, -1)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53  # in (0, 1]: log is finite
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(u1))
    normal = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])[:count]
    matrix = normal.astype(np.float32).reshape(rows, bits)
    return WatermarkKey(matrix, watermark_bits(matrix))


def _parameters(matrix: np.ndarray) -> bytes:
    rows, bits = matrix.shape
    return struct.pack(">II", rows, bits) + np.ascontiguousarray(matrix, dtype="<f4").tobytes()


def watermark_bits(matrix: np.ndarray) -> np.ndarray:
    """b = the first n bits of SHAKE-256(tag ‖ k0 ‖ n ‖ K as float32 little-endian, row-major), MSB first."""
    n = int(matrix.shape[1])
    digest = hashlib.shake_256(BITS_TAG + _parameters(matrix)).digest(n // 8)
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:n].astype(np.uint8)


def commitment(matrix: np.ndarray) -> str:
    """``sha256:<hex>`` of (tag ‖ k0 ‖ n ‖ K): publishing it reveals nothing of K, revealing K opens it."""
    return "sha256:" + hashlib.sha256(COMMIT_TAG + _parameters(matrix)).hexdigest()


def bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def bits_from_hex(text: str, n: int) -> np.ndarray:
    raw = bytes.fromhex(text)
    if len(raw) * 8 != n:
        raise ValueError(f"{len(raw) * 8} stored bits for a {n}-bit key")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8)).astype(np.uint8)
