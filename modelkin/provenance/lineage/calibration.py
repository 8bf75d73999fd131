"""The parent model: a conditional logit over "which candidate is the parent, or none", fitted, not hand-set.

For a query with candidates 1..k, candidate i has utility u_i = θ·x_i (x_i = ``Comparison.features``: closeness,
coverage, agreement, a low-rank difference, and direction evidence: more zeros, fewer grid bits, kurtosis and
norm change in the query than in the candidate) and "no registered parent" has utility θ₀. P(parent = i) =
exp(u_i) / (exp(θ₀) + Σ exp(u_j)). θ is the maximum-likelihood fit on a zoo built with one seed (every model
a query, every other model a candidate); the scale of θ is the temperature, so the probabilities are the
confidences, and their calibration error (ECE) is measured on a zoo built with another seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ("closeness", "coverage", "agreeing", "lowrank", "zeros", "bits", "kurtosis", "log_norm")
FITTED = Path(__file__).with_name("fitted.json")
_L2 = 1e-3


@dataclass(frozen=True)
class ParentModel:
    coef: tuple[float, ...]
    none: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def utilities(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64).reshape(-1, len(self.coef)) @ np.asarray(self.coef)

    def probabilities(self, features: np.ndarray) -> tuple[float, np.ndarray]:
        """(P(no registered parent), P(candidate i is the parent) for each row of ``features``)."""
        u = np.concatenate([[self.none], self.utilities(features)])
        p = np.exp(u - u.max())
        p /= p.sum()
        return float(p[0]), p[1:]

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "coef": list(self.coef), "none": self.none, "provenance": self.provenance}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParentModel:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("the fitted lineage model was made for other features; refit it")
        return cls(tuple(float(c) for c in data["coef"]), float(data["none"]), dict(data.get("provenance", {})))

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


def fit(queries: Sequence[Query], provenance: dict[str, Any] | None = None) -> ParentModel:
    """Maximum-likelihood conditional logit with a small ridge (keeps θ finite on separable data)."""
    from scipy.optimize import minimize

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

    result = minimize(loss, np.zeros(width + 1), jac=True, method="L-BFGS-B")
    return ParentModel(tuple(float(c) for c in result.x[:width]), float(result.x[width]), dict(provenance or {}))


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
