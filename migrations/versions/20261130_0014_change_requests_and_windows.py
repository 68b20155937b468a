"""change_requests, projects' change windows, and audit entries' author and break glass

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.db import JSONType, UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_requests",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("project_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("target_type", sa.String(length=20), nullable=False),
        sa.Column("target_id", sa.String(length=26), nullable=True),
        sa.Column("target_name", sa.String(length=100), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("value_encrypted", sa.Text(), nullable=True),
        sa.Column("if_match", sa.String(length=200), nullable=True),
        sa.Column("plan", JSONType, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("author_token_id", sa.String(length=26), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("approver_token_id", sa.String(length=26), nullable=True),
        sa.Column("approver", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("break_glass", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("operations", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("not_before", UTCDateTime(timezone=True), nullable=True),
        sa.Column("applied_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("change_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_requests_project_id"), ["project_id"])
        batch_op.create_index(batch_op.f("ix_change_requests_state"), ["state"])
        batch_op.create_index(batch_op.f("ix_change_requests_expires_at"), ["expires_at"])
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("windows", JSONType, nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("outside_window", sa.String(length=8), nullable=False, server_default="wait")
        )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("author", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("break_glass", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_column("break_glass")
        batch_op.drop_column("author")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("outside_window")
        batch_op.drop_column("windows")
    with op.batch_alter_table("change_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_requests_expires_at"))
        batch_op.drop_index(batch_op.f("ix_change_requests_state"))
        batch_op.drop_index(batch_op.f("ix_change_requests_project_id"))
    op.drop_table("change_requests")
