"""containers and port claims

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 05:58:58.450596
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
import app.core.db
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('containers',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('host_id', sa.String(length=26), nullable=False),
    sa.Column('service_id', sa.String(length=26), nullable=True),
    sa.Column('spec', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('image', sa.String(length=512), nullable=False),
    sa.Column('managed', sa.Boolean(), nullable=False),
    sa.Column('desired_state', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('health', sa.String(length=16), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('docker_id', sa.String(length=80), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', app.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('observed_at', app.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_containers_host_id_hosts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_containers')),
    sa.UniqueConstraint('host_id', 'name', name=op.f('uq_containers_host_id_name'))
    )
    with op.batch_alter_table('containers', schema=None) as batch_op:
        batch_op.create_index('ix_containers_host_docker_id', ['host_id', 'docker_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_containers_host_id'), ['host_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_containers_service_id'), ['service_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_containers_state'), ['state'], unique=False)

    op.create_table('port_claims',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('container_id', sa.String(length=26), nullable=False),
    sa.Column('host_id', sa.String(length=26), nullable=False),
    sa.Column('host_ip', sa.String(length=45), nullable=False),
    sa.Column('host_port', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=8), nullable=False),
    sa.ForeignKeyConstraint(['container_id'], ['containers.id'], name=op.f('fk_port_claims_container_id_containers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_port_claims')),
    sa.UniqueConstraint('host_id', 'host_ip', 'host_port', 'protocol', name=op.f('uq_port_claims_host_id_host_ip_host_port_protocol'))
    )
    with op.batch_alter_table('port_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_port_claims_container_id'), ['container_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('port_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_port_claims_container_id'))

    op.drop_table('port_claims')
    with op.batch_alter_table('containers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_containers_state'))
        batch_op.drop_index(batch_op.f('ix_containers_service_id'))
        batch_op.drop_index(batch_op.f('ix_containers_host_id'))
        batch_op.drop_index('ix_containers_host_docker_id')

    op.drop_table('containers')
