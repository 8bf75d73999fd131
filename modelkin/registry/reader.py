"""The read path: open a registry's database and answer ``list``, ``show`` and ``log`` on SQLAlchemy Core alone.

These commands run far more often than any other, and for them start-up is most of the cost: this module and
what it imports (``modelkin.db.tables``, ``listing``, ``rows``) never import the ORM, Alembic, torch or the blob
store. ``Registry`` reads through a ``Reader`` too, so there is one resolver and one query builder.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select

from modelkin.config import Settings
from modelkin.db import migrate
from modelkin.db.engine import database_error, make_engine, read_connection, redact_url
from modelkin.db.tables import aliases, lineage_edges, models, versions
from modelkin.errors import AmbiguousRef, ModelNotFound, RegistryNotFound, SchemaOutdated
from modelkin.refs import ModelRef
from modelkin.registry import listing
from modelkin.registry.records import EventRecord, ModelVersion
from modelkin.registry.rows import load_rows, to_records

if TYPE_CHECKING:
    from modelkin.registry.rows import Executor


def open_database(
    home: str | os.PathLike[str] | None = None, *, database_url: str | None = None, store: str | None = None
) -> tuple[Settings, Engine]:
    """Settings and an engine for an existing registry; refuse one never initialised or whose schema is behind.

    The schema check reads the one-row revision table and compares it with ``SCHEMA_HEAD``: Alembic is not
    imported unless the registry is migrated.
    """
    from sqlalchemy.exc import DBAPIError

    settings = Settings.resolve(home, database_url, store)
    if settings.database_url.startswith("sqlite:///") and not Path(settings.database_url[10:]).exists():
        raise RegistryNotFound(f"no registry at {settings.home}.", hint="run `modelkin init` to create one")
    engine = make_engine(settings.database_url)
    try:
        current = migrate.current_revision(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise database_error(exc) or exc from None
    if current is None:
        engine.dispose()
        where = redact_url(settings.database_url)
        raise RegistryNotFound(f"no registry in {where}.", hint="run `modelkin init` to create one")
    if current != migrate.SCHEMA_HEAD:
        engine.dispose()
        raise SchemaOutdated(
            f"the registry schema is at revision {current}, this modelkin expects {migrate.SCHEMA_HEAD}.",
            hint="run `modelkin db upgrade`",
        )
    return settings, engine


class Reader:
    """Read-only questions about versions and events, each in one read transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """The version a REF names (``name`` is the latest version that is not yanked)."""
        with read_connection(self.engine) as conn:
            row = load_rows(conn, [resolve_id(conn, ref)])
            return to_records(conn, list(row.values()))[0]

    def iter_versions(self, filter: str | None = None, **options: Any) -> Iterator[ModelVersion]:
        """Versions matching ``filter``, streamed; ``options`` (sort, limit, include_yanked, latest) as in listing."""
        return listing.iter_versions(self.engine, filter, **options)

    def log(self, ref: str | None = None, limit: int | None = None) -> list[EventRecord]:
        """The append-only event log, oldest first; for one version if ``ref`` is given; the last ``limit``."""
        version_id = None
        if ref is not None:
            with read_connection(self.engine) as conn:
                version_id = resolve_id(conn, ref)
        return listing.iter_events(self.engine, version_id, limit)

    def detected_parents(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        """The stored detected parents of a version (what ``lineage tree``/registration found), for ``show``."""
        parent = versions.alias("parent")
        query = (
            select(models.c.name, parent.c.number, lineage_edges.c.relation, lineage_edges.c.score,
                   lineage_edges.c.method)
            .join(parent, lineage_edges.c.parent_id == parent.c.id)
            .join(models, parent.c.model_id == models.c.id)
            .order_by(lineage_edges.c.id)
        )  # fmt: skip
        with read_connection(self.engine) as conn:
            vid = resolve_id(conn, ref)
            rows = conn.execute(query.where(lineage_edges.c.child_id == vid, lineage_edges.c.source == DETECTED)).all()
        return [{"ref": f"{name}:{n}", "relation": rel, "confidence": None if s is None else round(s, 4),
                 "method": m} for name, n, rel, s, m in rows]  # fmt: skip


DETECTED = "detected"  # lineage_edges.source of an edge that lineage detection stored


def resolve_id(conn: Executor, ref: str | ModelRef) -> int:
    """The id of the version a REF names, or raise ModelNotFound / AmbiguousRef with a useful hint."""
    r = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
    if r.digest_prefix is not None:
        rows = conn.execute(
            select(versions.c.id, versions.c.digest, models.c.name, versions.c.number)
            .join(models, models.c.id == versions.c.model_id)
            .where(versions.c.digest.like(f"sha256:{r.digest_prefix}%"))
            .order_by(versions.c.id)
        ).all()
        if not rows:
            raise ModelNotFound(f"no version has a manifest digest starting with {r.digest_prefix}.")
        if len({row.digest for row in rows}) > 1:
            refs = ", ".join(f"{row.name}:{row.number}" for row in rows[:5])
            raise AmbiguousRef(f"sha256:{r.digest_prefix} matches several versions ({refs}).", hint="give more digits")
        return int(rows[0].id)  # the same manifest under several names: the first registered
    model_id = conn.execute(select(models.c.id).where(models.c.name == r.name)).scalar()
    if model_id is None:
        raise _unknown_model(conn, str(r.name))
    of_model = versions.c.model_id == model_id
    if r.version is not None:
        vid = conn.execute(select(versions.c.id).where(of_model, versions.c.number == r.version)).scalar()
        if vid is None:
            latest = conn.execute(select(func.max(versions.c.number)).where(of_model)).scalar()
            raise ModelNotFound(f"{r} does not exist.", hint=f"{r.name} has versions 1 to {latest}")
        return int(vid)
    if r.alias is not None:
        of_alias = aliases.c.model_id == model_id
        vid = conn.execute(select(aliases.c.version_id).where(of_alias, aliases.c.alias == r.alias)).scalar()
        if vid is None:
            known = ", ".join(conn.execute(select(aliases.c.alias).where(of_alias)).scalars()) or "none"
            raise ModelNotFound(f"{r} does not exist.", hint=f"aliases of {r.name}: {known}")
        return int(vid)
    vid = conn.execute(
        select(versions.c.id).where(of_model, versions.c.yanked.is_(False)).order_by(versions.c.number.desc()).limit(1)
    ).scalar()
    if vid is None:
        raise ModelNotFound(f"every version of {r.name} is yanked.", hint=f"name one explicitly, e.g. {r.name}:1")
    return int(vid)


def _unknown_model(conn: Executor, name: str) -> ModelNotFound:
    names = list(conn.execute(select(models.c.name)).scalars())
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "`modelkin list` shows what is registered"
    return ModelNotFound(f"no model named {name!r} is registered.", hint=hint)
