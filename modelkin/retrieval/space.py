"""The shared encoder φ of an input space, fitted on its probe pool: standardise, then PCA.

φ is a pure function of the pool, so every model's knowledge and every query land in the same coordinates and
re-fitting on the same pool gives the same numbers (SVD signs are fixed by a rule, not left to LAPACK). The
space also carries landmarks (farthest-point samples of φ(pool)) that summarise where in the space a model is
confident and where a query's samples lie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIMS = 32
LANDMARKS = 64


@dataclass(frozen=True)
class Space:
    """φ(x) = ((x - mean) / scale) @ components.T, and landmarks in φ coordinates with their bandwidth."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    landmarks: np.ndarray
    bandwidth: float

    @property
    def features(self) -> int:
        return int(self.mean.shape[0])

    def encode(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(z @ self.components.T)

    def nearest_landmark(self, phi: np.ndarray) -> np.ndarray:
        return np.asarray(_sq_dists(phi, self.landmarks).argmin(axis=1))

    def soft_assign(self, phi: np.ndarray) -> np.ndarray:
        """Each row a distribution over landmarks (a Gaussian kernel, normalised)."""
        logits = -_sq_dists(phi, self.landmarks) / (2.0 * self.bandwidth**2)
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        return np.asarray(w / w.sum(axis=1, keepdims=True))


def fit_space(pool: np.ndarray, dims: int = DIMS, landmarks: int = LANDMARKS) -> Space:
    """Fit φ on the pool (deterministic: no random state anywhere)."""
    x = np.asarray(pool, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    components = vt[: min(dims, vt.shape[0])]
    # LAPACK may return any sign per component: make each one's largest entry positive
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    phi = z @ components.T
    marks = _farthest_points(phi, min(landmarks, len(phi)))
    nearest = np.sqrt(_sq_dists(phi, marks).min(axis=1))
    bandwidth = float(np.median(nearest)) or 1.0
    return Space(mean, scale, components, marks, bandwidth)


def _farthest_points(phi: np.ndarray, k: int) -> np.ndarray:
    """Greedy farthest-point sampling from the point nearest the centre: spread out, and deterministic."""
    chosen = [int(np.argmin((phi**2).sum(axis=1)))]
    dist = _sq_dists(phi, phi[chosen]).ravel()
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, _sq_dists(phi, phi[[nxt]]).ravel())
    return np.asarray(phi[chosen])


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.asarray(np.maximum(d, 0.0))
