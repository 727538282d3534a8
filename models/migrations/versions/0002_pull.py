"""pull: rejected statement files (a rejected statement counts as not arrived)

Revision ID: 0002_pull
Revises: 0001
Create Date: 2026-11-25 08:24:35.347815
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002_pull'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rejected_file',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('business_day', sa.Date(), nullable=True),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('rejected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant_id', 'sha256', name='uq_rejected_file_sha')
    )
    op.create_index('ix_rejected_file_day', 'rejected_file', ['merchant_id', 'source', 'business_day'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_rejected_file_day', table_name='rejected_file')
    op.drop_table('rejected_file')
