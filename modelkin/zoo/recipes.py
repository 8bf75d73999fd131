"""Recipes: JSON descriptions of how each zoo model was made, executable again from its parents' weights.

The ground-truth file records every model's recipe. :func:`apply` turns (recipe, parents' weights) into the
model's weights, so "this child was trained from that parent" can be checked by re-running it, byte for byte.

Ops and the lineage relation they stand for:

=============  ============  ===================================================================================
op             relation      what it does
=============  ============  ===================================================================================
``train``      (root)        fresh initialisation, trained on a task
``finetune``   finetune      all or some tensors trained further (frozen layers, a new head, a near-copy...)
``lora``       adapter       low-rank updates trained, then merged into the weights
``prune``      pruned        per-tensor magnitude pruning of the trunk, optionally retrained under the mask
``quantize``   quantized     symmetric per-output-channel int8/int4 quantise-dequantise of every matrix
``merge``      merge         weighted average of two parents with the same architecture
``distill``    distilled     a freshly initialised student trained on the parent's softened outputs
=============  ============  ===================================================================================
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor

from modelkin.canonical import canonical_json
from modelkin.registry.architectures import build_module
from modelkin.zoo.tasks import INPUT_SPACE, Task, ZooData, rng_for
from modelkin.zoo.training import Freeze, LoRA, Masked, Weights, predict, train

Recipe = dict[str, Any]
Spec = dict[str, Any]

RELATIONS = {
    "train": None,
    "finetune": "finetune",
    "lora": "adapter",
    "prune": "pruned",
    "quantize": "quantized",
    "merge": "merge",
    "distill": "distilled",
}

# The zoo's architectures on the digits-64 input space: two MLP widths, a deeper MLP and the small CNN. Their
# penultimate layers are narrow (16-32 features), so what a trunk learned decides how well it transfers.
ARCHITECTURES: dict[str, Spec] = {
    "mlp-s": {"family": "mlp", "in_features": 64, "hidden": [32, 16], "input_space": INPUT_SPACE},
    "mlp-l": {"family": "mlp", "in_features": 64, "hidden": [128, 32], "input_space": INPUT_SPACE},
    "mlp-d": {"family": "mlp", "in_features": 64, "hidden": [64, 64, 16], "input_space": INPUT_SPACE},
    "cnn": {"family": "cnn", "image_shape": [1, 8, 8], "channels": [8, 8], "input_space": INPUT_SPACE},
}


def architecture(key: str, num_classes: int) -> Spec:
    return {**ARCHITECTURES[key], "num_classes": num_classes}


def arch_key(spec: Spec) -> str:
    """The :data:`ARCHITECTURES` key of a spec (its shape without the head size)."""
    body = {k: v for k, v in spec.items() if k != "num_classes"}
    return next(key for key, known in ARCHITECTURES.items() if known == body)


@functools.cache
def _trunk_layers(spec_json: bytes) -> tuple[str, ...]:
    module = build_module(json.loads(spec_json))
    names = [n.rsplit(".", 1)[0] + "." for n, _ in module.named_parameters() if n.startswith("trunk.")]
    return tuple(dict.fromkeys(names))


def trunk_layers(spec: Spec) -> tuple[str, ...]:
    """Name prefixes of the trunk's layers with weights, input first (``("trunk.0.", "trunk.2.")``)."""
    return _trunk_layers(canonical_json(spec))


def output_spec(recipe: Recipe, parent_specs: list[Spec]) -> Spec:
    """The architecture a recipe produces: a new head resizes the classifier, a student has its own."""
    op = recipe["op"]
    if op == "train":
        return recipe["architecture"]
    if op == "distill":
        return recipe["student"]
    spec = parent_specs[0]
    if op in ("finetune", "lora"):
        return {**spec, "num_classes": len(recipe["task"]["classes"])}
    return spec


