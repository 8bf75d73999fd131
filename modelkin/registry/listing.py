"""Listing versions with the work done in SQL: filters, sorting and limits, rows streamed in batches.

A parsed filter (modelkin.registry.filters) is translated into a SQL condition wherever the database can decide
it exactly as Python would (typed comparisons on columns, string tests on tags); everything else stays in Python
and is applied to the rows SQL returns. The SQL part is always a necessary condition of the whole filter, so
rows are never lost, and when it is the whole filter the limit goes to SQL too.

The query is written here as SQL text for SQLite or PostgreSQL, by one builder, with every value a named bound
parameter (``Params`` numbers them; a value never becomes SQL text). The text is what the driver alone runs on
the read path (modelkin.db.lite, modelkin.db.pg), so a filtered ``list`` never imports SQLAlchemy, whose import
costs more than the query; an engine runs the same text (``iter_versions``). ``:name`` parameters serve sqlite3
and SQLAlchemy's ``text()``, ``%(name)s`` psycopg2. Rows stream in batches, so memory does not grow with the
registry. The unfiltered listing among the named statements (modelkin.registry.statements) is built here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from modelkin.errors import InvalidName
from modelkin.registry.filters import BoolOp, Comparison, Node, compile_node, parse_filter_tree
from modelkin.registry.records import ModelVersion
from modelkin.registry.rows import FIELDS, RECORD_KEYS, filter_fields, stream_records

if TYPE_CHECKING:
    from sqlalchemy import Engine

BATCH = 500
RECORD_SELECT = "SELECT " + ", ".join(f"versions.{k}" for k in RECORD_KEYS)
TEXT_COLUMNS = {
    "name": "models.name", "digest": "versions.digest", "family": "versions.family",
    "relation": "versions.relation", "source": "versions.source", "arch_fingerprint": "versions.arch_fingerprint",
}  # fmt: skip
NUMBER_COLUMNS = {
    "version": "versions.number", "parameters": "versions.parameters", "tensors": "versions.tensor_count",
    "bytes": "versions.bytes",
}  # fmt: skip
SORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("models.name", "versions.number"),
    "version": ("versions.number", "models.name"),
    "created": ("versions.created_at", "models.name", "versions.number"),
    "parameters": ("versions.parameters", "models.name", "versions.number"),
    "bytes": ("versions.bytes", "models.name", "versions.number"),
    "tensors": ("versions.tensor_count", "models.name", "versions.number"),
}
_ORDERED = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

# a listing's SQL: (text, its bound values, the test records must pass in Python or None when SQL decides all)
Plan = tuple[str, dict[str, Any], Callable[[ModelVersion], bool] | None]


class Params:
    """The bound values of one statement, each behind a numbered marker in the dialect's parameter style."""

    def __init__(self, postgresql: bool, pyformat: bool) -> None:
        self.postgresql = postgresql
        self.pyformat = pyformat
        self.values: dict[str, Any] = {}

    def bind(self, value: Any, cast: str | None = None) -> str:
        """The marker of a new parameter holding ``value``, cast to ``cast`` on PostgreSQL."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        return self.named(name, cast)

    def named(self, name: str, cast: str | None = None) -> str:
        """The marker of parameter ``name`` (a named statement's ``limit`` is supplied by its caller); on
        PostgreSQL a typed one is cast, as SQLAlchemy's psycopg dialect casts it."""
        marker = f"%({name})s" if self.pyformat else f":{name}"
        return f"CAST({marker} AS {cast})" if cast and self.postgresql else marker


def iter_versions(
    engine: Engine,
    filter: str | None = None,
    *,
    sort: str | None = None,
    limit: int | None = None,
    include_yanked: bool = False,
    latest: bool = False,
    consume: Callable[..., Iterator[Any]] = stream_records,
) -> Iterator[Any]:
    """Versions matching ``filter``, in ``sort`` order (``-key`` descends), at most ``limit`` of them, read
    through an engine (a database URL the drivers alone do not take, and ``Registry``); ``consume`` makes
    them of the rows (records by default)."""
    from sqlalchemy import text

    from modelkin.db.engine import read_connection
    from modelkin.registry.statements import RECORD_COLUMNS

    node = parse_listing(filter, sort)
    if limit == 0:
        return
    with read_connection(engine) as conn:
        sql, values, keep = plan(node, sort=sort, limit=limit, include_yanked=include_yanked, latest=latest,
                                 postgresql=conn.dialect.name == "postgresql")  # fmt: skip
        query = text(sql).columns(*RECORD_COLUMNS)
        # the version rows stream from one cursor; each batch's files, tags, aliases and parents are read beside it
        rows = conn.execute(query, values, execution_options={"yield_per": BATCH})
        yield from consume(conn, rows, limit, keep)


def parse_listing(filter: str | None, sort: str | None) -> Node | None:
    """The parsed filter, once ``filter`` and ``sort`` are known to be valid (InvalidFilter, InvalidName)."""
    node = parse_filter_tree(filter, FIELDS)
    sort_keys(sort or "name")
    return node


def plan(
    node: Node | None,
    *,
    sort: str | None,
    limit: int | None,
    include_yanked: bool,
    latest: bool,
    postgresql: bool,
    pyformat: bool = False,
) -> Plan:
    """The SQL a listing runs with its values, and the test its records must pass in Python."""
    params = Params(postgresql, pyformat)
    condition, exact = to_sql(node, params) if node is not None else (None, True)
    residual = compile_node(node) if node is not None and not exact else None
    bound = None if residual is not None or limit is None else params.bind(limit, "INTEGER")
    sql = version_query(sort or "name", params, include_yanked=include_yanked, latest=latest, condition=condition,
                        limit=bound)  # fmt: skip
    if residual is None:
        return sql, params.values, None
    return sql, params.values, lambda record: bool(residual(filter_fields(record)))


def version_query(
    sort: str,
    params: Params,
    *,
    include_yanked: bool = False,
    latest: bool = False,
    condition: str | None = None,
    limit: str | None = None,
) -> str:
    """The versions (their ``RECORD_KEYS`` columns) a listing reads, in ``sort`` order, at most ``limit`` (a
    parameter's marker)."""
    false = "false" if params.postgresql else "0"
    where = [] if include_yanked else [f"versions.yanked IS {false}"]
    if latest:
        newest = ("SELECT max(newer.number) FROM versions AS newer WHERE newer.model_id = versions.model_id"
                  + ("" if include_yanked else f" AND newer.yanked IS {false}"))  # fmt: skip
        where.append(f"versions.number = ({newest})")
    if condition is not None:
        where.append(condition)
    direction = " DESC" if sort.startswith("-") else " ASC"
    order = ", ".join(_code_point_order(k, params.postgresql) + direction for k in sort_keys(sort))
    sql = f"{RECORD_SELECT} FROM versions JOIN models ON models.id = versions.model_id"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    return sql if limit is None else f"{sql} LIMIT {limit}"


def sort_keys(sort: str) -> tuple[str, ...]:
    """The columns ``sort`` (``key`` or ``-key``) orders by, or InvalidName."""
    keys = SORT_COLUMNS.get(sort.lstrip("-"))
    if keys is None:
        raise InvalidName(f"cannot sort by {sort!r}.", hint=f"sort by one of: {', '.join(SORT_COLUMNS)}")
    return keys


def _code_point_order(column: str, postgresql: bool) -> str:
    """Names sort by code point, as in Python, whatever the PostgreSQL database's collation."""
    return f'{column} COLLATE "C"' if postgresql and column == "models.name" else column


def to_sql(node: Node, params: Params) -> tuple[str | None, bool]:
    """(a SQL condition every matching version meets or None, whether that condition is the whole filter)."""
    if isinstance(node, BoolOp):
        parts = [to_sql(p, params) for p in node.parts]
        exact = all(e for _, e in parts)
        kept = [c for c, _ in parts if c is not None]
        if node.op == "AND":
            return (f"({' AND '.join(kept)})" if kept else None), exact
        if len(kept) < len(parts):
            return None, False
        return f"({' OR '.join(kept)})", exact
    condition = _comparison(node, params)
    # SQLite's LIKE ignores ASCII case, so there SQL only narrows a LIKE down and Python decides
    return condition, condition is not None and node.op != "LIKE"


def _comparison(c: Comparison, params: Params) -> str | None:
    """The exact SQL for one comparison, or None where SQL could disagree with Python's reading of it."""
    values = c.value if c.op == "IN" else (c.value,)
    if c.key.startswith("tags."):
        if not _text_decides(c.op, values):
            return None
        key = params.bind(c.key[5:], "VARCHAR")
        test = _text_test("tags.value", c.op, c.value, params)
        return f'versions.id IN (SELECT tags.version_id FROM tags WHERE tags."key" = {key} AND {test})'
    if c.key in TEXT_COLUMNS:
        return _text_test(TEXT_COLUMNS[c.key], c.op, c.value, params) if _text_decides(c.op, values) else None
    if c.key in NUMBER_COLUMNS and all(_plain_number(v) for v in values) and c.op not in ("LIKE", "ILIKE"):
        column = NUMBER_COLUMNS[c.key]

        def number(v: Any) -> str:
            # on PostgreSQL an integer is cast to BIGINT whatever the column (cast to INTEGER, 3000000000 failed as
            # out of range where SQLite and Python find no match), a float to DOUBLE PRECISION: psycopg binds it so,
            # psycopg2's literal would be a NUMERIC, and cast to the column's type it would round
            return params.bind(v, "BIGINT" if isinstance(v, int) else "DOUBLE PRECISION")

        if c.op == "IN":
            return f"{column} IN ({', '.join(number(v) for v in values)})"
        return f"{column} {_ORDERED[c.op]} {number(c.value)}"
    if c.key == "yanked" and c.op == "==" and isinstance(c.value, bool):
        return f"versions.yanked IS {str(c.value).lower() if params.postgresql else int(c.value)}"
    return None


def _text_decides(op: str, values: tuple[Any, ...]) -> bool:
    # numbers against text compare as numbers in Python, and ILIKE and ordered string comparisons depend on the
    # database's collation: those are left to Python
    return op in ("==", "!=", "IN", "LIKE") and all(isinstance(v, str) for v in values)


def _text_test(column: str, op: str, value: Any, params: Params) -> str:
    if op == "==":
        return f"{column} = {params.bind(value, 'VARCHAR')}"
    if op == "!=":
        return f"({column} IS NOT NULL AND {column} != {params.bind(value, 'VARCHAR')})"
    if op == "IN":
        return f"{column} IN ({', '.join(params.bind(v, 'VARCHAR') for v in value)})"
    # LIKE: both databases match it in linear time; backslash is the escape character, so a typed one is doubled
    return f"{column} LIKE {params.bind(value.replace(chr(92), chr(92) * 2), 'VARCHAR')} ESCAPE '\\'"


def _plain_number(v: Any) -> bool:
    """An int or finite float SQL compares exactly as Python does (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) < 2**63 if isinstance(v, int) else math.isfinite(v)
