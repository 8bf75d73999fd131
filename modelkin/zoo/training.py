"""One training loop for every way the zoo changes weights.

Fine-tuning, frozen layers, LoRA and masked (pruned) retraining differ only in *which* tensors are trained and
how they become the module's weights, so each is an :class:`Adaptation` and :func:`train` runs them all through
``torch.func.functional_call``. Training is deterministic for a seed on one thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F

Weights = dict[str, Tensor]

OPTIMISERS = ("sgd", "adam", "adamw")
MAX_GRAD_NORM = 5.0  # clipping keeps the zoo's harsher learning rates (SGD with momentum, LoRA) from diverging


class Adaptation(Protocol):
    """Which tensors are trained, and how they combine with the base weights into the module's weights."""

    def trainables(self, base: Weights, generator: torch.Generator) -> Weights: ...

    def weights(self, base: Weights, trained: Weights) -> Weights: ...


@dataclass(frozen=True)
class Freeze:
    """Train every tensor except those under the given name prefixes (``"trunk."`` trains the head only)."""

    prefixes: tuple[str, ...] = ()

    def trainables(self, base: Weights, generator: torch.Generator) -> Weights:
        return {n: w.clone() for n, w in base.items() if not n.startswith(self.prefixes)}

    def weights(self, base: Weights, trained: Weights) -> Weights:
        return {**base, **trained}


@dataclass(frozen=True)
class LoRA:
    """Low-rank updates ``W + (alpha / rank) * B @ A`` on every matrix (conv kernels flattened to matrices);
    tensors under ``full`` (a new head) are trained directly. B starts at zero, so training starts at the base."""

    rank: int
    alpha: float
    full: tuple[str, ...] = ()

    def trainables(self, base: Weights, generator: torch.Generator) -> Weights:
        factors: Weights = {}
        for name, w in base.items():
            if name.startswith(self.full):
                factors[name] = w.clone()
            elif w.dim() >= 2:
                fan_in = w[0].numel()
                a = torch.randn(self.rank, fan_in, generator=generator) / math.sqrt(fan_in)
                factors[f"{name}.lora_a"] = a
                factors[f"{name}.lora_b"] = torch.zeros(w.shape[0], self.rank)
        return factors

    def weights(self, base: Weights, trained: Weights) -> Weights:
        merged = dict(base)
        for name, w in base.items():
            if name in trained:
                merged[name] = trained[name]
            elif f"{name}.lora_a" in trained:
                delta = trained[f"{name}.lora_b"] @ trained[f"{name}.lora_a"]
                merged[name] = w + (self.alpha / self.rank) * delta.view_as(w)
        return merged


@dataclass(frozen=True)
class Masked:
    """Train everything while pruned entries stay exactly zero (the mask multiplies the trained tensor)."""

    masks: Weights

    def trainables(self, base: Weights, generator: torch.Generator) -> Weights:
        return {n: w.clone() for n, w in base.items()}

    def weights(self, base: Weights, trained: Weights) -> Weights:
        return {n: w * self.masks[n] if n in self.masks else w for n, w in trained.items()}


@contextmanager
def deterministic() -> Iterator[None]:
    """One thread for torch and for numpy's BLAS (reductions then run in a fixed order, and tiny matrices are
    faster without threads) and a private torch RNG state; everything is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def make_optimizer(params: list[Tensor], name: str, lr: float) -> torch.optim.Optimizer:
    """SGD has momentum 0.9; AdamW decays weights by 0.01. Fused kernels: faster, and deterministic on CPU."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)
    raise ValueError(f"unknown optimiser {name!r}; expected one of {', '.join(OPTIMISERS)}")


def train(
    module: nn.Module,
    x: np.ndarray,
    targets: np.ndarray,
    optimiser: dict[str, Any],
    *,
    seed: int,
    adaptation: Adaptation,
    temperature: float = 1.0,
) -> None:
    """Train ``module`` in place on (x, targets) with ``optimiser`` = {name, lr, steps, batch_size}.

    The budget is in optimiser steps (over reshuffled passes through the data), so that a recipe trains as much
    on a quarter of a task as on all of it. Integer targets are class labels (cross-entropy); float targets are
    a teacher's probabilities at ``temperature`` (distillation: cross-entropy against the tempered softmax).
    """
    generator = torch.Generator().manual_seed(seed)
    base = {n: p.detach() for n, p in module.named_parameters()}
    trained = adaptation.trainables(base, generator)
    for tensor in trained.values():
        tensor.requires_grad_(True)
    optimizer = make_optimizer(list(trained.values()), optimiser["name"], optimiser["lr"])
    inputs, labels = torch.from_numpy(x), torch.from_numpy(targets)
    module.train()
    for index in _batches(len(inputs), optimiser["batch_size"], optimiser["steps"], generator):
        logits = functional_call(module, adaptation.weights(base, trained), (inputs[index],))
        if labels.dtype == torch.int64:
            loss = F.cross_entropy(logits, labels[index])
        else:
            loss = -(labels[index] * F.log_softmax(logits / temperature, dim=1)).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trained.values(), MAX_GRAD_NORM, foreach=True)
        optimizer.step()
    final = adaptation.weights(base, {n: t.detach() for n, t in trained.items()})
    if not all(bool(w.isfinite().all()) for w in final.values()):
        raise FloatingPointError(f"training diverged with {optimiser}")
    module.load_state_dict({n: w.contiguous() for n, w in final.items()})
    module.eval()


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``steps`` index batches of at most ``batch_size``, walking through a fresh permutation on every pass."""
    done = 0
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1


@torch.no_grad()
def predict(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """Logits of ``module`` in eval mode."""
    module.eval()
    return module(torch.from_numpy(x)).numpy()


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(module, x).argmax(1) == y).mean())
