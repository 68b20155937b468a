"""stack_releases and service_revisions.image_digest: what each deploy ran, by digest

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 05:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.db import JSONType, UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("service_revisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_digest", sa.String(length=300), nullable=True))
    op.create_table(
        "stack_releases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stack_id", sa.String(length=26), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("compose", sa.Text(), nullable=False),
        sa.Column("variables", JSONType, nullable=False),
        sa.Column("plan", JSONType, nullable=False),
        sa.Column("digests", JSONType, nullable=False),
        sa.Column("rollback_of", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["stack_id"], ["stacks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stack_id", "release"),
    )
    with op.batch_alter_table("stack_releases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stack_releases_stack_id"), ["stack_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stack_releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stack_releases_stack_id"))
    op.drop_table("stack_releases")
    with op.batch_alter_table("service_revisions", schema=None) as batch_op:
        batch_op.drop_column("image_digest")
