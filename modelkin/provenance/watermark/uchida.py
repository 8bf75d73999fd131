"""The Uchida et al. (2017) baseline, for comparison only: a secret projection X and bits b chosen
independently of it, read from the same coordinates whatever the key.

Uchida averages a conv kernel over its output filters; the zoo's and MiniLM's marked tensors are matrices
whose row means have fewer entries than there are bits, so here w is the whole flattened tensor (the same
embedding budget NeuralMark has, without its filter and pooling). Embedding and verification mirror
NeuralMark's: least-norm post-hoc shift with the same margin rule, the same BCE regulariser, signs to verify.
Forgeable because nothing ties b to X: flipping the columns of any X whose sign disagrees matches every bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelkin.provenance.watermark.embed import SLACK, least_norm_shift
from modelkin.provenance.watermark.verify import binomial_tail


@dataclass(frozen=True, eq=False)
class UchidaKey:
    projection: np.ndarray  # numel x n
    bits: np.ndarray


def uchida_key(numel: int, bits: int, rng: np.random.Generator) -> UchidaKey:
    return UchidaKey(rng.standard_normal((numel, bits)), rng.integers(0, 2, bits).astype(np.uint8))


def uchida_embed(weight: np.ndarray, key: UchidaKey, margin: float) -> np.ndarray:
    flat = weight.astype(np.float64).reshape(-1)
    shift = least_norm_shift(flat, key.projection, key.bits, margin * float(np.linalg.norm(flat)) * SLACK)
    return (flat + shift).reshape(weight.shape).astype(weight.dtype)


def uchida_matched(weight: np.ndarray, key: UchidaKey) -> tuple[int, float]:
    """(matched bits, p-value) by the signs of w X."""
    z = weight.astype(np.float64).reshape(-1) @ key.projection
    k = int(((z > 0).astype(np.uint8) == key.bits).sum())
    return k, binomial_tail(k, len(key.bits))


def uchida_forge(weight: np.ndarray, bits: int, rng: np.random.Generator) -> UchidaKey:
    """A forger's key for a model they did not mark: random bits, a random X with disagreeing columns negated."""
    forged = uchida_key(weight.size, bits, rng)
    z = weight.astype(np.float64).reshape(-1) @ forged.projection
    wrong = (z > 0).astype(np.uint8) != forged.bits
    projection = forged.projection.copy()
    projection[:, wrong] *= -1
    return UchidaKey(projection, forged.bits)
