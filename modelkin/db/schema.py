"""The registry's tables. Changing them means adding an Alembic migration under ``migrations/versions``.

Versions are immutable once written: only ``yanked`` and the tag/alias/edge tables around them change. The
core tables (models, versions, files, tags, aliases, lineage edges, events) are Core tables in
``modelkin.db.tables``, which the read path queries without importing the ORM; their classes here map onto them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from modelkin.db import tables
from modelkin.db.times import as_utc, utcnow

__all__ = ["as_utc", "utcnow"]  # re-exported: callers read timestamps through schema


class Base(DeclarativeBase):
    metadata = tables.metadata
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Model(Base):
    __table__ = tables.models

    id: Mapped[int]
    name: Mapped[str]
    created_at: Mapped[datetime]

    versions: Mapped[list[Version]] = relationship(back_populates="model", order_by="Version.number")


class Version(Base):
    __table__ = tables.versions

    id: Mapped[int]
    model_id: Mapped[int]
    number: Mapped[int]
    digest: Mapped[str]
    parameters: Mapped[int]
    tensor_count: Mapped[int]
    bytes: Mapped[int]
    architecture: Mapped[dict[str, Any] | None]
    family: Mapped[str | None]
    arch_fingerprint: Mapped[str]
    relation: Mapped[str | None]
    source: Mapped[str | None]
    card: Mapped[dict[str, Any]]
    yanked: Mapped[bool]
    yank_reason: Mapped[str | None]
    created_at: Mapped[datetime]

    model: Mapped[Model] = relationship(back_populates="versions")
    files: Mapped[list[File]] = relationship(order_by="File.path", cascade="all, delete-orphan")
    tags: Mapped[list[Tag]] = relationship(order_by="Tag.key", cascade="all, delete-orphan")


class File(Base):
    __table__ = tables.files

    id: Mapped[int]
    version_id: Mapped[int]
    path: Mapped[str]
    size: Mapped[int]
    sha256: Mapped[str]


class TensorRow(Base):
    __tablename__ = "tensors"
    __table_args__ = (UniqueConstraint("version_id", "name"), Index("ix_tensors_sha256", "sha256"))

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Text)
    dtype: Mapped[str] = mapped_column(String(16))
    shape: Mapped[list[Any]]
    sha256: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(Text)


# a PostgreSQL option imports the PostgreSQL dialect to check it, which SQLite reads need not pay for
Index("ix_tags_value", tables.tags.c.value, postgresql_using="hash")


class Tag(Base):
    __table__ = tables.tags

    id: Mapped[int]
    version_id: Mapped[int]
    key: Mapped[str]
    value: Mapped[str]


class Alias(Base):
    __table__ = tables.aliases

    id: Mapped[int]
    model_id: Mapped[int]
    alias: Mapped[str]
    version_id: Mapped[int]


class LineageEdge(Base):
    """parent -> child; the parent is a registered version or an external id such as ``hf:org/name``."""

    __table__ = tables.lineage_edges

    id: Mapped[int]
    child_id: Mapped[int]
    parent_id: Mapped[int | None]
    parent_external: Mapped[str | None]
    relation: Mapped[str | None]
    source: Mapped[str]  # declared | detected
    score: Mapped[float | None]
    method: Mapped[str | None]
    created_at: Mapped[datetime]


class Event(Base):
    """Append-only log of everything that changed the registry."""

    __table__ = tables.events

    id: Mapped[int]
    at: Mapped[datetime]
    kind: Mapped[str]
    version_id: Mapped[int | None]
    ref: Mapped[str | None]
    detail: Mapped[dict[str, Any]]


class IndexState(Base):
    """Whether a registration-time indexer (retrieval capture, lineage sketch) has processed a version.

    A row is written ``pending`` in the transaction that creates the version, so a crash before the indexer
    finishes leaves a mark that ``index status`` reports and a rebuild completes, never a half-indexed model.
    """

    __tablename__ = "index_states"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    indexer: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | done | skipped | failed
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProbePool(Base):
    """A versioned pool of unlabelled probe inputs for one input space (the inputs are a blob)."""

    __tablename__ = "retrieval_probe_pools"
    __table_args__ = (UniqueConstraint("space", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    space: Mapped[str] = mapped_column(String(100))
    number: Mapped[int]
    digest: Mapped[str] = mapped_column(String(64))
    samples: Mapped[int]
    features: Mapped[int]
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KnowledgeRow(Base):
    """A version's captured knowledge on one probe pool (the tensor is a blob); at most one row per version."""

    __tablename__ = "retrieval_knowledge"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("retrieval_probe_pools.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))
    forward_calls: Mapped[int]
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RetrievalEncoder(Base):
    """A trained alignment encoder (a blob) for one probe pool; the newest one serves."""

    __tablename__ = "retrieval_encoders"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("retrieval_probe_pools.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LoggedScore(Base):
    """A transfer score a user measured for a version on a task whose samples are a blob."""

    __tablename__ = "retrieval_scores"
    __table_args__ = (Index("ix_retrieval_scores_data", "data_digest"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    data_digest: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LineageSketch(Base):
    """A version's lineage sketch (``sketch``: the precise one, an .npz) and its candidate-index part.

    ``shapes`` and ``vectors`` (float32, one COARSE-long row per tensor) are what every parent query reads for
    every registered model, so they are small; ``sketch`` is read only for the few best candidates. Sketches are
    derived data (rebuildable from the weights), so they live here rather than as blobs that ``gc`` would see
    as unreferenced.
    """

    __tablename__ = "lineage_sketches"

    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True)
    sketch: Mapped[bytes] = mapped_column(LargeBinary)
    shapes: Mapped[list[Any]]
    vectors: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WatermarkRecord(Base):
    """One watermark embedding: where it is in a version, and the commitment to its key (never the key)."""

    __tablename__ = "watermarks"
    __table_args__ = (Index("ix_watermarks_commitment", "commitment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    layer: Mapped[str] = mapped_column(Text)
    rounds: Mapped[int]
    pool: Mapped[int]
    bits: Mapped[int]
    rows: Mapped[int]
    commitment: Mapped[str] = mapped_column(String(71))
    method: Mapped[str] = mapped_column(String(20))  # posthoc | healed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
