"""Which tensor of one model corresponds to which tensor of another, without trusting names blindly.

Real children rename and re-nest modules (a task class adds ``bert.``, a wrapper adds ``module.``), replace heads,
resize vocabularies, add or drop layers and transpose weights. Names are paired where they agree after stripping
the leading components that explain most matches (found per model pair, not from a fixed list); what is left is
paired by shape (or transposed shape) plus content, with a one-to-one assignment, and only when the contents
are actually close. Nothing is paired across different shapes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from modelkin.provenance.lineage.sketch import ModelSketch, TensorSketch

MAX_DROP = 3  # leading name components that may differ (``bert.``, ``module.model.``)
MIN_CONTENT = 16  # tensors smaller than this are never paired by content: too little to tell
CONTENT_MAX = 0.9  # independent tensors sit near sqrt(2); a kept tensor well below 1


@dataclass(frozen=True)
class Pair:
    a: int  # index into the first model's tensors
    b: int  # index into the second model's tensors
    transposed: bool
    by: str  # "name" or "content"


def _prefixes(name: str) -> list[tuple[str, str]]:
    """(prefix, rest) splits of a dotted name, keeping at least two components in the rest (``0.weight``)."""
    parts = name.split(".")
    return [(".".join(parts[:d]), ".".join(parts[d:])) for d in range(min(MAX_DROP, len(parts) - 2) + 1)] or [
        ("", name)
    ]


def _fits(x: TensorSketch, y: TensorSketch) -> bool | None:
    """True when y is x transposed, False when shapes agree, None when they cannot pair."""
    if x.shape == y.shape:
        return False
    if len(x.shape) == 2 and x.shape[::-1] == y.shape:
        return True
    return None


def _values(t: TensorSketch, transposed: bool) -> np.ndarray:
    if not transposed:
        return t.values.reshape(-1)
    v = t.values if not t.exact else t.values.reshape(t.shape)
    return v.T.reshape(-1)


def aligned(model: ModelSketch, members: Sequence[ModelSketch]) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """``model``'s values and each member's, flat and in one order, over the tensors ``model`` shares with
    every member (the same coordinates for all), or None when no tensor is shared with all of them."""
    found = [{p.a: p for p in pair_tensors(model, m)} for m in members]
    common = sorted(set.intersection(*(set(f) for f in found))) if found else []
    if not common:
        return None
    x = np.concatenate([model.tensors[i].values.reshape(-1) for i in common]).astype(np.float64)
    ys = [np.concatenate([_values(m.tensors[f[i].b], f[i].transposed) for i in common]).astype(np.float64)
          for m, f in zip(members, found, strict=True)]  # fmt: skip
    return x, ys


def content_distance(x: TensorSketch, y: TensorSketch, transposed: bool = False) -> float:
    """Relative distance ‖x − y‖ / mean(‖x‖, ‖y‖) between two tensors' values (or sketches).

    A sparse exact ``x`` (the query) is compared where it is non-zero, so a pruned child is measured on the
    weights it kept (its sparsity is direction evidence of its own, not distance). A sparse ``y`` is not
    masked: on a pruned candidate's support every relative of its parent would look closer than it is.
    """
    if x.zeros > 0 and not transposed and x.exact == y.exact:
        a, b = x.kept.astype(np.float64), y.kept.astype(np.float64)  # same coordinates: mask what x dropped
        kept = a != 0
        if kept.any():
            a, b = a[kept], b[kept]
    else:
        a, b = x.values.reshape(-1).astype(np.float64), _values(y, transposed).astype(np.float64)
    scale = 0.5 * float(np.linalg.norm(a) + np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return 0.0 if diff == 0 else diff / scale if scale > 0 else float("inf")


def _name_pairs(a: ModelSketch, b: ModelSketch, free_a: set[int], free_b: set[int]) -> list[Pair]:
    """One round: the (prefix of a, prefix of b) that explains most name matches, applied everywhere."""
    rests: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for j in free_b:
        for prefix, rest in _prefixes(b.tensors[j].name):
            rests[rest].append((prefix, j))
    votes: Counter[tuple[str, str]] = Counter()
    for i in free_a:
        seen = set()
        for prefix_a, rest in _prefixes(a.tensors[i].name):
            for prefix_b, j in rests.get(rest, ()):
                if _fits(a.tensors[i], b.tensors[j]) is not None and (prefix_a, prefix_b) not in seen:
                    seen.add((prefix_a, prefix_b))
                    votes[(prefix_a, prefix_b)] += 1
    if not votes:
        return []
    (pa, pb), count = max(votes.items(), key=lambda kv: (kv[1], -len(kv[0][0]) - len(kv[0][1])))
    if count < 2 and (pa, pb) != ("", ""):
        return []
    by_name = {b.tensors[j].name: j for j in free_b}
    pairs = []
    for i in sorted(free_a):
        name = a.tensors[i].name
        if pa and not name.startswith(pa + "."):
            continue
        rest = name[len(pa) + 1 :] if pa else name
        match = by_name.get(f"{pb}.{rest}" if pb else rest)
        if match is not None and (transposed := _fits(a.tensors[i], b.tensors[match])) is not None:
            pairs.append(Pair(i, match, transposed, "name"))
    return pairs


def _content_pairs(a: ModelSketch, b: ModelSketch, free_a: set[int], free_b: set[int]) -> list[Pair]:
    """Pair what names left over by shape and content: a one-to-one assignment within each shape."""
    groups: dict[tuple[int, ...], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for i in free_a:
        if a.tensors[i].numel >= MIN_CONTENT:
            groups[tuple(sorted(a.tensors[i].shape))][0].append(i)
    for j in free_b:
        if b.tensors[j].numel >= MIN_CONTENT:
            groups[tuple(sorted(b.tensors[j].shape))][1].append(j)
    pairs = []
    for left, right in groups.values():
        if not left or not right:
            continue
        cost = np.full((len(left), len(right)), np.inf)
        flips = np.zeros_like(cost, dtype=bool)
        for x, i in enumerate(left):
            for y, j in enumerate(right):
                transposed = _fits(a.tensors[i], b.tensors[j])
                if transposed is not None:
                    cost[x, y] = content_distance(a.tensors[i], b.tensors[j], transposed)
                    flips[x, y] = transposed
        finite = np.where(np.isfinite(cost), cost, 1e9)
        for x, y in zip(*linear_sum_assignment(finite), strict=True):
            if cost[x, y] < CONTENT_MAX:
                pairs.append(Pair(left[x], right[y], bool(flips[x, y]), "content"))
    return pairs


def pair_tensors(a: ModelSketch, b: ModelSketch) -> list[Pair]:
    """A one-to-one pairing of a's tensors with b's: names first (a few prefix rounds), then content."""
    free_a, free_b = set(range(len(a.tensors))), set(range(len(b.tensors)))
    pairs: list[Pair] = []
    for _ in range(3):
        found = _name_pairs(a, b, free_a, free_b)
        if not found:
            break
        pairs += found
        free_a -= {p.a for p in found}
        free_b -= {p.b for p in found}
    pairs += _content_pairs(a, b, free_a, free_b)
    return sorted(pairs, key=lambda p: p.a)
