"""email channel: threads, Message-ID map, raw mail, dead letters, auto-reply breaker

Revision ID: 0003_email
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_email"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_thread",
        sa.Column("thread_key", sa.String(length=255), nullable=False),
        sa.Column("requester", sa.String(length=320), nullable=False),
        sa.Column("participants", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("thread_key", name=op.f("pk_email_thread")),
    )
    op.create_table(
        "email_message_ref",
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("thread_key", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("ticket_number", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_email_message_ref")),
    )
    op.create_index(op.f("ix_email_message_ref_thread_key"), "email_message_ref", ["thread_key"])
    op.create_table(
        "email_raw_message",
        sa.Column("message_key", sa.String(length=255), nullable=False),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column("rcpt_tos", sa.JSON(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_key", name=op.f("pk_email_raw_message")),
    )
    op.create_table(
        "email_dead_letter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column("rcpt_tos", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_dead_letter")),
    )
    op.create_table(
        "email_auto_reply",
        sa.Column("message_key", sa.String(length=255), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_key", name=op.f("pk_email_auto_reply")),
    )
    op.create_index(op.f("ix_email_auto_reply_sender"), "email_auto_reply", ["sender"])


def downgrade() -> None:
    op.drop_index(op.f("ix_email_auto_reply_sender"), table_name="email_auto_reply")
    op.drop_table("email_auto_reply")
    op.drop_table("email_dead_letter")
    op.drop_table("email_raw_message")
    op.drop_index(op.f("ix_email_message_ref_thread_key"), table_name="email_message_ref")
    op.drop_table("email_message_ref")
    op.drop_table("email_thread")
