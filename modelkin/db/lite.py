"""Reading a SQLite registry with the standard library's ``sqlite3``: the fast path of ``list``, ``show`` and ``log``.

Importing SQLAlchemy costs these commands more than their queries do, so on SQLite their fixed-shape queries run
here instead. The SQL is not written here: ``modelkin.registry.sqlite_sql`` is generated from the same Core
statements SQLAlchemy runs (``make sql``; a test fails when it drifts), with each column's result type, so rows
come back exactly as SQLAlchemy would hand them over. The connection gets the same pragmas as the engine's.
Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from modelkin.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 60_000
# run on every new connection, by the engine (modelkin.db.engine) and here
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                  "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL")  # fmt: skip
# a named parameter in generated SQLite text, or an expanding IN parameter as SQLAlchemy leaves it there
_PARAMETER = re.compile(r"__\[POSTCOMPILE_(\w+)\]|(?<![:\w]):(\w+)")

# a generated statement: (SQL text with :named parameters, each result column's type kind, default parameters)
Statement = tuple[str, tuple[str | None, ...], Mapping[str, Any]]


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set by __init__ (the C scanner), not in typeshed


def loads_json(text: Any) -> Any:
    """``json.loads(text)``, about three times faster on the compact JSON the registry stores.

    The C scanner ``json.loads`` ends in is called directly; any text it does not consume whole in one go
    (leading or trailing space, garbage) goes to ``json.loads`` itself, so values and errors are the same. Bytes
    (psycopg's) that ``json.loads`` would read as UTF-8, with no BOM or NUL, are decoded as it would decode them.
    Every JSON column is read through this, here and by SQLAlchemy (``json_deserializer``).
    """
    if type(text) is bytes and text[:1] in (b"{", b"[") and b"\x00" not in text[:4]:
        text = text.decode("utf-8", "surrogatepass")
    if type(text) is str:
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            pass
        else:
            if end == len(text):
                return value
    return json.loads(text)


def _json(value: Any) -> Any:
    return None if value is None else loads_json(value)


def _datetime(value: Any) -> Any:
    return None if value is None else datetime.fromisoformat(value)


def _bool(value: Any) -> Any:
    return None if value is None else bool(value)


# what SQLAlchemy's SQLite result processors make of the stored value, by the column type's kind
CONVERTERS: dict[str, Callable[[Any], Any]] = {"json": _json, "datetime": _datetime, "bool": _bool}


def sqlite_file(url: str) -> str | None:
    """The database file of a plain ``sqlite:///PATH`` URL (no driver options), or None for any other URL."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix) and "?" not in url and len(url) > len(prefix):
            return url[len(prefix) :]
    return None


def failure(reason: object) -> DatabaseUnavailable:
    """The one sentence for a driver-level failure (locked, disk full, not a database), from either path."""
    text = str(reason).strip().splitlines()[0].rstrip(".") if str(reason).strip() else type(reason).__name__
    return DatabaseUnavailable(f"the registry database failed: {text}.", hint="check MODELKIN_DATABASE_URL")


class PlainConnection(ABC):
    """One read transaction run by a driver alone, on the SQL text ``make sql`` generated for its dialect.

    ``modelkin.registry.rows.run`` hands it the statement of that name from ``statements_module``.
    """

    statements_module: str

    def statements(self) -> Mapping[str, Statement]:
        return importlib.import_module(self.statements_module).STATEMENTS  # type: ignore[no-any-return]

    @abstractmethod
    def execute(
        self, statement: Statement, params: Mapping[str, Any] | None = None, *, stream: bool = False
    ) -> Iterable[tuple[Any, ...]]:
        """The rows of ``statement`` as SQLAlchemy would hand them over; ``stream`` reads a long result lazily."""

    @abstractmethod
    def revision(self) -> str | None:
        """The schema stamp Alembic keeps (None when the database holds no registry)."""


class LiteConnection(PlainConnection):
    """One read transaction on a ``sqlite3`` connection, running generated statements."""

    statements_module = "modelkin.registry.sqlite_sql"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(
        self, statement: Statement, params: Mapping[str, Any] | None = None, *, stream: bool = False
    ) -> Iterator[tuple[Any, ...]]:
        """The rows of ``statement``, converted as SQLAlchemy converts them; an ``ids`` list expands in place.

        A sqlite3 cursor reads its rows as they are asked for, streamed or not.
        """
        text, kinds, defaults = statement
        values: Mapping[str, Any] | list[Any] = {**defaults, **(params or {})}
        if "__[POSTCOMPILE_" in text:
            text, values = _positional(text, values)
        cursor = self.raw.execute(text, values)
        convert = [(i, CONVERTERS[k]) for i, k in enumerate(kinds) if k is not None]
        if not convert:
            return cursor  # type: ignore[return-value]
        return _converted(cursor, convert)

    def revision(self) -> str | None:
        known = self.raw.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
        if known.fetchone() is None:
            return None
        row = self.raw.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])


def _positional(text: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``text`` with every parameter a ``?`` (an expanding one a ``?`` per element), and the values in order.

    A batch binds 500 ids: by name, sqlite3 looks each name up in a list SQLite searches from the start, which
    cost more than the query; by position it is one call each.
    """
    ordered: list[Any] = []

    def marker(match: re.Match[str]) -> str:
        expanding, name = match.groups()
        if expanding is None:
            ordered.append(values[name])
            return "?"
        ordered.extend(values[expanding])
        return ", ".join("?" * len(values[expanding])) or "NULL"

    return _PARAMETER.sub(marker, text), ordered


def _converted(cursor: sqlite3.Cursor, convert: list[tuple[int, Callable[[Any], Any]]]) -> Iterator[tuple[Any, ...]]:
    try:
        for row in cursor:
            values = list(row)
            for i, fn in convert:
                values[i] = fn(values[i])
            yield tuple(values)
    finally:
        cursor.close()


@contextmanager
def read_connection(path: str) -> Iterator[LiteConnection]:
    """A read transaction (one snapshot for every query of a command); sqlite3 errors become one sentence."""
    try:
        raw = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise failure(exc) from None
    try:
        for pragma in SQLITE_PRAGMAS:
            raw.execute(pragma)
        raw.execute("BEGIN DEFERRED")
        yield LiteConnection(raw)
        raw.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise failure(exc) from None
    finally:
        raw.close()
