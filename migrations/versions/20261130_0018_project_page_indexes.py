"""project page indexes: (project_id, id) on every project-owned table

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30 12:05:00.000000

A list narrowed to a caller's projects (every list a non-admin reads) filtered on the
one-column `project_id` index and sorted the project's rows by id for each page: on SQLite a
viewer's page of 50 containers cost 3-4 times an admin's with 10,000 rows. With (project_id, id)
the page is read in index order. Each replaces the one-column index it extends, which it also
serves (the foreign key's lookups included).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWNED = ("services", "stacks", "containers", "secrets", "registries", "operations")


def upgrade() -> None:
    for table in _OWNED:
        op.create_index(f"ix_{table}_project_id_id", table, ["project_id", "id"])
        op.drop_index(f"ix_{table}_project_id", table_name=table)


def downgrade() -> None:
    for table in _OWNED:
        op.create_index(f"ix_{table}_project_id", table, ["project_id"])
        op.drop_index(f"ix_{table}_project_id_id", table_name=table)
