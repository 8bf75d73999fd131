"""Turning database rows into the frozen records the Registry hands out, in a few batched queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelkin.db.schema import Alias, File, LineageEdge, Model, Tag, Version, as_utc
from modelkin.registry.records import FileEntry, ModelVersion

_BATCH = 500


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _BATCH):
        yield ids[i : i + _BATCH]


def ref_of(names: dict[int, str], version: Version) -> str:
    return f"{names[version.model_id]}:{version.number}"


def to_records(session: Session, versions: Sequence[Any]) -> list[ModelVersion]:
    """Build records for ``versions`` with their files, tags, aliases and declared parents.

    ``versions`` are ``Version`` objects or plain rows of the versions table (what listings stream: building
    ORM objects costs more than the rest of a record); the rows around them are read as plain columns too.
    """
    ids = [v.id for v in versions]
    files: dict[int, list[FileEntry]] = defaultdict(list)
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    aliases: dict[int, list[str]] = defaultdict(list)
    parents: dict[int, list[str]] = defaultdict(list)
    parent_ids: dict[int, list[int]] = defaultdict(list)
    for chunk in _chunks(ids):
        file_rows = select(File.version_id, File.path, File.size, File.sha256).where(File.version_id.in_(chunk))
        for version_id, path, size, sha256 in session.execute(file_rows.order_by(File.path)):
            files[version_id].append(FileEntry(path, size, sha256))
        tag_rows = select(Tag.version_id, Tag.key, Tag.value).where(Tag.version_id.in_(chunk)).order_by(Tag.key)
        for version_id, key, value in session.execute(tag_rows):
            tags[version_id][key] = value
        alias_rows = select(Alias.version_id, Alias.alias).where(Alias.version_id.in_(chunk)).order_by(Alias.alias)
        for version_id, alias in session.execute(alias_rows):
            aliases[version_id].append(alias)
        edges = select(LineageEdge.child_id, LineageEdge.parent_id, LineageEdge.parent_external).where(
            LineageEdge.child_id.in_(chunk), LineageEdge.source == "declared"
        )
        for child_id, parent_id, external in session.execute(edges.order_by(LineageEdge.id)):
            if parent_id is not None:
                parent_ids[child_id].append(parent_id)
            elif external is not None:
                parents[child_id].append(external)
    wanted = {v.model_id for v in versions}
    parent_versions = _load_versions(session, [p for ps in parent_ids.values() for p in ps])
    wanted |= {v.model_id for v in parent_versions.values()}
    names = _model_names(session, wanted)
    for child, pids in parent_ids.items():
        parents[child] = [ref_of(names, parent_versions[p]) for p in pids] + parents.get(child, [])
    return [
        ModelVersion(
            name=names[v.model_id],
            version=v.number,
            digest=v.digest,
            parameters=v.parameters,
            tensors=v.tensor_count,
            bytes=v.bytes,
            files=tuple(files[v.id]),
            tags=dict(tags[v.id]),
            aliases=tuple(aliases[v.id]),
            declared_parents=tuple(parents[v.id]),
            relation=v.relation,
            architecture=v.architecture,
            arch_fingerprint=v.arch_fingerprint,
            source=v.source,
            card=dict(v.card or {}),
            yanked=v.yanked,
            created_at=as_utc(v.created_at),
        )
        for v in versions
    ]


def _load_versions(session: Session, ids: Sequence[int]) -> dict[int, Any]:
    """Rows of the versions table by id."""
    out: dict[int, Any] = {}
    for chunk in _chunks(sorted(set(ids))):
        out.update({v.id: v for v in load_rows(session, chunk)})
    return out


def load_rows(session: Session, ids: Sequence[int]) -> list[Any]:
    """Plain rows of the versions table for ``ids`` (at most a few hundred), in no particular order."""
    return list(session.execute(select(Version.__table__).where(Version.__table__.c.id.in_(ids))))


def _model_names(session: Session, model_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(sorted(set(model_ids))):
        out.update(dict(session.execute(select(Model.id, Model.name).where(Model.id.in_(chunk))).all()))
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
