"""service rollout outcome

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 01:00:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # How the last rollout ended: the converge operation asks it instead of parsing the
    # status detail. Rows written before it say so only in that detail: read it this once.
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outcome', sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE services SET outcome = CASE"
        " WHEN status_detail LIKE 'rolled back to revision %' THEN 'rolled_back'"
        " ELSE 'updated' END"
        " WHERE status = 'running' AND (status_detail LIKE 'rolled back to revision %'"
        " OR status_detail LIKE 'updated to revision %')"
    )


def downgrade() -> None:
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_column('outcome')
