"""Content-addressed blob store: ``objects/ab/cdef…`` keyed by the SHA-256 of the bytes.

Blobs are written to a temporary name beside their final place, hashed while they stream, fsynced, then
renamed into place, so a crash never leaves a blob whose name lies about its bytes. Every read that will be
deserialised goes through :meth:`BlobStore.open_verified`, which checks the digest first.

Two implementations share one interface: a local directory (default) and any fsspec URL (``s3://…``,
``memory://…``) for teams.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from modelkin.errors import IntegrityError

CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    mtime: float


class BlobWriter:
    """A sink that hashes what it is given; the store files the bytes under their digest when it closes.

    With ``early_writeback`` (local files), each chunk's writeback to disk starts as soon as it is written,
    so the final fsync has little left to wait for and a large model does not flood the page cache.
    """

    def __init__(self, fh: IO[bytes], early_writeback: bool = False) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()
        self.size = 0
        self._early = early_writeback and hasattr(os, "posix_fadvise")

    def write(self, data: bytes | memoryview) -> None:
        self.update_hash(data)
        self.write_unhashed(data)

    def update_hash(self, data: bytes | memoryview) -> None:
        """Hash a chunk; may run on another thread than ``write_unhashed``, as long as chunks keep their order."""
        self._hash.update(data)

    def write_unhashed(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        if self._early and len(data) >= CHUNK:
            self._fh.flush()
            # on Linux, DONTNEED on dirty pages starts their writeback without waiting for it
            os.posix_fadvise(self._fh.fileno(), self.size, len(data), os.POSIX_FADV_DONTNEED)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()


class BlobStore(ABC):
    """What the registry needs from storage, whatever is behind it."""

    location: str

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    @contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """Yield a writer; on clean exit the bytes are durably stored under their digest."""

    @abstractmethod
    def _open_raw(self, digest: str) -> IO[bytes]: ...

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]: ...

    @abstractmethod
    def delete(self, digest: str) -> None: ...

    @abstractmethod
    def touch(self, digest: str) -> None:
        """Refresh a blob's age so that a concurrent ``gc`` does not take a blob that is being reused."""

    @abstractmethod
    @contextmanager
    def local_path(self, digest: str) -> Iterator[Path]:
        """A local file holding the blob's verified bytes, for loaders that want a path (safetensors mmap)."""

    def put_bytes(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
        return w.digest

    def hash_blob(self, digest: str) -> str | None:
        """The actual SHA-256 of the stored bytes, or None if the blob is missing."""
        try:
            fh = self._open_raw(digest)
        except FileNotFoundError:
            return None
        with fh:
            return sha256_stream(fh)

    def copy_verified(self, digest: str, target: Path) -> None:
        """Copy a blob to ``target`` through a temporary file beside it, hashing on the way.

        Nothing appears at ``target`` unless every byte matched the digest.
        """
        try:
            src = self._open_raw(digest)
        except FileNotFoundError:
            raise _missing(digest) from None
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".modelkin-")
        try:
            h = hashlib.sha256()
            with src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != digest:
                raise _changed(digest, h.hexdigest())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_verified(self, digest: str) -> bytes:
        """The whole blob, after checking its digest (for small blobs such as manifests)."""
        try:
            with self._open_raw(digest) as fh:
                data = fh.read()
        except FileNotFoundError:
            raise _missing(digest) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise _changed(digest, actual)
        return data


