"""Listing versions and events with the work done in SQL: filters, sorting and limits, rows streamed in batches.

A parsed filter (modelkin.registry.filters) is translated into a SQL condition wherever the database can decide
it exactly as Python would (typed comparisons on columns, string tests on tags); everything else stays in Python
and is applied to the rows SQL returns. The SQL part is always a necessary condition of the whole filter, so
rows are never lost, and when it is the whole filter the limit goes to SQL too. Values always travel as bound
parameters, never as SQL text. Rows stream in batches of ``BATCH``, so memory does not grow with the registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlalchemy.orm import aliased

from modelkin.db.engine import read_session
from modelkin.db.schema import Event, Model, Tag, Version, as_utc
from modelkin.errors import InvalidName
from modelkin.registry.filters import BoolOp, Comparison, Node, compile_node, parse_filter_tree
from modelkin.registry.records import EventRecord, ModelVersion
from modelkin.registry.rows import FIELDS, filter_fields, load_rows, to_records

BATCH = 500
TEXT_COLUMNS: dict[str, Any] = {
    "name": Model.name, "digest": Version.digest, "family": Version.family, "relation": Version.relation,
    "source": Version.source, "arch_fingerprint": Version.arch_fingerprint,
}  # fmt: skip
NUMBER_COLUMNS: dict[str, Any] = {
    "version": Version.number, "parameters": Version.parameters, "tensors": Version.tensor_count,
    "bytes": Version.bytes,
}  # fmt: skip
SORT_COLUMNS: dict[str, tuple[Any, ...]] = {
    "name": (Model.name, Version.number),
    "version": (Version.number, Model.name),
    "created": (Version.created_at, Model.name, Version.number),
    "parameters": (Version.parameters, Model.name, Version.number),
    "bytes": (Version.bytes, Model.name, Version.number),
    "tensors": (Version.tensor_count, Model.name, Version.number),
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
    node = parse_filter_tree(filter, FIELDS)
    sort = sort or "name"
    keys = SORT_COLUMNS.get(sort.lstrip("-"))
    if keys is None:
        raise InvalidName(f"cannot sort by {sort!r}.", hint=f"sort by one of: {', '.join(SORT_COLUMNS)}")
    if limit == 0:
        return
    condition, exact = to_sql(node) if node is not None else (None, True)
    residual = compile_node(node) if node is not None and not exact else None
    with read_session(engine) as s:
        pg = s.get_bind().dialect.name == "postgresql"
        order = [_code_point_order(k, pg) for k in keys]
        query = select(Version.id).join(Model, Model.id == Version.model_id)
        if not include_yanked:
            query = query.where(Version.yanked.is_(False))
        if latest:
            query = query.where(Version.number == _newest_number(include_yanked))
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(*(k.desc() if sort.startswith("-") else k.asc() for k in order))
        if limit is not None and residual is None:
            query = query.limit(limit)
        shown = 0
        # the ids stream from one cursor; each batch's rows are read as plain rows and turned into records
        for batch in s.execute(query.execution_options(yield_per=BATCH)).scalars().partitions():
            rows = {v.id: v for v in load_rows(s, batch)}
            for record in to_records(s, [rows[i] for i in batch]):
                if residual is not None and not residual(filter_fields(record)):
                    continue
                yield record
                shown += 1
                if limit is not None and shown >= limit:
                    return


def iter_events(engine: Engine, version_id: int | None, limit: int | None) -> list[EventRecord]:
    """The event log oldest first, or its last ``limit`` events: SQL reads only those."""
    query = select(Event)
    if version_id is not None:
        query = query.where(Event.version_id == version_id)
    if limit is not None:
        query = query.order_by(Event.id.desc()).limit(limit)
    else:
        query = query.order_by(Event.id)
    with read_session(engine) as s:
        events = list(s.scalars(query))
    if limit is not None:
        events.reverse()
    return [EventRecord(e.id, as_utc(e.at), e.kind, e.ref, dict(e.detail or {})) for e in events]


def _code_point_order(column: Any, postgresql: bool) -> Any:
    """Names sort by code point, as in Python, whatever the PostgreSQL database's collation."""
    return column.collate("C") if postgresql and column is Model.name else column


def _newest_number(include_yanked: bool) -> Any:
    newer = aliased(Version)
    query = select(func.max(newer.number)).where(newer.model_id == Version.model_id)
    if not include_yanked:
        query = query.where(newer.yanked.is_(False))
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
        test = _text_test(Tag.value, c.op, c.value, values)
        if test is None:
            return None
        return Version.id.in_(select(Tag.version_id).where(Tag.key == c.key[5:], test))
    if c.key in TEXT_COLUMNS:
        return _text_test(TEXT_COLUMNS[c.key], c.op, c.value, values)
    if c.key in NUMBER_COLUMNS and all(_plain_number(v) for v in values) and c.op not in ("LIKE", "ILIKE"):
        column = NUMBER_COLUMNS[c.key]
        return column.in_(values) if c.op == "IN" else getattr(column, _ORDERED[c.op])(c.value)
    if c.key == "yanked" and c.op == "==" and isinstance(c.value, bool):
        return Version.yanked.is_(c.value)
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
