"""agent desk: ticket cards on agent surfaces, SLA due times, CSAT, channel data

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("channel_data", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("first_response_due", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resolution_due", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("csat_score", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("csat_comment", sa.Text(), nullable=True))
        batch.add_column(sa.Column("csat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "desk_post",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("surface", sa.String(length=32), nullable=False),
        sa.Column("thread_key", sa.String(length=255), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=False),
        sa.Column("mirrored_event_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_desk_post_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_post")),
        sa.UniqueConstraint("ticket_id", "surface", name=op.f("uq_desk_post_ticket_id_surface")),
        sa.UniqueConstraint("surface", "thread_key", name=op.f("uq_desk_post_surface_thread_key")),
    )
    op.create_index("ix_desk_post_due", "desk_post", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_desk_post_due", table_name="desk_post")
    op.drop_table("desk_post")
    with op.batch_alter_table("ticket") as batch:
        for column in ("version", "csat_at", "csat_comment", "csat_score", "resolution_due", "first_response_due"):
            batch.drop_column(column)
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("channel_data")
