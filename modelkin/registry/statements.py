"""The read path's fixed-shape statements, by name: one Core statement each, built once per dialect.

``list`` without a filter, ``show`` and ``log`` need only these. SQLAlchemy runs them in writers and everywhere
a registry is opened through ``Registry``; the read commands run the SQL text compiled from them by the driver
alone instead (modelkin.db.lite on SQLite, modelkin.db.pg on PostgreSQL), because importing SQLAlchemy costs
more than their queries. That text lives in ``modelkin.registry.sqlite_sql`` and
``modelkin.registry.postgresql_sql``, written by ``make sql`` (``python -m modelkin.registry.statements
DIALECT``); ``tests/test_read_path.py`` fails when either drifts from this module. Every value travels as a
named bound parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from sqlalchemy import ARRAY, JSON, Boolean, ColumnElement, DateTime, Integer, any_, bindparam, func, select, text

from modelkin.db.tables import aliases, events, files, lineage_edges, models, tags, versions
from modelkin.registry.listing import Params, version_query
from modelkin.registry.rows import RECORD_KEYS

DETECTED = "detected"  # lineage_edges.source of an edge that lineage detection stored
V, M = versions.c, models.c
RECORD_COLUMNS = tuple(V[k] for k in RECORD_KEYS)  # what a listing's rows hold, typed for SQLAlchemy's results


def _listing(postgresql: bool, limit: bool) -> Any:
    """The unfiltered listing in the default order, as the listing builder writes it (``limit`` a parameter)."""
    params = Params(postgresql, pyformat=False)
    sql = version_query("name", params, limit=params.named("limit", "INTEGER") if limit else None)
    return text(sql).columns(*RECORD_COLUMNS)  # ``limit`` untyped: the text casts it already


def build(postgresql: bool) -> dict[str, Any]:
    """Every named statement for one dialect.

    A batch takes its ids as ``ids``: an expanding IN on SQLite, one array parameter (``= ANY(:ids)``) on
    PostgreSQL, so the statement text stays short and the same for every batch.
    """
    member: Callable[[Any], ColumnElement[bool]]
    if postgresql:
        member = lambda column: column == any_(bindparam("ids", type_=ARRAY(Integer)))  # noqa: E731
    else:
        member = lambda column: column.in_(bindparam("ids", expanding=True))  # noqa: E731
    f, t, a, e = files.c, tags.c, aliases.c, lineage_edges.c
    of_model = V.model_id == bindparam("model_id")
    parent = versions.alias("parent")
    last = bindparam("limit", type_=Integer)
    of_version = events.c.version_id == bindparam("version_id")
    return {
        # a batch of versions' surroundings (modelkin.registry.rows), each version's in order; by version first,
        # the order SQLite's index on the version reads them in, so it sorts a version's rows, not the batch's
        "files": select(f.version_id, f.path, f.size, f.sha256)
        .where(member(f.version_id))
        .order_by(f.version_id, f.path),
        "tags": select(t.version_id, t.key, t.value).where(member(t.version_id)).order_by(t.version_id, t.key),
        "aliases": select(a.version_id, a.alias).where(member(a.version_id)).order_by(a.version_id, a.alias),
        "declared": select(e.child_id, e.parent_id, e.parent_external)
        .where(member(e.child_id), e.source == "declared")
        .order_by(e.child_id, e.id),
        "versions": select(*RECORD_COLUMNS).where(member(V.id)),
        "names": select(M.id, M.name).where(member(M.id)),
        # resolving a REF (modelkin.registry.reader.resolve_id)
        "by_digest": select(V.id, V.digest, M.name, V.number)
        .join(models, M.id == V.model_id)
        .where(V.digest.like(bindparam("pattern")))
        .order_by(V.id),
        "model_id": select(M.id).where(M.name == bindparam("name")),
        "all_names": select(M.name),
        "number": select(V.id).where(of_model, V.number == bindparam("number")),
        "newest": select(func.max(V.number)).where(of_model),
        "latest": select(V.id).where(of_model, V.yanked.is_(False)).order_by(V.number.desc()).limit(1),
        "alias": select(a.version_id).where(a.model_id == bindparam("model_id"), a.alias == bindparam("alias")),
        "alias_names": select(a.alias).where(a.model_id == bindparam("model_id")),
        # show's detected parents
        "detected": select(M.name, parent.c.number, e.relation, e.score, e.method)
        .join(parent, e.parent_id == parent.c.id)
        .join(models, parent.c.model_id == M.id)
        .where(e.child_id == bindparam("child_id"), e.source == DETECTED)
        .order_by(e.id),
        # list without a filter, in the default order, and the event log
        "list": _listing(postgresql, limit=False),
        "list_limit": _listing(postgresql, limit=True),
        "events": select(events).order_by(events.c.id),
        "events_last": select(events).order_by(events.c.id.desc()).limit(last),
        "version_events": select(events).where(of_version).order_by(events.c.id),
        "version_events_last": select(events).where(of_version).order_by(events.c.id.desc()).limit(last),
    }


@cache
def for_dialect(name: str) -> dict[str, Any]:
    return build(name == "postgresql")


def statements_for(conn: Any) -> dict[str, Any]:
    """The statements for a Core connection's (or an ORM session's) dialect."""
    dialect = conn.dialect if hasattr(conn, "dialect") else conn.get_bind().dialect
    return for_dialect(dialect.name)


def _kind(type_: Any) -> str | None:
    """What SQLAlchemy's SQLite result processor does to a column of this type (see modelkin.db.lite)."""
    for cls, kind in ((JSON, "json"), (DateTime, "datetime"), (Boolean, "bool")):
        if isinstance(type_, cls):
            return kind
    return None


def _sqlite() -> Any:
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect(paramstyle="named")


def _psycopg() -> Any:
    from sqlalchemy.dialects.postgresql import psycopg  # imported only to compile for PostgreSQL

    return psycopg.dialect()


# each generated module: the dialect that compiles it, and whether it is the PostgreSQL build of the statements
DIALECTS: dict[str, tuple[Callable[[], Any], bool]] = {"sqlite": (_sqlite, False), "postgresql": (_psycopg, True)}


@cache
def dialect(name: str) -> Any:
    """The dialect a generated module is compiled for (``DIALECTS``), made once."""
    return DIALECTS[name][0]()


def render(dialect_name: str = "sqlite") -> str:
    """The text of ``modelkin/registry/<dialect>_sql.py``: each statement compiled, with its result kinds."""
    lines = [
        '"""Generated by ``make sql`` from modelkin.registry.statements: do not edit (a test fails when it drifts).',
        "",
        f"Each statement: ({dialect_name} text with named parameters, each result column's type kind, default "
        "parameters).",
        '"""',
        "",
        "# ruff: noqa: E501",
        "from modelkin.db.lite import Statement",
        "",
        "# fmt: off",
        "STATEMENTS: dict[str, Statement] = {",
    ]
    for name, statement in build(postgresql=DIALECTS[dialect_name][1]).items():
        compiled = statement.compile(dialect=dialect(dialect_name))
        kinds = tuple(_kind(c.type) for c in statement.selected_columns)
        defaults = {key: value for key, value in compiled.params.items() if value is not None}
        lines.append(f"    {name!r}: ({str(compiled)!r}, {kinds!r}, {defaults!r}),")
    return "\n".join([*lines, "}", "# fmt: on", ""])


if __name__ == "__main__":
    import sys

    print(render(*sys.argv[1:2]), end="")
