"""idempotency_records.secret_withheld: a response that carried a secret is never stored

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("secret_withheld", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Responses stored before this rule may hold a token's secret: drop them (a retry after
    # the upgrade runs again rather than replaying).
    records = sa.table("idempotency_records", sa.column("path", sa.String))
    op.execute(records.delete().where(records.c.path.like("%/tokens")))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_records", schema=None) as batch_op:
        batch_op.drop_column("secret_withheld")
