"""audit retention: checkpoints handed out, and keyed records of pruned ranges

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import app.core.db
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_prunes",
        sa.Column("through_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("at", app.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("through_seq", name=op.f("pk_audit_prunes")),
    )


def downgrade() -> None:
    op.drop_table("audit_prunes")
    op.drop_table("audit_checkpoints")
