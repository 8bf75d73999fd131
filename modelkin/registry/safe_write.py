"""Writing files into a folder the user named, never following a link out of it.

Every directory on the way is opened relative to its parent with ``O_NOFOLLOW``, so a symlinked folder inside
the target is refused instead of entered, and every file is written fresh under a temporary name
(``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0644 less the umask) then renamed over its final name, which replaces
a link that was there instead of writing through it. Files are staged first and renamed only when all of them
were written, so a refusal or a failure leaves the folder as it was.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from modelkin.errors import ExportError

FILE_MODE = 0o644  # the umask applies, as for any file a program creates
DIR_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class SafeFolder:
    """A folder opened once; ``stage`` writes files beside their final names, ``commit`` renames them in."""

    def __init__(self, root: Path, *, create: bool) -> None:
        self.root = root
        self.created = False
        if create and not os.path.lexists(root):
            root.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(root, DIR_MODE)
            self.created = True
        try:
            self._fd = os.open(root, _DIR_FLAGS)
        except OSError as exc:
            raise _refusal(root, exc) from None
        self._dirs: dict[tuple[str, ...], int] = {(): self._fd}
        self._made: list[tuple[str, ...]] = []
        self._staged: list[tuple[int, str, str]] = []  # (directory fd, temporary name, final name)

    def check(self, rel: str) -> None:
        """Refuse, before anything is written, a path whose parents are links or files, or that is a directory."""
        parts = _parts(rel, self.root)
        here = self.root
        for part in parts[:-1]:
            here = here / part
            if os.path.lexists(here) and not stat.S_ISDIR(os.lstat(here).st_mode):
                raise ExportError(f"{here} is a symlink or a file, not a folder; refusing to write through it.")
        target = here / parts[-1]
        if os.path.lexists(target) and stat.S_ISDIR(os.lstat(target).st_mode):
            raise ExportError(f"{target} is a folder where a file must go.")

    def stage(self, rel: str, chunks: Iterable[bytes]) -> None:
        """Write ``rel`` under a temporary name in its final folder; nothing is visible under ``rel`` yet."""
        parts = _parts(rel, self.root)
        dir_fd = self._directory(parts[:-1])
        tmp = f".modelkin-{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE, dir_fd=dir_fd)
        self._staged.append((dir_fd, tmp, parts[-1]))
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self) -> None:
        """Rename every staged file over its final name (a link there is replaced, never followed)."""
        for dir_fd, tmp, name in self._staged:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self._staged.clear()
        for fd in set(self._dirs.values()):
            os.fsync(fd)

    def abort(self) -> None:
        """Remove what was staged and the folders made for it: the folder is left as it was found."""
        for dir_fd, tmp, _ in self._staged:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        self._staged.clear()
        for parts in reversed(self._made):
            try:
                os.rmdir(parts[-1], dir_fd=self._dirs[parts[:-1]])
            except OSError:
                pass

    def close(self) -> None:
        for fd in set(self._dirs.values()):
            os.close(fd)
        self._dirs.clear()

    def _directory(self, parts: tuple[str, ...]) -> int:
        """The fd of folder ``parts`` under the root, made if missing, opened without following links."""
        if parts in self._dirs:
            return self._dirs[parts]
        parent = self._directory(parts[:-1])
        try:
            os.mkdir(parts[-1], DIR_MODE, dir_fd=parent)
            self._made.append(parts)
        except FileExistsError:
            pass
        try:
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _refusal(self.root.joinpath(*parts), exc) from None
        self._dirs[parts] = fd
        return fd


def _parts(rel: str, root: Path) -> tuple[str, ...]:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("..", ".", "") for part in p.parts) or "\\" in rel:
        raise ExportError(f"stored path {rel!r} would escape {root}.")
    return p.parts


def _refusal(path: Path, exc: OSError) -> ExportError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ExportError(f"{path} is a symlink or not a folder; refusing to write through it.")
    return ExportError(f"cannot write into {path}: {exc.strerror}.")
