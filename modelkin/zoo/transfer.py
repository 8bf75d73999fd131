"""Transfer ground truth: how well each model does on a query task when a user starts from it.

For one support set (``shots`` labelled samples per class) and the held-out rest of the task's query pool,
which no model has seen:

* ``linear_probe``: :data:`LINEAR_PROBE` (logistic regression) on the model's penultimate features,
  ``module.trunk(x)``;
* ``finetune``: :data:`FINETUNE` — the probe becomes the new head, then every tensor is trained (LP-FT, which
  keeps a few-shot fine-tune from being decided by how fast a random head happens to train).

Both are averaged over several random support sets ("draws"); draw 0 is the one in the task's file.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from modelkin.zoo.recipes import Spec, start_from
from modelkin.zoo.tasks import Arrays
from modelkin.zoo.training import Freeze, Weights, accuracy, train

LINEAR_PROBE = "StandardScaler + LogisticRegression(C=1.0, lbfgs, max_iter=1000) on module.trunk(x)"
FINETUNE: dict[str, Any] = {
    "head": "the linear probe, mapped back to unstandardised features",
    "trained": "all tensors",
    "optimizer": {"name": "adam", "lr": 1e-3, "steps": 40, "batch_size": 256},
    "note": "batch_size exceeds every support set, so every step sees the whole support set",
}


def _probe_then_finetune(spec: Spec, weights: Weights, support: Arrays, evaluation: Arrays) -> tuple[float, float]:
    num_classes = int(support[1].max()) + 1
    module = start_from(weights, {**spec, "num_classes": num_classes}, seed=0, new_head=True)
    trunk, head = module.get_submodule("trunk"), cast(nn.Linear, module.get_submodule("head"))
    with torch.no_grad():
        features = trunk(torch.from_numpy(support[0])).numpy().astype(np.float64)
        eval_features = trunk(torch.from_numpy(evaluation[0])).numpy().astype(np.float64)
    scaler = StandardScaler().fit(features)
    with warnings.catch_warnings():
        # Dead or pruned features can leave lbfgs short of its tolerance; the accuracy is still the measurement.
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(features), support[1])
    probe_accuracy = float(probe.score(scaler.transform(eval_features), evaluation[1]))
    weight = probe.coef_ / scaler.scale_
    bias = probe.intercept_ - weight @ scaler.mean_  # query tasks have at least 3 classes: one row per class
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    train(module, *support, FINETUNE["optimizer"], seed=0, adaptation=Freeze())
    return probe_accuracy, accuracy(module, *evaluation)


def transfer_scores(spec: Spec, weights: Weights, draws: list[tuple[Arrays, Arrays]]) -> dict[str, float]:
    """Both scores for one (task, model) pair, each the mean over ``draws`` of (support, eval), 6 decimals."""
    probe, tuned = np.mean([_probe_then_finetune(spec, weights, s, e) for s, e in draws], axis=0)
    return {"linear_probe": round(float(probe), 6), "finetune": round(float(tuned), 6)}
