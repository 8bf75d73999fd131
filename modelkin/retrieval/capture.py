"""Know2Vec-style knowledge capture through a black box: only the model's outputs on probe inputs are used.

For a model ``forward`` (inputs ``(n, D)`` float32 -> logits ``(n, C)``) and a probe pool:

1. p(x) = softmax(forward(x)) on every probe;
2. for each predicted class (the ``MAX_CLASSES`` most frequent), the anchor a_c is the mean input of the
   ``ANCHORS`` probes with the highest p(x)_c;
3. for each ordered pair (i, j), bisection on x(t) = (1 - t)·a_i + t·a_j finds the first t where the top label
   leaves the label at a_i (``BISECTION_STEPS`` batched calls); pairs that never flip are recorded as such;
4. the knowledge is the anchors and boundary points (raw inputs, so any encoder can re-read them), the model's
   distributions there, and its distribution and raw logits over the pool (the logits keep what softmax
   squashes: LogME on them ranks models better than on log-probabilities).

Every step is a fixed function of the pool and the outputs (stable sorts, no random state), so capture is
deterministic for a deterministic model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelkin.errors import CaptureError

MAX_CLASSES = 16
ANCHORS = 8
BISECTION_STEPS = 10
BATCH = 1024
LOGIT_LIMIT = 6e4  # stored as float16, whose largest finite value is 65504

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Knowledge:
    """What a model revealed about itself on a probe pool."""

    classes: np.ndarray  # (K,) int64: the model's output indices the anchors stand for
    anchors: np.ndarray  # (K, D) float32 inputs
    anchor_probs: np.ndarray  # (K, C) float32
    pairs: np.ndarray  # (P, 2) int64 indices into ``classes`` (i, j), i != j
    boundary: np.ndarray  # (P, D) float32 inputs: first point on a_i -> a_j whose top label leaves a_i's
    boundary_t: np.ndarray  # (P,) float32 in (0, 1]
    flipped: np.ndarray  # (P,) bool: False when the label never left along the segment
    boundary_probs: np.ndarray  # (P, C) float32
    pool_probs: np.ndarray  # (N, C) float16: the output distribution over the pool
    pool_logits: np.ndarray  # (N, C) float16: the raw outputs over the pool
    forward_calls: int

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _ARRAYS}


_ARRAYS = ("classes", "anchors", "anchor_probs", "pairs", "boundary", "boundary_t", "flipped", "boundary_probs",
           "pool_probs", "pool_logits")  # fmt: skip


class _Counted:
    """Calls ``forward`` in batches, counts the calls and refuses outputs that are not finite (n, C) logits."""

    def __init__(self, forward: Forward, name: str) -> None:
        self.forward, self.name, self.calls, self.width = forward, name, 0, -1

    def probs(self, x: np.ndarray) -> np.ndarray:
        return _softmax(self.logits(x))

    def logits(self, x: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(x), BATCH):
            self.calls += 1
            try:
                out = np.asarray(self.forward(np.ascontiguousarray(x[start : start + BATCH], dtype=np.float32)))
            except CaptureError:
                raise
            except Exception as exc:
                raise CaptureError(f"the forward of {self.name} raised {type(exc).__name__}: {exc}") from exc
            if out.ndim != 2 or out.shape[0] != min(BATCH, len(x) - start) or out.shape[1] < 2:
                raise CaptureError(
                    f"the forward of {self.name} returned shape {list(out.shape)}, not (samples, classes)",
                    hint="retrieval runs classifiers: forward must return one row of at least 2 logits per input",
                )
            if self.width not in (-1, out.shape[1]):
                raise CaptureError(f"the forward of {self.name} changed its number of outputs between calls")
            self.width = out.shape[1]
            if not np.isfinite(out).all():
                raise CaptureError(f"the forward of {self.name} returned NaN or inf on probe inputs")
            parts.append(out.astype(np.float64))
        return np.concatenate(parts)


def capture(forward: Forward, pool: np.ndarray, name: str = "the model") -> Knowledge:
    """The knowledge of one model on ``pool`` (see the module docstring)."""
    run = _Counted(forward, name)
    pool = np.asarray(pool, dtype=np.float32)
    logits = run.logits(pool)
    probs = _softmax(logits)
    predicted = probs.argmax(axis=1)
    counts = np.bincount(predicted, minlength=probs.shape[1])
    order = np.lexsort((np.arange(len(counts)), -counts))  # most frequent first, ties by class index
    classes = order[counts[order] > 0][:MAX_CLASSES].astype(np.int64)
    anchors = np.stack([pool[_top(probs[:, c], ANCHORS)].mean(axis=0) for c in classes]).astype(np.float32)
    anchor_probs = run.probs(anchors)
    pairs = np.array([(i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j], dtype=np.int64)
    pairs = pairs.reshape(-1, 2)
    if len(pairs):
        boundary, t, flipped, boundary_probs = _bisect(run, anchors, anchor_probs.argmax(axis=1), pairs)
    else:
        d, c = pool.shape[1], probs.shape[1]
        boundary, t = np.zeros((0, d), np.float32), np.zeros(0, np.float32)
        flipped, boundary_probs = np.zeros(0, bool), np.zeros((0, c))
    return Knowledge(
        classes=classes,
        anchors=anchors,
        anchor_probs=anchor_probs.astype(np.float32),
        pairs=pairs,
        boundary=boundary,
        boundary_t=t,
        flipped=flipped,
        boundary_probs=boundary_probs.astype(np.float32),
        pool_probs=probs.astype(np.float16),
        pool_logits=np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT).astype(np.float16),
        forward_calls=run.calls,
    )


def _bisect(
    run: _Counted, anchors: np.ndarray, start_label: np.ndarray, pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs at once: each step is one batched call over every pair's current midpoint."""
    a, b = anchors[pairs[:, 0]].astype(np.float64), anchors[pairs[:, 1]].astype(np.float64)
    label = start_label[pairs[:, 0]]
    end = run.probs((b).astype(np.float32)).argmax(axis=1)
    flipped = end != label
    lo, hi = np.zeros(len(pairs)), np.ones(len(pairs))
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        same = run.probs(((1 - mid)[:, None] * a + mid[:, None] * b).astype(np.float32)).argmax(axis=1) == label
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    t = np.where(flipped, hi, 1.0)
    boundary = ((1 - t)[:, None] * a + t[:, None] * b).astype(np.float32)
    return boundary, t.astype(np.float32), flipped, run.probs(boundary)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, ties broken by index (a stable, platform-independent order)."""
    return np.argsort(-scores, kind="stable")[:k]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))
