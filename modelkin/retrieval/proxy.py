"""Zero-forward-pass transferability from stored knowledge: LogME on the outputs a model gave on probes.

A query sample's nearest probes (in φ coordinates) stand in for it, and a kernel-weighted mean of a model's
stored logits on them stands in for its outputs on the sample; LogME of those proxy features against the query
labels scores the model. No registered model runs at query time: the outputs were captured at registration. The
kernel width is the query's own median squared distance to its nearest probe, so it adapts to how densely the
pool covers the query (samples that are probes get their probe's outputs alone). It costs one small LogME per
candidate, so search applies it to the vector index's shortlist, never to the whole registry.

The proxy features are centred over the query samples first (an intercept LogME's linear model lacks): logits
carry a large offset common to every sample, and on the seed-0 zoo's 44 tasks centring lifted this score's
weighted tau by 0.03-0.04, more than any richer capture measured there (Jacobian sketches, interpolations,
input scales: ``benchmarks/results/retrieval-capture-ceiling.md``). The LogME baseline stays the published,
uncentred estimator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelkin.retrieval.baselines import logme_stack

NEIGHBOURS = 3  # probes averaged per query sample (chosen on the seed-0 zoo's meta-train tasks)


def nearest_probes(query_phi: np.ndarray, pool_phi: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Each query sample's ``k`` nearest probes (squared Euclidean distance in φ, ties by index) and their
    kernel weights (rows sum to 1)."""
    d2 = (query_phi**2).sum(1)[:, None] + (pool_phi**2).sum(1)[None, :] - 2.0 * query_phi @ pool_phi.T
    d2 = np.maximum(d2, 0.0)
    near = np.argsort(d2, axis=1, kind="stable")[:, : min(k, len(pool_phi))]
    dist = np.take_along_axis(d2, near, axis=1)
    width = max(float(np.median(dist[:, 0])), 1e-12)
    weights = np.exp(-(dist - dist[:, :1]) / width)
    return near, weights / weights.sum(axis=1, keepdims=True)


def knowledge_logme(pool_logits: Sequence[np.ndarray], nearest: tuple[np.ndarray, np.ndarray], y: np.ndarray
                    ) -> np.ndarray:  # fmt: skip
    """LogME of the kernel-weighted mean of each model's stored logits at the query samples' nearest probes,
    centred over the query samples."""
    near, weights = nearest
    scores = np.zeros(len(pool_logits))
    widths = np.array([np.shape(p)[1] for p in pool_logits])
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        stack = np.stack([np.asarray(pool_logits[int(i)], dtype=np.float64)[near] for i in members])  # (B, n, k, C)
        proxy = (stack * weights[None, ..., None]).sum(axis=2)  # (B, n, C)
        scores[members] = logme_stack(proxy - proxy.mean(axis=1, keepdims=True), y)
    return scores
