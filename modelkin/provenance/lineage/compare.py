"""Precise comparison of a model with one candidate relative, over the tensors both share.

Per shared tensor the relative distance d_t = ‖x − y‖ / mean(‖x‖, ‖y‖); the model-level distance is their
median weighted by √numel, so a retrained head, a resized vocabulary or a few new layers cannot decide, and
tensors smaller than ``TINY`` entries count only when nothing larger is shared. "Related is not parent": the
share of shared parameters whose tensors stayed close (``agreeing``) says whether a candidate kept the whole
trunk (a parent) or only, say, its embeddings (a relative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelkin.provenance.lineage.pairing import Pair, _values, content_distance, pair_tensors
from modelkin.provenance.lineage.sketch import FLOAT_BITS, ModelSketch

TINY = 64
AGREE = 1.0  # independent tensors sit near √2; one below 1 kept (some of) a common ancestor's content
RANK_TOLERANCE = 1e-3  # singular values below this share of the largest are numerical noise
MIN_RANK_DIM = 8


@dataclass(frozen=True)
class Comparison:
    """How a query model relates to one candidate, from the tensors they share."""

    distance: float  # weighted median relative distance; inf when nothing is shared
    coverage: float  # shared parameters / the query's parameters
    shared: int  # number of paired tensors
    agreeing: float  # share of shared parameters in tensors closer than AGREE
    identical: bool  # every tensor of both models paired and equal
    lowrank: float  # share of changed matrices whose difference is numerically low-rank
    zeros: float  # parameter-weighted share of exact zeros in the query's shared tensors, minus the candidate's
    bits: float  # the candidate's grid bits minus the query's (dequantised children have fewer)
    kurtosis: float  # mean excess kurtosis of the query's shared matrices minus the candidate's
    log_norm: float  # log of the query's shared norm over the candidate's
    pruned_from: float  # +1: the query's zeros sit on the candidate's smallest weights (pruned from it); -1: reverse
    pairs: tuple[Pair, ...]

    @property
    def features(self) -> list[float]:
        """What the fitted parent model reads (calibration.EDGE, then the antisymmetric calibration.DIRECTION)."""
        # weight statistics speak only where no pruning or quantisation separates the two models: those
        # change kurtosis and norm for reasons of their own
        plain = float(abs(self.zeros) < 0.05 and abs(self.bits) < 1)
        return [-np.log(self.distance + 1e-4), self.coverage, self.agreeing, self.lowrank, self.pruned_from,
                self.bits / FLOAT_BITS, plain * np.tanh(self.kurtosis / 10),
                plain * self.log_norm]  # fmt: skip


NOTHING_SHARED = Comparison(float("inf"), 0.0, 0, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ())


def magnitude_signature(child: np.ndarray, parent: np.ndarray) -> float | None:
    """1 when the child's zeros sit exactly on the parent's smallest-magnitude weights (magnitude pruning), else 0.

    The test is exact: pruning's mask separates the parent's magnitudes perfectly, while a dense model regrown
    from a sparse one (the reverse edge) leaves small weights on both sides of any threshold. None when the
    child has (almost) no new zeros to explain.
    """
    zeros = child == 0
    k = int(zeros.sum()) - int((parent == 0).sum())
    if k < max(4, 0.05 * child.size) or k >= child.size:
        return None
    magnitude = np.abs(parent)
    threshold = np.partition(magnitude.reshape(-1), k - 1)[k - 1]
    return float(np.mean(magnitude[zeros & (parent != 0)] <= threshold * (1 + 1e-6)) >= 0.999)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _numerical_rank(m: np.ndarray) -> int:
    s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
    return int(np.count_nonzero(s > RANK_TOLERANCE * s[0])) if s.size and s[0] > 0 else 0


def compare(query: ModelSketch, candidate: ModelSketch, pairs: Sequence[Pair] | None = None) -> Comparison:
    """Compare ``query`` (the possible child) with ``candidate`` (the possible parent)."""
    pairs = tuple(pair_tensors(query, candidate) if pairs is None else pairs)
    if not pairs:
        return NOTHING_SHARED
    q, c = query.tensors, candidate.tensors
    sizes = np.array([q[p.a].numel for p in pairs], dtype=np.float64)
    dist = np.array([content_distance(q[p.a], c[p.b], p.transposed) for p in pairs])
    use = sizes >= TINY if (sizes >= TINY).any() else np.ones_like(sizes, dtype=bool)
    distance = weighted_median(dist[use], np.sqrt(sizes[use]))
    shared = sizes.sum()
    identical = (
        len(pairs) == len(q) == len(c) and all(q[p.a].digest == c[p.b].digest for p in pairs if not p.transposed)
        and not any(p.transposed for p in pairs)
    )  # fmt: skip
    low, changed = 0, 0
    for p, d in zip(pairs, dist, strict=True):
        x, y = q[p.a].matrix, c[p.b].matrix
        if x is None or y is None or d < 1e-6 or min(x.shape) < MIN_RANK_DIM:
            continue
        diff = x - (y.T if p.transposed else y)
        if diff.shape != x.shape:
            continue
        changed += 1
        low += _numerical_rank(diff) <= min(diff.shape) // 2
    mats = [p for p in pairs if len(q[p.a].shape) >= 2]
    signatures: list[float] = []
    for p in mats:
        tq, tc = q[p.a], c[p.b]
        if not p.transposed and tq.exact == tc.exact:
            forward, backward = magnitude_signature(tq.kept, tc.kept), magnitude_signature(tc.kept, tq.kept)
            if forward is not None or backward is not None:
                signatures.append((forward or 0.0) - (backward or 0.0))
    mat_w = np.array([q[p.a].numel for p in mats], dtype=np.float64)

    def mean(values: list[float], w: np.ndarray) -> float:
        return float(np.dot(values, w) / w.sum()) if len(values) and w.sum() > 0 else 0.0

    return Comparison(
        distance=distance,
        coverage=float(shared / max(1, query.parameters)),
        shared=len(pairs),
        agreeing=float(sizes[dist < AGREE].sum() / shared),
        identical=bool(identical and distance == 0.0),
        lowrank=low / changed if changed else 0.0,
        zeros=mean([q[p.a].zeros - c[p.b].zeros for p in mats], mat_w),
        bits=mean([c[p.b].bits - q[p.a].bits for p in mats], mat_w),
        kurtosis=mean([q[p.a].kurtosis - c[p.b].kurtosis for p in mats], mat_w),
        log_norm=float(
            np.log(
                (np.sqrt(sum(q[p.a].norm ** 2 for p in pairs)) + 1e-12)
                / (np.sqrt(sum(c[p.b].norm ** 2 for p in pairs)) + 1e-12)
            )
        ),
        pruned_from=float(np.mean(signatures)) if signatures else 0.0,
        pairs=pairs,
    )


@dataclass(frozen=True)
class MergeFit:
    parents: tuple[int, int]  # indices into the candidate list
    weights: tuple[float, float]
    residual: float  # relative residual of the two-parent fit
    single: float  # the best one-parent relative residual (a scaled copy of one candidate)


def fit_merge(
    query: ModelSketch, candidates: Sequence[ModelSketch], pairs: Sequence[Sequence[Pair]]
) -> MergeFit | None:
    """The best non-negative two-parent fit θ_q ≈ w₁θ₁ + w₂θ₂ over the tensors every candidate shares.

    Sketches are linear, so the fit on sketches is the fit on the weights. A pair whose unconstrained least
    squares weights are not both positive has its non-negative optimum at a single parent, so it is skipped.
    """
    if len(candidates) < 2:
        return None
    common = set.intersection(*({p.a for p in ps if query.tensors[p.a].numel >= TINY} for ps in pairs))
    if not common:
        return None
    order = sorted(common)
    target = np.concatenate([query.tensors[i].values.reshape(-1) for i in order]).astype(np.float64)
    columns = []
    for cand, ps in zip(candidates, pairs, strict=True):
        by_a = {p.a: p for p in ps}
        columns.append(np.concatenate([_values(cand.tensors[by_a[i].b], by_a[i].transposed) for i in order]))
    m = np.stack(columns, axis=1).astype(np.float64)
    yy = float(target @ target)
    if yy == 0:
        return None
    gram, proj = m.T @ m, m.T @ target  # every fit below is a small solve on these (one pass over the weights)

    def residual(idx: list[int], w: np.ndarray) -> float:
        sub = gram[np.ix_(idx, idx)]
        return float(np.sqrt(max(0.0, yy - 2 * w @ proj[idx] + w @ sub @ w) / yy))

    singles = [residual([k], np.array([max(0.0, proj[k] / gram[k, k])])) if gram[k, k] > 0 else 1.0
               for k in range(m.shape[1])]  # fmt: skip
    best: MergeFit | None = None
    for i in range(m.shape[1]):
        for j in range(i + 1, m.shape[1]):
            try:
                w = np.linalg.solve(gram[np.ix_([i, j], [i, j])], proj[[i, j]])
            except np.linalg.LinAlgError:
                continue
            if (w <= 0).any():  # the non-negative optimum lies on an edge: a one-parent fit, not a merge
                continue
            res = residual([i, j], w)
            if best is None or res < best.residual:
                best = MergeFit((i, j), (float(w[0]), float(w[1])), res, min(singles))
    return best
