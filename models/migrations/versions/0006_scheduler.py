"""scheduler: job_run claims (one run per job and time across processes), APScheduler's job store

Revision ID: 0006_scheduler
Revises: 0005_alerts
Create Date: 2026-11-26 09:00:00

`apscheduler_jobs` is APScheduler 3's SQLAlchemyJobStore table, created here with the exact
shape APScheduler gives it (id Unicode(191) primary key, next_run_time Float(25) indexed,
job_state LargeBinary). APScheduler would create it itself on first start (checkfirst), but
then the schema would not be whole after `recon db upgrade`: `recon jobs` could not read a
database no scheduler has started on yet, a database account without DDL rights would fail
at the first start instead of at the upgrade, and a downgrade would leave it behind. When
the table exists APScheduler's own CREATE is skipped, so the two never disagree.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006_scheduler'
down_revision = '0005_alerts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=191), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'scheduled_for', name='uq_job_run_claim')
    )
    op.create_index('ix_job_run_started', 'job_run', ['started_at'], unique=False)
    op.create_table('apscheduler_jobs',
    sa.Column('id', sa.Unicode(191), nullable=False),
    sa.Column('next_run_time', sa.Float(25), nullable=True),
    sa.Column('job_state', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_apscheduler_jobs_next_run_time', 'apscheduler_jobs', ['next_run_time'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_apscheduler_jobs_next_run_time', table_name='apscheduler_jobs')
    op.drop_table('apscheduler_jobs')
    op.drop_index('ix_job_run_started', table_name='job_run')
    op.drop_table('job_run')
