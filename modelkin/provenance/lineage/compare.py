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
from modelkin.provenance.lineage.signatures import (
    GRID_BITS,
    equal_share,
    grid_steps,
    grown_from,
    level_mismatch,
    lowrank_fit,
    mask_fit,
    rows,
    snap,
)
from modelkin.provenance.lineage.sketch import ModelSketch, TensorSketch

TINY = 64
AGREE = 1.0  # independent tensors sit near √2; one below 1 kept (some of) a common ancestor's content
RANK_TOLERANCE = 1e-3  # singular values below this share of the largest are numerical noise
MIN_RANK_DIM = 8
MERGE_EXACT = 1e-3  # relative residual of a merge whose weights are an exact average (float rounding aside)
MERGE_MIN_WEIGHT = 0.1
REGROWN_FIT = 0.5  # lowrank_fit at or above this: the difference's energy beyond low rank is below 1e-5


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
    mean_distance: float = float("inf")  # √numel-weighted mean of the (capped) per-tensor distances, small ones too
    equal: float = 0.0  # share of the query's non-zero kept entries equal to the candidate's, bit for bit
    levels: float = 0.0  # 1: a quantised query's levels are the candidate's re-quantised on its grid (signatures)
    lowrank_fit: float = 0.0  # how exactly low-rank the changed matrices' differences are (signatures)
    snap: float = 0.0  # +1: the query sits on the quantised candidate's grid (trained a little from it); -1: reverse
    reverse_levels: float = 0.0  # 1: the quantised candidate is the query re-quantised on its grid (its child)

    @property
    def features(self) -> list[float]:
        """What the fitted parent model reads (calibration.EDGE, then the antisymmetric calibration.DIRECTION)."""
        # weight statistics speak only where no pruning or quantisation separates the two models: those
        # change kurtosis and norm for reasons of their own
        plain = float(abs(self.zeros) < 0.05 and abs(self.bits) < 1)
        return [-np.log(self.distance + 1e-4), self.coverage, self.agreeing, self.lowrank_fit, self.equal,
                -np.log(self.mean_distance + 1e-4), self.levels,
                self.pruned_from, self.requantised, plain * np.tanh(self.kurtosis / 10), plain * self.log_norm,
                self.snap]  # fmt: skip

    @property
    def requantised(self) -> float:
        """+1: the query is the candidate re-quantised; -1: the candidate is the query re-quantised (a model
        trained a little from a quantised one also rounds back onto its levels: its snap overrides)."""
        return self.levels - self.reverse_levels * (1.0 - max(self.snap, 0.0))


NOTHING_SHARED = Comparison(float("inf"), 0.0, 0, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ())
DISTANCE_CAP = 2.0  # per-tensor distances above this say "unrelated" as well as any larger value


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _numerical_rank(s: np.ndarray) -> int:
    """The rank singular values ``s`` (descending) show, up to RANK_TOLERANCE of the largest."""
    return int(np.count_nonzero(s > RANK_TOLERANCE * s[0])) if s.size and s[0] > 0 else 0


def _mean(values: Sequence[float], weights: Sequence[float]) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(values, w) / w.sum()) if len(values) and w.sum() > 0 else 0.0


def _level_score(mismatch: float | None) -> float | None:
    """1 when every level matches (an exact re-quantisation), falling to 0 as the mismatched share grows."""
    return None if mismatch is None else float(np.clip(-np.log10(mismatch + 1e-5) / 5, 0.0, 1.0))


