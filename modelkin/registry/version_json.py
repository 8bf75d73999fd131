"""``list --json`` straight from database rows: each version's JSON text, without a record or a dict.

Building 100,000 ``ModelVersion`` records and then their ``to_json`` dicts only to encode them cost more than the
encoding itself. Here each batch's surroundings are read as for records (``rows.surroundings``) and every version
is written from its row in one pass, with ``ModelVersion.to_json``'s keys, order and values (a test compares
the two on every kind of field), encoded as ``modelkin.jsontext`` encodes an item of a top-level array. A
listing that Python must still filter needs the records for that, and is encoded from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C encoder when available
from typing import TYPE_CHECKING, Any

from modelkin.jsontext import ITEM, encode
from modelkin.registry.rows import stream_records, surroundings

if TYPE_CHECKING:
    from modelkin.registry.rows import Executor

FIELD = ITEM + "  "  # the start of a version's field lines
INNER = FIELD + "  "  # of a file's lines inside "files"
DEEP = INNER + "  "  # of a file's own fields


def stream_json(
    conn: Executor, rows: Any, limit: int | None = None, keep: Callable[[Any], bool] | None = None
) -> Iterator[str]:
    """The JSON text of each version of ``rows`` (a streamed result) that ``keep`` accepts, at most ``limit``."""
    if keep is None:
        return stream_records(conn, rows, limit, build=to_texts)
    return (encode(record.to_json(), ITEM) for record in stream_records(conn, rows, limit, keep))


def to_texts(conn: Executor, rows: Sequence[Any]) -> list[str]:
    """``encode(record.to_json(), ITEM)`` of the record each row (``RECORD_KEYS`` columns) would make.

    The common case of each field (a str, an int, an empty list) is written inline, anything else by ``encode``:
    a call per field was most of the cost.
    """
    files, tags, aliases, parents, names = surroundings(conn, rows)
    text, number_text = encode_basestring, int.__repr__
    out = []
    for (vid, model_id, number, digest, parameters, tensors, size, architecture, fingerprint, relation, source,
         card, yanked, created) in rows:  # fmt: skip
        name = names[model_id]
        family = architecture.get("family") if architecture else None
        tagged, aliased, declared = tags.get(vid), aliases.get(vid), parents.get(vid)
        stamp = created.isoformat() + "+00:00" if created.tzinfo is None else created.isoformat()  # as_utc's
        out.append(
            f'{{{FIELD}"ref": {text(f"{name}:{number}")},'
            f'{FIELD}"name": {text(name) if type(name) is str else encode(name, FIELD)},'
            f'{FIELD}"version": {number_text(number) if type(number) is int else encode(number, FIELD)},'
            f'{FIELD}"digest": {text(digest) if type(digest) is str else encode(digest, FIELD)},'
            f'{FIELD}"parameters": {number_text(parameters) if type(parameters) is int else encode(parameters, FIELD)},'
            f'{FIELD}"tensors": {number_text(tensors) if type(tensors) is int else encode(tensors, FIELD)},'
            f'{FIELD}"bytes": {number_text(size) if type(size) is int else encode(size, FIELD)},'
            f'{FIELD}"files": {_files(files.get(vid))},'
            f'{FIELD}"tags": {encode(tagged, FIELD) if tagged else "{}"},'
            f'{FIELD}"aliases": {encode(aliased, FIELD) if aliased else "[]"},'
            f'{FIELD}"declared_parents": {encode(declared, FIELD) if declared else "[]"},'
            f'{FIELD}"relation": {text(relation) if type(relation) is str else encode(relation, FIELD)},'
            f'{FIELD}"architecture": {encode(architecture, FIELD)},'
            f'{FIELD}"family": {text(family) if type(family) is str else encode(family, FIELD)},'
            f'{FIELD}"arch_fingerprint": '
            f'{text(fingerprint) if type(fingerprint) is str else encode(fingerprint, FIELD)},'
            f'{FIELD}"source": {text(source) if type(source) is str else encode(source, FIELD)},'
            f'{FIELD}"card": {encode(dict(card), FIELD) if card else "{}"},'
            f'{FIELD}"yanked": {"true" if yanked is True else "false" if yanked is False else encode(yanked, FIELD)},'
            f'{FIELD}"created_at": {text(stamp)}{ITEM}}}'
        )
    return out


def _files(entries: list[tuple[str, int, str]] | None) -> str:
    if not entries:
        return "[]"
    text, number_text = encode_basestring, int.__repr__
    return (
        f"[{INNER}"
        + f",{INNER}".join(
            f'{{{DEEP}"path": {text(path) if type(path) is str else encode(path, DEEP)},'
            f'{DEEP}"size": {number_text(size) if type(size) is int else encode(size, DEEP)},'
            f'{DEEP}"sha256": {text(sha256) if type(sha256) is str else encode(sha256, DEEP)}{INNER}}}'
            for path, size, sha256 in entries
        )
        + f"{FIELD}]"
    )
