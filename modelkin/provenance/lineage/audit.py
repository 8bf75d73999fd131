"""Declared lineage held against the weights: one status per version, with a calibrated confidence."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from modelkin.provenance.lineage.decide import Verdict

STATUSES = ("confirmed", "mismatch", "undeclared", "no-parent", "duplicate", "unverifiable")
FLAGGED = ("mismatch", "undeclared")  # what ``audit --strict`` fails on


def judge(
    declared: Sequence[Hashable | None],
    verdict: Verdict | None,
    calibrate: Callable[[float], float] = lambda p: p,
) -> tuple[str, float | None]:
    """(status, confidence) for a version.

    ``declared`` holds the declared parents as candidate keys, None for one that is not registered (an external
    id no registered version answers to); ``verdict`` is None when the version has nothing to compare (no
    floating-point weights). ``calibrate`` maps a raw probability to a reported confidence, the map the verdict's
    own confidences went through, so a mismatch reads on the same scale as every other finding.
    """
    if verdict is None:
        return "unverifiable", None
    dups = set(verdict.duplicates)
    known = [d for d in declared if d is not None]
    if dups and (not declared or dups & set(known)):
        return "duplicate", 1.0
    if len(known) < len(declared):
        return "unverifiable", None
    probability = {c.key: c.probability for c in verdict.candidates}
    if not declared:
        if not verdict.parents:
            return "no-parent", verdict.confidence
        return "undeclared", verdict.confidence
    p_declared = min(1.0, sum(probability.get(d, 0.0) for d in known))
    if verdict.parents and set(known) <= set(verdict.parents):
        return "confirmed", verdict.confidence
    return "mismatch", calibrate(1.0 - p_declared)
