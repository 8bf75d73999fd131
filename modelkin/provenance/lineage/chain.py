"""Which of two candidates at different depths on the query's path is its parent: the one in the middle.

If the query q descends from A and A from B, the two updates (q − A and A − B) are independent steps, so seen
from A the query and B sit at a right angle, at an obtuse one when training went on in the same direction, and
q–B is the longest side of the triangle. If A is instead the query's sibling (both children of B), seen from A
the query and B sit at an acute angle: A's own step (from B to A) points away from both, so the cosine is
positive by about ‖B − A‖ / ‖q − A‖ (and correlated siblings only shrink it towards zero). If A is the query's
child, the longest side is A–B. So a candidate A nearer than B, with q–B the longest side and an obtuse angle
at A, is on the path between B and the query: B is an ancestor further up, and A is the better parent.
Weight-statistics priors (a norm that grows along a chain) cannot say this: they favour the farthest ancestor.
The angle speaks only where A and B are apart by at least half the way from A to the query; look-alikes are
for copies.py and twins.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelkin.provenance.lineage.pairing import Pair, aligned
from modelkin.provenance.lineage.sketch import ModelSketch

SEPARATED = 0.5  # ‖B − A‖ at least this share of ‖q − A‖, or the angle at A is noise


def between(
    query: ModelSketch, a: ModelSketch, b: ModelSketch, pairs: tuple[Sequence[Pair], Sequence[Pair]] | None = None
) -> bool:
    """True when ``a`` lies on the path from ``b`` to ``query`` (``b`` an ancestor further up than ``a``);
    ``pairs``: the query's pairings with ``a`` and ``b`` when already known."""
    found = aligned(query, [a, b], pairs)
    if found is None:
        return False
    x, (ya, yb) = found
    qa, qb, ba = np.linalg.norm(x - ya), np.linalg.norm(x - yb), np.linalg.norm(yb - ya)
    if qa == 0 or ba < SEPARATED * qa or not (qa < qb and ba < qb):
        return False
    return float((x - ya) @ (yb - ya)) < 0.0  # an obtuse angle at a
