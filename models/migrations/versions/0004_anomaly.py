"""anomaly model and scores: trained Isolation Forests, per-record scores, a break's score

Revision ID: 0004_anomaly
Revises: 0003_chat
Create Date: 2026-11-25 08:21:43.197315
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004_anomaly'
down_revision = '0003_chat'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('anomaly_model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('window_first', sa.Date(), nullable=False),
    sa.Column('window_last', sa.Date(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('features', sa.Text(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('urgent_threshold', sa.Float(), nullable=False),
    sa.Column('target_alert_rate', sa.Float(), nullable=False),
    sa.Column('trained_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope', 'version', name='uq_anomaly_model_version')
    )
    op.create_table('anomaly_score',
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['anomaly_model.id'], ),
    sa.ForeignKeyConstraint(['record_id'], ['record.id'], ),
    sa.PrimaryKeyConstraint('record_id')
    )
    with op.batch_alter_table('break', schema=None) as batch_op:
        batch_op.add_column(sa.Column('anomaly_score', sa.Float(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('break', schema=None) as batch_op:
        batch_op.drop_column('anomaly_score')

    op.drop_table('anomaly_score')
    op.drop_table('anomaly_model')
