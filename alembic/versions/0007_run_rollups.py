"""run rollups: job_run_daily, runs per UTC day, task and state, kept after pruning

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 09:12:40.118305

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    # A new, empty table; the first prune (or `flask jobs rollup`) fills it from job_runs,
    # older days included.
    op.create_table(
        'job_run_daily',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('task_name', sa.String(length=255), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('runs', sa.Integer(), nullable=False),
        sa.Column('timed', sa.Integer(), server_default='0', nullable=False),
        sa.Column('duration_sum_ms', sa.Float(), server_default='0', nullable=False),
        sa.Column('p50_ms', sa.Float(), nullable=True),
        sa.Column('p95_ms', sa.Float(), nullable=True),
        sa.Column('sealed', sa.Boolean(), server_default='false', nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        # (day, ...) first: the charts read day ranges, the rollup one day.
        sa.PrimaryKeyConstraint('day', 'task_name', 'state', name=op.f('pk_job_run_daily')),
    )


def downgrade():
    op.drop_table('job_run_daily')