def _grid_evidence(
    tq: TensorSketch, tc: TensorSketch, transposed: bool
) -> tuple[float | None, float | None, float | None]:
    """(levels, reverse levels, snap) of one pair of matrices, where one side is quantised.

    levels: the query is quantised and the candidate, re-quantised on the query's grid, gives its levels;
    reverse: the candidate is quantised and is the query re-quantised on the candidate's grid (the query's
    quantised child); snap: the query sits on the quantised candidate's grid (+, trained a little from it) or
    the candidate on the query's (−).
    """
    x, y = rows(tq), rows(tc, transposed)
    if x is None or y is None or x.shape != y.shape:
        return None, None, None
    if tq.bits <= GRID_BITS < tc.bits and (steps := grid_steps(tq)) is not None:
        against = snap(y, steps)
        return _level_score(level_mismatch(x, y, steps)), None, None if against is None else -against
    if tc.bits <= GRID_BITS < tq.bits and not transposed and (steps := grid_steps(tc)) is not None:
        return None, _level_score(level_mismatch(y, x, steps)), snap(x, steps)
    return None, None, None


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
    fits: list[float] = []
    equal = 0.0
    levels: list[float] = []
    level_w: list[float] = []
    reverse: list[float] = []
    reverse_w: list[float] = []
    snaps: list[float] = []
    snap_w: list[float] = []
    signatures: list[float] = []
    paired = {p.a for p in pairs}
    # an unpaired tensor of the query (a replaced head of another shape) holds nothing equal to the candidate
    counted = sum(t.numel * (1.0 - t.zeros) for i, t in enumerate(q) if i not in paired)
    for p, d in zip(pairs, dist, strict=True):
        tq, tc = q[p.a], c[p.b]
        if tq.exact == tc.exact:
            same, live = equal_share(tq.kept, _values(tc, p.transposed))
            equal += tq.numel * same / max(1, tq.kept.size)
            counted += tq.numel * live / max(1, tq.kept.size)
        x, y = rows(tq), rows(tc, p.transposed)
        if x is None or y is None or x.shape != y.shape:
            continue
        lv, rev, sn = _grid_evidence(tq, tc, p.transposed)
        if lv is not None:
            levels.append(lv)
            level_w.append(tq.numel)
        if rev is not None:
            reverse.append(rev)
            reverse_w.append(tq.numel)
        if sn is not None:
            snaps.append(sn)
            snap_w.append(tq.numel)
        sig = None
        if not p.transposed and tq.exact == tc.exact:
            forward, backward = mask_fit(tq.kept, tc.kept), mask_fit(tc.kept, tq.kept)
            if forward is not None or backward is not None:
                sig = (forward or 0.0) - (backward or 0.0)
                if tq.bits > GRID_BITS and tc.bits > GRID_BITS:  # a dense model regrown from a sparse one
                    sig = 1.0 if grown_from(tq.kept, tc.kept) else -1.0 if grown_from(tc.kept, tq.kept) else sig
        if d >= 1e-6 and d < AGREE and min(x.shape) >= MIN_RANK_DIM:  # else unchanged, or replaced (a new head
            changed += 1  # is no update: its rank says nothing)
            diff = x - y
            singular = np.linalg.svd(diff.astype(np.float64), compute_uv=False)  # one SVD serves both rank tests
            low += _numerical_rank(singular) <= min(diff.shape) // 2
            fits.append(lowrank_fit(singular, min(diff.shape)))
            if sig is not None and fits[-1] >= REGROWN_FIT:
                # an exactly low-rank difference is a merged update, not pruning (which leaves −W on the pruned
                # entries, full-rank): a dense model a low-rank step from a sparse one grew from it
                sig = float(np.sign(tc.zeros - tq.zeros))
        if sig is not None:
            signatures.append(sig)
    mats = [p for p in pairs if len(q[p.a].shape) >= 2]
    mat_w = [q[p.a].numel for p in mats]
    root = np.sqrt(sizes)
    return Comparison(
        distance=distance,
        coverage=float(shared / max(1, query.parameters)),
        shared=len(pairs),
        agreeing=float(sizes[dist < AGREE].sum() / shared),
        identical=bool(identical and distance == 0.0),
        lowrank=low / changed if changed else 0.0,
        zeros=_mean([q[p.a].zeros - c[p.b].zeros for p in mats], mat_w),
        bits=_mean([c[p.b].bits - q[p.a].bits for p in mats], mat_w),
        kurtosis=_mean([q[p.a].kurtosis - c[p.b].kurtosis for p in mats], mat_w),
        log_norm=float(
            np.log(
                (np.sqrt(sum(q[p.a].norm ** 2 for p in pairs)) + 1e-12)
                / (np.sqrt(sum(c[p.b].norm ** 2 for p in pairs)) + 1e-12)
            )
        ),
        pruned_from=float(np.mean(signatures)) if signatures else 0.0,
        pairs=pairs,
        mean_distance=float(np.dot(np.minimum(dist, DISTANCE_CAP), root) / root.sum()),
        equal=equal / counted if counted else 0.0,
        levels=_mean(levels, level_w),
        reverse_levels=_mean(reverse, reverse_w),
        lowrank_fit=float(np.mean(fits)) if fits else 0.0,
        snap=_mean(snaps, snap_w),
    )


