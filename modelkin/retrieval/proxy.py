"""Zero-forward-pass transferability from stored knowledge: LogME on the outputs a model gave on probes.

A query sample's nearest probe (in φ coordinates) stands in for it, and a model's stored logits on that probe
stand in for its outputs on the sample; LogME of those proxy features against the query labels scores
the model. No registered model runs at query time: the outputs were captured at registration. It costs one
small LogME per candidate, so search applies it to the vector index's shortlist, never to the whole registry.
"""

from __future__ import annotations

import numpy as np

from modelkin.retrieval.baselines import logme


def nearest_probes(query_phi: np.ndarray, pool_phi: np.ndarray) -> np.ndarray:
    """Index of each query sample's nearest probe (squared Euclidean distance in φ, ties by index)."""
    d2 = (query_phi**2).sum(1)[:, None] + (pool_phi**2).sum(1)[None, :] - 2.0 * query_phi @ pool_phi.T
    return np.asarray(d2.argmin(axis=1))


def knowledge_logme(pool_logits: np.ndarray, nearest: np.ndarray, y: np.ndarray) -> float:
    """LogME of the model's stored logits at the query samples' nearest probes."""
    return logme(np.asarray(pool_logits, dtype=np.float64)[nearest], y)
