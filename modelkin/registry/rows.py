"""Turning database rows into the frozen records the Registry hands out, in a few batched queries.

The queries are the named statements of ``modelkin.registry.statements``: they run on an ORM session for
writers (which pass their ``Version`` objects), on a Core connection for reads, and for the read commands as
generated SQL run by the driver alone (``modelkin.db.lite``, ``modelkin.db.pg``), so this module never imports
SQLAlchemy itself. Each batch query is built once and takes its ids as one parameter, so a batch costs its rows,
not SQL compilation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from modelkin.db.lite import PlainConnection
from modelkin.db.times import as_utc
from modelkin.registry.records import FileEntry, ModelVersion

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    Executor = Connection | Session | PlainConnection

# versions per batch query: far below SQLite's limit on bound variables, and on PostgreSQL small enough for
# the planner to read files and tags by index (5,000 ids made it scan the tables, three times the server's work)
_BATCH = 500
# the version columns a record is built from, in the order to_records unpacks them (plain tuples unpack faster)
RECORD_KEYS = ("id", "model_id", "number", "digest", "parameters", "tensor_count", "bytes", "architecture",
               "arch_fingerprint", "relation", "source", "card", "yanked", "created_at")  # fmt: skip


def run(conn: Executor, name: str, params: Mapping[str, Any] | None = None, *, stream: bool = False) -> Any:
    """The rows of the read statement ``name`` (see modelkin.registry.statements), on any kind of connection.

    SQLAlchemy connections and sessions run the Core statement; a ``PlainConnection`` runs the SQL generated
    from it for its dialect. ``stream`` reads a long result in batches instead of all at once (otherwise the
    rows come as one list, or a sqlite3 cursor).
    """
    if isinstance(conn, PlainConnection):
        return conn.execute(conn.statements()[name], params, stream=stream)
    from modelkin.registry.statements import statements_for

    statement = statements_for(conn)[name]
    if stream:
        return conn.execute(statement, dict(params or {}), execution_options={"yield_per": _BATCH})
    return conn.execute(statement, dict(params or {})).all()  # one fetch, not one driver call per row


def scalar(conn: Executor, name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The first column of the first row of ``name``, or None when it has no rows."""
    rows = run(conn, name, params)
    first = next(iter(rows), None)
    close = getattr(rows, "close", None)  # a sqlite3 cursor; the others' rows come fetched
    if close is not None:
        close()
    return None if first is None else first[0]


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _BATCH):
        yield list(ids[i : i + _BATCH])


def stream_records(
    conn: Executor,
    rows: Any,
    limit: int | None = None,
    keep: Callable[[Any], bool] | None = None,
    build: Callable[[Executor, Sequence[Any]], list[Any]] | None = None,
) -> Iterator[Any]:
    """Records for version ``rows`` (a streamed result) in batches; those ``keep`` accepts, at most ``limit``.

    ``build`` makes something else than records of each batch (``to_records`` by default).
    """
    make = to_records if build is None else build
    shown = 0
    it = iter(rows)
    try:
        while batch := list(islice(it, _BATCH)):
            for record in make(conn, batch):
                if keep is not None and not keep(record):
                    continue
                yield record
                shown += 1
                if limit is not None and shown >= limit:
                    return
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # a PostgreSQL server-side cursor left open when a limit or the caller stops early


def to_records(conn: Executor, rows: Sequence[Any]) -> list[ModelVersion]:
    """Build records for ``rows`` with their files, tags, aliases and declared parents.

    ``rows`` are rows of the ``RECORD_KEYS`` columns or ORM ``Version`` objects (which writers pass); what is
    around them is read as plain rows, a few queries per batch of ``_BATCH``.
    """
    # an ORM class has a __table__ (asked of the type: a Row answers a missing attribute slowly, with a KeyError)
    values = [tuple(getattr(v, k) for k in RECORD_KEYS) if hasattr(type(v), "__table__") else tuple(v)
              for v in rows]  # fmt: skip
    files, tags, aliases, parents, names = surroundings(conn, values)
    empty: dict[str, str] = {}
    return [
        ModelVersion(
            name=names[model_id],
            version=number,
            digest=digest,
            parameters=parameters,
            tensors=tensors,
            bytes=size,
            files=tuple(FileEntry(*f) for f in files.get(vid, ())),
            tags=dict(tags.get(vid, empty)),
            aliases=tuple(aliases.get(vid, ())),
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


class Surroundings(NamedTuple):
    """What a batch of versions' records hold beside their own columns, by version id (model names by model)."""

    files: dict[int, list[tuple[str, int, str]]]  # (path, size, sha256) in path order
    tags: dict[int, dict[str, str]]
    aliases: dict[int, list[str]]
    parents: dict[int, list[str]]  # declared parents as REFs, then external ones
    names: dict[int, str]


def surroundings(conn: Executor, values: Sequence[tuple[Any, ...]]) -> Surroundings:
    """Files, tags, aliases, declared parents and model names of version rows (``RECORD_KEYS`` tuples)."""
    ids = [v[0] for v in values]
    file_map: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
    tag_map: dict[int, dict[str, str]] = defaultdict(dict)
    alias_map: dict[int, list[str]] = defaultdict(list)
    parents: dict[int, list[str]] = defaultdict(list)
    parent_ids: dict[int, list[int]] = defaultdict(list)
    for chunk in _chunks(ids):
        for version_id, path, size, sha256 in run(conn, "files", {"ids": chunk}):
            file_map[version_id].append((path, size, sha256))
        for version_id, key, value in run(conn, "tags", {"ids": chunk}):
            tag_map[version_id][key] = value
        for version_id, alias in run(conn, "aliases", {"ids": chunk}):
            alias_map[version_id].append(alias)
        for child_id, parent_id, external in run(conn, "declared", {"ids": chunk}):
            if parent_id is not None:
                parent_ids[child_id].append(parent_id)
            elif external is not None:
                parents[child_id].append(external)
    wanted = {v[1] for v in values}
    parent_rows = load_rows(conn, [p for ps in parent_ids.values() for p in ps])
    wanted |= {v[1] for v in parent_rows.values()}
    names = model_names(conn, wanted)
    for child, pids in parent_ids.items():
        parents[child] = [f"{names[parent_rows[p][1]]}:{parent_rows[p][2]}" for p in pids] + parents.get(child, [])
    return Surroundings(file_map, tag_map, alias_map, parents, names)


def load_rows(conn: Executor, ids: Iterable[int]) -> dict[int, Any]:
    """Rows of the ``RECORD_KEYS`` columns of the versions table, by id."""
    out: dict[int, Any] = {}
    for chunk in _chunks(sorted(set(ids))):
        out.update({v[0]: v for v in run(conn, "versions", {"ids": chunk})})
    return out


def model_names(conn: Executor, model_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(sorted(set(model_ids))):
        out.update({i: name for i, name in run(conn, "names", {"ids": chunk})})
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
