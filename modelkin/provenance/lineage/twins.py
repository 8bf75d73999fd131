"""Re-headed twins: one trunk, two heads, and which of the two is the original.

A model that kept another's whole trunk bit for bit and replaced only its head (a head-only or frozen-trunk
child, or two such children of one original) shares everything but the head with its relatives: distances, the
bit-equal share and every other signature are the same for both ends, so the weights of the pair alone cannot
say which is the original. The family can: the original's head is the one its other relatives (its fine-tuned
children, its own parent) kept and moved a little, while a new head was initialised afresh and trained on its
own, so nothing else in the family is near it. Parsimony then decides the rest: a re-headed model whose only
contribution (its new head) a query does not carry leaves no trace in the query, so the query is read as the
original's child.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelkin.provenance.lineage.compare import AGREE, TINY, Comparison, compare
from modelkin.provenance.lineage.pairing import content_distance, pair_tensors
from modelkin.provenance.lineage.sketch import ModelSketch

MIN_EQUAL = 0.5  # at least half of the kept weights bit-equal: one trunk


def own_tensors(a: ModelSketch, b: ModelSketch, c: Comparison | None = None) -> tuple[int, ...] | None:
    """a's tensors that b does not share, when a and b are one trunk with unrelated heads; else None.

    One trunk: at least MIN_EQUAL of the kept weights are bit-equal. Unrelated heads: every shared tensor of at
    least TINY entries that differs is as far as independent tensors are (a fine-tuned or pruned layer is
    closer, and makes a and b parent and child or relatives, not re-headed twins).
    """
    if not a.digests & b.digests:  # one trunk shares whole tensors bit for bit: a cheap test before comparing
        return None
    c = compare(a, b) if c is None else c
    if c.identical or c.equal < MIN_EQUAL:
        return None
    paired = {p.a: p for p in c.pairs}
    own = []
    for i, t in enumerate(a.tensors):
        p = paired.get(i)
        if p is not None and not p.transposed and t.digest == b.tensors[p.b].digest:
            continue
        if p is not None and t.numel >= TINY and content_distance(t, b.tensors[p.b], p.transposed) < AGREE:
            return None
        own.append(i)
    return tuple(own) if any(a.tensors[i].numel >= TINY for i in own) else None


def support(member: ModelSketch, own: Sequence[int], family: Sequence[ModelSketch]) -> int:
    """How many of ``family`` hold a tensor related (closer than AGREE) to one of the member's own tensors."""
    head = ModelSketch(tuple(member.tensors[i] for i in own if member.tensors[i].numel >= TINY))
    count = 0
    for other in family:
        pairs = pair_tensors(head, other)
        count += any(content_distance(head.tensors[p.a], other.tensors[p.b], p.transposed) < AGREE for p in pairs)
    return count


def original(members: Sequence[ModelSketch], family: Sequence[ModelSketch]) -> int | None:
    """The index of the original among re-headed twins (each a twin of the first), or None when the family
    does not single one out (no relative carries any member's head, or two members' heads equally)."""
    if len(members) < 2:
        return None
    owns = [own_tensors(members[0], members[1])] + [own_tensors(m, members[0]) for m in members[1:]]
    if any(o is None for o in owns):
        return None
    votes = [support(m, o or (), family) for m, o in zip(members, owns, strict=True)]
    best = max(votes)
    return votes.index(best) if best > 0 and votes.count(best) == 1 else None
