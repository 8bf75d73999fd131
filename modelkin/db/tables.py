"""The core registry tables as SQLAlchemy Core ``Table`` objects: what the read path queries without the ORM.

``list``, ``show`` and ``log`` run on every invocation of the CLI; importing and configuring the ORM costs them
more than their queries do, so these tables are declared here in Core and ``modelkin.db.schema`` maps its ORM
classes onto them (``__table__``). Every other table is declared in ``schema`` alone, on the same ``metadata``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from modelkin.db.times import utcnow

metadata = MetaData()

# on PostgreSQL also ix_models_name_c, name in code-point order for ``list`` (migration 0010_scale2)
models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="RESTRICT"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("digest", String(71), nullable=False),  # "sha256:" + 64 hex, the manifest blob
    Column("parameters", BigInteger, nullable=False),
    Column("tensor_count", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("architecture", JSON, nullable=True),
    Column("family", String(100), nullable=True),
    Column("arch_fingerprint", String(64), nullable=False),
    Column("relation", String(20), nullable=True),
    Column("source", Text, nullable=True),
    Column("card", JSON, nullable=False, default=dict),
    Column("yanked", Boolean, nullable=False, default=False),
    Column("yank_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    UniqueConstraint("model_id", "number"),
    UniqueConstraint("model_id", "digest"),
    Index("ix_versions_digest", "digest"),
    Index("ix_versions_created", "created_at"),  # migration 0006: list --sort created at scale
    Index("ix_versions_parameters", "parameters"),
)

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    UniqueConstraint("version_id", "path"),
    Index("ix_files_sha256", "sha256"),
)

tags = Table(
    "tags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", Text, nullable=False),
    UniqueConstraint("version_id", "key"),
)  # its index on value is declared in modelkin.db.schema: a postgresql_ option imports that dialect's module

aliases = Table(
    "aliases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(200), nullable=False),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("model_id", "alias"),
    Index("ix_aliases_version", "version_id"),
)

# parent -> child; the parent is a registered version or an external id such as ``hf:org/name``
lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("child_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("parent_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), nullable=True),
    Column("parent_external", Text, nullable=True),
    Column("relation", String(20), nullable=True),
    Column("source", String(10), nullable=False),  # declared | detected
    Column("score", Float, nullable=True),
    Column("method", String(50), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Index("ix_edges_child", "child_id"),
    Index("ix_edges_parent", "parent_id"),
)

# the append-only log of everything that changed the registry
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("kind", String(40), nullable=False),
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="SET NULL"), nullable=True),
    Column("ref", Text, nullable=True),
    Column("detail", JSON, nullable=False, default=dict),
    Index("ix_events_version", "version_id"),
)
