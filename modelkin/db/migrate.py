"""Alembic, driven from code: the migration scripts ship inside the package, no alembic.ini needed.

Alembic is imported only to migrate. Every other command just compares the database's revision with
``SCHEMA_HEAD`` (a test checks that it names the newest migration script), which keeps start-up fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_HEAD = "0010_scale2"


def _config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def script_head() -> str | None:
    """The newest revision among the shipped migration scripts (what SCHEMA_HEAD must equal)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, or None for a database modelkin never initialised."""
    from sqlalchemy import inspect, text  # SCHEMA_HEAD is read without SQLAlchemy (modelkin.db.lite)

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the schema to ``revision``; returns (before, after)."""
    from alembic import command

    before = current_revision(engine)
    command.upgrade(_config(engine), revision)
    return before, current_revision(engine)
