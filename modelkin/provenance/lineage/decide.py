"""From a query and its nearest candidates to a verdict: parent(s), relation, confidence, duplicates.

Identical weights are duplicates, never parents. Two parents are reported when the query is (almost exactly)
a non-negative combination of two candidates that explains it far better than any one of them (a merge).

A pair's own weights cannot order two near-copies (a few tiny optimiser steps apart) nor two re-headed twins
(one trunk, two heads); the family around them can (copies.py, twins.py), and a query that carries nothing of
either is read as the original's child (parsimony). Where the family is silent, the heavier of two near-copies is
the copy (copies.heavier). Only where the norms tie too does registration order decide, as a tie-break: a
near-copy registered after the query is taken for its child, and among candidates the query cannot tell apart
the earliest registered is named first.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from modelkin.provenance.lineage.calibration import ParentModel
from modelkin.provenance.lineage.compare import (
    AGREE,
    MERGE_EXACT,
    MERGE_MIN_WEIGHT,
    Comparison,
    compare,
    fit_merge,
    merge_children,
)
from modelkin.provenance.lineage.copies import NEAR_COPY, heavier, near_copy, upstream
from modelkin.provenance.lineage.pairing import Pair, pair_tensors
from modelkin.provenance.lineage.sketch import ModelSketch
from modelkin.provenance.lineage.twins import original, own_tensors

MERGE_GAIN = 0.5  # the two-parent residual must be below this share of the best single-parent one
MERGE_CANDIDATES = 12
MIN_AGREEING = 0.5  # below this share of kept parameters a close candidate is "related", not a parent
TIE = 5e-3  # candidates whose distances differ by less than this share are indistinguishable to the query
TIE_UTILITY = 0.05  # ... and whose fitted utilities differ by less than this (a 5% likelihood ratio)
PARSIMONY = 0.1  # a tied re-headed twin the family does not single out keeps this share of its probability


@dataclass(frozen=True)
class Candidate:
    key: Hashable
    utility: float  # calibrated log-odds of being the parent against "no registered parent"
    probability: float  # the parent model's probability (what the tree's costs add up)
    comparison: Comparison
    confidence: float  # the probability as reported: mapped by the confidence calibration


@dataclass(frozen=True)
class Verdict:
    parents: tuple[Hashable, ...]  # empty: no registered parent; two: a merge
    relation: str | None  # finetune, pruned, quantized, adapter, merge, related, or None
    confidence: float  # probability of this verdict (of the parent, or of "no parent")
    none_probability: float
    candidates: tuple[Candidate, ...]  # most likely first
    duplicates: tuple[Hashable, ...]


def relation_of(c: Comparison) -> str:
    """How a child derives from its parent, from what the weights show (definitions, not fitted)."""
    if c.bits > 8:  # the child's weights sit on a grid at least 8 bits coarser than the parent's
        return "quantized"
    if c.zeros >= 0.25:  # at least a quarter of the parameters newly exactly zero
        return "pruned"
    if c.lowrank >= 0.5:  # most changed matrices moved by a numerically low-rank difference
        return "adapter"
    return "finetune"


def _alike(a: Comparison, b: Comparison) -> bool:
    """Two comparisons the weights cannot tell apart: same distances (median and mean), same exact signatures."""

    def same(x: float, y: float) -> bool:
        return abs(x - y) <= TIE * max(x, y) + 1e-7

    close = same(a.distance, b.distance) and same(a.mean_distance, b.mean_distance)
    return close and _same_signatures(a, b)


def _same_signatures(a: Comparison, b: Comparison) -> bool:
    """No exact signature (kept weights, quantisation levels and grid, sparsity) tells the two apart."""
    exact = abs(a.equal - b.equal) < 0.01 and abs(a.levels - b.levels) < 0.05 and abs(a.snap - b.snap) < 0.05
    return exact and abs(a.bits - b.bits) < 1 and abs(a.zeros - b.zeros) < 0.01


def decide(
    query: ModelSketch,
    candidates: Sequence[tuple[Hashable, ModelSketch]],
    model: ParentModel,
    order: Mapping[Hashable, int] | None = None,
    query_order: int | None = None,
    pool: Sequence[tuple[Hashable, ModelSketch]] = (),
) -> Verdict:
    """``order`` (registration order of the candidates and the query) is used only as the tie-break above.

    ``pool``: more distant models that only the two-parent fit considers (a merge of two relatives can sit far
    from one of them); a merge parent found there is compared like any candidate.
    """
    comps = [(key, compare(query, sketch), sketch) for key, sketch in candidates]
    duplicates = tuple(key for key, c, _ in comps if c.identical)
    live = [(key, c, s) for key, c, s in comps if not c.identical and c.shared > 0]
    whole = [r for r in live if r[1].coverage >= 0.99]
    merged = merge_children(query, [s for _, _, s in whole], [c.pairs for _, c, _ in whole])
    children = {whole[i][0] for i in merged}  # the query's own merged children are never its parents
    live = [r for r in live if r[0] not in children]
    merge = _merge(query, live, pool)
    wanted = set(merge[0]) - {key for key, _, _ in comps} if merge is not None else set()
    live += [(key, compare(query, s), s) for key, s in pool if key in wanted]
    keep = set(merge[0]) if merge is not None else set()  # a merge's parents are never set aside as its children
    rest = _without_copied_children(query, [r for r in live if r[0] not in keep], order, query_order)
    live = [r for r in live if r[0] in keep] + _without_reheaded_children(query, rest)
    if not live:
        return Verdict((), None, 1.0, 1.0, (), duplicates)
    features = np.array([c.features for _, c, _ in live])
    p_none, p = model.probabilities(features)
    utility = model.utilities(features) - model.none
    ranked = sorted(range(len(live)), key=lambda i: -p[i])
    if ranked:
        top = ranked[0]  # a tie: the same evidence and (so) the same utility under the fitted model
        ties = [i for i in ranked if _alike(live[i][1], live[top][1]) and utility[top] - utility[i] <= TIE_UTILITY]
        elected = _elect(query, live, top)
        if elected:
            p = p.copy()
            for i in elected[1:]:
                p[elected[0]] += (1 - PARSIMONY) * p[i]
                p[i] *= PARSIMONY
            first = elected[0]
        else:
            first = min(ties, key=lambda i: order.get(live[i][0], 1 << 62)) if order is not None else top
        ranked = [first] + sorted((i for i in ranked if i != first), key=lambda i: -p[i])
    cands = tuple(
        Candidate(live[i][0], float(utility[i]), float(p[i]), live[i][1], model.confidence(float(p[i]))) for i in ranked
    )
    if merge is not None and all(any(c.key == m for c in cands) for m in merge[0]):
        # "no registered parent" is as likely as the fit is inexact: an exact average of two registered models
        # does not arise by chance, however the single-parent model splits its mass between them
        keys, explained = merge
        none = p_none * explained
        return Verdict(keys, "merge", model.confidence(1.0 - none), none, cands, duplicates)
    best = cands[0]
    if p_none >= 0.5:  # "some registered model is the parent" is the complement, however the mass is split
        related = best.comparison.agreeing > 0 and best.comparison.distance < AGREE
        return Verdict((), "related" if related else None, model.confidence(p_none), p_none, cands, duplicates)
    if best.comparison.agreeing < MIN_AGREEING:
        return Verdict((), "related", model.confidence(1.0 - best.probability), p_none, cands, duplicates)
    confidence = model.confidence(best.probability)
    return Verdict((best.key,), relation_of(best.comparison), confidence, p_none, cands, duplicates)


Live = list[tuple[Hashable, Comparison, ModelSketch]]


def _without_reheaded_children(query: ModelSketch, live: Live) -> Live:
    """Drop candidates that are the query's re-headed children: one trunk with the query, and the family carries
    the query's head (it is the original), not theirs."""
    twins = [i for i, (_, c, s) in enumerate(live) if own_tensors(query, s, c) is not None]
    if not twins:
        return live
    family = [s for i, (_, _, s) in enumerate(live) if i not in twins]
    if original([query, *(live[i][2] for i in twins)], family) != 0:
        return live
    return [r for i, r in enumerate(live) if i not in twins]


