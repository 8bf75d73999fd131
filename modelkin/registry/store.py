"""Content-addressed blob store: ``objects/ab/cdef…`` keyed by the SHA-256 of the bytes.

A local store writes each blob to a temporary name beside its final place (named after its writer, see
``staging``), hashing while it streams, fsyncs it, then renames it into place. A remote store hashes while the
bytes stream into a staging file in the registry home, then uploads them once, straight to the final key, and
only if no blob is there yet: a crash never leaves a blob whose name lies about its bytes, and a blob once stored
is never rewritten. Every read that will be deserialised checks the digest first.

Two implementations share one interface: a local directory (default) and any fsspec URL (``memory://…``);
``modelkin.registry.s3`` adds what S3 needs on top of the fsspec one (conditional writes, parts, errors).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from modelkin.errors import ConfigError, IntegrityError, StoreUnavailable
from modelkin.registry.staging import Leftover, Staging, writer_gone, writer_name

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
    def mtime(self, digest: str) -> float | None:
        """A blob's age as a timestamp (None if it is gone): ``gc`` asks again right before it deletes."""

    @abstractmethod
    @contextmanager
    def local_path(self, digest: str) -> Iterator[Path]:
        """A local file holding the blob's verified bytes, for loaders that want a path (safetensors mmap)."""

    def written_path(self, digest: str) -> AbstractContextManager[Path]:
        """A local file with a blob this process has just written and hashed (registration-time indexers).

        A local store skips a second hash of bytes it hashed a moment ago; a remote one copies them verified.
        """
        return self.local_path(digest)

    @abstractmethod
    def check(self) -> None:
        """Write, read back and delete a probe; raise StoreUnavailable saying in one sentence what is wrong."""

    @abstractmethod
    def leftovers(self, cutoff: float) -> Iterator[Leftover]:
        """What interrupted writes left in the store: their writer is gone, or (writer unknown) older than cutoff."""

    @abstractmethod
    def remove_leftover(self, leftover: Leftover) -> None: ...

    def _errors(self) -> AbstractContextManager[None]:
        """Where the store's own failures become one clear StoreUnavailable (remote stores)."""
        return nullcontext()

    def batch(self) -> AbstractContextManager[None]:
        """Inside the block a writer may return before its blob is stored; when the block ends, every blob is.

        A remote store uploads in the background while the next file is hashed. What follows the block (the
        manifest, the version row) can rely on every blob written inside it; a failed upload raises on leaving.
        """
        return nullcontext()

    def put_bytes(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
        return w.digest

    def hash_blob(self, digest: str) -> str | None:
        """The actual SHA-256 of the stored bytes, or None if the blob is missing."""
        with self._errors():
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
        with self._errors():
            try:
                src = self._open_raw(digest)
            except FileNotFoundError:
                raise _missing(digest) from None
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".modelkin-")
        try:
            h = hashlib.sha256()
            with self._errors(), src, os.fdopen(fd, "wb") as dst:
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
            with self._errors(), self._open_raw(digest) as fh:
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


def _is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _relative(digest: str) -> str:
    if not _is_digest(digest):
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
        tmp = self.root / writer_name(".incoming")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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

    def mtime(self, digest: str) -> float | None:
        try:
            return self._path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    @contextmanager
    def local_path(self, digest: str) -> Iterator[Path]:
        path = self._path(digest)
        actual = self.hash_blob(digest)
        if actual is None:
            raise _missing(digest)
        if actual != digest:
            raise _changed(digest, actual)
        yield path

    @contextmanager
    def written_path(self, digest: str) -> Iterator[Path]:
        path = self._path(digest)
        if not path.is_file():
            raise _missing(digest)
        yield path

    def check(self) -> None:
        probe = self.root / writer_name(".probe")
        data = os.urandom(32)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(data)
            back = probe.read_bytes()
            probe.unlink()
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot write to the store directory {self.root} ({exc.strerror or exc}).",
                problem="not_writable",
                hint="check that the directory exists and is writable, or set MODELKIN_STORE",
            ) from None
        if back != data:
            raise StoreUnavailable(f"the store directory {self.root} returned other bytes than were written.")

    def leftovers(self, cutoff: float) -> Iterator[Leftover]:
        """Temporary files of interrupted writes (``.incoming-*``) and checks (``.probe-*``)."""
        if not self.root.is_dir():
            return
        for f in sorted([*self.root.glob(".incoming-*"), *self.root.glob(".probe-*")]):
            with _suppress_missing():
                st = f.stat()
                if writer_gone(f.name, st.st_mtime, cutoff):
                    yield Leftover("temporary", str(f), st.st_size)

    def remove_leftover(self, leftover: Leftover) -> None:
        Path(leftover.name).unlink(missing_ok=True)


