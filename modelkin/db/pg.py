"""Reading a PostgreSQL registry with psycopg2 alone: the fast path of ``list``, ``show`` and ``log`` there too.

As on SQLite (modelkin.db.lite), importing SQLAlchemy costs these commands more than their queries do, and so
does importing psycopg (version 3, the driver SQLAlchemy runs for a ``postgresql+psycopg://`` URL): about 560 M
instructions, against about 110 M for psycopg2, whose C extension does what psycopg's Python modules do (pg8000,
pure Python, costs 310 M). So the read commands connect with psycopg2 while everything else, writes included,
keeps to the driver the URL names. psycopg2 runs the SQL text that ``make sql`` compiles from the same Core
statements for SQLAlchemy's psycopg dialect (``modelkin.registry.postgresql_sql``; a test fails when it drifts;
every bound value there has its type cast written out, so psycopg2's client-side binding gives the server the
types psycopg's server-side binding gives it), on a connection set up as that dialect sets one up: the keyword
arguments it derives from the URL, JSON read by ``loads_json``, each command's reads in a transaction. Both
drivers return the same Python values for the columns read (datetimes with their zone, booleans, floats), and a
test compares every statement's answer with SQLAlchemy's. Only a plain URL (user, password, host, port and
database, no query options) takes this path; any other is left to SQLAlchemy, so every connection option keeps
meaning what SQLAlchemy makes of it. Nothing here imports SQLAlchemy or psycopg.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from modelkin.db.lite import CONVERTERS, PlainConnection, Statement, failure

JSON_TYPES = (114, 3802)  # the type oids of json and jsonb
read_json = CONVERTERS["json"]  # loads_json, None for NULL
STREAM_ROWS = 5_000  # rows a streamed result (a server-side cursor) brings per round trip
# user[:password]@host[:port]/database, in characters whose reading SQLAlchemy's URL parser cannot differ on
_PLAIN_URL = re.compile(
    r"postgresql\+psycopg://(?:(?P<user>[^:@/?#\[\]\s]+)(?::(?P<password>[^@/?#\s]*))?@)?"
    r"(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?/(?P<dbname>[A-Za-z0-9_.-]+)"
)


def connect_args(url: str) -> dict[str, Any] | None:
    """What SQLAlchemy's psycopg dialect passes to ``psycopg.connect`` for a plain ``url`` (``psycopg2.connect``
    takes the same keywords); None for any other."""
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
    """One read transaction on a psycopg2 connection, running generated statements."""

    statements_module = "modelkin.registry.postgresql_sql"

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, statement: Statement, params: Mapping[str, Any] | None = None, *, stream: bool = False) -> Any:
        """The rows of ``statement``: fetched in one go, or streamed ``STREAM_ROWS`` at a time from the server."""
        text, _kinds, defaults = statement
        values = {key: _int_array(value) for key, value in {**defaults, **(params or {})}.items()}
        if not stream:
            with self.raw.cursor() as cursor:
                cursor.execute(text, values)
                return cursor.fetchall()
        cursor = self.raw.cursor(name="modelkin_rows")  # closed by whoever reads it (rows.stream_records)
        cursor.itersize = STREAM_ROWS
        cursor.execute(text, values)
        return cursor

    def revision(self) -> str | None:
        with self.raw.cursor() as cursor:
            cursor.execute("SELECT to_regclass('alembic_version')")
            if cursor.fetchone()[0] is None:
                return None
            cursor.execute("SELECT version_num FROM alembic_version")
            row = cursor.fetchone()
        return None if row is None else str(row[0])


def _int_array(value: Any) -> Any:
    """A list of ints (a batch's ids, cast ``::INTEGER[]`` in the SQL) as PostgreSQL's array text, which the
    server parses: one string to quote instead of an ``ARRAY[...]`` literal of 500 adapted elements."""
    if type(value) is list and all(type(v) is int for v in value):
        return "{" + ",".join(map(str, value)) + "}"
    return value


class PgDatabase:
    """One psycopg2 connection for a command's read transactions (as SQLAlchemy's pool would keep one)."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        import psycopg2
        from psycopg2 import extensions

        self._errors = psycopg2.Error
        try:
            self._raw = psycopg2.connect(**args)
        except psycopg2.Error as exc:
            raise failure(f"connection failed: {exc}") from None  # psycopg's words, as the engine's path says it
        # JSON and JSONB read by loads_json, as SQLAlchemy does with the engine's json_deserializer
        json = extensions.new_type(JSON_TYPES, "MODELKIN_JSON", lambda value, _cursor: read_json(value))
        extensions.register_type(json, self._raw)

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
    """Whether psycopg2 is installed (without it the read commands take SQLAlchemy's path, with psycopg)."""
    from importlib.util import find_spec

    return find_spec("psycopg2") is not None
