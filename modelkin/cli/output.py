"""All printing goes through here: results on stdout (JSON, tables or tab-separated rows), diagnostics on stderr.

Two output modes, chosen by where stdout goes:

- a terminal gets tables that fit its width: lower-priority columns are dropped first, long values are elided
  with "…", and the identifying column (a REF, a path) is never cut (it wraps instead);
- anything else (a pipe, a file) gets plain tab-separated rows with full, raw values and no header or box
  drawing, so ``cut -f`` and ``awk -F'\\t'`` work; ``--json`` is the stable format for programs.

Every string printed here came, possibly, from a user, a model card or a file: it is printed as typed, never
interpreted as rich markup, and with control characters (ESC, bidi overrides, lone surrogates...) escaped.

rich is imported only when something is drawn for a terminal: piped rows and JSON are written directly.
``stdout`` and ``stderr`` are new consoles at each use, so rich reads the environment (COLUMNS, NO_COLOR,
TTY_COMPATIBLE...) when it prints; a console kept from the first use would keep what that moment's
environment said, which in one process running many CLI invocations (the tests) is not the next one's.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from modelkin.errors import ModelkinError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 and C1 controls, DEL, bidi embeddings/overrides/isolates, and lone surrogates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]*)(?=@)")
ELLIPSIS = "…"


def clean(value: object) -> str:
    """``value`` as one safe line: control characters as ``\\x1b``-style escapes, URL passwords as ``***``."""
    text = "" if value is None else str(value)
    text = _PASSWORD.sub(lambda m: m.group("head") + "***", text)
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                       text)  # fmt: skip


def stdout_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the reader of stdout went away (``modelkin list | head``); then stdout is pointed at
    /dev/null, so that nothing more (not even Python's flush at exit) fails on it.

    A broken pipe can be another one (a socket, a child's): stdout's own pipe is asked whether its reader is gone.
    """
    if not isinstance(exc, BrokenPipeError):
        return False
    import select

    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poll.poll(0)):
            return False
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (OSError, ValueError):  # stdout is no file descriptor (a test runner's buffer)
        return False
    return True


def console(stderr: bool = False) -> Console:
    """A console that prints plain strings as typed: no markup, no emoji codes, control characters escaped.

    Styled output is built as ``rich.text.Text`` from cleaned pieces; those pass through unchanged.
    """
    return _safe_console()(highlight=False, soft_wrap=True, markup=False, emoji=False, stderr=stderr)


