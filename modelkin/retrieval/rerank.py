"""``--rerank N``: which N models to run on the query samples, and how to rank them once they have run.

Measured on the seed-0 zoo's meta-test tasks (tasks the encoders never saw; the seed-1 test zoo was not used),
the hybrid's regret came from two places about equally: the truly best model was missing from the N run
(stage 2's top N are often near-copies of one another, e.g. siblings fine-tuned from one parent), and LogME
alone often chose the wrong one of the N. So the N are picked for recall, greedily by stage-2 score minus
``DIVERSITY`` times the candidate's highest prediction agreement (on the probe pool, from stored outputs) with a
model already picked; and the N are ranked by the sum of three z-scores over them: LogME and leave-one-out kNN
on the real features, which read the query differently, and the stage-2 score, which saw every candidate.
``DIVERSITY`` and the weights were chosen on those seed-0 tasks (a grid of 0 / 0.5 / 1 / 2 and 0 / 0.25 / 0.5 /
1, the best mean regret@1 over 5, 10 and 20 shots).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelkin.retrieval.mixing import zscore

DIVERSITY = 1.0  # stage-2 z-score given up per unit of prediction agreement with a model already picked
WINDOW = 60  # the stage-2 leaders the picks are drawn from
KNN_WEIGHT = 0.5  # beside LogME's weight of 1
STAGE_WEIGHT = 0.5


def pick(scores: np.ndarray, predictions: Sequence[np.ndarray], n: int) -> list[int]:
    """Indices of ``n`` models to run, from stage-2 ``scores`` (sorted best first) and each model's predicted
    class on the probe pool: high scorers that disagree with the ones already picked."""
    z = zscore(scores)
    window = min(len(scores), max(WINDOW, n))
    preds = [np.asarray(p) for p in predictions[:window]]
    chosen: list[int] = []
    closest = np.zeros(window)  # each candidate's highest agreement with a chosen model
    for _ in range(min(n, window)):
        value = z[:window] - DIVERSITY * closest
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        closest = np.maximum(closest, [float((p == preds[best]).mean()) for p in preds])
    return chosen


def combine(
    logme: np.ndarray, knn: np.ndarray, stage: np.ndarray, knn_weight: float = KNN_WEIGHT,
    stage_weight: float = STAGE_WEIGHT,
) -> np.ndarray:
    """The rerank score of each model run: z(LogME) + knn_weight·z(kNN) + stage_weight·z(stage-2 score); the
    weights are open so that benchmarks/retrieval_levers.py can replay other settings through this formula."""
    return zscore(logme) + knn_weight * zscore(knn) + stage_weight * zscore(stage)
