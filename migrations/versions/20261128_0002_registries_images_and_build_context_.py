"""registries, images and build-context blobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 05:50:33.187229
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import app.core.db
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blobs'))
    )
    op.create_table('registries',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('url', sa.String(length=500), nullable=False),
    sa.Column('host', sa.String(length=300), nullable=False),
    sa.Column('username', sa.String(length=300), nullable=True),
    sa.Column('password_encrypted', sa.Text(), nullable=True),
    sa.Column('created_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_registries')),
    sa.UniqueConstraint('name', name=op.f('uq_registries_name'))
    )
    with op.batch_alter_table('registries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_registries_host'), ['host'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('host_id', sa.String(length=26), nullable=False),
    sa.Column('docker_id', sa.String(length=80), nullable=False),
    sa.Column('repo_tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('repo_digests', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('references', sa.Text(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('layers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('containers', sa.Integer(), nullable=False),
    sa.Column('image_created_at', app.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('observed_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_images_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('host_id', 'docker_id', name=op.f('uq_images_host_id_docker_id'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_host_id'), ['host_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_host_id'))

    op.drop_table('images')
    with op.batch_alter_table('registries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_registries_host'))

    op.drop_table('registries')
    op.drop_table('blobs')