@cache
def _safe_console() -> type[Console]:
    from rich.console import Console
    from rich.text import Text

    class SafeConsole(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
            super().print(*(Text(clean(o)) if isinstance(o, str) else o for o in objects), **kwargs)

    return SafeConsole


def __getattr__(name: str) -> Any:
    """``output.stdout`` and ``output.stderr``: a console for that stream, made when it is used."""
    if name in ("stdout", "stderr"):
        return console(stderr=name == "stderr")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from pieces, each a plain string or ``(text, style)``; every piece is cleaned."""
    from rich.text import Text

    return Text.assemble(*((clean(p[0]), p[1]) if isinstance(p, tuple) else clean(p) for p in parts))


def emit_json(obj: Any) -> None:
    """Stable JSON on stdout: one document, keys in the order the record defines them."""
    from modelkin.jsontext import encode

    sys.stdout.write(encode(obj, "\n") + "\n")
    sys.stdout.flush()


def emit_json_stream(items: Iterable[Any]) -> None:
    """A JSON array written item by item, byte for byte what ``emit_json(list(items))`` prints, in flat memory."""
    from modelkin.jsontext import ITEM, encode

    emit_json_items(encode(item, ITEM) for item in items)


def emit_json_items(texts: Iterable[str]) -> None:
    """A JSON array of items already encoded at an item's indentation (``jsontext.ITEM``), written as they come."""
    first = True
    for text in texts:
        sys.stdout.write(("[\n  " if first else ",\n  ") + text)
        first = False
    sys.stdout.write("[]\n" if first else "\n]\n")
    sys.stdout.flush()


def info(message: str) -> None:
    console(stderr=True).print(message)


def error(exc: BaseException) -> None:
    """One sentence, and the hint on its own line when there is one."""
    text = str(exc).strip() or exc.__class__.__name__
    if not text.endswith((".", "?", "!")):
        text += "."
    err = console(stderr=True)
    err.print(styled(("Error:", "bold red"), " ", text))
    hint = getattr(exc, "hint", None) if isinstance(exc, ModelkinError) else None
    if hint:
        err.print(styled((f"Hint: {hint}", "dim")))


def is_terminal(stderr: bool = False) -> bool:
    """Whether rich would draw for a terminal on stdout (or stderr).

    When rich's own test would surely say no (no TTY_COMPATIBLE=1 or FORCE_COLOR override and the stream is not
    a tty, or TTY_COMPATIBLE=0) the answer comes without importing rich; every other case is rich's to decide.
    """
    stream = sys.stderr if stderr else sys.stdout
    override = os.environ.get("TTY_COMPATIBLE", "")
    if override == "0":
        return False
    if override != "1" and "FORCE_COLOR" not in os.environ and not _isatty(stream):
        return False
    return console(stderr=stderr).is_terminal


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream: rich says no too
        return False


@dataclass(frozen=True)
class Column:
    """One column of a table.

    ``priority`` 0 columns are always shown; on a narrow terminal the highest numbers go first. ``human``
    formats a value for a terminal (pipes get ``str(value)``, the full raw value). A ``whole`` column (the REF)
    is never elided: it wraps when the terminal is narrower than it.
    """

    name: str
    priority: int = 1
    human: Callable[[Any], str] | None = None
    whole: bool = False

    def show(self, value: Any, terminal: bool) -> str:
        if value is None:
            return ""
        return clean(self.human(value) if terminal and self.human is not None else value)


MIN_ELIDED = 8  # an elided column keeps at least this many characters (or its header)
MIN_WHOLE = 20  # a whole column narrower than its values wraps at no fewer than this many
_GAP = 3  # between two columns: padding, the (blank) separator, padding


def table(columns: Sequence[str | Column], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """Rows under ``columns`` (plain names: the first is the identifying, whole column, later ones drop first)."""
    cols = [c if isinstance(c, Column) else Column(c, 0 if i == 0 else i, whole=i == 0) for i, c in enumerate(columns)]
    if not is_terminal():
        if title:
            info(title)
        for row in rows:
            sys.stdout.write("\t".join(c.show(v, False) for c, v in zip(cols, row, strict=True)) + "\n")
        sys.stdout.flush()
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out = console()
    cells = [[c.show(v, True) for c, v in zip(cols, row, strict=True)] for row in rows]
    widths = fit_columns(cols, cells, out.width)
    t = Table(title=clean(title) if title else None, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
              show_edge=False, pad_edge=False, padding=(0, 1))  # fmt: skip
    for i in widths:
        whole = cols[i].whole
        t.add_column(cols[i].name, width=widths[i], no_wrap=not whole, overflow="fold" if whole else "ellipsis")
    for row in cells:
        t.add_row(*(Text(row[i]) for i in widths))
    out.print(t)


def fit_columns(cols: Sequence[Column], cells: Sequence[Sequence[str]], width: int) -> dict[int, int]:
    """The columns to show (by index, in order) and their widths, so that the table fits ``width`` characters.

    Columns of priority 1 and more are dropped, least important first, until the rest fit whole; the most
    important dropped one comes back elided if it still gets its minimum. Priority-0 columns are elided
    before they are dropped (least important first, rightmost first), and the whole column (the REF) is
    neither: it wraps when it must.
    """
    natural = [max([len(c.name)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    floor = [min(n, MIN_WHOLE if c.whole else max(len(c.name), MIN_ELIDED)) for c, n in zip(cols, natural, strict=True)]
    keep = list(range(len(cols)))

    def room(kept: Sequence[int]) -> int:
        return width - _GAP * (len(kept) - 1)

    optional = sorted((i for i, c in enumerate(cols) if c.priority > 0), key=lambda i: (-cols[i].priority, -i))
    dropped = []
    while optional and sum(natural[i] for i in keep) > room(keep):
        dropped.append(optional.pop(0))
        keep.remove(dropped[-1])
    if dropped and room(keep) - _GAP - sum(natural[i] for i in keep) >= floor[dropped[-1]]:
        keep = sorted([*keep, dropped[-1]])
    essential = sorted((i for i in keep if not cols[i].whole), reverse=True)
    while essential and sum(floor[i] for i in keep) > room(keep):
        keep.remove(essential.pop(0))
    widths = {i: natural[i] for i in keep}
    excess = sum(widths.values()) - room(keep)
    for i in sorted(keep, key=lambda i: (-cols[i].priority, -i)):  # least important columns are elided first
        if excess > 0 and not cols[i].whole:
            cut = min(excess, widths[i] - floor[i])
            widths[i] -= cut
            excess -= cut
    for i in keep:  # what is left too wide is a whole column: it wraps at the width that remains
        if excess > 0 and cols[i].whole:
            cut = min(excess, widths[i] - floor[i])
            widths[i] -= cut
            excess -= cut
    return widths


def fields(pairs: Sequence[Sequence[Any]]) -> None:
    """``key value`` lines: aligned on a terminal (long values wrap, never cut), tab-separated elsewhere.

    Piped, a pair may carry several values (``key, v1, v2``), one tab-separated field each.
    """
    if not is_terminal():
        for pair in pairs:
            sys.stdout.write("\t".join(clean(v) for v in pair) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table
    from rich.text import Text

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for k, v in pairs:
        t.add_row(Text(clean(k)), Text(clean(v)))
    console().print(t)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def human_count(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


@contextmanager
def byte_progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A ``(advance, total)`` callback drawing a bar on stderr when it is a terminal; None otherwise."""
    if not is_terminal(stderr=True):
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        task = progress.add_task(clean(label), total=None)

        def advance(n: int, total: int) -> None:
            progress.update(task, advance=n, total=total)

        yield advance


@contextmanager
def count_progress(label: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A ``(item name[, total])`` callback advancing a bar of ``total`` items on a terminal's stderr (a total
    given to the callback replaces it); a no-op otherwise."""
    if not is_terminal(stderr=True):
        yield lambda name, of=None: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  console=console(stderr=True), transient=True) as progress:  # fmt: skip
        task = progress.add_task(clean(label), total=total)
        yield lambda name, of=None: progress.update(task, advance=1, total=of, description=clean(f"{label}: {name}"))
