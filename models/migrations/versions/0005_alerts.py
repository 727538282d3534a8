"""alert pipeline: outbox, one live card per break and route, silences, escalations,
disabled routes, digests for bulk approval; chat_message folded into alert_card

Revision ID: 0005_alerts
Revises: 0004_anomaly
Create Date: 2026-12-03 16:40:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005_alerts'
down_revision = '0004_anomaly'
branch_labels = None
depends_on = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('alert_card',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('card_key', S(length=160), nullable=False),
    sa.Column('channel', S(length=16), nullable=False),
    sa.Column('target', S(length=256), nullable=False),
    sa.Column('merchant_id', S(length=64), nullable=False),
    sa.Column('break_id', sa.Integer(), nullable=True),
    sa.Column('lang', S(length=8), nullable=False),
    sa.Column('message_id', S(length=256), nullable=True),
    sa.Column('shown_hash', S(length=64), nullable=False),
    sa.Column('state', S(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['break_id'], ['break.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('card_key', 'channel', 'target', name='uq_alert_card')
    )
    op.create_index('ix_alert_card_break', 'alert_card', ['break_id'])
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idem_key', S(length=255), nullable=False),
    sa.Column('op', S(length=8), nullable=False),
    sa.Column('channel', S(length=16), nullable=False),
    sa.Column('target', S(length=256), nullable=False),
    sa.Column('card_key', S(length=160), nullable=False),
    sa.Column('break_id', sa.Integer(), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('state', S(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('in_doubt', sa.Boolean(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('claimed_by', S(length=64), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('message_id', S(length=256), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['break_id'], ['break.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idem_key', name='uq_outbox_idem_key')
    )
    op.create_index('ix_outbox_due', 'outbox', ['state', 'next_attempt_at'])
    op.create_table('alert_route',
    sa.Column('channel', S(length=16), nullable=False),
    sa.Column('target', S(length=256), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('channel', 'target')
    )
    op.create_table('alert_digest',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('card_key', S(length=160), nullable=False),
    sa.Column('merchant_id', S(length=64), nullable=False),
    sa.Column('members', sa.Text(), nullable=False),
    sa.Column('members_hash', S(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('card_key', 'members_hash', name='uq_alert_digest')
    )
    op.create_table('silence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', S(length=64), nullable=False),
    sa.Column('source', S(length=64), nullable=True),
    sa.Column('type', S(length=32), nullable=True),
    sa.Column('business_day', sa.Date(), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('author', S(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_by', S(length=128), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_silence_merchant', 'silence', ['merchant_id', 'ends_at'])
    op.create_table('escalation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('break_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', S(length=16), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', S(length=128), nullable=True),
    sa.ForeignKeyConstraint(['break_id'], ['break.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('break_id', 'level', name='uq_escalation')
    )
    op.create_index('ix_escalation_due', 'escalation', ['state', 'due_at'])
    # the cards the stopgap notifier posted stay editable: each becomes a live alert card
    # (its hash is unknown, so the next pass edits it once to the current state)
    op.execute("""
        INSERT INTO alert_card (card_key, channel, target, merchant_id, break_id, lang, message_id, shown_hash,
                                state, created_at, updated_at)
        SELECT 'break:' || m.break_id, m.channel, m.target, b.merchant_id, m.break_id, 'en', m.message_id, '',
               'live', m.sent_at, m.sent_at
        FROM chat_message m JOIN break b ON b.id = m.break_id
    """)
    op.drop_table('chat_message')


def downgrade() -> None:
    op.create_table('chat_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('break_id', sa.Integer(), nullable=False),
    sa.Column('channel', S(length=16), nullable=False),
    sa.Column('target', S(length=256), nullable=False),
    sa.Column('message_id', S(length=256), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['break_id'], ['break.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('break_id', 'channel', 'target', name='uq_chat_message')
    )
    op.execute("""
        INSERT INTO chat_message (break_id, channel, target, message_id, sent_at)
        SELECT break_id, channel, target, message_id, created_at FROM alert_card
        WHERE card_key = 'break:' || break_id AND message_id IS NOT NULL
    """)
    op.drop_table('escalation')
    op.drop_table('silence')
    op.drop_table('alert_digest')
    op.drop_table('alert_route')
    op.drop_index('ix_outbox_due', table_name='outbox')
    op.drop_table('outbox')
    op.drop_index('ix_alert_card_break', table_name='alert_card')
    op.drop_table('alert_card')
