"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 07:42:57.872084
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('subject_type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('merchant',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('side', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant_id', 'source', 'side', name='uq_ledger')
    )
    op.create_table('recon_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('business_day', sa.Date(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('stats', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchant.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('statement_file',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('side', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('format', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('business_day', sa.Date(), nullable=True),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('new_rows', sa.Integer(), nullable=False),
    sa.Column('control_totals', sa.Text(), nullable=False),
    sa.Column('duplicates', sa.Text(), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant_id', 'sha256', name='uq_statement_file_sha')
    )
    op.create_table('break',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('business_day', sa.Date(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('severity', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('txn_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('internal_amount', sa.BigInteger(), nullable=True),
    sa.Column('channel_amount', sa.BigInteger(), nullable=True),
    sa.Column('difference', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('rule', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tolerance', sa.BigInteger(), nullable=False),
    sa.Column('explanation', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.Column('first_run_id', sa.Integer(), nullable=False),
    sa.Column('last_run_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['first_run_id'], ['recon_run.id'], ),
    sa.ForeignKeyConstraint(['last_run_id'], ['recon_run.id'], ),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('merchant_id', 'key', name='uq_break_key')
    )
    with op.batch_alter_table('break', schema=None) as batch_op:
        batch_op.create_index('ix_break_day', ['merchant_id', 'business_day'], unique=False)

    op.create_table('record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ledger_id', sa.Integer(), nullable=False),
    sa.Column('file_id', sa.Integer(), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('ref', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('txn_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('order_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('fee', sa.BigInteger(), nullable=False),
    sa.Column('discount', sa.BigInteger(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('business_day', sa.Date(), nullable=False),
    sa.Column('payer', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('memo', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['statement_file.id'], ),
    sa.ForeignKeyConstraint(['ledger_id'], ['ledger.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ledger_id', 'kind', 'ref', name='uq_record_identity')
    )
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.create_index('ix_record_ledger_day', ['ledger_id', 'business_day'], unique=False)

    op.create_table('adjustment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('break_id', sa.Integer(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('debit_account', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('credit_account', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['break_id'], ['break.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('break_id', name='uq_adjustment_break')
    )


def downgrade() -> None:
    op.drop_table('adjustment')
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.drop_index('ix_record_ledger_day')

    op.drop_table('record')
    with op.batch_alter_table('break', schema=None) as batch_op:
        batch_op.drop_index('ix_break_day')

    op.drop_table('break')
    op.drop_table('statement_file')
    op.drop_table('recon_run')
    op.drop_table('ledger')
    op.drop_table('merchant')
    op.drop_table('audit_event')
