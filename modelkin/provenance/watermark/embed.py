"""Embedding: post-hoc (data-free, least-norm) and a training-time regulariser for any training loop.

Post-hoc: find the smallest change d of the pooled vector w~ such that every bit's projection sits on its
side of zero by at least ``margin``: minimise |d|^2 subject to s_i (w~ + d) K_i >= margin, s_i = 2 b_i - 1.
Its dual is a non-negative least-squares problem in n variables (d = A^T lam, lam >= 0), solved exactly by
scipy's NNLS on the Cholesky factor. The change is spread over the m entries pooled into each slot so that
their average moves by exactly d_j. With a per-row cost c (cost.py: what a change of each output unit costs
downstream), the problem is weighted: minimise sum_e c_e delta_e^2. Slot j's cheapest split of d_j puts
delta_e = m d_j (1/c_e) / sum(1/c), which costs g_j d_j^2 with g_j = m^2 / sum(1/c); substituting
d = v / sqrt(g) turns it back into plain least norm in v. The margin is given in units of |w~| (the spread of
the projections of an unmarked tensor), so it reads as the relative disturbance of the pooled weights each bit
survives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import cho_factor, solve_triangular
from scipy.optimize import nnls

from modelkin.provenance.watermark.filter import pool_indices
from modelkin.provenance.watermark.keys import WatermarkKey
from modelkin.provenance.watermark.verify import pooled

if TYPE_CHECKING:
    import torch

# calibrated on zoo seed 0 with cost.DEFAULT_FLOOR: the (margin, floor) costing least accuracy whose marks survive
# lr-1e-2 fine-tuning, 70% pruning and an attacker's overwrite in >= 99% of models
# (benchmarks/ownership.py --calibration-zoo; results/ownership.md)
DEFAULT_MARGIN = 1.0
_SLACK = 1.02  # aim a little past the margin so float32 rounding of the result cannot undo it


def least_norm_shift(w_pooled: np.ndarray, matrix: np.ndarray, bits: np.ndarray, margin: float) -> np.ndarray:
    """The least-norm d with (2 b_i - 1) ((w~ + d) K)_i >= margin for every i (exact, via the NNLS dual)."""
    signs = 2.0 * bits.astype(np.float64) - 1.0
    a = signs[:, None] * matrix.astype(np.float64).T  # n x k0
    need = margin - a @ w_pooled
    if (need <= 0).all():
        return np.zeros_like(w_pooled)
    gram = a @ a.T
    lower, _ = cho_factor(gram, lower=True)
    lower = np.tril(lower)
    # min 1/2 lam^T G lam - need^T lam over lam >= 0  ==  min |L^T lam - L^-1 need|^2, G = L L^T
    lam, _ = nnls(lower.T, solve_triangular(lower, need, lower=True), maxiter=50 * len(need))
    return a.T @ lam


def embed_posthoc(
    weight: np.ndarray,
    key: WatermarkKey,
    rounds: int,
    pool: int | None = None,
    margin: float = DEFAULT_MARGIN,
    row_cost: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``weight`` (any shape, float) carrying the key's watermark with every bit beyond ``margin``,
    changed least in the norm that weighs each output unit (dim 0) by ``row_cost`` (default: all alike)."""
    flat = np.asarray(weight, dtype=np.float64).reshape(-1).copy()
    index = pool_indices(flat.size, key.watermark(), rounds, key.rows, pool)
    w = pooled(flat, index)
    scale = float(np.linalg.norm(w)) or 1.0
    cost = np.ones(np.shape(weight)[0]) if row_cost is None else np.asarray(row_cost, dtype=np.float64)
    inverse = 1.0 / cost[index // (flat.size // len(cost))]  # (m, rows): 1 / c_e of every pooled entry
    root_g = np.sqrt(index.shape[0] ** 2 / inverse.sum(axis=0))
    v = least_norm_shift(w * root_g, key.matrix / root_g[:, None], key.watermark(), margin * scale * _SLACK)
    flat[index] += (v / root_g)[None, :] * index.shape[0] * inverse / inverse.sum(axis=0)
    return flat.reshape(np.shape(weight)).astype(weight.dtype)


class Regulariser:
    """lambda * mean BCE-with-logits(w~ K, b) for one weight tensor: add ``reg(param)`` to the task loss.

    >>> reg = Regulariser(key, rounds=2, numel=layer.weight.numel())   # doctest: +SKIP
    >>> loss = task_loss + reg(layer.weight)                            # doctest: +SKIP
    """

    def __init__(self, key: WatermarkKey, rounds: int, numel: int, pool: int | None = None, lam: float = 1.0) -> None:
        import torch

        bits = key.watermark()
        self.index = torch.from_numpy(pool_indices(numel, bits, rounds, key.rows, pool))
        self.matrix = torch.from_numpy(key.matrix.astype(np.float32))
        self.target = torch.from_numpy(bits.astype(np.float32))
        self.lam = lam

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional as F

        z = weight.reshape(-1)[self.index].float().mean(0) @ self.matrix
        return self.lam * F.binary_cross_entropy_with_logits(z, self.target)
