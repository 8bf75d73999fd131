"""The parent model: a conditional logit over "which candidate is the parent, or none", fitted, not hand-set.

Two fitted parts. Direction: P(c -> q | c and q are parent and child) = σ(w·Δ), a logistic model without
intercept over antisymmetric evidence Δ (an exact magnitude-pruning signature, the candidate's extra
grid bits, the change in kurtosis and norm), fitted on the true edges of a calibration zoo in both orientations.
Choice: candidate i has
utility u_i = θ·x_i + θ_d·log σ(w·Δ_i), with x_i the closeness, coverage, agreement and low-rank evidence, and
"no registered parent" has utility θ₀; P(parent = i) = exp(u_i) / (exp(θ₀) + Σ exp(u_j)). log σ is near zero
when the direction evidence agrees and steeply negative when it contradicts (a quantised or pruned candidate is
the query's child, not its parent), which a linear term could not express. θ is the maximum-likelihood fit on
the same zoo; its scale is the temperature, so the probabilities are the confidences, and their calibration
error (ECE) is measured on a zoo built with another seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EDGE = ("closeness", "coverage", "agreeing", "lowrank", "equal", "mean_closeness", "levels")
DIRECTION = ("pruned_from", "requantised", "kurtosis", "log_norm", "snap")
FEATURES = (*EDGE, "direction")
FITTED = Path(__file__).with_name("fitted.json")
_L2 = 1e-3


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


@dataclass(frozen=True)
class ParentModel:
    coef: tuple[float, ...]  # one per FEATURES entry
    none: float
    direction: tuple[float, ...]  # one per DIRECTION entry
    provenance: dict[str, Any] = field(default_factory=dict)
    # (slope, offset): P(some candidate is the parent) = σ(slope · (best utility − none) + offset), so that "no
    # registered parent" depends on the best candidate, not on how many look-alikes share the mass
    has_parent: tuple[float, ...] = ()
    # knots (raw, reported) of a monotone map from a verdict's raw probability to its reported confidence, an
    # isotonic fit of being right on the calibration zoo's verdicts (tie-breaks, merges and "related" move the
    # raw numbers); linear between knots
    confidence_map: tuple[tuple[float, float], ...] = ()

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Raw ``Comparison.features`` rows (EDGE then DIRECTION) -> the choice model's FEATURES rows."""
        x = np.asarray(features, dtype=np.float64).reshape(-1, len(EDGE) + len(DIRECTION))
        direction = _log_sigmoid(x[:, len(EDGE) :] @ np.asarray(self.direction))
        return np.column_stack([x[:, : len(EDGE)], direction])

    def direction_probability(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64).reshape(-1, len(EDGE) + len(DIRECTION))
        return np.exp(_log_sigmoid(x[:, len(EDGE) :] @ np.asarray(self.direction)))

    def utilities(self, features: np.ndarray) -> np.ndarray:
        return self.transform(features) @ np.asarray(self.coef)

    def probabilities(self, features: np.ndarray) -> tuple[float, np.ndarray]:
        """(P(no registered parent), P(candidate i is the parent) for each row of ``features``)."""
        utilities = self.utilities(features)
        if not self.has_parent or not utilities.size:
            u = np.concatenate([[self.none], utilities])
            p = np.exp(u - u.max())
            p /= p.sum()
            return float(p[0]), p[1:]
        slope, offset = self.has_parent
        none = float(np.exp(_log_sigmoid(-(slope * (utilities.max() - self.none) + offset))))
        choice = np.exp(utilities - utilities.max())
        return none, (1.0 - none) * choice / choice.sum()

    def confidence(self, p: float) -> float:
        """A verdict's reported confidence from its raw probability (identity when no map is fitted)."""
        if not self.confidence_map:
            return p
        raw, reported = zip(*self.confidence_map, strict=True)
        return float(np.interp(p, raw, reported))

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "coef": list(self.coef), "none": self.none,
                "direction_features": list(DIRECTION), "direction": list(self.direction),
                "has_parent": list(self.has_parent), "confidence_map": [list(k) for k in self.confidence_map],
                "provenance": self.provenance}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParentModel:
        if list(data.get("features", [])) != list(FEATURES) or list(data.get("direction_features", [])) != list(
            DIRECTION
        ):
            raise ValueError("the fitted lineage model was made for other features; refit it")
        return cls(tuple(float(c) for c in data["coef"]), float(data["none"]),
                   tuple(float(w) for w in data["direction"]), dict(data.get("provenance", {})),
                   tuple(float(w) for w in data.get("has_parent", ())),
                   tuple((float(x), float(y)) for x, y in data.get("confidence_map", ())))  # fmt: skip

    @classmethod
    def load(cls, path: Path = FITTED) -> ParentModel:
        return cls.from_json(json.loads(path.read_text()))

    def save(self, path: Path = FITTED) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


