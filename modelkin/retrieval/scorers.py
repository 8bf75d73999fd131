"""Scorers: map model knowledge and a query to vectors whose inner product ranks models for the query.

``TrainingFree`` answers in a fresh registry: a model's vector is the kernel mean embedding (fixed random
Fourier features of φ) of its class anchors and class-pair boundary points; a query's is the kernel mean
embedding of its class prototypes. Their inner product is high when the model's decision structure lies where
the query's classes are. (Its kernel width was chosen on the seed-0 reference zoo; a landmark-confidence part
was tried and dropped there, as it lowered the ranking quality.)

``Learned`` (trained by :mod:`modelkin.retrieval.training`) adds set encoders over the same features and keeps
the training-free part as a learned-weight residual: score = w·cos(m, q) + v·cos_free(m, q), one inner product
of [√w·m ; √v·m_free] and [√w·q ; √v·q_free]. (A per-model prior head was tried and dropped: on models of
roots held out of training it memorised the training models and generalised worse.)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelkin.errors import InvalidModelFile
from modelkin.retrieval.features import ModelFeatures, QueryFeatures

RFF = 128
KERNEL_WIDTH = 0.5  # in units of the space's bandwidth (median probe-to-landmark distance)
ENCODER_FORMAT = "modelkin.encoder/1"
_RFF_SEED = 20240607  # a constant: the features are part of the scorer's definition, not a random state


@dataclass(frozen=True)
class TrainingFree:
    dims: int  # φ dimensions
    landmarks: int
    bandwidth: float

    name = "training-free"
    knowledge_mix = 0.0  # nothing was fitted: search's second stage is the knowledge score alone

    @property
    def dim(self) -> int:
        return RFF

    def _rff(self, z: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(_RFF_SEED)
        w = rng.standard_normal((self.dims, RFF)) / (KERNEL_WIDTH * self.bandwidth)
        b = rng.uniform(0, 2 * np.pi, RFF)
        return np.asarray(np.sqrt(2.0 / RFF) * np.cos(z @ w + b))

    def model_vector(self, m: ModelFeatures) -> np.ndarray:
        points = np.concatenate([m.anchors[:, : self.dims], m.boundary[:, : self.dims]])
        return _unit(self._rff(points).mean(axis=0))

    def query_vector(self, q: QueryFeatures) -> np.ndarray:
        return _unit(self._rff(q.prototypes).mean(axis=0))


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return np.asarray(v / n if n > 1e-12 else v, dtype=np.float32)


class Learned:
    """A trained scorer; inference is a pure function of its stored weights (no dropout, no random state)."""

    name = "learned"

    def __init__(self, net: Any, free: TrainingFree, config: dict[str, Any]) -> None:
        self.net, self.free, self.config = net, free, config

    @property
    def dim(self) -> int:
        return int(self.config["out"]) + self.free.dim

    @property
    def knowledge_mix(self) -> float:
        """The learned score's weight beside the knowledge score in search (0 for encoders trained before it
        was fitted)."""
        return float(self.config.get("knowledge_mix", 0.0))

    def model_vectors(self, ms: list[ModelFeatures]) -> np.ndarray:
        from modelkin.retrieval.training import model_vectors

        return model_vectors(self, ms)

    def query_vector(self, q: QueryFeatures) -> np.ndarray:
        from modelkin.retrieval.training import query_vectors

        return query_vectors(self, [q])[0]

    def model_vector(self, m: ModelFeatures) -> np.ndarray:
        return self.model_vectors([m])[0]

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        meta = {ENCODER_FORMAT: json.dumps(self.config, sort_keys=True)}  # one key: a fixed byte order
        return bytes(save(state, metadata=meta))

    @classmethod
    def from_bytes(cls, data: bytes, free: TrainingFree) -> Learned:
        from safetensors.torch import load

        from modelkin.retrieval.training import build_net

        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        if ENCODER_FORMAT not in meta:
            raise InvalidModelFile(f"a stored encoder is not in the {ENCODER_FORMAT} format.")
        try:
            config = json.loads(meta[ENCODER_FORMAT])
            net = build_net(config)
            net.load_state_dict(load(data))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # an encoder of another layout or version
            raise InvalidModelFile(
                f"the stored retrieval encoder does not fit this modelkin's encoder layout ({type(exc).__name__}).",
                hint="retrain it with `modelkin retrieval train`",
            ) from None
        return cls(net.eval(), free, config)
