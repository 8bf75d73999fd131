"""The vector index: faiss inner product over model vectors, keyed by version id, with filters as ID selectors.

Up to ``IVF_THRESHOLD`` vectors the index is exact (``IndexIDMap2`` over ``IndexFlatIP``). Past it, an
``IndexIVFFlat`` (trained on a fixed, evenly strided sample, so a rebuild is reproducible) answers with
``NPROBE`` lists; a filter becomes an ``IDSelectorBatch`` inside the search, and the fewer versions it keeps the
more lists are probed (down to all of them: an exact search of just the selected vectors), so a filter that
matches 3 of a million models still returns those 3.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import faiss
import numpy as np

_faiss: Any = faiss  # faiss' own stubs miss the SWIG keyword arguments and attributes used here

IVF_THRESHOLD = 100_000
NPROBE = 32
TRAIN_SAMPLE = 50_000


class VectorIndex:
    """A thin, typed wrapper; ``search`` returns (ids, scores), best first, missing hits dropped."""

    def __init__(self, index: Any) -> None:
        self.index = index

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(faiss.downcast_index(self.index), faiss.IndexIVFFlat) else "flat"

    def ids(self) -> np.ndarray:
        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexIVFFlat):
            lists: Any = inner.invlists
            parts = [_faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(inner.nlist)]
            return np.sort(np.concatenate(parts).astype(np.int64))
        return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.remove(ids)
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        arr = np.asarray(list(ids), dtype=np.int64)
        if len(arr):
            self.index.remove_ids(faiss.IDSelectorBatch(arr))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` by inner product among ``allowed`` ids (all when None)."""
        n = self.size
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        selector = None
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if not len(allowed):
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            selector = faiss.IDSelectorBatch(allowed)
            k = min(k, len(allowed))
        k = min(k, n)
        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexIVFFlat):
            share = 1.0 if allowed is None else len(allowed) / n
            nprobe = min(inner.nlist, max(NPROBE, math.ceil(NPROBE / max(share, 1e-9))))
            params: Any = _faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        else:
            params = _faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, ids = self.index.search(q, k, params=params)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def to_bytes(self) -> bytes:
        return bytes(faiss.serialize_index(self.index).tobytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> VectorIndex:
        return cls(faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)))


def build(ids: np.ndarray, vectors: np.ndarray, dim: int | None = None) -> VectorIndex:
    """An exact index for up to IVF_THRESHOLD vectors, an IVF one beyond."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    d = vectors.shape[1] if len(vectors) else int(dim or 1)
    if len(vectors) <= IVF_THRESHOLD:
        index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    else:
        nlist = int(math.sqrt(len(vectors)))
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        step = max(1, len(vectors) // TRAIN_SAMPLE)
        ivf.cp.seed = 1234
        ivf.train(vectors[::step])
        index = ivf
    out = VectorIndex(index)
    if len(vectors):
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return out