@dataclass(frozen=True)
class Query:
    """One training example: the candidates' features and which row is the true parent (-1: none)."""

    features: np.ndarray
    truth: int


def fit_direction(edges: np.ndarray) -> tuple[float, ...]:
    """Logistic direction weights from the DIRECTION evidence of true parent -> child edges."""
    from sklearn.linear_model import LogisticRegression

    d = np.asarray(edges, dtype=np.float64).reshape(-1, len(DIRECTION))
    x, y = np.vstack([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))]
    return tuple(float(w) for w in LogisticRegression(fit_intercept=False, C=100.0).fit(x, y).coef_[0])


def fit(queries: Sequence[Query], edges: np.ndarray, provenance: dict[str, Any] | None = None) -> ParentModel:
    """Direction weights first (``edges``: DIRECTION rows of true edges), then the conditional logit by maximum
    likelihood with a small ridge (keeps θ finite on separable data) and non-negative feature weights."""
    from scipy.optimize import minimize

    direction = fit_direction(edges)
    shell = ParentModel((0.0,) * len(FEATURES), 0.0, direction)
    queries = [Query(shell.transform(q.features), q.truth) for q in queries]
    width = len(FEATURES)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, none = theta[:width], theta[width]
        total, grad = 0.0, np.zeros_like(theta)
        for q in queries:
            x = q.features.reshape(-1, width)
            u = np.concatenate([[none], x @ coef])
            shift = u.max()
            p = np.exp(u - shift)
            z = p.sum()
            p /= z
            chosen = 0 if q.truth < 0 else q.truth + 1
            total -= u[chosen] - shift - np.log(z)
            # d(-log p_chosen) = E_p[x] - x_chosen
            grad[:width] += p[1:] @ x - (x[q.truth] if q.truth >= 0 else 0.0)
            grad[width] += p[0] - (1.0 if q.truth < 0 else 0.0)
        total += _L2 * float(theta @ theta)
        return total / len(queries), (grad + 2 * _L2 * theta) / len(queries)

    # every feature is built so that more means "more like the parent": a fit on one zoo may not learn that
    # being closer, sharing more or matching a signature makes a candidate less likely (monotone, not zoo-tuned)
    bounds = [(0.0, None)] * width + [(None, None)]
    result = minimize(loss, np.zeros(width + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    coef, none = result.x[:width], float(result.x[width])
    return ParentModel(tuple(float(c) for c in coef), none, direction, dict(provenance or {}),
                       fit_has_parent(queries, coef, none))  # fmt: skip


def fit_has_parent(queries: Sequence[Query], coef: np.ndarray, none: float) -> tuple[float, float]:
    """(slope, offset) of "some candidate is the parent" against the best candidate's utility over "none"."""
    from sklearn.linear_model import LogisticRegression

    best = np.array([[float((q.features.reshape(-1, len(coef)) @ coef).max()) - none] for q in queries])
    truth = np.array([q.truth >= 0 for q in queries])
    if truth.all() or not truth.any():
        return 1.0, 0.0
    fitted = LogisticRegression(C=100.0).fit(best, truth)
    return max(0.0, float(fitted.coef_[0][0])), float(fitted.intercept_[0])


def fit_confidence(raw: Sequence[float], correct: Sequence[bool]) -> tuple[tuple[float, float], ...]:
    """Knots of the isotonic (monotone, otherwise free) fit of being right against a verdict's raw probability.

    Platt scaling assumes the miscalibration is a logistic curve; the verdicts' is not (exact signatures give
    near-certain raw numbers that are right, ties give middling ones that are right about half the time), so
    a logistic fit flattens everything towards the mean and a monotone one does not. Pool-adjacent-violators
    blocks, each reported at its rule-of-succession rate (k + 1) / (n + 2): a finite calibration set never
    makes a verdict certain. One knot per block, at its mean raw probability.
    """
    order = np.argsort(np.asarray(raw, dtype=np.float64), kind="stable")
    x = np.asarray(raw, dtype=np.float64)[order]
    y = np.asarray(correct, dtype=np.float64)[order]
    if y.size == 0 or y.all() or not y.any():
        return ()
    blocks: list[list[float]] = []  # [sum of raw, right, count]
    for xi, yi in zip(x, y, strict=True):
        blocks.append([xi, yi, 1.0])
        while len(blocks) > 1 and _rate(blocks[-2]) >= _rate(blocks[-1]):
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last, strict=True)]
    return tuple((float(b[0] / b[2]), _rate(b)) for b in blocks)


def _rate(block: list[float]) -> float:
    """A block's rate of being right by the rule of succession."""
    return float((block[1] + 1) / (block[2] + 2))


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """ECE: bin the confidences, average |accuracy − mean confidence| weighted by bin size."""
    conf, hit = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    edges = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = edges == b
        if mask.any():
            total += mask.sum() / conf.size * abs(hit[mask].mean() - conf[mask].mean())
    return float(total)
