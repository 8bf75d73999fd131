"""Knowledge tensors as bytes: safetensors (no code on load, deterministic bytes for equal knowledge).

The blob keeps the raw capture so that vectors can be recomputed by any later encoder without running the
model again; ``pool`` names the probe pool blob it was captured on.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from safetensors.numpy import load, save

from modelkin.errors import InvalidModelFile
from modelkin.retrieval.capture import _ARRAYS, Knowledge

FORMAT = "modelkin.knowledge/1"
META_KEY = "modelkin.knowledge"


def to_bytes(knowledge: Knowledge, pool: str) -> bytes:
    # one metadata key holding canonical JSON: safetensors writes a multi-key map in no fixed order
    meta = {META_KEY: json.dumps({"format": FORMAT, "pool": pool, "forward_calls": knowledge.forward_calls},
                                 sort_keys=True)}  # fmt: skip
    return bytes(save({k: np.ascontiguousarray(v) for k, v in knowledge.arrays().items()}, metadata=meta))


def from_bytes(data: bytes) -> Knowledge:
    arrays = load(data)
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise InvalidModelFile(f"a stored knowledge tensor lacks {', '.join(missing)}.")
    return Knowledge(**{k: arrays[k] for k in _ARRAYS}, forward_calls=_calls(data))


def _calls(data: bytes) -> int:
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads((json.loads(data[8 : 8 + n]).get("__metadata__") or {}).get(META_KEY, "{}"))
    if meta.get("format") != FORMAT:
        raise InvalidModelFile(f"a stored knowledge tensor has format {meta.get('format')!r}, not {FORMAT}.")
    return int(meta.get("forward_calls", 0))
