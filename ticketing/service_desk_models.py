"""Tables of the service rules: SLA clocks and notification markers, routing corrections, approvals.

Kept beside ``ticketing.models`` (same metadata) so the core models stay small;
created by migration 0004_service_desk.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, Session, mapped_column

from ticketing.clock import utcnow
from ticketing.models import Base


class SlaClock(Base):
    """A ticket's paused SLA time: while pending on the requester the clock stands."""

    __tablename__ = "sla_clock"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    paused_at: Mapped[datetime | None] = mapped_column()
    # Working seconds spent paused so far; added to the targets.
    paused_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class SlaMarker(Base):
    """ "This ticket's <target> reached <state> and was acted on": the unique key makes it once only,
    also with several replicas running the escalation job."""

    __tablename__ = "sla_marker"
    __table_args__ = (UniqueConstraint("ticket_id", "target", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    target: Mapped[str] = mapped_column(String(16))  # first_response | resolution
    state: Mapped[str] = mapped_column(String(16))  # at_risk | breached
    at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingCorrection(Base):
    """An agent changed a predicted category, priority or group; later predictions learn from it."""

    __tablename__ = "routing_correction"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    field: Mapped[str] = mapped_column(String(16))  # category | priority | group
    predicted: Mapped[str | None] = mapped_column(String(64))
    corrected: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text, default="")
    # The text's embedding when it was recorded (None when no embedder was at hand).
    embedding: Mapped[list[Any] | None] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Approval(Base):
    """One approval step of a service request (catalog item)."""

    __tablename__ = "approval"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    item: Mapped[str] = mapped_column(String(64))
    # "person" (approver is one identity) or "group" (any member of approver)
    approver_kind: Mapped[str] = mapped_column(String(16))
    approver: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | approved | rejected
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[datetime | None] = mapped_column()
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def sla_clock_of(session: Session, *, ticket_id: int) -> SlaClock:
    clock = session.get(SlaClock, ticket_id)
    if clock is None:
        clock = SlaClock(ticket_id=ticket_id, paused_seconds=0.0)
        session.add(clock)
    return clock
