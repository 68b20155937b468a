"""hosts.insecure: plain tcp:// only for hosts registered as insecure

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("insecure", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # Hosts registered over plain tcp:// before this rule keep working after an upgrade: they
    # were insecure all along, and now say so (docs/hosts.md, "Upgrading"). TLS hosts stay
    # verified; one without a CA is now checked against the system's trust store.
    hosts = sa.table(
        "hosts",
        sa.column("url", sa.String),
        sa.column("tls_encrypted", sa.Text),
        sa.column("insecure", sa.Boolean),
    )
    op.execute(
        hosts.update()
        .where(hosts.c.url.like("tcp://%"), hosts.c.tls_encrypted.is_(None))
        .values(insecure=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("insecure")
