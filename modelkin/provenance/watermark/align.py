"""Undo channel permutations of the marked tensor against the owner's reference before extraction.

A function-preserving shuffle of hidden units permutes a weight's rows (its outputs) and its columns (the
previous layer's outputs). Both are unknown, so rows are first matched on a permutation-invariant signature
(each row's sorted values), then columns by |cosine| given those rows, then rows again given the columns;
each match is a Hungarian assignment on 1 - |cosine| (scipy's linear_sum_assignment).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def _match(suspect: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """perm such that suspect[perm] lines up with reference, row for row."""
    s = suspect / (np.linalg.norm(suspect, axis=1, keepdims=True) + 1e-12)
    r = reference / (np.linalg.norm(reference, axis=1, keepdims=True) + 1e-12)
    _, cols = linear_sum_assignment(1.0 - np.abs(r @ s.T))
    return cols


def align(suspect: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``suspect`` with its output and input channels reordered to match ``reference`` (same shape)."""
    if suspect.shape != reference.shape:
        raise ValueError(f"cannot align a {list(suspect.shape)} tensor to a {list(reference.shape)} reference")
    shape = suspect.shape
    s = suspect.astype(np.float64).reshape(shape[0], shape[1], -1)
    r = reference.astype(np.float64).reshape(shape[0], shape[1], -1)
    rows = _match(np.sort(s.reshape(shape[0], -1), axis=1), np.sort(r.reshape(shape[0], -1), axis=1))
    for _ in range(2):
        s = s[rows]
        cols = _match(s.transpose(1, 0, 2).reshape(shape[1], -1), r.transpose(1, 0, 2).reshape(shape[1], -1))
        s = s[:, cols]
        rows = _match(s.reshape(shape[0], -1), r.reshape(shape[0], -1))
    return s[rows].reshape(shape).astype(suspect.dtype)