class FsspecStore(BlobStore):
    """Blobs under an fsspec URL. Bytes are hashed into a staging file in the registry home, then stored once.

    A path for a loader is a verified copy in the staging folder.
    """

    def __init__(self, url: str, staging: Staging, fs: Any = None) -> None:
        self.location = url
        if fs is None:
            import fsspec

            fs, root = fsspec.core.url_to_fs(url)
        else:
            root = fs._strip_protocol(url)
        self.fs = fs
        self.root = root.rstrip("/")
        self.staging = staging
        self._uploads: _Uploads | None = None

    def _key(self, digest: str) -> str:
        return f"{self.root}/{_relative(digest)}"

    def exists(self, digest: str) -> bool:
        with self._errors():
            return bool(self.fs.exists(self._key(digest)))

    @contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        with self.staging.file("blob") as path:
            with open(path, "wb") as fh:
                w = BlobWriter(fh)
                yield w
            key = self._key(w.digest)
            if self._uploads is None:
                self._checked_store(path, key, w.size)
            else:  # the upload owns the staged file from now on, and removes it when done
                queued = path.with_name(writer_name("blob", ".part"))
                os.replace(path, queued)
                self._uploads.submit(self._checked_store, queued, key, w.size)

    @contextmanager
    def batch(self) -> Iterator[None]:
        if self._uploads is not None:  # already inside one
            yield
            return
        self._uploads = uploads = _Uploads()
        try:
            yield
        except BaseException:
            uploads.finish(ok=False)
            raise
        finally:
            self._uploads = None
        uploads.finish(ok=True)

    def _checked_store(self, path: Path, key: str, size: int) -> None:
        with self._errors():
            self._store(path, key, size)

    def _store(self, path: Path, key: str, size: int) -> None:
        """Upload ``path`` to ``key`` unless a blob of that size is there already; never overwrite one.

        A stored blob of another size is damaged (a digest fixes the size), so it is removed first and the
        fresh bytes repair it; any other alteration is what ``verify`` finds.
        """
        try:
            stored: int | None = int(self.fs.info(key)["size"])
        except FileNotFoundError:
            stored = None
        if stored == size:
            return
        if stored is not None:
            self.fs.rm_file(key)
        try:
            self.fs.put_file(str(path), key, mode="create")
        except FileExistsError:  # a concurrent writer of the same digest was first: its bytes are these bytes
            pass

    def _open_raw(self, digest: str) -> IO[bytes]:
        key = self._key(digest)
        if not self.fs.exists(key):
            raise FileNotFoundError(key)
        fh: IO[bytes] = self.fs.open(key, "rb")
        return fh

    def _entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._errors():
            if not self.fs.exists(self.root):
                return
            yield from sorted(self.fs.find(self.root, detail=True).items())

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for key, info in self._entries():
            digest = key.removeprefix(self.root + "/").replace("/", "", 1)
            if key[len(self.root) + 3 : len(self.root) + 4] == "/" and _is_digest(digest):  # root/ab/cdef…, no deeper
                yield BlobInfo(digest, int(info.get("size") or 0), _mtime(info))

    def delete(self, digest: str) -> None:
        with self._errors(), _suppress_missing():
            self.fs.rm_file(self._key(digest))

    def touch(self, digest: str) -> None:
        # most object stores cannot change a modification time in place (S3Store refreshes it by a copy)
        pass

    def mtime(self, digest: str) -> float | None:
        with self._errors():
            try:
                return _mtime(self.fs.info(self._key(digest)))
            except FileNotFoundError:
                return None

    @contextmanager
    def local_path(self, digest: str) -> Iterator[Path]:
        with self.staging.directory("read") as tmpdir:
            target = tmpdir / digest
            self.copy_verified(digest, target)
            yield target

    def check(self) -> None:
        probe = f"{self.root}/{writer_name('.probe')}"
        data = os.urandom(32)
        with self._errors():
            self.fs.pipe_file(probe, data)
            back = self.fs.cat_file(probe)
            self.fs.rm_file(probe)
        if back != data:
            raise StoreUnavailable(f"the store {self.location} returned other bytes than were written.")

    def leftovers(self, cutoff: float) -> Iterator[Leftover]:
        """Temporary objects: ``.incoming-*`` (left by releases that uploaded twice) and ``.probe-*``."""
        for key, info in self._entries():
            name = key.rsplit("/", 1)[-1]
            if name.startswith((".incoming-", ".probe-")) and writer_gone(name, _mtime(info), cutoff):
                yield Leftover("temporary", key, int(info.get("size") or 0))

    def remove_leftover(self, leftover: Leftover) -> None:
        with self._errors(), _suppress_missing():
            self.fs.rm_file(leftover.name)


