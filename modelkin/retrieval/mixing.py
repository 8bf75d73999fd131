"""Search's second stage: the knowledge-LogME score and the learned vector score, summed after z-scoring.

The two see different things: knowledge LogME reads a model's stored outputs near the query's samples, the
learned score reads its whole decision structure against the query's class layout, as trained on ground truth.
Their relative weight is not a constant of the code but is fitted when the encoders are trained, by
cross-fitting: encoders trained on all folds but one score the held-out fold's tasks, and the weight with the
best mean weighted tau (``rank=None``: the top models count most) over every held-out task wins. The weight is
therefore measured on tasks the encoder never saw, like a query's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # the learned score's weight; 0: knowledge alone
FOLDS = 2


def zscore(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std())
    return (v - v.mean()) / sd if sd > 1e-12 else np.zeros_like(v)


def mix(knowledge: np.ndarray, learned: np.ndarray, weight: float | np.ndarray) -> np.ndarray:
    """The stage-2 score of each shortlisted model: z(knowledge) + weight · z(learned) (one weight, or one per
    model)."""
    return zscore(knowledge) + weight * zscore(learned)


def folds(n: int, k: int = FOLDS) -> list[np.ndarray]:
    """Task indices of each fold (round robin, so folds differ by at most one task); none with fewer than 2k."""
    return [np.arange(f, n, k) for f in range(k)] if n >= 2 * k else []


def fit_weight(knowledge: Sequence[np.ndarray], learned: Sequence[np.ndarray], truth: Sequence[np.ndarray]
               ) -> tuple[float, dict[str, float]]:  # fmt: skip
    """The weight of :data:`WEIGHTS` with the best mean weighted tau over the held-out tasks, and every
    weight's mean (ties: the smaller weight)."""
    from scipy.stats import weightedtau  # training only: scipy.stats costs a second to import, search skips it

    means = {}
    for w in WEIGHTS:
        taus = [weightedtau(t, mix(k, s, w), rank=None)[0] for k, s, t in zip(knowledge, learned, truth, strict=True)]
        means[w] = float(np.nanmean(taus)) if taus else float("nan")
    finite = [w for w in WEIGHTS if np.isfinite(means[w])]
    best = max(finite, key=lambda w: (means[w], -w)) if finite else 0.0
    return best, {str(w): round(m, 4) for w, m in means.items()}
