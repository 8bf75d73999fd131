"""The trained encoders' weight layout, and their query side evaluated in numpy.

A search encodes one query through a few small dense layers. Evaluating them in numpy keeps torch (seconds to
import) out of a plain search: torch loads only to encode models (capture, index rebuild, training) or to run
models in a rerank. The layer names and shapes are those of ``training._Net``; tests check that both agree and
that the numpy query vector equals the torch one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelkin.retrieval.features import MODEL_GLOBALS, QUERY_GLOBALS, QueryFeatures

GLOBAL_WIDTH = 16


def layout(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape for an encoder of ``config`` (dims, landmarks, hidden, out)."""
    dims, marks, hidden, out = (int(config[k]) for k in ("dims", "landmarks", "hidden", "out"))
    half = hidden // 2
    cat = hidden + 2 * half + GLOBAL_WIDTH
    shapes: dict[str, tuple[int, ...]] = {"log_w": (), "log_v": ()}

    def linear(name: str, i: int, o: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (o, i), (o,)

    def mlp(name: str, i: int, h: int) -> None:
        linear(f"{name}.0", i, h)
        linear(f"{name}.2", h, h)

    for side, width, globals_ in (("m", dims + 2, MODEL_GLOBALS), ("q", dims, QUERY_GLOBALS)):
        mlp("anchor" if side == "m" else "proto", width, hidden)
        mlp("bound" if side == "m" else "mid", width, half)
        linear(f"{side}land", marks, half)
        linear(f"{side}glob", globals_, GLOBAL_WIDTH)
        linear(f"{side}out", cat, out)
    return shapes


def query_vector(state: Mapping[str, np.ndarray], q: QueryFeatures, bandwidth: float, free: np.ndarray
                 ) -> np.ndarray:  # fmt: skip
    """The query's served vector [√w·emb ; √v·free] from the stored weights (float32, as torch computes it)."""

    def linear(name: str, x: np.ndarray) -> np.ndarray:
        return np.asarray(x @ state[f"{name}.weight"].T + state[f"{name}.bias"], dtype=np.float32)

    def pooled_mlp(name: str, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.zeros(state[f"{name}.2.bias"].shape, np.float32)
        x = np.asarray(rows / bandwidth, dtype=np.float32)
        return linear(f"{name}.2", np.maximum(linear(f"{name}.0", x), 0)).sum(axis=0) / np.float32(len(rows))

    land = np.asarray(q.landmarks * len(q.landmarks), dtype=np.float32)
    h = np.concatenate([pooled_mlp("proto", q.prototypes), pooled_mlp("mid", q.midpoints), linear("qland", land),
                        linear("qglob", np.asarray(q.globals, dtype=np.float32))])  # fmt: skip
    emb = linear("qout", np.maximum(h, 0))
    emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
    w, v = np.sqrt(np.exp(state["log_w"])), np.sqrt(np.exp(state["log_v"]))
    return np.concatenate([w * emb, v * np.asarray(free, dtype=np.float32)]).astype(np.float32)
