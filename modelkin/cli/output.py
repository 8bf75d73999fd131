"""All printing goes through here: results on stdout (JSON or rich tables), diagnostics on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from modelkin.errors import ModelkinError

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(obj: Any) -> None:
    """Stable JSON on stdout: one document, keys in the order the record defines them."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    stderr.print(escape(message))


def error(exc: BaseException) -> None:
    """One sentence, and the hint on its own line when there is one."""
    text = str(exc).strip() or exc.__class__.__name__
    if not text.endswith((".", "?", "!")):
        text += "."
    stderr.print(f"[bold red]Error:[/] {escape(text)}")
    hint = getattr(exc, "hint", None) if isinstance(exc, ModelkinError) else None
    if hint:
        stderr.print(f"[dim]Hint: {escape(hint)}[/]")


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        # the first column (a REF, a path) stays whole on one line; the others wrap rather than being cut
        t.add_column(name, no_wrap=i == 0, overflow="fold")
    for row in rows:
        t.add_row(*(escape("" if v is None else str(v)) for v in row))
    stdout.print(t)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    for k, v in pairs:
        t.add_row(escape(k), escape("" if v is None else str(v)))
    stdout.print(t)


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
    if not stderr.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task(label, total=None)

        def advance(n: int, total: int) -> None:
            progress.update(task, advance=n, total=total)

        yield advance


@contextmanager
def count_progress(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """A ``(item name)`` callback advancing a bar of ``total`` items on a terminal's stderr; a no-op otherwise."""
    if not stderr.is_terminal:
        yield lambda name: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=stderr,
                  transient=True) as progress:  # fmt: skip
        task = progress.add_task(label, total=total)
        yield lambda name: progress.update(task, advance=1, description=f"{label}: {name}")
