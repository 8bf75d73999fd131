"""Temporary files named after the process that writes them, so ``gc`` can tell a crash's leftovers from work in
progress by asking whether the writer still runs, not only by how old a file is.

A name is ``<prefix>-<host>-<pid>-<random>``. On the host that wrote it, the file is a leftover as soon as that
pid is gone (or now belongs to a process started after the file was made). A name from another host (a home on a
shared disk) or from an older release carries no usable writer, and only its age decides.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_NAME_RE = re.compile(r"^(?P<prefix>[^-]+)-(?P<host>.+)-(?P<pid>\d+)-(?P<rand>[0-9a-f]{8,32})(?:\.\w+)?$")


@dataclass(frozen=True)
class Leftover:
    """Something an interrupted write left behind: a temporary file or object, or an unfinished upload."""

    kind: str  # "temporary" (file or object), "staging" (file or folder in HOME/staging), "multipart"
    name: str
    size: int


def host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def writer_name(prefix: str, suffix: str = "") -> str:
    """A fresh name that records this process as its writer."""
    return f"{prefix}-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:16]}{suffix}"


def writer_gone(name: str, mtime: float, cutoff: float) -> bool:
    """True if whoever wrote ``name`` can no longer finish it; names without a local writer fall back to age."""
    m = _NAME_RE.match(name.lstrip("."))
    if m is None or m["host"] != host_tag():
        return mtime < cutoff
    return not _alive(int(m["pid"]), mtime)


def _alive(pid: int, since: float) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    started = _start_time(pid)
    # a pid reused by a process that started after the file was last written is not its writer
    return started is None or started <= since + 1


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (Linux procfs), or None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


class Staging:
    """``HOME/staging``: where blobs are hashed before they go to a remote store, and registrations convert."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def file(self, prefix: str) -> Iterator[Path]:
        """A new empty file path, removed on every way out of the block."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / writer_name(prefix, ".part")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    @contextmanager
    def directory(self, prefix: str) -> Iterator[Path]:
        """A new private folder, removed with its contents on every way out of the block.

        It is made inside the ``try``: a SIGTERM (SystemExit) that lands right after the folder appears still
        removes it. ``tempfile.TemporaryDirectory`` left that moment open (between its ``mkdir`` and the
        finalizer that cleans up), and ``gc`` would only have found the folder once this process was gone.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{writer_name(prefix)}-dir"  # a folder's name ends in one more part (see leftovers)
        try:
            path.mkdir(mode=0o700)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def leftovers(self, cutoff: float) -> Iterator[Leftover]:
        if not self.root.is_dir():
            return
        for entry in sorted(self.root.iterdir()):
            st = entry.lstat()
            # a folder's name has one more part ("-dir", or TemporaryDirectory's random part before round
            # five): the writer's name is what precedes it
            name = entry.name.rsplit("-", 1)[0] if entry.is_dir() else entry.name
            if writer_gone(name, st.st_mtime, cutoff):
                yield Leftover("staging", str(entry), _tree_size(entry))

    @staticmethod
    def remove(leftover: Leftover) -> None:
        path = Path(leftover.name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _tree_size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file())