def _without_copied_children(
    query: ModelSketch, live: Live, order: Mapping[Hashable, int] | None, query_order: int | None
) -> Live:
    """Drop candidates that are the query's near-copy children: the family names the query the original of
    their cluster (copies.upstream) or, when it cannot, they carry more norm than the query (copies.heavier),
    or, their norms tied exactly, they were registered after the query (a tie-break)."""
    copies = [i for i, (_, c, _) in enumerate(live) if near_copy(c)]
    if not copies:
        return live
    family = [s for i, (_, _, s) in enumerate(live) if i not in copies]
    found = upstream([query, *(live[i][2] for i in copies)], family)
    if found is not None:
        later = set(copies) if found == 0 else set()
    else:

        def registered_later(i: int) -> bool:
            return order is not None and query_order is not None and order.get(live[i][0], -1) > query_order

        heavy = heavier(query, [live[i][2] for i in copies])
        later = {i for i, h in zip(copies, heavy, strict=True) if h or (h is None and registered_later(i))}
    return [r for i, r in enumerate(live) if i not in later]


def _elect(query: ModelSketch, live: Live, top: int) -> list[int]:
    """The top candidate's re-headed twins among the candidates, the one the query descends from first, else [].

    The query carries one twin's head: that twin. It carries none (the weights cannot choose): the original, the
    twin whose head the rest of the family carries (parsimony: the others' only contribution is not in the query).
    """
    group = [top] + [i for i in range(len(live)) if i != top and own_tensors(live[top][2], live[i][2]) is not None]
    if len(group) < 2:
        return _elect_copy(live, top)
    found = original([live[i][2] for i in group], [query])  # the query carries one of the heads: its parent's
    if found is None:
        tied = set(group)
        found = original([live[i][2] for i in group], [s for i, (_, _, s) in enumerate(live) if i not in tied])
    return [] if found is None else [group[found]] + [i for i in group if i != group[found]]