@dataclass(frozen=True)
class MergeFit:
    parents: tuple[int, int]  # indices into the candidate list
    weights: tuple[float, float]
    residual: float  # relative residual of the two-parent fit
    single: float  # the best one-parent relative residual (a scaled copy of one candidate)


def _stacked(
    query: ModelSketch, candidates: Sequence[ModelSketch], pairs: Sequence[Sequence[Pair]]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(query vector, one column per candidate) over the tensors every candidate shares with the query."""
    if not candidates:
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
    return target, np.stack(columns, axis=1).astype(np.float64)


def merge_children(query: ModelSketch, candidates: Sequence[ModelSketch], pairs: Sequence[Sequence[Pair]]) -> set[int]:
    """Candidates that are an exact average of the query and another candidate: the query's merged children.

    Such a candidate c = w·q + (1 − w)·o lies on the segment from the query to o, so it is closer to the query
    than the query's own parent, and weights alone would otherwise read it as the parent.
    """
    stacked = _stacked(query, candidates, pairs)
    if stacked is None or stacked[1].shape[1] < 2:
        return set()
    target, m = stacked
    moves = m - target[:, None]  # each candidate's displacement from the query
    gram = moves.T @ moves
    d = np.diag(gram)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = gram / d[None, :]  # c_i − q = share[i, j] · (c_j − q) for a merge of q and c_j
        residual = np.maximum(0.0, 1.0 - gram**2 / np.outer(d, d))  # squared sine of the angle between them
    fits = (share >= MERGE_MIN_WEIGHT) & (share <= 1 - MERGE_MIN_WEIGHT) & (np.sqrt(residual) <= MERGE_EXACT)
    fits &= np.outer(d > 0, d > 0) & ~np.eye(len(d), dtype=bool)
    return {int(i) for i in np.flatnonzero(fits.any(axis=1))}


def fit_merge(
    query: ModelSketch, candidates: Sequence[ModelSketch], pairs: Sequence[Sequence[Pair]]
) -> MergeFit | None:
    """The best non-negative two-parent fit θ_q ≈ w₁θ₁ + w₂θ₂ over the tensors every candidate shares.

    Sketches are linear, so the fit on sketches is the fit on the weights. A pair whose unconstrained least
    squares weights are not both positive has its non-negative optimum at a single parent, so it is skipped.
    """
    stacked = _stacked(query, candidates, pairs) if len(candidates) >= 2 else None
    if stacked is None:
        return None
    target, m = stacked
    yy = float(target @ target)
    if yy == 0:
        return None
    gram, proj = m.T @ m, m.T @ target  # every fit below is a small solve on these (one pass over the weights)
    g = np.diag(gram)
    with np.errstate(divide="ignore", invalid="ignore"):
        single_w = np.where(g > 0, np.maximum(0.0, proj / g), 0.0)
        singles = np.sqrt(np.maximum(0.0, yy - 2 * single_w * proj + single_w**2 * g) / yy)
        # every pair's 2x2 normal equations at once (Cramer's rule), upper triangle only
        det = np.outer(g, g) - gram**2
        wi = (g[None, :] * proj[:, None] - gram * proj[None, :]) / det
        wj = (g[:, None] * proj[None, :] - gram * proj[:, None]) / det
        res2 = yy - 2 * (wi * proj[:, None] + wj * proj[None, :]) + wi**2 * g[:, None] + wj**2 * g[None, :]
        res2 += 2 * wi * wj * gram
    # a pair whose weights are not both positive has its non-negative optimum at one parent: not a merge
    ok = np.triu(det > 1e-12 * np.outer(g, g), 1) & (wi > 0) & (wj > 0)
    if not ok.any():
        return None
    res = np.where(ok, np.sqrt(np.maximum(0.0, res2) / yy), np.inf)
    i, j = np.unravel_index(int(np.argmin(res)), res.shape)
    return MergeFit((int(i), int(j)), (float(wi[i, j]), float(wj[i, j])), float(res[i, j]), float(singles.min()))
