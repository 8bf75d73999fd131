"""The Neural Lineage learning-free score, for executable models that share a trunk (a baseline, and a check).

S(p, c) = s(F_p, F_c) + α·⟨J_pᵀ ∇_{F_p} s, θ_c − θ_p⟩ with F = trunk(X) on unlabelled probes X and
s = −mean |F_p − F_c|: the first-order correction asks how much closer p's features would come to c's if p
moved along θ_c − θ_p, which is what fine-tuning p into c did. The inner product is one vector-Jacobian
product: backpropagate s through p's trunk and take the dot product of the parameter gradient with θ_c − θ_p.
"""

from __future__ import annotations

import torch
from torch import nn

ALPHA = 0.01


def trunk_of(module: nn.Module) -> nn.Module:
    """The layers below the head (``trunk`` in modelkin's families); the whole module otherwise."""
    trunk = getattr(module, "trunk", None)
    return trunk if isinstance(trunk, nn.Module) else module


def neural_lineage_scores(
    parent: nn.Module, child: nn.Module, probes: torch.Tensor, alpha: float = ALPHA
) -> tuple[float, float]:
    """(S without, S with the correction) for (parent, child); higher means ``parent`` is likelier the model
    ``child`` was fine-tuned from. Both from one forward and one backward pass."""
    p_trunk, c_trunk = trunk_of(parent), trunk_of(child)
    with torch.no_grad():
        f_c = c_trunk(probes)
    params = dict(p_trunk.named_parameters())
    c_params = dict(c_trunk.named_parameters())
    shared = [n for n, w in params.items() if n in c_params and c_params[n].shape == w.shape]
    with torch.enable_grad():
        f_p = p_trunk(probes)
        if f_p.shape != f_c.shape:
            return float("-inf"), float("-inf")
        s = -(f_p - f_c).abs().mean()
        if not shared:
            return float(s.detach()), float(s.detach())
        grads = torch.autograd.grad(s, [params[n] for n in shared], allow_unused=True)
    inner = sum(
        float((g * (c_params[n].detach() - params[n].detach())).sum())
        for n, g in zip(shared, grads, strict=True)
        if g is not None
    )
    return float(s.detach()), float(s.detach()) + alpha * inner
