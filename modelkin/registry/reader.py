"""The read path: open a registry's database and answer ``list``, ``show`` and ``log``.

These commands run far more often than any other, and for them start-up is most of the cost: this module and
what it imports never import the ORM, Alembic, torch or the blob store, and not even SQLAlchemy unless the
database URL is one the drivers alone do not take. The fixed-shape queries are the named statements of
``modelkin.registry.statements``, run by SQLAlchemy or as SQL generated from them by the driver alone: the
standard library's sqlite3 (``modelkin.db.lite``) or psycopg2 (``modelkin.db.pg``); a filtered or re-sorted
listing is SQL text that ``modelkin.registry.listing`` writes for either. ``Registry`` reads through a
``Reader`` too, so there is one resolver and one query builder.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelkin.config import Settings
from modelkin.db import lite, migrate, pg
from modelkin.db.times import as_utc
from modelkin.errors import AmbiguousRef, ModelNotFound, RegistryNotFound, SchemaOutdated
from modelkin.refs import ModelRef
from modelkin.registry.records import EventRecord, ModelVersion
from modelkin.registry.rows import load_rows, run, scalar, stream_records, to_records

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelkin.registry.rows import Executor

# what turns a listing's streamed rows into what it yields: (connection, rows, limit, the test Python applies)
Consume = Callable[["Executor", Any, "int | None", "Callable[[Any], bool] | None"], Iterator[Any]]


def open_database(
    home: str | os.PathLike[str] | None = None, *, database_url: str | None = None, store: str | None = None
) -> tuple[Settings, Engine]:
    """Settings and an engine for an existing registry; refuse one never initialised or whose schema is behind.

    The schema check reads the one-row revision table and compares it with ``SCHEMA_HEAD``: Alembic is not
    imported unless the registry is migrated.
    """
    from sqlalchemy.exc import DBAPIError

    from modelkin.db.engine import database_error, make_engine

    settings = Settings.resolve(home, database_url, store)
    _check_file(settings)
    engine = make_engine(settings.database_url)
    try:
        _check_revision(migrate.current_revision(engine), settings)
    except DBAPIError as exc:
        engine.dispose()
        raise database_error(exc) or exc from None
    except BaseException:
        engine.dispose()
        raise
    return settings, engine


def open_reader(home: str | os.PathLike[str] | None = None) -> Reader:
    """A Reader for the registry at ``home``; a plain SQLite file or PostgreSQL URL is read without SQLAlchemy."""
    settings = Settings.resolve(home)
    path = lite.sqlite_file(settings.database_url)
    if path is not None:
        _check_file(settings)
        with lite.read_connection(path) as conn:
            _check_revision(conn.revision(), settings)
        return Reader(sqlite_file=path)
    args = pg.connect_args(settings.database_url)
    if args is None or not pg.available():
        return Reader(open_database(home)[1], owned=True)
    database = pg.PgDatabase(args)
    try:
        with database.transaction() as conn:
            _check_revision(conn.revision(), settings)
    except BaseException:
        database.close()
        raise
    return Reader(postgresql=database)


def _check_file(settings: Settings) -> None:
    if settings.database_url.startswith("sqlite:///") and not Path(settings.database_url[10:]).exists():
        raise RegistryNotFound(f"no registry at {settings.home}.", hint="run `modelkin init` to create one")


def _check_revision(current: str | None, settings: Settings) -> None:
    if current is None:
        from modelkin.db.engine import redact_url

        where = redact_url(settings.database_url)
        raise RegistryNotFound(f"no registry in {where}.", hint="run `modelkin init` to create one")
    if current != migrate.SCHEMA_HEAD:
        raise SchemaOutdated(
            f"the registry schema is at revision {current}, this modelkin expects {migrate.SCHEMA_HEAD}.",
            hint="run `modelkin db upgrade`",
        )


class Reader:
    """Read-only questions about versions and events, each in one read transaction.

    It reads through an engine (``owned``: ``close`` disposes of it), or straight from a SQLite file
    (``sqlite_file``) or a psycopg2 connection (``postgresql``, which ``close`` closes) without SQLAlchemy.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        owned: bool = False,
        sqlite_file: str | None = None,
        postgresql: pg.PgDatabase | None = None,
    ) -> None:
        self._engine = engine
        self._owned = owned
        self._sqlite_file = sqlite_file
        self._postgresql = postgresql

    def close(self) -> None:
        """Dispose of the engine if it is this reader's own, and close the psycopg2 connection."""
        if self._engine is not None and self._owned:
            self._engine.dispose()
        if self._postgresql is not None:
            self._postgresql.close()

    @contextmanager
    def connect(self) -> Iterator[Executor]:
        """One read transaction, on the SQLite file or the psycopg2 connection directly, or on the engine."""
        if self._sqlite_file is not None or self._postgresql is not None:
            with self._plain_connection() as conn:
                yield conn
        else:
            from modelkin.db.engine import read_connection

            assert self._engine is not None
            with read_connection(self._engine) as sa_conn:
                yield sa_conn

    @contextmanager
    def _plain_connection(self) -> Iterator[lite.PlainConnection]:
        if self._sqlite_file is not None:
            with lite.read_connection(self._sqlite_file) as conn:
                yield conn
        else:
            assert self._postgresql is not None
            with self._postgresql.transaction() as pg_conn:
                yield pg_conn

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """The version a REF names (``name`` is the latest version that is not yanked)."""
        with self.connect() as conn:
            row = load_rows(conn, [resolve_id(conn, ref)])
            return to_records(conn, list(row.values()))[0]

    def iter_versions(self, filter: str | None = None, **options: Any) -> Iterator[ModelVersion]:
        """Versions matching ``filter``, streamed; ``options`` (sort, limit, include_yanked, latest) as in listing."""
        return self._stream(stream_records, filter, options)

    def iter_json(self, filter: str | None = None, **options: Any) -> Iterator[str]:
        """What ``iter_versions`` lists, as each version's JSON text (modelkin.registry.version_json)."""
        from modelkin.registry.version_json import stream_json

        return self._stream(stream_json, filter, options)

    def _stream(self, consume: Consume, filter: str | None, options: dict[str, Any]) -> Iterator[Any]:
        """A listing's rows handed to ``consume`` (``rows.stream_records`` or alike) with its limit and test.

        The plain listing (no filter, default order) is a named statement; anything else is built by listing.
        """
        plain = filter is None and options.get("sort") in (None, "name") and not options.get("include_yanked")
        if plain and not options.get("latest") and set(options) <= {"sort", "limit", "include_yanked", "latest"}:
            return self._listing(consume, options.get("limit"))
        if self._engine is not None:
            from modelkin.registry import listing

            return listing.iter_versions(self._engine, filter, consume=consume, **options)
        return self._filtered(consume, filter, **options)

    def _filtered(
        self,
        consume: Consume,
        filter: str | None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        include_yanked: bool = False,
        latest: bool = False,
    ) -> Iterator[Any]:
        """A listing that ``listing`` writes as SQL text with bound values, run by the driver (no SQLAlchemy)."""
        from modelkin.registry import listing

        node = listing.parse_listing(filter, sort)
        if limit == 0:
            return
        postgresql = self._postgresql is not None
        sql, values, keep = listing.plan(node, sort=sort, limit=limit, include_yanked=include_yanked, latest=latest,
                                         postgresql=postgresql, pyformat=postgresql)  # fmt: skip
        with self._plain_connection() as conn:
            kinds = conn.statements()["list"][1]  # the same columns as the unfiltered listing's
            yield from consume(conn, conn.execute((sql, kinds, values), stream=True), limit, keep)

    def _listing(self, consume: Consume, limit: int | None) -> Iterator[Any]:
        if limit == 0:
            return
        with self.connect() as conn:
            rows = run(conn, "list", stream=True) if limit is None else run(conn, "list_limit", {"limit": limit},
                                                                             stream=True)  # fmt: skip
            yield from consume(conn, rows, limit, None)

    def log(self, ref: str | None = None, limit: int | None = None) -> list[EventRecord]:
        """The append-only event log, oldest first; for one version if ``ref`` is given; the last ``limit``."""
        with self.connect() as conn:
            params: dict[str, Any] = {} if limit is None else {"limit": limit}
            name = "events" if limit is None else "events_last"
            if ref is not None:
                params["version_id"] = resolve_id(conn, ref)
                name = "version_" + name
            rows = list(run(conn, name, params))
        if limit is not None:
            rows.reverse()
        return [EventRecord(i, as_utc(at), kind, ref_, dict(detail or {})) for i, at, kind, _, ref_, detail in rows]

    def detected_parents(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        """The stored detected parents of a version (what ``lineage tree``/registration found), for ``show``."""
        with self.connect() as conn:
            rows = list(run(conn, "detected", {"child_id": resolve_id(conn, ref)}))
        return [{"ref": f"{name}:{n}", "relation": rel, "confidence": None if s is None else round(s, 4),
                 "method": m} for name, n, rel, s, m in rows]  # fmt: skip


def resolve_id(conn: Executor, ref: str | ModelRef) -> int:
    """The id of the version a REF names, or raise ModelNotFound / AmbiguousRef with a useful hint."""
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    if r.digest_prefix is not None:
        rows = list(run(conn, "by_digest", {"pattern": f"sha256:{r.digest_prefix}%"}))
        if not rows:
            raise ModelNotFound(f"no version has a manifest digest starting with {r.digest_prefix}.")
        if len({digest for _, digest, _, _ in rows}) > 1:
            refs = ", ".join(f"{name}:{number}" for _, _, name, number in rows[:5])
            raise AmbiguousRef(f"sha256:{r.digest_prefix} matches several versions ({refs}).", hint="give more digits")
        return int(rows[0][0])  # the same manifest under several names: the first registered
    model_id = scalar(conn, "model_id", {"name": r.name})
    if model_id is None:
        raise _unknown_model(conn, str(r.name))
    if r.version is not None:
        vid = scalar(conn, "number", {"model_id": model_id, "number": r.version})
        if vid is None:
            latest = scalar(conn, "newest", {"model_id": model_id})
            raise ModelNotFound(f"{r} does not exist.", hint=f"{r.name} has versions 1 to {latest}")
        return int(vid)
    if r.alias is not None:
        vid = scalar(conn, "alias", {"model_id": model_id, "alias": r.alias})
        if vid is None:
            known = ", ".join(row[0] for row in run(conn, "alias_names", {"model_id": model_id})) or "none"
            raise ModelNotFound(f"{r} does not exist.", hint=f"aliases of {r.name}: {known}")
        return int(vid)
    vid = scalar(conn, "latest", {"model_id": model_id})
    if vid is None:
        raise ModelNotFound(f"every version of {r.name} is yanked.", hint=f"name one explicitly, e.g. {r.name}:1")
    return int(vid)


def _unknown_model(conn: Executor, name: str) -> ModelNotFound:
    names = [row[0] for row in run(conn, "all_names")]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "`modelkin list` shows what is registered"
    return ModelNotFound(f"no model named {name!r} is registered.", hint=hint)
