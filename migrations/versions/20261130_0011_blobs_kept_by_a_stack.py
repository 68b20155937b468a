"""blobs.stack_id: a stack's project files, kept with the stack instead of expiring

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stack_id", sa.String(length=26), nullable=True))
        batch_op.create_index(batch_op.f("ix_blobs_stack_id"), ["stack_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_stack_id"))
        batch_op.drop_column("stack_id")
