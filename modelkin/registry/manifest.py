"""The manifest: one canonical-JSON document per version whose SHA-256 is the version's identity."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from modelkin.canonical import canonical_json
from modelkin.registry.ingest import IngestedFile, IngestedTensor

FORMAT = "modelkin.manifest"
FORMAT_VERSION = 1


def architecture_fingerprint(tensors: Sequence[IngestedTensor]) -> str:
    """sha256 of the sorted (name, shape, dtype) list: equal for models that can load each other's weights."""
    rows = sorted([t.name, list(t.shape), t.dtype] for t in tensors)
    return hashlib.sha256(canonical_json(rows)).hexdigest()


def build_manifest(files: Sequence[IngestedFile], architecture: dict[str, Any] | None) -> dict[str, Any]:
    tensors = sorted((t for f in files for t in f.tensors), key=lambda t: t.name)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in sorted(files, key=lambda f: f.path)],
        "tensors": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "sha256": t.sha256, "file": t.file}
            for t in tensors
        ],
        "architecture": architecture,
        "architecture_fingerprint": architecture_fingerprint(tensors),
        "parameters": sum(math.prod(t.shape) for t in tensors),
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return canonical_json(manifest)