def _fresh(spec: Spec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_module(spec)


def load(spec: Spec, weights: Weights) -> torch.nn.Module:
    """A module of ``spec`` holding ``weights`` exactly, in eval mode."""
    module = build_module(spec)
    module.load_state_dict(weights)
    return module.eval()


def _training_data(data: ZooData, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """The recipe task's training samples, subsampled to ``data_fraction`` (default all)."""
    (x, y), _ = data.source(Task.from_json(recipe["task"]))
    fraction = recipe.get("data_fraction", 1.0)
    if fraction < 1.0:
        keep = np.sort(rng_for(recipe["seed"], 0).choice(len(y), round(len(y) * fraction), replace=False))
        x, y = x[keep], y[keep]
    return x, y


def start_from(parent: Weights, spec: Spec, *, seed: int, new_head: bool) -> torch.nn.Module:
    """A module of ``spec`` holding the parent's weights; with ``new_head``, only its trunk and a seeded head."""
    module = _fresh(spec, seed)
    if new_head:
        trunk = {n: w for n, w in parent.items() if not n.startswith("head.")}
        module.load_state_dict({**module.state_dict(), **trunk})
    else:
        module.load_state_dict(parent)
    return module


def _quantize(w: Tensor, bits: int) -> Tensor:
    """Symmetric per-output-channel quantise-dequantise to signed ``bits``-bit integers."""
    q_max = 2 ** (bits - 1) - 1
    scale = w.abs().flatten(1).amax(1).clamp_min(torch.finfo(w.dtype).tiny) / q_max
    shape = (-1,) + (1,) * (w.dim() - 1)
    return (w / scale.view(shape)).round().clamp(-q_max - 1, q_max) * scale.view(shape)


def _prune_masks(weights: Weights, sparsity: float) -> Weights:
    """Per-tensor magnitude masks over the trunk's matrices: the smallest ``sparsity`` share of entries go."""
    masks = {}
    for name, w in weights.items():
        if name.startswith("trunk.") and w.dim() >= 2:
            k = int(round(w.numel() * sparsity))
            threshold = w.abs().flatten().kthvalue(k).values
            masks[name] = (w.abs() > threshold).to(w.dtype)
    return masks


def apply(recipe: Recipe, parents: list[tuple[Spec, Weights]], data: ZooData) -> tuple[Spec, Weights]:
    """Run ``recipe`` on the parents' (spec, weights) and return the new model's (spec, weights)."""
    op = recipe["op"]
    spec = output_spec(recipe, [s for s, _ in parents])
    if op == "merge":
        (_, a), (_, b) = parents
        wa, wb = recipe["weights"]
        return spec, {n: (wa * a[n] + wb * b[n]).contiguous() for n in a}
    if op == "quantize":
        (_, weights) = parents[0]
        return spec, {n: _quantize(w, recipe["bits"]) if w.dim() >= 2 else w.clone() for n, w in weights.items()}
    module: torch.nn.Module
    if op == "train":
        module = _fresh(spec, recipe["seed"])
        train(module, *_training_data(data, recipe), recipe["optimizer"], seed=recipe["seed"], adaptation=Freeze())
    elif op == "finetune":
        module = start_from(parents[0][1], spec, seed=recipe["seed"], new_head=recipe["new_head"])
        adaptation = Freeze(tuple(recipe["freeze"]))
        train(module, *_training_data(data, recipe), recipe["optimizer"], seed=recipe["seed"], adaptation=adaptation)
    elif op == "lora":
        module = start_from(parents[0][1], spec, seed=recipe["seed"], new_head=recipe["new_head"])
        lora = LoRA(recipe["rank"], recipe["alpha"], ("head.",) if recipe["new_head"] else ())
        train(module, *_training_data(data, recipe), recipe["optimizer"], seed=recipe["seed"], adaptation=lora)
    elif op == "prune":
        masks = _prune_masks(parents[0][1], recipe["sparsity"])
        module = load(spec, {n: w * masks[n] if n in masks else w for n, w in parents[0][1].items()})
        if recipe["optimizer"] is not None:
            x, y = _training_data(data, recipe)
            train(module, x, y, recipe["optimizer"], seed=recipe["seed"], adaptation=Masked(masks))
    elif op == "distill":
        teacher = load(*parents[0])
        x, _ = _training_data(data, recipe)
        soft = torch.softmax(torch.from_numpy(predict(teacher, x)) / recipe["temperature"], dim=1).numpy()
        module = _fresh(spec, recipe["seed"])
        train(
            module,
            x,
            soft,
            recipe["optimizer"],
            seed=recipe["seed"],
            adaptation=Freeze(),
            temperature=recipe["temperature"],
        )
    else:
        raise ValueError(f"unknown recipe op {op!r}")
    return spec, {n: w.detach().contiguous() for n, w in module.state_dict().items()}
