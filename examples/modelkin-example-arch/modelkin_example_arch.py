"""A modelkin architecture plugin: multinomial logistic regression, family ``example-logreg``.

Spec: ``{"family": "example-logreg", "in_features": 64, "num_classes": 10, "input_space": "digits-64"}``.

modelkin calls ``validate(spec)`` before anything else (raise ValueError to reject a spec; return it
normalised), ``build(spec)`` for a freshly initialised module whose ``state_dict()`` matches the saved
tensors, and ``input_space(spec)`` to pick the probe pool the model runs on. Like the built-in families,
the module exposes ``trunk`` (penultimate features; here the inputs themselves) and a linear ``head``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FAMILY = "example-logreg"


class LogisticRegression(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = nn.Identity()
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def validate(spec: dict[str, Any]) -> dict[str, Any]:
    for key in ("in_features", "num_classes"):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key!r} must be a positive integer, got {value!r}")
    if not isinstance(spec.get("input_space"), str):
        raise ValueError("'input_space' must name the inputs the model takes, e.g. 'digits-64'")
    return {key: spec[key] for key in ("family", "in_features", "num_classes", "input_space")}


def build(spec: dict[str, Any]) -> nn.Module:
    return LogisticRegression(spec["in_features"], spec["num_classes"])


def input_space(spec: dict[str, Any]) -> str:
    return str(spec["input_space"])
