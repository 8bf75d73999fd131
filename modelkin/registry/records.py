"""Typed, frozen records that the Registry returns (never ORM rows), each with its stable JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# how a version derives from its declared parents
RELATIONS = ("finetune", "adapter", "merge", "quantized", "pruned", "watermarked", "distilled")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version, with the mutable facts around it (tags, aliases, yanked) as read."""

    name: str
    version: int
    digest: str  # "sha256:<64 hex>" of the manifest
    parameters: int
    tensors: int
    bytes: int
    files: tuple[FileEntry, ...]
    tags: dict[str, str]
    aliases: tuple[str, ...]
    declared_parents: tuple[str, ...]
    relation: str | None
    architecture: dict[str, Any] | None
    arch_fingerprint: str
    source: str | None
    card: dict[str, Any]
    yanked: bool
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def family(self) -> str | None:
        return self.architecture.get("family") if self.architecture else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "parameters": self.parameters,
            "tensors": self.tensors,
            "bytes": self.bytes,
            "files": [f.to_json() for f in self.files],
            "tags": dict(self.tags),
            "aliases": list(self.aliases),
            "declared_parents": list(self.declared_parents),
            "relation": self.relation,
            "architecture": self.architecture,
            "family": self.family,
            "arch_fingerprint": self.arch_fingerprint,
            "source": self.source,
            "card": self.card,
            "yanked": self.yanked,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class TensorDiff:
    name: str
    status: str  # same | changed | shape-changed | dtype-changed | only-in-a | only-in-b
    relative_distance: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "relative_distance": self.relative_distance}


@dataclass(frozen=True)
class VersionDiff:
    a: str
    b: str
    tensors: tuple[TensorDiff, ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "summary": self.counts(), "tensors": [t.to_json() for t in self.tensors]}


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # missing | extra | changed

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "kind": self.kind}


@dataclass(frozen=True)
class VerifyReport:
    ref: str
    problems: tuple[Problem, ...]
    checked: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ref": self.ref,
            "checked": self.checked,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True)
class EventRecord:
    id: int
    at: datetime
    kind: str
    ref: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "kind": self.kind, "ref": self.ref, "detail": self.detail}


@dataclass(frozen=True)
class GcReport:
    """``bytes_freed`` counts blobs and leftovers; ``leftover_bytes`` the leftovers alone."""

    blobs_removed: int
    bytes_freed: int
    kept_recent: int
    dry_run: bool
    leftovers_removed: int = 0  # temporary files and objects, staging entries and multipart uploads together
    leftover_bytes: int = 0
    temporary_removed: int = 0
    staging_removed: int = 0
    multipart_aborted: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "blobs_removed": self.blobs_removed,
            "bytes_freed": self.bytes_freed,
            "kept_recent": self.kept_recent,
            "dry_run": self.dry_run,
            "leftovers_removed": self.leftovers_removed,
            "leftover_bytes": self.leftover_bytes,
            "temporary_removed": self.temporary_removed,
            "staging_removed": self.staging_removed,
            "multipart_aborted": self.multipart_aborted,
        }
