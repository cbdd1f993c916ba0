"""exact call: job_runs.call_json, the call as Celery's JSON encodes it, never capped

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    # Nullable and without a default: adding it rewrites nothing. Rows written before it are
    # published from their display copy when that copy was not capped.
    op.add_column('job_runs', sa.Column('call_json', sa.Text(), nullable=True))


def downgrade():
    op.drop_column('job_runs', 'call_json')
