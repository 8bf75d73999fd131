"""Copying a user's file into the blob store in one streaming pass.

Each chunk read from the source is written to the blob, fed to the whole-file hash (the blob's name) and to
the hash of every tensor whose bytes it covers, so registration reads the file once and holds at most two
chunks in memory, whatever the model's size. The two SHA-256 streams run on two worker threads while this
thread reads and writes (hashlib and file I/O release the GIL on large buffers), so on two cores hashing,
copying and reading overlap instead of adding up. Each chunk's hashes finish before the next chunk's start,
which keeps every hash fed in order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modelkin.registry.safetensors_header import Header, TensorEntry, read_header
from modelkin.registry.store import CHUNK, BlobStore

Progress = Callable[[int, int], None]  # (bytes just done, total bytes of the registration)


@dataclass(frozen=True)
class IngestedTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    file: str


@dataclass(frozen=True)
class IngestedFile:
    path: str  # relative POSIX path inside the model
    size: int
    sha256: str
    tensors: tuple[IngestedTensor, ...]
    metadata: dict[str, str]


def ingest_safetensors(
    src: Path,
    rel_path: str,
    store: BlobStore,
    pool: ThreadPoolExecutor,
    progress: Callable[[int], None],
    label: str | None = None,
) -> IngestedFile:
    """Validate ``src``'s header (errors name it ``label``), then stream it into ``store`` hashing each tensor."""
    with open(src, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        header = read_header(fh, size, label or rel_path)
        fh.seek(0)
        tensor_hashes = _TensorHasher(header)
        with store.writer() as blob:
            offset = 0
            pending: list[Future[None]] = []
            while chunk := fh.read(CHUNK):
                for job in pending:
                    job.result()
                view = memoryview(chunk)
                pending = [pool.submit(blob.update_hash, view), pool.submit(tensor_hashes.feed, offset, view)]
                blob.write_unhashed(view)
                offset += len(chunk)
                progress(len(chunk))
            for job in pending:
                job.result()
    if blob.size != size:
        raise OSError(f"{src} changed size while it was being read")
    tensors = tuple(
        IngestedTensor(t.name, t.dtype, t.shape, d, rel_path)
        for t, d in zip(header.tensors, tensor_hashes.digests(), strict=True)
    )
    return IngestedFile(rel_path, size, blob.digest, tensors, header.metadata)


def ingest_plain(src: Path, rel_path: str, store: BlobStore, progress: Callable[[int], None]) -> IngestedFile:
    """Any other file of a model directory (config, tokenizer, card) is stored as it is."""
    with open(src, "rb") as fh, store.writer() as blob:
        while chunk := fh.read(CHUNK):
            blob.write(chunk)
            progress(len(chunk))
    return IngestedFile(rel_path, blob.size, blob.digest, (), {})


class _TensorHasher:
    """Feeds file chunks to per-tensor hashes; tensors are contiguous and sorted, so one cursor suffices."""

    def __init__(self, header: Header) -> None:
        self._start = header.data_start
        self._tensors: tuple[TensorEntry, ...] = header.tensors
        self._hashes = [hashlib.sha256() for _ in self._tensors]
        self._i = 0

    def feed(self, offset: int, chunk: memoryview) -> None:
        pos = offset - self._start  # position of chunk[0] in the data buffer
        end = pos + len(chunk)
        while self._i < len(self._tensors):
            t = self._tensors[self._i]
            lo, hi = max(t.begin, pos), min(t.end, end)
            if lo < hi:
                self._hashes[self._i].update(chunk[lo - pos : hi - pos])
            if t.end <= end:
                self._i += 1
            else:
                break

    def digests(self) -> list[str]:
        return [h.hexdigest() for h in self._hashes]
