"""Engines and sessions, with the SQLite settings a shared registry file needs.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout, foreign keys on, and write
transactions opened with ``BEGIN IMMEDIATE`` so that two registering processes queue up for the write lock at
the start instead of failing halfway with "database is locked". PostgreSQL needs none of this.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from modelkin.db.lite import SQLITE_BUSY_TIMEOUT_MS, SQLITE_PRAGMAS, failure, loads_json
from modelkin.errors import ConfigError, ModelkinError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, even when the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _PASSWORD.sub(r"\1***@", url)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a malformed URL or a missing driver is a ConfigError, not a crash."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True, json_deserializer=loads_json)
    except (ArgumentError, ImportError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError(
            f"cannot use database URL {redact_url(url)!r}: {str(exc).splitlines()[0]}",
            hint="use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB (pip install 'modelkin[postgres]')",
        ) from None
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, json_deserializer=loads_json)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(pragma)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One write transaction: committed on success, rolled back entirely on any error."""
    from sqlalchemy.orm import Session  # the ORM is imported by writers only: reads run on Core (read_connection)

    sqlite = engine.dialect.name == "sqlite"
    bind = engine.execution_options(sqlite_begin="IMMEDIATE") if sqlite else engine
    with Session(bind, expire_on_commit=False) as session, session.begin():
        yield session
        if sqlite:
            keep_statistics(session.connection())


STATISTICS_GROWTH = 2  # re-ANALYZE once the versions table has grown this many times over since the last one


def keep_statistics(conn: Connection) -> None:
    """Keep SQLite's planner statistics current, as PostgreSQL's autovacuum does by itself.

    Without them SQLite plans ``list --limit 20`` as a sort of every version instead of a walk down the name
    index. ANALYZE runs when the versions table was never analyzed or has since grown ``STATISTICS_GROWTH``
    times over, so a registry pays for it a logarithmic number of times in its life; otherwise this is two
    index lookups.
    """
    rows = conn.exec_driver_sql("SELECT max(id) FROM versions").scalar() or 0
    if rows == 0:
        return
    known = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
    stat = None
    if known.scalar() is not None:
        stat = conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = 'versions' AND idx IS NOT NULL").scalar()
    if stat is None or rows >= STATISTICS_GROWTH * int(str(stat).split()[0]):
        conn.exec_driver_sql("ANALYZE")


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    from sqlalchemy.orm import Session

    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """One read transaction on a Core connection (one snapshot for every query of a command)."""
    with engine.connect() as conn, conn.begin():
        yield conn


def database_error(exc: BaseException) -> ModelkinError | None:
    """A one-sentence ModelkinError for a driver-level failure (server down, wrong password, disk full)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    return failure(exc.orig if exc.orig is not None else type(exc).__name__)
