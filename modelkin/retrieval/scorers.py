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
UNNAMED = "?"  # the family of versions that declare none
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

    def mix_weight(self, family: str | None) -> float:
        return self.knowledge_mix

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
    """A trained scorer; inference is a pure function of its stored weights (no dropout, no random state).

    It holds the weights as arrays: a query is encoded in numpy (:mod:`modelkin.retrieval.encoder`), and the
    torch module, needed only to encode models, is built on first use.
    """

    name = "learned"

    def __init__(self, state: dict[str, np.ndarray], free: TrainingFree, config: dict[str, Any], net: Any = None
                 ) -> None:  # fmt: skip
        self.state, self.free, self.config, self._net = state, free, config, net

    @property
    def net(self) -> Any:
        if self._net is None:
            from modelkin.retrieval.training import net_from_state

            self._net = net_from_state(self.config, self.state)
        return self._net

    @property
    def dim(self) -> int:
        return int(self.config["out"]) + self.free.dim

    @property
    def knowledge_mix(self) -> float:
        """The learned score's weight beside the knowledge score in search (0 for encoders trained before it
        was fitted)."""
        return float(self.config.get("knowledge_mix", 0.0))

    def mix_weight(self, family: str | None) -> float:
        """The learned score's weight for a model of ``family``: the cross-fitted weight for families the
        encoders were trained on, the one fitted for unseen families otherwise (encoders trained before
        families were recorded use one weight for all)."""
        trained = self.config.get("families")
        if trained is None or (family or UNNAMED) in trained:
            return self.knowledge_mix
        return float(self.config.get("unseen_family_mix", 0.0))

    def model_vectors(self, ms: list[ModelFeatures]) -> np.ndarray:
        from modelkin.retrieval.training import model_vectors

        return model_vectors(self, ms)

    def query_vector(self, q: QueryFeatures) -> np.ndarray:
        from modelkin.retrieval.encoder import query_vector

        return query_vector(self.state, q, self.free.bandwidth, self.free.query_vector(q))

    def model_vector(self, m: ModelFeatures) -> np.ndarray:
        return self.model_vectors([m])[0]

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        meta = {ENCODER_FORMAT: json.dumps(self.config, sort_keys=True)}  # one key: a fixed byte order
        return bytes(save({k: np.array(v, order="C") for k, v in self.state.items()}, metadata=meta))

    @classmethod
    def from_bytes(cls, data: bytes, free: TrainingFree) -> Learned:
        from safetensors.numpy import load

        from modelkin.retrieval.encoder import layout

        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        if ENCODER_FORMAT not in meta:
            raise InvalidModelFile(f"a stored encoder is not in the {ENCODER_FORMAT} format.")
        try:
            config = json.loads(meta[ENCODER_FORMAT])
            state = load(data)
            fits = {k: tuple(v.shape) for k, v in state.items()} == layout(config)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # an encoder of another layout or version
            fits, reason = False, type(exc).__name__
        else:
            reason = "its weights have other names or shapes"
        if not fits:
            raise InvalidModelFile(
                f"the stored retrieval encoder does not fit this modelkin's encoder layout ({reason}).",
                hint="retrain it with `modelkin retrieval train`",
            )
        return cls(state, free, config)
