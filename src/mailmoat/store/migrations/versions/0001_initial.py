"""Initial schema: message log, recipients, delivery events, quarantine, audit, sender memory.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-28 06:40:21.811502

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001_initial'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=1024), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('client_ip', sa.String(length=64), nullable=False),
    sa.Column('client_name', sa.String(length=255), nullable=False),
    sa.Column('helo', sa.String(length=255), nullable=False),
    sa.Column('auth_user', sa.String(length=255), nullable=False),
    sa.Column('mail_from', sa.String(length=512), nullable=False),
    sa.Column('from_header', sa.String(length=512), nullable=False),
    sa.Column('from_domain', sa.String(length=255), nullable=False),
    sa.Column('subject', sa.String(length=1000), nullable=False),
    sa.Column('message_id', sa.String(length=998), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('symbols', sa.JSON(), nullable=False),
    sa.Column('urls', sa.JSON(), nullable=False),
    sa.Column('url_domains', sa.JSON(), nullable=False),
    sa.Column('attachments', sa.JSON(), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('scan_ms', sa.Float(), nullable=False),
    sa.Column('node', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_action'), ['action'], unique=False)
        batch_op.create_index('ix_messages_action_received', ['action', 'received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_category'), ['category'], unique=False)
        batch_op.create_index('ix_messages_category_received', ['category', 'received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_client_ip'), ['client_ip'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_direction'), ['direction'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_from_domain'), ['from_domain'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_from_header'), ['from_header'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_mail_from'), ['mail_from'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_received_at'), ['received_at'], unique=False)

    op.create_table('sender_memory',
    sa.Column('sender', sa.String(length=512), nullable=False),
    sa.Column('recipient', sa.String(length=512), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('clean', sa.Integer(), nullable=False),
    sa.Column('bad', sa.Integer(), nullable=False),
    sa.Column('outbound', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('sender', 'recipient')
    )
    op.create_table('delivery_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=512), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_events_message_id'), ['message_id'], unique=False)

    op.create_table('quarantine',
    sa.Column('message_id', sa.String(length=32), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('quarantined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_by', sa.String(length=255), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('mail_from', sa.String(length=512), nullable=False),
    sa.Column('rcpt_tos', sa.JSON(), nullable=False),
    sa.Column('held_for', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id')
    )
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quarantine_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_quarantine_quarantined_at'), ['quarantined_at'], unique=False)

    op.create_table('recipients',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=32), nullable=False),
    sa.Column('address', sa.String(length=512), nullable=False),
    sa.Column('domain', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_response', sa.Text(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recipients_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_recipients_domain'), ['domain'], unique=False)
        batch_op.create_index(batch_op.f('ix_recipients_message_id'), ['message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recipients_status'), ['status'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('recipients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recipients_status'))
        batch_op.drop_index(batch_op.f('ix_recipients_message_id'))
        batch_op.drop_index(batch_op.f('ix_recipients_domain'))
        batch_op.drop_index(batch_op.f('ix_recipients_address'))

    op.drop_table('recipients')
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quarantine_quarantined_at'))
        batch_op.drop_index(batch_op.f('ix_quarantine_expires_at'))

    op.drop_table('quarantine')
    with op.batch_alter_table('delivery_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_events_message_id'))

    op.drop_table('delivery_events')
    op.drop_table('sender_memory')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_received_at'))
        batch_op.drop_index(batch_op.f('ix_messages_message_id'))
        batch_op.drop_index(batch_op.f('ix_messages_mail_from'))
        batch_op.drop_index(batch_op.f('ix_messages_from_header'))
        batch_op.drop_index(batch_op.f('ix_messages_from_domain'))
        batch_op.drop_index(batch_op.f('ix_messages_direction'))
        batch_op.drop_index(batch_op.f('ix_messages_client_ip'))
        batch_op.drop_index('ix_messages_category_received')
        batch_op.drop_index(batch_op.f('ix_messages_category'))
        batch_op.drop_index('ix_messages_action_received')
        batch_op.drop_index(batch_op.f('ix_messages_action'))

    op.drop_table('messages')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
        batch_op.drop_index(batch_op.f('ix_audit_log_action'))

    op.drop_table('audit_log')
