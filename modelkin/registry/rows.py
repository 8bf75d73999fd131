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


def to_records(session: Session, versions: Sequence[Version]) -> list[ModelVersion]:
    """Build records for ``versions`` with their files, tags, aliases and declared parents."""
    ids = [v.id for v in versions]
    files: dict[int, list[FileEntry]] = defaultdict(list)
    tags: dict[int, dict[str, str]] = defaultdict(dict)
    aliases: dict[int, list[str]] = defaultdict(list)
    parents: dict[int, list[str]] = defaultdict(list)
    parent_ids: dict[int, list[int]] = defaultdict(list)
    for chunk in _chunks(ids):
        for f in session.scalars(select(File).where(File.version_id.in_(chunk)).order_by(File.path)):
            files[f.version_id].append(FileEntry(f.path, f.size, f.sha256))
        for t in session.scalars(select(Tag).where(Tag.version_id.in_(chunk)).order_by(Tag.key)):
            tags[t.version_id][t.key] = t.value
        for a in session.scalars(select(Alias).where(Alias.version_id.in_(chunk)).order_by(Alias.alias)):
            aliases[a.version_id].append(a.alias)
        edges = select(LineageEdge).where(LineageEdge.child_id.in_(chunk), LineageEdge.source == "declared")
        for e in session.scalars(edges.order_by(LineageEdge.id)):
            if e.parent_id is not None:
                parent_ids[e.child_id].append(e.parent_id)
            elif e.parent_external is not None:
                parents[e.child_id].append(e.parent_external)
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


def _load_versions(session: Session, ids: Sequence[int]) -> dict[int, Version]:
    out: dict[int, Version] = {}
    for chunk in _chunks(sorted(set(ids))):
        out.update({v.id: v for v in session.scalars(select(Version).where(Version.id.in_(chunk)))})
    return out


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
