"""worker processes: a heartbeat row per worker process; job_runs.worker_process_id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'worker_processes',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('node', sa.String(length=255), nullable=True),
        sa.Column('pool', sa.String(length=32), nullable=True),
        sa.Column('parent_id', sa.BigInteger(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('holds', sa.ARRAY(sa.Text()), nullable=True),
        sa.ForeignKeyConstraint(['parent_id'], ['worker_processes.id'],
                                name=op.f('fk_worker_processes_parent_id_worker_processes'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_processes')),
    )
    op.create_index('ix_worker_processes_last_seen_at', 'worker_processes', ['last_seen_at'])
    op.create_index('ix_worker_processes_host_pid', 'worker_processes', ['host', 'pid'])
    # Nullable, no default: nothing is rewritten. No foreign key: process rows are pruned
    # without touching job_runs; the sweep matches a run without its row by host and pid.
    op.add_column('job_runs', sa.Column('worker_process_id', sa.BigInteger(), nullable=True))


def downgrade():
    op.drop_column('job_runs', 'worker_process_id')
    op.drop_index('ix_worker_processes_host_pid', table_name='worker_processes')
    op.drop_index('ix_worker_processes_last_seen_at', table_name='worker_processes')
    op.drop_table('worker_processes')
