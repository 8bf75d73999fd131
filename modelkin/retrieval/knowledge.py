"""Knowledge tensors as bytes: safetensors (no code on load, deterministic bytes for equal knowledge).

The blob keeps the raw capture so that vectors can be recomputed by any later encoder without running the
model again; ``pool`` names the probe pool blob it was captured on. Format 1 blobs (before pool logits were
kept) still load: their log-probabilities stand in for the logits, which only shifts each row by a constant.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from modelkin.errors import InvalidModelFile
from modelkin.retrieval.capture import _ARRAYS, Knowledge

FORMAT = "modelkin.knowledge/2"
FORMAT_1 = "modelkin.knowledge/1"
META_KEY = "modelkin.knowledge"


def to_bytes(knowledge: Knowledge, pool: str) -> bytes:
    # one metadata key holding canonical JSON: safetensors writes a multi-key map in no fixed order
    meta = {META_KEY: json.dumps({"format": FORMAT, "pool": pool, "forward_calls": knowledge.forward_calls},
                                 sort_keys=True)}  # fmt: skip
    return bytes(save({k: np.ascontiguousarray(v) for k, v in knowledge.arrays().items()}, metadata=meta))


def from_bytes(data: bytes) -> Knowledge:
    arrays = load(data)
    meta = _meta(data)
    if meta.get("format") == FORMAT_1 and "pool_probs" in arrays:
        log_probs = np.log(np.clip(arrays["pool_probs"].astype(np.float64), 1e-6, None))
        arrays["pool_logits"] = log_probs.astype(np.float16)
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise InvalidModelFile(f"a stored knowledge tensor lacks {', '.join(missing)}.")
    return Knowledge(**{k: arrays[k] for k in _ARRAYS}, forward_calls=int(meta.get("forward_calls", 0)))


def _meta(data: bytes) -> dict[str, Any]:
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads((json.loads(data[8 : 8 + n]).get("__metadata__") or {}).get(META_KEY, "{}"))
    if meta.get("format") not in (FORMAT, FORMAT_1):
        raise InvalidModelFile(f"a stored knowledge tensor has format {meta.get('format')!r}, not {FORMAT}.")
    return dict(meta)
