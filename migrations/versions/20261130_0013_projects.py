"""projects: every workload belongs to one; tokens hold roles per project; hosts may be dedicated

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 07:30:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from app.core.db import JSONType, UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.security.roles.DEFAULT_PROJECT_ID, written out: a migration stays what it was when the
# code moves on.
DEFAULT_PROJECT_ID = "0" * 26

# The tables whose rows belong to a project; what exists is backfilled to the default one.
OWNED = ("services", "stacks", "containers", "secrets", "registries", "operations")


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("protected", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("quotas", JSONType, nullable=False),
        sa.Column("relaxations", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        projects,
        [
            {
                "id": DEFAULT_PROJECT_ID,
                "name": "default",
                "protected": False,
                "quotas": {},
                "relaxations": [],
                "created_at": now,
                "updated_at": now,
                "created_by": None,
                "version": 1,
            }
        ],
    )
    op.create_table(
        "token_project_roles",
        sa.Column("token_id", sa.String(length=26), nullable=False),
        sa.Column("project_id", sa.String(length=26), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_token_project_roles_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_token_project_roles_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_id", "project_id", name=op.f("pk_token_project_roles")),
    )
    with op.batch_alter_table("token_project_roles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_token_project_roles_project_id"), ["project_id"], unique=False
        )
    for table in OWNED:
        # The server default backfills every existing row and keeps an older process, which
        # inserts without a project, writing into the default project.
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "project_id",
                    sa.String(length=26),
                    server_default=DEFAULT_PROJECT_ID,
                    nullable=False,
                )
            )
            batch_op.create_index(batch_op.f(f"ix_{table}_project_id"), ["project_id"])
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_project_id_projects"),
                "projects",
                ["project_id"],
                ["id"],
                # An operation's history goes with its project (deleted only once empty).
                ondelete="CASCADE" if table == "operations" else None,
            )
    op.create_table(
        "host_projects",
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("project_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_host_projects_host_id_hosts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_host_projects_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_id", "project_id", name=op.f("pk_host_projects")),
    )
    with op.batch_alter_table("host_projects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_host_projects_project_id"), ["project_id"], unique=False)
    for table in ("events", "audit_entries"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("project_id", sa.String(length=26), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_project_id"), ["project_id"])


def downgrade() -> None:
    for table in ("audit_entries", "events"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_project_id"))
            batch_op.drop_column("project_id")
    with op.batch_alter_table("host_projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_projects_project_id"))
    op.drop_table("host_projects")
    for table in reversed(OWNED):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f(f"fk_{table}_project_id_projects"), "foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_{table}_project_id"))
            batch_op.drop_column("project_id")
    with op.batch_alter_table("token_project_roles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_project_roles_project_id"))
    op.drop_table("token_project_roles")
    op.drop_table("projects")
