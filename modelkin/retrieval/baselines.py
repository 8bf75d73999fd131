"""Transferability estimators that run a candidate on the query samples (the baselines, and ``--rerank``).

Each takes the candidate's outputs on the n query samples and the labels: ``features`` (n, D) for LogME and kNN
(penultimate features where the model exposes a ``trunk``, else its outputs), ``probs`` (n, Z) softmax outputs
for LEEP and NCE. Higher is better for all four.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

KNN_K = 3


def logme(features: np.ndarray, y: np.ndarray, iterations: int = 100) -> float:
    """LogME (You et al., ICML 2021): mean over classes of the per-sample log evidence of a Bayesian linear model."""
    return float(logme_stack(np.asarray(features, dtype=np.float64)[None], y, iterations)[0])


def logme_stack(features: np.ndarray, y: np.ndarray, iterations: int = 100) -> np.ndarray:
    """LogME of each of B candidates' features ``(B, n, D)`` on the same labels, all at once.

    Fixed-point updates of α, β on the SVD of F, so each iteration costs O(rank) (ALGORITHMS.md). Every
    candidate and class iterates together, and each (candidate, class) stops updating once its α and β have
    converged, so the result is the per-class loop's; search scores hundreds of candidates per query this way.
    """
    f = np.asarray(features, dtype=np.float64)
    _, n, d = f.shape
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)  # u (B, n, r)
    s = (sigma**2)[:, None, :]  # (B, 1, r)
    rank = s.shape[2]
    onehot = (np.asarray(y)[:, None] == np.unique(y)[None, :]).astype(np.float64)  # (n, K)
    x2 = np.swapaxes(np.swapaxes(u, 1, 2) @ onehot, 1, 2) ** 2  # (B, K, r)
    outside = onehot.sum(axis=0)[None, :] - x2.sum(axis=2)  # residual outside F's column space, (B, K)
    alpha, beta = np.ones(outside.shape), np.ones(outside.shape)
    m2, res2 = np.zeros(outside.shape), np.zeros(outside.shape)
    active = np.ones(outside.shape, dtype=bool)
    for _ in range(iterations):
        a, b = alpha[..., None], beta[..., None]
        gamma = (b * s / (a + b * s)).sum(axis=2)
        step_m2 = (b**2 * s * x2 / (a + b * s) ** 2).sum(axis=2)  # m^T m
        step_res2 = (a**2 * x2 / (a + b * s) ** 2).sum(axis=2) + outside  # ||F m - y||^2
        new_alpha = gamma / np.maximum(step_m2, 1e-12)
        new_beta = np.maximum(n - gamma, 1e-12) / np.maximum(step_res2, 1e-12)
        done = (np.abs(new_alpha - alpha) / alpha < 1e-5) & (np.abs(new_beta - beta) / beta < 1e-5)
        m2, res2 = np.where(active, step_m2, m2), np.where(active, step_res2, res2)
        alpha, beta = np.where(active, new_alpha, alpha), np.where(active, new_beta, beta)
        active &= ~done
        if not active.any():
            break
    logdet = np.log(alpha[..., None] + beta[..., None] * s).sum(axis=2) + (d - rank) * np.log(alpha)
    evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * res2
                - alpha / 2 * m2 - logdet / 2)  # fmt: skip
    return np.asarray((evidence / n).mean(axis=1))


def leep(probs: np.ndarray, y: np.ndarray) -> float:
    """LEEP (Nguyen et al., ICML 2020): log-likelihood of the labels through the empirical P(y | z)."""
    theta = np.asarray(probs, dtype=np.float64)
    labels = np.unique(y, return_inverse=True)[1]
    joint = np.zeros((labels.max() + 1, theta.shape[1]))
    np.add.at(joint, labels, theta)
    joint /= len(labels)
    conditional = joint / np.clip(joint.sum(axis=0, keepdims=True), 1e-12, None)
    likelihood = (theta @ conditional.T)[np.arange(len(labels)), labels]
    return float(np.mean(np.log(np.clip(likelihood, 1e-12, None))))


def nce(probs: np.ndarray, y: np.ndarray) -> float:
    """NCE (Tran et al., ICCV 2019): −H(Y | Z) with z the source model's top label."""
    z = np.asarray(probs).argmax(axis=1)
    labels = np.unique(y, return_inverse=True)[1]
    joint = np.zeros((labels.max() + 1, np.asarray(probs).shape[1]))
    np.add.at(joint, (labels, z), 1.0)
    joint /= len(labels)
    pz = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    conditional = np.where(nz, joint / np.clip(pz, 1e-12, None), 1.0)
    return float((joint[nz] * np.log(conditional[nz])).sum())


def knn(features: np.ndarray, y: np.ndarray, k: int = KNN_K) -> float:
    """Leave-one-out accuracy of a cosine k-nearest-neighbour vote (ties: the larger summed similarity)."""
    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    f /= np.clip(np.linalg.norm(f, axis=1, keepdims=True), 1e-12, None)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    labels = np.unique(y, return_inverse=True)[1]
    k = min(k, len(labels) - 1)
    near = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(labels), labels.max() + 1))
    rows = np.repeat(np.arange(len(labels)), k)
    np.add.at(votes, (rows, labels[near].ravel()), 1.0 + 1e-6 * sim[rows, near.ravel()])
    return float((votes.argmax(axis=1) == labels).mean())


Estimator = Callable[[np.ndarray, np.ndarray], float]
ESTIMATORS: dict[str, Estimator] = {"logme": logme, "leep": leep, "nce": nce, "knn": knn}
USES_FEATURES = {"logme": True, "leep": False, "nce": False, "knn": True}
