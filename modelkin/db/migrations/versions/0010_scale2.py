"""PostgreSQL: an index on model names in code-point order, so the default listing stops after its limit

``list`` sorts by name as Python does (``COLLATE "C"``, whatever the database's collation); the unique index on
``models.name`` follows the database's collation and cannot serve that order, so ``list --limit 20`` sorted every
version (about 0.1 s at 100,000). SQLite compares names by code point already: nothing to add there.

Revision ID: 0010_scale2
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_scale2"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_models_name_c", "models", [sa.text('name COLLATE "C"')])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_models_name_c", table_name="models")
