"""service desk rules: SLA clocks and markers, routing corrections, approvals

Revision ID: 0004_service_desk
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_service_desk"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sla_clock",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_sla_clock_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("ticket_id", name=op.f("pk_sla_clock")),
    )
    op.create_table(
        "sla_marker",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_sla_marker_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_marker")),
        sa.UniqueConstraint("ticket_id", "target", "state", name=op.f("uq_sla_marker_ticket_id_target_state")),
    )
    op.create_index(op.f("ix_sla_marker_ticket_id"), "sla_marker", ["ticket_id"])
    op.create_table(
        "routing_correction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("predicted", sa.String(length=64), nullable=True),
        sa.Column("corrected", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_routing_correction_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_correction")),
    )
    op.create_index(op.f("ix_routing_correction_ticket_id"), "routing_correction", ["ticket_id"])
    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("item", sa.String(length=64), nullable=False),
        sa.Column("approver_kind", sa.String(length=16), nullable=False),
        sa.Column("approver", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=320), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_approval_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval")),
    )
    op.create_index(op.f("ix_approval_ticket_id"), "approval", ["ticket_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_approval_ticket_id"), table_name="approval")
    op.drop_table("approval")
    op.drop_index(op.f("ix_routing_correction_ticket_id"), table_name="routing_correction")
    op.drop_table("routing_correction")
    op.drop_index(op.f("ix_sla_marker_ticket_id"), table_name="sla_marker")
    op.drop_table("sla_marker")
    op.drop_table("sla_clock")
