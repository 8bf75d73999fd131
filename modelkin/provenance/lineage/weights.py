"""A safetensors file's floating-point tensors as memory-mapped arrays, for sketching.

A sketch reads a block of a large tensor's rows (sketch.py), so mapping the file instead of loading it means
registration touches a small share of a large model's bytes. Integer and boolean tensors (position ids, masks)
and 8-bit-or-smaller float formats say nothing a sketch can use and are left out; bfloat16, which numpy lacks,
is widened to float32 in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from modelkin.registry.safetensors_header import read_header_from_path

_MAPPED = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def mapped_tensors(
    path: Path, label: str | None = None, digests: Mapping[str, str] | None = None
) -> Iterator[tuple[str, np.ndarray, str]]:
    """(name, array, sha256 of its bytes) for each float tensor, in name order; digests are computed when not given."""
    header = read_header_from_path(path, label)
    if not header.tensors:
        return
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    for t in sorted(header.tensors, key=lambda t: t.name):
        if t.dtype not in _MAPPED and t.dtype != "BF16" or t.end == t.begin:
            continue
        data = raw[header.data_start + t.begin : header.data_start + t.end]
        digest = (digests or {}).get(t.name) or hashlib.sha256(data.data).hexdigest()
        if t.dtype == "BF16":
            array = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = data.view(_MAPPED[t.dtype])
        yield t.name, array.reshape(t.shape), digest
