"""Registering a whole built zoo in one call, blind or with its declared lineage.

The default order is shuffled, because real registries receive families in any order (children before their
parents, siblings interleaved); lineage methods must not lean on registration order. Declared parents come from
``ground_truth.json`` only when asked, so that lineage can be tested blind. This module needs no torch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelkin.errors import InvalidModelFile

if TYPE_CHECKING:
    from modelkin.registry.registry import Registry

ORDERS = ("shuffled", "topological")


def read_ground_truth(directory: Path) -> dict[str, Any]:
    path = directory / "ground_truth.json"
    if not path.is_file():
        raise InvalidModelFile(
            f"{directory} is not a modelkin zoo (no ground_truth.json).",
            hint="build one with `python -m modelkin.zoo build DIR --size tiny`",
        )
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidModelFile(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(truth, dict) or not isinstance(truth.get("models"), dict):
        raise InvalidModelFile(f"{path} has no 'models' map.")
    return truth


def registration_order(models: dict[str, Any], order: str, seed: int) -> list[str]:
    """``topological``: parents first (by generation, then name); ``shuffled``: a seeded permutation."""
    if order not in ORDERS:
        raise InvalidModelFile(f"unknown order {order!r}.", hint=f"use one of: {', '.join(ORDERS)}")
    names = sorted(models, key=lambda n: (int(models[n].get("generation", 0)), n))
    if order == "shuffled":
        random.Random(seed).shuffle(names)
    return names


def register_zoo(
    reg: Registry,
    directory: Path,
    *,
    declare_parents: bool = False,
    order: str = "shuffled",
    seed: int = 0,
    on_model: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Register every model of a built zoo; returns a summary with each model's REF.

    With ``declare_parents`` the ground truth's parents and relations are declared after all models are in,
    so that a child registered before its parent still gets its edge.
    """
    truth = read_ground_truth(directory)
    models: dict[str, Any] = truth["models"]
    for name, model in models.items():
        unknown = [p for p in model.get("parents") or [] if p not in models]
        if unknown:
            raise InvalidModelFile(f"ground_truth.json gives {name} the parent {unknown[0]}, which it does not list.")
    names = registration_order(models, order, seed)
    missing = [n for n in names if not (directory / "models" / f"{n}.safetensors").is_file()]
    if missing:
        raise InvalidModelFile(f"{directory}/models lacks {len(missing)} model files named in ground_truth.json, "
                               f"e.g. {missing[0]}.safetensors.")  # fmt: skip
    tags = {"zoo.size": str(truth.get("size", "")), "zoo.seed": str(truth.get("seed", ""))}
    rows: list[dict[str, Any]] = []
    refs: dict[str, str] = {}
    for name in names:
        result = reg.register(directory / "models" / f"{name}.safetensors", name=name, tags=tags)
        refs[name] = result.version.ref
        rows.append({"name": name, "ref": result.version.ref, "digest": result.version.digest,
                     "created": result.created})  # fmt: skip
        if on_model is not None:
            on_model(name)
    edges = 0
    if declare_parents:
        for name in names:
            parents = [refs[p] for p in models[name].get("parents") or []]
            if parents:
                edges += reg.declare_parents(refs[name], parents, models[name].get("relation"))[1]
    return {
        "directory": str(directory),
        "order": order,
        "seed": seed,
        "registered": len(rows),
        "created": sum(1 for r in rows if r["created"]),
        "declared_edges": edges,
        "models": rows,
    }
