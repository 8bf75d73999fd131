"""The registry's tables. Changing them means adding an Alembic migration under ``migrations/versions``.

Versions are immutable once written: only ``yanked`` and the tag/alias/edge tables around them change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back without a zone, PostgreSQL with one: both are stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list[Version]] = relationship(back_populates="model", order_by="Version.number")


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number"),
        UniqueConstraint("model_id", "digest"),
        Index("ix_versions_digest", "digest"),
        Index("ix_versions_created", "created_at"),  # migration 0006: list --sort created at scale
        Index("ix_versions_parameters", "parameters"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    number: Mapped[int]
    digest: Mapped[str] = mapped_column(String(71))  # "sha256:" + 64 hex, the manifest blob
    parameters: Mapped[int] = mapped_column(BigInteger)
    tensor_count: Mapped[int]
    bytes: Mapped[int] = mapped_column(BigInteger)
    architecture: Mapped[dict[str, Any] | None]
    family: Mapped[str | None] = mapped_column(String(100))
    arch_fingerprint: Mapped[str] = mapped_column(String(64))
    relation: Mapped[str | None] = mapped_column(String(20))
    source: Mapped[str | None] = mapped_column(Text)
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yank_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")
    files: Mapped[list[File]] = relationship(order_by="File.path", cascade="all, delete-orphan")
    tags: Mapped[list[Tag]] = relationship(order_by="Tag.key", cascade="all, delete-orphan")


class File(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("version_id", "path"), Index("ix_files_sha256", "sha256"))

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


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


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("version_id", "key"), Index("ix_tags_value", "value", postgresql_using="hash"))

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias"), Index("ix_aliases_version", "version_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(200))
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))


class LineageEdge(Base):
    """parent -> child; the parent is a registered version or an external id such as ``hf:org/name``."""

    __tablename__ = "lineage_edges"
    __table_args__ = (Index("ix_edges_child", "child_id"), Index("ix_edges_parent", "parent_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    parent_external: Mapped[str | None] = mapped_column(Text)
    relation: Mapped[str | None] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(10))  # declared | detected
    score: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Event(Base):
    """Append-only log of everything that changed the registry."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_version", "version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id", ondelete="SET NULL"))
    ref: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


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
