"""Turning database rows into the frozen records the Registry hands out, in a few batched queries.

Everything here is SQLAlchemy Core on ``modelkin.db.tables``: it runs on a plain connection for the read
commands (which never import the ORM) and on an ORM session for writers, which pass their ``Version`` objects.
Each batch query is built once and takes its ids as one parameter, so a batch costs its rows, not SQL compilation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ARRAY, ColumnElement, Connection, Integer, Row, Select, any_, bindparam, select

from modelkin.db.tables import aliases, as_utc, files, lineage_edges, models, tags, versions
from modelkin.registry.records import FileEntry, ModelVersion

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    Executor = Connection | Session

_BATCH = 500
# what a record is built from, in the order to_records unpacks it (plain tuples unpack faster than named access)
V = versions.c
RECORD_COLUMNS = (V.id, V.model_id, V.number, V.digest, V.parameters, V.tensor_count, V.bytes, V.architecture,
                  V.arch_fingerprint, V.relation, V.source, V.card, V.yanked, V.created_at)  # fmt: skip
_KEYS = tuple(c.key for c in RECORD_COLUMNS)


@dataclass(frozen=True)
class _Queries:
    """The batch queries, each taking the batch's ids as one parameter ``ids``."""

    files: Select[Any]
    tags: Select[Any]
    aliases: Select[Any]
    declared: Select[Any]
    versions: Select[Any]
    names: Select[Any]


def _queries(member: Callable[[Any], ColumnElement[bool]]) -> _Queries:
    f, t, a, e = files.c, tags.c, aliases.c, lineage_edges.c
    return _Queries(
        files=select(f.version_id, f.path, f.size, f.sha256).where(member(f.version_id)).order_by(f.path),
        tags=select(t.version_id, t.key, t.value).where(member(t.version_id)).order_by(t.key),
        aliases=select(a.version_id, a.alias).where(member(a.version_id)).order_by(a.alias),
        declared=select(e.child_id, e.parent_id, e.parent_external)
        .where(member(e.child_id), e.source == "declared")
        .order_by(e.id),
        versions=select(*RECORD_COLUMNS).where(member(V.id)),
        names=select(models.c.id, models.c.name).where(member(models.c.id)),
    )


# SQLite gets an expanding IN; PostgreSQL one array parameter, ``= ANY(:ids)``: the statement text stays short
# and the same for every batch, so neither SQLAlchemy nor psycopg re-renders or re-parses 500 placeholders
_BY_IN = _queries(lambda column: column.in_(bindparam("ids", expanding=True)))
_BY_ANY = _queries(lambda column: column == any_(bindparam("ids", type_=ARRAY(Integer))))


def _for(conn: Executor) -> _Queries:
    dialect = conn.dialect if isinstance(conn, Connection) else conn.get_bind().dialect
    return _BY_ANY if dialect.name == "postgresql" else _BY_IN


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _BATCH):
        yield list(ids[i : i + _BATCH])


def to_records(conn: Executor, rows: Sequence[Any]) -> list[ModelVersion]:
    """Build records for ``rows`` with their files, tags, aliases and declared parents.

    ``rows`` are rows of ``select(*RECORD_COLUMNS)`` or ORM ``Version`` objects (which writers pass); what is
    around them is read as plain rows, a few queries per batch of ``_BATCH``.
    """
    values = [tuple(v) if isinstance(v, Row) else tuple(getattr(v, k) for k in _KEYS) for v in rows]
    ids = [v[0] for v in values]
    file_map: dict[int, list[FileEntry]] = defaultdict(list)
    tag_map: dict[int, dict[str, str]] = defaultdict(dict)
    alias_map: dict[int, list[str]] = defaultdict(list)
    parents: dict[int, list[str]] = defaultdict(list)
    parent_ids: dict[int, list[int]] = defaultdict(list)
    q = _for(conn)
    for chunk in _chunks(ids):
        for version_id, path, size, sha256 in conn.execute(q.files, {"ids": chunk}):
            file_map[version_id].append(FileEntry(path, size, sha256))
        for version_id, key, value in conn.execute(q.tags, {"ids": chunk}):
            tag_map[version_id][key] = value
        for version_id, alias in conn.execute(q.aliases, {"ids": chunk}):
            alias_map[version_id].append(alias)
        for child_id, parent_id, external in conn.execute(q.declared, {"ids": chunk}):
            if parent_id is not None:
                parent_ids[child_id].append(parent_id)
            elif external is not None:
                parents[child_id].append(external)
    wanted = {v[1] for v in values}
    parent_rows = load_rows(conn, [p for ps in parent_ids.values() for p in ps])
    wanted |= {v.model_id for v in parent_rows.values()}
    names = model_names(conn, wanted)
    for child, pids in parent_ids.items():
        parents[child] = [f"{names[parent_rows[p].model_id]}:{parent_rows[p].number}" for p in pids] + parents.get(
            child, []
        )
    empty: dict[str, str] = {}
    return [
        ModelVersion(
            name=names[model_id],
            version=number,
            digest=digest,
            parameters=parameters,
            tensors=tensors,
            bytes=size,
            files=tuple(file_map.get(vid, ())),
            tags=dict(tag_map.get(vid, empty)),
            aliases=tuple(alias_map.get(vid, ())),
            declared_parents=tuple(parents.get(vid, ())),
            relation=relation,
            architecture=architecture,
            arch_fingerprint=fingerprint,
            source=source,
            card=dict(card or empty),
            yanked=yanked,
            created_at=as_utc(created),
        )
        for (vid, model_id, number, digest, parameters, tensors, size, architecture, fingerprint, relation, source,
             card, yanked, created) in values
    ]  # fmt: skip


def load_rows(conn: Executor, ids: Iterable[int]) -> dict[int, Any]:
    """Rows of the versions table by id."""
    out: dict[int, Any] = {}
    for chunk in _chunks(sorted(set(ids))):
        out.update({v.id: v for v in conn.execute(_for(conn).versions, {"ids": chunk})})
    return out


def model_names(conn: Executor, model_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(sorted(set(model_ids))):
        out.update({i: name for i, name in conn.execute(_for(conn).names, {"ids": chunk})})
    return out


def filter_fields(v: ModelVersion) -> dict[str, Any]:
    """The keys ``--filter`` can use for a version (see FIELDS)."""
    fields: dict[str, Any] = {
        "name": v.name,
        "version": v.version,
        "ref": v.ref,
        "digest": v.digest,
        "parameters": v.parameters,
        "tensors": v.tensors,
        "bytes": v.bytes,
        "family": v.family,
        "input_space": (v.architecture or {}).get("input_space"),
        "relation": v.relation,
        "source": v.source,
        "yanked": v.yanked,
        "created": v.created_at.isoformat(),
        "arch_fingerprint": v.arch_fingerprint,
        "license": v.card.get("license"),
    }
    fields.update({f"tags.{k}": val for k, val in v.tags.items()})
    return fields


FIELDS = frozenset(
    "name version ref digest parameters tensors bytes family input_space relation source yanked created "
    "arch_fingerprint license".split()
)
