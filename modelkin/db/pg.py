"""Reading a PostgreSQL registry with psycopg alone: the fast path of ``list``, ``show`` and ``log`` there too.

As on SQLite (modelkin.db.lite), importing SQLAlchemy costs these commands more than their queries do. psycopg
runs the SQL text that ``make sql`` compiles from the same Core statements for SQLAlchemy's psycopg dialect
(``modelkin.registry.postgresql_sql``; a test fails when it drifts), on a connection set up as that dialect sets
one up: the keyword arguments it derives from the URL, JSON read by ``loads_json``, each command's reads in a
transaction. The columns the statements read need no other conversion there: SQLAlchemy's psycopg dialect has
no result processor for them (psycopg itself returns datetimes, booleans and floats). Only a plain URL (user,
password, host, port and database, no query options) takes this path; any other is left to SQLAlchemy, so
every connection option keeps meaning what SQLAlchemy makes of it. Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from modelkin.db.lite import PlainConnection, Statement, failure, loads_json

STREAM_ROWS = 5_000  # rows a streamed result (a server-side cursor) brings per round trip
# user[:password]@host[:port]/database, in characters whose reading SQLAlchemy's URL parser cannot differ on
_PLAIN_URL = re.compile(
    r"postgresql\+psycopg://(?:(?P<user>[^:@/?#\[\]\s]+)(?::(?P<password>[^@/?#\s]*))?@)?"
    r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?/(?P<dbname>[A-Za-z0-9_.-]+)"
)


def connect_args(url: str) -> dict[str, Any] | None:
    """What SQLAlchemy's psycopg dialect passes to ``psycopg.connect`` for a plain ``url``; None for any other."""
    match = _PLAIN_URL.fullmatch(url)
    if match is None:
        return None
    args: dict[str, Any] = {key: value for key, value in match.groupdict().items() if value}  # "" is left out too
    for key in ("user", "password"):
        if key in args:
            args[key] = unquote(args[key])
    if "port" in args:
        args["port"] = int(args["port"])
    return args


class PgConnection(PlainConnection):
    """One read transaction on a psycopg connection, running generated statements."""

    statements_module = "modelkin.registry.postgresql_sql"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, statement: Statement, params: Mapping[str, Any] | None = None, *, stream: bool = False) -> Any:
        """The rows of ``statement``: fetched in one go, or streamed ``STREAM_ROWS`` at a time from the server."""
        text, _kinds, defaults = statement
        values = {key: _int_array(value) for key, value in {**defaults, **(params or {})}.items()}
        if not stream:
            with self.raw.cursor() as cursor:
                return cursor.execute(text, values).fetchall()
        cursor = self.raw.cursor(name="modelkin_rows")  # closed by whoever reads it (rows.stream_records)
        cursor.itersize = STREAM_ROWS
        cursor.execute(text, values)
        return cursor

    def revision(self) -> str | None:
        if self.raw.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
            return None
        row = self.raw.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])


def _int_array(value: Any) -> Any:
    """A list of ints (a batch's ids, cast ``::INTEGER[]`` in the SQL) as PostgreSQL's array text, which the
    server parses: psycopg's list dumper adapts each element in Python."""
    if type(value) is list and all(type(v) is int for v in value):
        return "{" + ",".join(map(str, value)) + "}"
    return value


class PgDatabase:
    """One psycopg connection for a command's read transactions (as SQLAlchemy's pool would keep one)."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        import psycopg
        from psycopg.types.json import set_json_loads

        self._errors = psycopg.Error
        try:
            self._raw = psycopg.connect(**args)
        except psycopg.Error as exc:
            raise failure(exc) from None
        set_json_loads(loads_json, self._raw)  # as SQLAlchemy does with the engine's json_deserializer

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """A read transaction, rolled back at the end; driver errors become one sentence."""
        try:
            try:
                yield PgConnection(self._raw)
            finally:
                if not self._raw.closed:  # a listing cut short (``| head``) is closed after the command closed this
                    self._raw.rollback()
        except self._errors as exc:
            raise failure(exc) from None

    def close(self) -> None:
        self._raw.close()


def available() -> bool:
    """Whether psycopg is installed (without it SQLAlchemy's path reports the missing driver)."""
    from importlib.util import find_spec

    return find_spec("psycopg") is not None
