"""image_tags and registry_check_counts: what the registries last said the tags in use name

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.core.db import UTCDateTime

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_tags",
        sa.Column("reference", sa.String(length=600), nullable=False),
        sa.Column("registry_host", sa.String(length=300), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=True),
        sa.Column("etag", sa.String(length=300), nullable=True),
        sa.Column("detected_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("checked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("reference"),
    )
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_tags_registry_host"), ["registry_host"], unique=False)
    op.create_table(
        "registry_check_counts",
        sa.Column("registry_host", sa.String(length=300), nullable=False),
        sa.Column("checks", sa.BigInteger(), nullable=False),
        sa.Column("not_modified", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("rate_limited", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registry_host"),
    )


def downgrade() -> None:
    op.drop_table("registry_check_counts")
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_tags_registry_host"))
    op.drop_table("image_tags")
