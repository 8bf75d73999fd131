"""Fixed-size, class-order-free descriptions of a model's knowledge and of a query, in φ coordinates.

Both the training-free scorer and the learned encoders read these. A model is a *set* of anchor rows and a set
of boundary rows (pooled by the encoders, so class order cannot matter), a confidence profile over the space's
landmarks, and a few global numbers; a query is the set of its class prototypes, the set of midpoints between
prototype pairs, its mass over the landmarks and a few global numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelkin.errors import InvalidQueryData
from modelkin.retrieval.capture import Knowledge
from modelkin.retrieval.space import Space

MODEL_GLOBALS = 5
QUERY_GLOBALS = 3


@dataclass(frozen=True)
class ModelFeatures:
    anchors: np.ndarray  # (K, d + 2): φ(a_c), confidence p_c(a_c), share of the pool predicted as c
    boundary: np.ndarray  # (P, d + 2): φ(b_ij), flipped, t
    landmarks: np.ndarray  # (L,): mean top-class confidence of the pool probes nearest each landmark
    globals: np.ndarray  # (MODEL_GLOBALS,)


@dataclass(frozen=True)
class QueryFeatures:
    prototypes: np.ndarray  # (K, d)
    midpoints: np.ndarray  # (K(K-1)/2, d)
    landmarks: np.ndarray  # (L,): the query samples' mean soft assignment to the landmarks
    globals: np.ndarray  # (QUERY_GLOBALS,)


def model_features(k: Knowledge, space: Space, pool_phi: np.ndarray) -> ModelFeatures:
    probs = k.pool_probs.astype(np.float64)
    top = probs.max(axis=1)
    predicted = probs.argmax(axis=1)
    share = np.array([(predicted == c).mean() for c in k.classes])
    conf = k.anchor_probs[np.arange(len(k.classes)), k.classes].astype(np.float64)
    anchors = np.column_stack([space.encode(k.anchors), conf, share])
    boundary = np.column_stack([space.encode(k.boundary), k.flipped.astype(np.float64), k.boundary_t])
    if not len(boundary):
        boundary = np.zeros((1, anchors.shape[1]))
    nearest = space.nearest_landmark(pool_phi)
    marks = len(space.landmarks)
    totals = np.bincount(nearest, weights=top, minlength=marks)
    counts = np.bincount(nearest, minlength=marks)
    landmarks = np.where(counts > 0, totals / np.maximum(counts, 1), top.mean())
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1) / np.log(probs.shape[1])
    globals_ = np.array([
        top.mean(), entropy.mean(), len(k.classes) / 16.0, k.flipped.mean() if len(k.flipped) else 0.0,
        float(k.boundary_t.mean()) if len(k.boundary_t) else 1.0,
    ])  # fmt: skip
    return ModelFeatures(anchors, boundary, landmarks, globals_)


def query_features(x: np.ndarray, y: np.ndarray, space: Space) -> QueryFeatures:
    phi = space.encode(x)
    labels = np.unique(y)
    prototypes = np.stack([phi[y == c].mean(axis=0) for c in labels])
    i, j = np.triu_indices(len(labels), k=1)
    midpoints = (prototypes[i] + prototypes[j]) / 2.0
    spread = np.mean([np.linalg.norm(phi[y == c] - prototypes[n], axis=1).mean() for n, c in enumerate(labels)])
    between = np.linalg.norm(prototypes[i] - prototypes[j], axis=1).mean()
    globals_ = np.array([len(labels) / 16.0, spread / (between + 1e-9), np.log(len(y))])
    return QueryFeatures(prototypes, midpoints, space.soft_assign(phi).mean(axis=0), globals_)


def check_query(x: object, y: object, features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Query arrays as float32 (n, D) and int64 (n,), or a one-sentence :class:`InvalidQueryData`."""
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.ndim != 2 or xa.shape[0] == 0:
        raise InvalidQueryData(
            f"the query samples x must be a 2-D array (samples, features), got shape {list(xa.shape)}."
        )
    if ya.ndim != 1 or len(ya) != len(xa):
        raise InvalidQueryData(f"the labels y must be one per sample ({len(xa)}), got shape {list(ya.shape)}.")
    if not np.issubdtype(xa.dtype, np.number) or np.issubdtype(xa.dtype, np.complexfloating):
        raise InvalidQueryData(f"the query samples x must be real numbers, got dtype {xa.dtype}.")
    if features is not None and xa.shape[1] != features:
        raise InvalidQueryData(
            f"the query has {xa.shape[1]} features per sample, the input space takes {features}.",
            hint="give samples in the models' input space (the probe pool's feature count)",
        )
    if not np.isfinite(xa.astype(np.float64)).all():
        raise InvalidQueryData("the query samples contain NaN or inf.", hint="drop or impute those samples first")
    if ya.dtype == np.bool_ or not np.issubdtype(ya.dtype, np.number):
        raise InvalidQueryData(f"the labels y must be integers, got dtype {ya.dtype}.")
    if not np.issubdtype(ya.dtype, np.integer):
        yf = ya.astype(np.float64)
        if not np.isfinite(yf).all() or not np.all(yf == np.round(yf)):
            raise InvalidQueryData("the labels y must be integers (class indices), not fractions, NaN or inf.")
        ya = yf.astype(np.int64)
    labels, counts = np.unique(ya, return_counts=True)
    if len(labels) < 2:
        raise InvalidQueryData("the query has one class; ranking models for a task needs at least 2 classes.")
    if counts.min() < 2:
        rare = labels[counts.argmin()]
        raise InvalidQueryData(
            f"class {rare} has {counts.min()} sample; every class needs at least 2 samples.",
            hint="add samples of that class or drop it",
        )
    return xa.astype(np.float32), ya.astype(np.int64)