def sha256_stream(fh: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def _missing(digest: str) -> IntegrityError:
    return IntegrityError(
        f"blob {digest[:12]} is missing from the store.",
        expected=digest,
        actual=None,
        hint="run `modelkin verify` to see which versions are affected",
    )


def _changed(digest: str, actual: str) -> IntegrityError:
    return IntegrityError(
        f"blob {digest[:12]} was altered on disk: its bytes now hash to {actual[:12]}.",
        expected=digest,
        actual=actual,
        hint="register the same files again to repair it, or restore it from a backup",
    )


def _relative(digest: str) -> str:
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return f"{digest[:2]}/{digest[2:]}"


class LocalStore(BlobStore):
    """Blobs as read-only files under a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def _path(self, digest: str) -> Path:
        return self.root / _relative(digest)

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    @contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as fh:
                w = BlobWriter(fh, early_writeback=True)
                yield w
                fh.flush()
                os.fsync(fh.fileno())
            final = self._path(w.digest)
            if self.hash_blob(w.digest) == w.digest:  # already stored intact: keep it, refresh its age
                os.unlink(tmp)
                self.touch(w.digest)
            else:  # new, or stored but damaged: the fresh bytes replace it, which repairs the store
                final.parent.mkdir(exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
        except BaseException:
            with _suppress_missing():
                os.unlink(tmp)
            raise

    def _open_raw(self, digest: str) -> IO[bytes]:
        return open(self._path(digest), "rb")

    def iter_blobs(self) -> Iterator[BlobInfo]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                st = f.stat()
                yield BlobInfo(sub.name + f.name, st.st_size, st.st_mtime)

    def delete(self, digest: str) -> None:
        with _suppress_missing():
            self._path(digest).unlink()

    def touch(self, digest: str) -> None:
        with _suppress_missing():
            os.utime(self._path(digest))

    @contextmanager
    def local_path(self, digest: str) -> Iterator[Path]:
        path = self._path(digest)
        actual = self.hash_blob(digest)
        if actual is None:
            raise _missing(digest)
        if actual != digest:
            raise _changed(digest, actual)
        yield path

    def stale_incoming(self, older_than: float) -> Iterator[Path]:
        """Temporary files left by interrupted writes."""
        if self.root.is_dir():
            for f in self.root.glob(".incoming-*"):
                if f.stat().st_mtime < older_than:
                    yield f


class FsspecStore(BlobStore):
    """Blobs under an fsspec URL; verified bytes are staged in a local temporary file when a path is needed."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.location = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")

    def _key(self, digest: str) -> str:
        return f"{self.root}/{_relative(digest)}"

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._key(digest)))

    @contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        tmp = f"{self.root}/.incoming-{uuid.uuid4().hex}"
        self.fs.makedirs(self.root, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as fh:
                w = BlobWriter(fh)
                yield w
            final = self._key(w.digest)
            if self.hash_blob(w.digest) == w.digest:
                self.fs.rm(tmp)
                self.touch(w.digest)
            else:
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(tmp, final)
        except BaseException:
            with _suppress_missing():
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
            raise

    def _open_raw(self, digest: str) -> IO[bytes]:
        key = self._key(digest)
        if not self.fs.exists(key):
            raise FileNotFoundError(key)
        fh: IO[bytes] = self.fs.open(key, "rb")
        return fh

    def iter_blobs(self) -> Iterator[BlobInfo]:
        if not self.fs.exists(self.root):
            return
        for key, info in sorted(self.fs.find(self.root, detail=True).items()):
            parts = key.rstrip("/").split("/")
            if len(parts) < 2 or len(parts[-2]) != 2 or parts[-1].startswith("."):
                continue
            yield BlobInfo(parts[-2] + parts[-1], int(info.get("size") or 0), _mtime(info))

    def delete(self, digest: str) -> None:
        with _suppress_missing():
            self.fs.rm(self._key(digest))

    def touch(self, digest: str) -> None:
        # object stores cannot change a modification time in place; re-uploading is the only "touch"
        pass

    @contextmanager
    def local_path(self, digest: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="modelkin-") as tmpdir:
            target = Path(tmpdir) / digest
            self.copy_verified(digest, target)
            yield target


def _mtime(info: dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "created", "last_modified"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
    return time.time()  # unknown age: treat as fresh, so gc never deletes what it cannot date


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _suppress_missing() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        pass


def open_store(location: str) -> BlobStore:
    """A LocalStore for a plain path or ``file://`` URL, an FsspecStore for any other URL."""
    if "://" in location and not location.startswith("file://"):
        return FsspecStore(location)
    return LocalStore(Path(location.removeprefix("file://")).expanduser())
