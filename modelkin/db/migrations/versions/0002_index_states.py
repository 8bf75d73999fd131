"""registration-time indexer states

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_states",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("indexer", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id", "indexer"),
    )
    op.create_index("ix_index_states_indexer_state", "index_states", ["indexer", "state"])


def downgrade() -> None:
    op.drop_index("ix_index_states_indexer_state", table_name="index_states")
    op.drop_table("index_states")
