"""runs admin: job_runs.rerun_of_id, and the indexes of the runs list and the dashboard

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 05:30:41.348708

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

#: (name, columns, options) of the new indexes of job_runs.
INDEXES = [
    ('ix_job_runs_trigger_id', ['trigger', 'id'], {}),
    ('ix_job_runs_task_name_state_id', ['task_name', 'state', 'id'], {}),
    ('ix_job_runs_created_at', ['created_at'], {}),
    ('ix_job_runs_task_id_prefix', ['task_id'],
     {'postgresql_ops': {'task_id': 'varchar_pattern_ops'}}),
    ('ix_job_runs_rerun_of_id', ['rerun_of_id'],
     {'postgresql_where': sa.text('rerun_of_id IS NOT NULL')}),
]


def upgrade():
    op.add_column('job_runs', sa.Column('rerun_of_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_job_runs_rerun_of_id_job_runs'), 'job_runs', 'job_runs',
                          ['rerun_of_id'], ['id'], ondelete='SET NULL')
    # CONCURRENTLY, outside the migration's transaction: job_runs may hold millions of rows,
    # and a plain CREATE INDEX would block every worker's writes until it is built.
    with op.get_context().autocommit_block():
        for name, columns, options in INDEXES:
            op.create_index(name, 'job_runs', columns, unique=False,
                            postgresql_concurrently=True, **options)


def downgrade():
    with op.get_context().autocommit_block():
        for name, _columns, _options in reversed(INDEXES):
            op.drop_index(name, table_name='job_runs', postgresql_concurrently=True)
    op.drop_constraint(op.f('fk_job_runs_rerun_of_id_job_runs'), 'job_runs', type_='foreignkey')
    op.drop_column('job_runs', 'rerun_of_id')
