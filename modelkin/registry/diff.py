"""Comparing two versions tensor by tensor; identical digests are decided without reading any weights."""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from modelkin.registry.records import TensorDiff, VersionDiff

if TYPE_CHECKING:
    import torch

    from modelkin.registry.registry import Registry


def diff_versions(reg: Registry, ref_a: str, ref_b: str) -> VersionDiff:
    """same / changed (with ‖b − a‖ / ‖a‖) / shape-changed / dtype-changed / only-in-a / only-in-b per tensor.

    Shape and dtype are compared before the byte digests: equal bytes under another shape or dtype are a
    different tensor. The relative distance is None where it is undefined (a changed tensor that was all zeros).
    """
    a, b = reg.get(ref_a), reg.get(ref_b)
    ta, tb = reg.tensor_digests(a.ref), reg.tensor_digests(b.ref)
    results: list[TensorDiff] = []
    to_measure: list[str] = []
    for name in sorted(ta.keys() | tb.keys()):
        if name not in tb:
            results.append(TensorDiff(name, "only-in-a"))
        elif name not in ta:
            results.append(TensorDiff(name, "only-in-b"))
        elif ta[name][1] != tb[name][1]:
            results.append(TensorDiff(name, "shape-changed"))
        elif ta[name][2] != tb[name][2]:
            results.append(TensorDiff(name, "dtype-changed"))
        elif ta[name][0] == tb[name][0]:
            results.append(TensorDiff(name, "same", 0.0))
        else:
            to_measure.append(name)
    if to_measure:
        distances = _relative_distances(reg, a.ref, b.ref, to_measure)
        results += [TensorDiff(n, "changed", distances[n]) for n in to_measure]
    results.sort(key=lambda t: t.name)
    return VersionDiff(a.ref, b.ref, tuple(results))


def _relative_distances(reg: Registry, ref_a: str, ref_b: str, names: list[str]) -> dict[str, float | None]:
    import torch
    from safetensors import safe_open

    files_a = _tensor_files(reg, ref_a)
    files_b = _tensor_files(reg, ref_b)
    out: dict[str, float | None] = {}
    with ExitStack() as stack:
        handles: dict[str, Any] = {}

        def handle(digest: str) -> Any:
            if digest not in handles:
                path = stack.enter_context(reg.store.local_path(digest))
                handles[digest] = stack.enter_context(safe_open(str(path), framework="pt"))
            return handles[digest]

        for name in names:
            x = _widen(handle(files_a[name]).get_tensor(name))
            y = _widen(handle(files_b[name]).get_tensor(name))
            denom = float(torch.linalg.vector_norm(x))
            out[name] = float(torch.linalg.vector_norm(y - x)) / denom if denom > 0 else None
    return out


def _widen(t: torch.Tensor) -> torch.Tensor:
    """float64, or complex128 for complex tensors, so that no part of the difference is lost."""
    import torch

    return t.to(torch.complex128) if t.is_complex() else t.to(torch.float64)


def _tensor_files(reg: Registry, ref: str) -> dict[str, str]:
    """tensor name -> sha256 of the file blob that holds it."""
    manifest = reg.manifest(ref)
    by_path = {f["path"]: f["sha256"] for f in manifest["files"]}
    return {t["name"]: by_path[t["file"]] for t in manifest["tensors"]}
