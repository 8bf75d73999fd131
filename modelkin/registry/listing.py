"""Listing versions with the work done in SQL: filters, sorting and limits, rows streamed in batches.

A parsed filter (modelkin.registry.filters) is translated into a SQL condition wherever the database can decide
it exactly as Python would (typed comparisons on columns, string tests on tags); everything else stays in Python
and is applied to the rows SQL returns. The SQL part is always a necessary condition of the whole filter, so
rows are never lost, and when it is the whole filter the limit goes to SQL too. Values always travel as bound
parameters, never as SQL text. Rows stream in batches of ``BATCH``, so memory does not grow with the registry.
Everything is SQLAlchemy Core on ``modelkin.db.tables``: listing never imports the ORM (see modelkin.registry.reader).
``version_query`` also builds the unfiltered listing among the named statements (modelkin.registry.statements).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, func, or_, select

from modelkin.db.engine import read_connection
from modelkin.db.tables import models, tags, versions
from modelkin.errors import InvalidName
from modelkin.registry.filters import BoolOp, Comparison, Node, compile_node, parse_filter_tree
from modelkin.registry.records import ModelVersion
from modelkin.registry.rows import FIELDS, RECORD_KEYS, filter_fields, stream_records

BATCH = 500
V, M, T = versions.c, models.c, tags.c
RECORD_COLUMNS = tuple(V[k] for k in RECORD_KEYS)
TEXT_COLUMNS: dict[str, Any] = {
    "name": M.name, "digest": V.digest, "family": V.family, "relation": V.relation, "source": V.source,
    "arch_fingerprint": V.arch_fingerprint,
}  # fmt: skip
NUMBER_COLUMNS: dict[str, Any] = {
    "version": V.number, "parameters": V.parameters, "tensors": V.tensor_count, "bytes": V.bytes,
}  # fmt: skip
SORT_COLUMNS: dict[str, tuple[Any, ...]] = {
    "name": (M.name, V.number),
    "version": (V.number, M.name),
    "created": (V.created_at, M.name, V.number),
    "parameters": (V.parameters, M.name, V.number),
    "bytes": (V.bytes, M.name, V.number),
    "tensors": (V.tensor_count, M.name, V.number),
}
_ORDERED = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}


def iter_versions(
    engine: Engine,
    filter: str | None = None,
    *,
    sort: str | None = None,
    limit: int | None = None,
    include_yanked: bool = False,
    latest: bool = False,
) -> Iterator[ModelVersion]:
    """Versions matching ``filter``, in ``sort`` order (``-key`` descends), at most ``limit`` of them."""
    node = parse_listing(filter, sort)
    if limit == 0:
        return
    with read_connection(engine) as conn:
        query, keep = plan(node, sort=sort, limit=limit, include_yanked=include_yanked, latest=latest,
                           postgresql=conn.dialect.name == "postgresql")  # fmt: skip
        # the version rows stream from one cursor; each batch's files, tags, aliases and parents are read beside it
        rows = conn.execute(query, execution_options={"yield_per": BATCH})
        yield from stream_records(conn, rows, limit, keep)


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
) -> tuple[Select[Any], Callable[[ModelVersion], bool] | None]:
    """The query a listing runs, and the test its records must pass in Python (None when SQL decides it all)."""
    condition, exact = to_sql(node) if node is not None else (None, True)
    residual = compile_node(node) if node is not None and not exact else None
    query = version_query(sort or "name", include_yanked=include_yanked, latest=latest, condition=condition,
                          postgresql=postgresql, limit=limit if residual is None else None)  # fmt: skip
    if residual is None:
        return query, None
    return query, lambda record: bool(residual(filter_fields(record)))


def version_query(
    sort: str,
    *,
    include_yanked: bool = False,
    latest: bool = False,
    condition: ColumnElement[bool] | None = None,
    postgresql: bool = False,
    limit: Any = None,
) -> Select[Any]:
    """The versions (their ``RECORD_KEYS`` columns) a listing reads, in ``sort`` order, at most ``limit``."""
    order = [_code_point_order(k, postgresql) for k in sort_keys(sort)]
    query = select(*RECORD_COLUMNS).join(models, M.id == V.model_id)
    if not include_yanked:
        query = query.where(V.yanked.is_(False))
    if latest:
        query = query.where(V.number == _newest_number(include_yanked))
    if condition is not None:
        query = query.where(condition)
    query = query.order_by(*(k.desc() if sort.startswith("-") else k.asc() for k in order))
    return query if limit is None else query.limit(limit)


def sort_keys(sort: str) -> tuple[Any, ...]:
    """The columns ``sort`` (``key`` or ``-key``) orders by, or InvalidName."""
    keys = SORT_COLUMNS.get(sort.lstrip("-"))
    if keys is None:
        raise InvalidName(f"cannot sort by {sort!r}.", hint=f"sort by one of: {', '.join(SORT_COLUMNS)}")
    return keys


def _code_point_order(column: Any, postgresql: bool) -> Any:
    """Names sort by code point, as in Python, whatever the PostgreSQL database's collation."""
    return column.collate("C") if postgresql and column is M.name else column


