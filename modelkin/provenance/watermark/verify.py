"""Extraction and the verdict: matched bits k of n and the exact binomial tail P(Binomial(n, 1/2) >= k).

Under the null hypothesis (a key drawn independently of the model) each extracted bit matches with
probability 1/2 independently, because K's columns are independent Gaussians; so the p-value is exact, not an
approximation, and a detection at p < 2^-64 means such a match happens by chance once in 2^64 unrelated keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from modelkin.provenance.watermark.filter import pool_indices
from modelkin.provenance.watermark.keys import WatermarkKey

DEFAULT_FPR = 2.0**-64


@dataclass(frozen=True)
class Detection:
    matched_bits: int
    bits: int
    p_value: float
    hash_ok: bool
    detected: bool


def binomial_tail(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) >= k), computed exactly in integers (no underflow before 2^-1074)."""
    if k <= 0:
        return 1.0
    return float(Fraction(sum(math.comb(n, j) for j in range(k, n + 1)), 2**n))


def pooled(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """w~: the (m, rows) selected entries averaged over m, in float64."""
    return flat.astype(np.float64)[index].mean(axis=0)


def projections(flat: np.ndarray, key: WatermarkKey, rounds: int, pool: int | None = None) -> np.ndarray:
    """z = w~ K for the key's recomputed bits (its filter decides which entries are read)."""
    index = pool_indices(flat.size, key.watermark(), rounds, key.rows, pool)
    return pooled(flat, index) @ key.matrix.astype(np.float64)


def detect(
    flat: np.ndarray, key: WatermarkKey, rounds: int, pool: int | None = None, fpr: float = DEFAULT_FPR
) -> Detection:
    """Extract with the bits recomputed from K; detected when H(K) is the key's claimed bits and p < fpr."""
    bits = key.watermark()
    z = projections(flat, key, rounds, pool)
    k = int(((z > 0).astype(np.uint8) == bits).sum())
    p = binomial_tail(k, key.bits)
    ok = key.hash_ok()
    return Detection(k, key.bits, p, ok, ok and p < fpr)


def corrected(detection: Detection, tests: int, fpr: float = DEFAULT_FPR) -> Detection:
    """``detection`` as one of ``tests`` readings of a suspect: its p-value times ``tests`` (Bonferroni), so the
    chance that any reading of an unrelated model is detected stays below ``fpr``."""
    p = min(1.0, tests * detection.p_value)
    return Detection(detection.matched_bits, detection.bits, p, detection.hash_ok, detection.hash_ok and p < fpr)