def _elect_copy(live: Live, top: int) -> list[int]:
    """The top candidate's near-copies among the candidates, their original first, else [] (copies.upstream).
    Only those no exact signature tells apart for the query, and only for a query that is not itself their
    near-copy: a query trained further carries no trace of their few steps."""
    c = live[top][1]
    if near_copy(c):
        return []
    # distances cannot tell them apart: they differ by at most the copies' own few steps, which correlated
    # training moves the query along or against as often as descent would; exact signatures can
    near = [i for i, (_, ci, _) in enumerate(live) if i != top and _same_signatures(ci, c)]
    near = [i for i in near if abs(live[i][1].mean_distance - c.mean_distance) <= 2 * NEAR_COPY]  # triangle bound
    group = [top] + [i for i in near if near_copy(compare(live[top][2], live[i][2]))]
    if len(group) < 2:
        return []
    tied = set(group)
    found = upstream([live[i][2] for i in group], [s for i, (_, _, s) in enumerate(live) if i not in tied])
    return [] if found is None else [group[found]] + [i for i in group if i != group[found]]


def _merge(
    query: ModelSketch,
    live: Sequence[tuple[Hashable, Comparison, ModelSketch]],
    pool: Sequence[tuple[Hashable, ModelSketch]] = (),
) -> tuple[tuple[Hashable, Hashable], float] | None:
    """The keys of the two candidates the query is a merge of and how inexact the fit is (0: exact, 1: no better
    than the bar), or None.

    The nearest candidates that cover the whole query enter the fit, then the other candidates and the pool's
    (paired by tensor only); a fit that needs one beyond the nearest must be exact (a merge's weights are an
    exact average of its parents').
    """
    whole = sorted((r for r in live if r[1].coverage >= 0.99), key=lambda r: r[1].distance)
    full = whole[:MERGE_CANDIDATES]
    keys = [k for k, _, _ in whole]
    sketches = [s for _, _, s in whole]
    pairs: list[Sequence[Pair]] = [c.pairs for _, c, _ in whole]
    for key, sketch in pool:
        found = pair_tensors(query, sketch)
        covered = sum(query.tensors[p.a].numel for p in found)
        if key not in keys and covered >= 0.99 * query.parameters:
            keys.append(key)
            sketches.append(sketch)
            pairs.append(found)
    fit = fit_merge(query, sketches, pairs)
    if fit is None or fit.residual > MERGE_GAIN * fit.single:
        return None
    if max(fit.parents) >= len(full) and fit.residual > MERGE_EXACT:
        return None
    total = sum(fit.weights)  # a merge is a weighted average: its weights sum to about one
    if not 0.8 <= total <= 1.2 or min(fit.weights) / total < MERGE_MIN_WEIGHT:
        return None
    inexact = fit.residual / (MERGE_GAIN * fit.single) if fit.single > 0 else 1.0
    return (keys[fit.parents[0]], keys[fit.parents[1]]), float(min(1.0, inexact))