def _newest_number(include_yanked: bool) -> Any:
    newer = versions.alias("newer")
    query = select(func.max(newer.c.number)).where(newer.c.model_id == V.model_id)
    if not include_yanked:
        query = query.where(newer.c.yanked.is_(False))
    return query.scalar_subquery()


def to_sql(node: Node) -> tuple[ColumnElement[bool] | None, bool]:
    """(a SQL condition every matching version meets or None, whether that condition is the whole filter)."""
    if isinstance(node, BoolOp):
        parts = [to_sql(p) for p in node.parts]
        if node.op == "AND":
            kept = [c for c, _ in parts if c is not None]
            condition = and_(*kept) if kept else None
            return condition, all(exact for _, exact in parts)
        if any(c is None for c, _ in parts):
            return None, False
        return or_(*(c for c, _ in parts if c is not None)), all(exact for _, exact in parts)
    condition = _comparison(node)
    # SQLite's LIKE ignores ASCII case, so there SQL only narrows a LIKE down and Python decides
    return condition, condition is not None and node.op != "LIKE"


def _comparison(c: Comparison) -> ColumnElement[bool] | None:
    """The exact SQL for one comparison, or None where SQL could disagree with Python's reading of it."""
    values = c.value if c.op == "IN" else (c.value,)
    if c.key.startswith("tags."):
        test = _text_test(T.value, c.op, c.value, values)
        if test is None:
            return None
        return V.id.in_(select(T.version_id).where(T.key == c.key[5:], test))
    if c.key in TEXT_COLUMNS:
        return _text_test(TEXT_COLUMNS[c.key], c.op, c.value, values)
    if c.key in NUMBER_COLUMNS and all(_plain_number(v) for v in values) and c.op not in ("LIKE", "ILIKE"):
        column = NUMBER_COLUMNS[c.key]
        return column.in_(values) if c.op == "IN" else getattr(column, _ORDERED[c.op])(c.value)
    if c.key == "yanked" and c.op == "==" and isinstance(c.value, bool):
        return V.yanked.is_(c.value)
    return None


def _text_test(column: Any, op: str, value: Any, values: tuple[Any, ...]) -> ColumnElement[bool] | None:
    if not all(isinstance(v, str) for v in values):
        return None  # numbers against text compare as numbers in Python: left to Python
    if op == "==":
        return column == value  # type: ignore[no-any-return]
    if op == "!=":
        return and_(column.is_not(None), column != value)
    if op == "IN":
        return column.in_(values)  # type: ignore[no-any-return]
    if op == "LIKE":
        # both databases match LIKE in linear time; backslash is the escape character, so a typed one is doubled
        return column.like(value.replace("\\", "\\\\"), escape="\\")  # type: ignore[no-any-return]
    return None  # ILIKE and ordered string comparisons depend on the database's collation


def _plain_number(v: Any) -> bool:
    """An int or finite float SQL compares exactly as Python does (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return abs(v) < 2**63 if isinstance(v, int) else math.isfinite(v)