class _Uploads:
    """Uploads that run while the next file is hashed: two at once, and at most three staged files waiting."""

    def __init__(self, workers: int = 2, queued: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelkin-upload")
        self._slots = threading.BoundedSemaphore(queued)
        self._jobs: list[tuple[Future[None], Path]] = []

    def submit(self, store: Callable[[Path, str, int], None], path: Path, key: str, size: int) -> None:
        for job, _ in self._jobs:  # fail fast: an upload that failed stops the registration now
            if job.done() and job.exception() is not None:
                path.unlink(missing_ok=True)
                job.result()
        self._slots.acquire()

        def run() -> None:
            try:
                store(path, key, size)
            finally:
                path.unlink(missing_ok=True)
                self._slots.release()

        self._jobs.append((self._pool.submit(run), path))

    def finish(self, ok: bool) -> None:
        """Wait for the uploads (or, after a failure, only for those already running); raise the first error."""
        self._pool.shutdown(wait=True, cancel_futures=not ok)
        for _, path in self._jobs:
            path.unlink(missing_ok=True)  # staged files of cancelled uploads
        if ok:
            for job, _ in self._jobs:
                job.result()


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


def open_store(location: str, staging: Path) -> BlobStore:
    """A LocalStore for a plain path or ``file://`` URL, an S3Store for ``s3://``, an FsspecStore otherwise.

    ``staging`` (in the registry home) holds the bytes of remote blobs while they are hashed.
    """
    if location.startswith(("s3://", "s3a://")):
        from modelkin.registry.s3 import S3Store

        return S3Store(location, Staging(staging))
    if "://" in location and not location.startswith("file://"):
        try:
            return FsspecStore(location, Staging(staging))
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cannot open the store {location}: {exc}", hint="check MODELKIN_STORE") from None
    return LocalStore(Path(location.removeprefix("file://")).expanduser())


@dataclass(frozen=True)
class StoreCheck:
    """The outcome of ``store check``: ``problem`` is None when a probe was written, read back and deleted."""

    store: str
    problem: str | None = None
    message: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "problem": self.problem, "message": self.message,
                "hint": self.hint}  # fmt: skip


def check_store(location: str, staging: Path) -> StoreCheck:
    """Probe the store at ``location`` (no database needed), turning its failure into a verdict."""
    store = open_store(location, staging)
    try:
        store.check()
    except StoreUnavailable as exc:
        return StoreCheck(store.location, exc.problem, str(exc), exc.hint)
    return StoreCheck(store.location)
