"""indexes for listing at scale: sort by created or parameters, filter by tag, log and aliases by version

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_versions_created", "versions", ["created_at"]),
    ("ix_versions_parameters", "versions", ["parameters"]),
    ("ix_tags_value", "tags", ["value"]),
    ("ix_events_version", "events", ["version_id"]),
    ("ix_aliases_version", "aliases", ["version_id"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        # a PostgreSQL btree refuses entries over ~2.7 kB, and a tag value may be longer: hash it there
        op.create_index(name, table, columns, postgresql_using="hash" if name == "ix_tags_value" else None)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
