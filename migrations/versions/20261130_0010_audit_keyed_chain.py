"""audit_entries: a keyed chain (mac) and the fields PCI DSS 10.2.2 lists

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Entries already written keep their hashes untouched (rewriting them would destroy the
    # evidence): they stay the chain's plain-hash part, before the audit key's `keyed_from`.
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.String(length=26), nullable=True))
        batch_op.add_column(sa.Column("success", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("resource_type", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("resource_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("version_before", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("version_after", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    # Success is what the stored status says; it is outside those entries' hashes.
    entries = sa.table(
        "audit_entries", sa.column("outcome", sa.Integer), sa.column("success", sa.Boolean)
    )
    op.execute(entries.update().values(success=entries.c.outcome < 400))


def downgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        for column in (
            "mac",
            "version_after",
            "version_before",
            "resource_id",
            "resource_type",
            "success",
            "token_id",
        ):
            batch_op.drop_column(column)
