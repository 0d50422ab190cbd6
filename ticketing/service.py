"""The ticket service: opening, taking, handing back and resolving tickets.

Every change writes a ``TicketEvent`` (who, when, from which channel). Functions
never commit: the caller's transaction also carries the outbox row that tells
the requester about the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ticketing import sla
from ticketing.clock import utcnow
from ticketing.models import (
    Conversation,
    Owner,
    Priority,
    Ticket,
    TicketEvent,
    TicketStatus,
)

OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)


class TicketError(Exception):
    """A ticket operation that is not allowed in the ticket's state; safe to show."""


def ticket_number(*, prefix: str, first_number: int, ticket_id: int) -> str:
    return f"{prefix}-{first_number + ticket_id - 1}"


def open_ticket(
    session: Session,
    *,
    conversation: Conversation,
    subject: str,
    description: str,
    actor: str,
    channel: str,
    number_prefix: str,
    first_number: int,
    priority: Priority = Priority.NORMAL,
    reason: str = "",
) -> Ticket:
    opened_at = utcnow()
    first_response_due, resolution_due = sla.due_times(priority, opened_at)
    ticket = Ticket(
        conversation_id=conversation.id,
        requester_id=conversation.requester_id,
        subject=ticket_subject(subject),
        description=description,
        status=TicketStatus.NEW,
        priority=priority,
        tier=1,
        created_at=opened_at,
        first_response_due=first_response_due,
        resolution_due=resolution_due,
        version=1,
    )
    session.add(ticket)
    # The number derives from the primary key, so concurrent openers never collide.
    session.flush()
    ticket.number = ticket_number(prefix=number_prefix, first_number=first_number, ticket_id=ticket.id)
    conversation.ticket_id = ticket.id
    conversation.owner = Owner.QUEUE
    add_event(session, ticket=ticket, actor=actor, channel=channel, kind="opened", detail={"reason": reason})
    return ticket


def ticket_subject(text: str) -> str:
    """A ticket's subject as stored: one line, at most 255 characters."""
    return _one_line(text)[:255] or "(no subject)"


def add_event(
    session: Session,
    *,
    ticket: Ticket,
    actor: str,
    channel: str,
    kind: str,
    detail: dict[str, Any] | None = None,
) -> TicketEvent:
    event = TicketEvent(ticket_id=ticket.id, actor=actor, channel=channel, kind=kind, detail=detail or {}, at=utcnow())
    session.add(event)
    # Every audited change makes the ticket's cards on agent surfaces stale.
    ticket.version = (ticket.version or 0) + 1
    return event


def take_ticket(session: Session, *, ticket: Ticket, conversation: Conversation, agent: str, channel: str) -> None:
    """An agent takes an unowned ticket; the bot falls silent in its conversation."""
    _require_open(ticket)
    if ticket.assignee and ticket.assignee != agent:
        raise TicketError(f"{ticket.number} is already taken by {ticket.assignee}")
    ticket.assignee = agent
    ticket.status = TicketStatus.OPEN
    conversation.owner = Owner.AGENT
    add_event(session, ticket=ticket, actor=agent, channel=channel, kind="taken")


def record_agent_reply(
    session: Session, *, ticket: Ticket, agent: str, channel: str, message_id: int | None = None
) -> None:
    _require_open(ticket)
    if ticket.first_response_at is None:
        ticket.first_response_at = utcnow()
    detail = {"message_id": message_id} if message_id is not None else {}
    add_event(session, ticket=ticket, actor=agent, channel=channel, kind="agent_reply", detail=detail)


def hand_back_to_bot(session: Session, *, ticket: Ticket, conversation: Conversation, agent: str, channel: str) -> None:
    """The agent returns the conversation to the bot; the ticket stays open, unassigned."""
    _require_open(ticket)
    ticket.assignee = None
    conversation.owner = Owner.BOT
    conversation.agent_state = {}
    add_event(session, ticket=ticket, actor=agent, channel=channel, kind="handed_back")


def resolve_ticket(
    session: Session,
    *,
    ticket: Ticket,
    conversation: Conversation,
    actor: str,
    channel: str,
    resolution: str = "",
) -> None:
    _require_open(ticket)
    ticket.status = TicketStatus.RESOLVED
    ticket.resolved_at = utcnow()
    conversation.owner = Owner.CLOSED
    add_event(session, ticket=ticket, actor=actor, channel=channel, kind="resolved", detail={"resolution": resolution})


def set_pending(session: Session, *, ticket: Ticket, actor: str, channel: str, now: datetime) -> None:
    """Waiting on the requester: the SLA clock stops until they answer (idempotent)."""
    _require_open(ticket)
    if ticket.status != TicketStatus.PENDING:
        ticket.status = TicketStatus.PENDING
        sla.pause(session, ticket=ticket, now=now)
        add_event(session, ticket=ticket, actor=actor, channel=channel, kind="sla_paused")


def record_rating(
    session: Session, *, ticket: Ticket, score: int, actor: str, channel: str, comment: str | None = None
) -> None:
    """The requester's satisfaction rating (1-5); a later rating replaces an earlier one."""
    if not 1 <= score <= 5:
        raise TicketError("a rating is a whole number from 1 to 5")
    ticket.csat_score = score
    ticket.csat_at = utcnow()
    if comment is not None:
        ticket.csat_comment = comment
    add_event(session, ticket=ticket, actor=actor, channel=channel, kind="csat", detail={"score": score})


def get_ticket(session: Session, *, number: str) -> Ticket | None:
    return session.scalar(
        select(Ticket)
        .where(Ticket.number == number.strip().upper())
        .options(selectinload(Ticket.events), selectinload(Ticket.requester))
    )


def list_tickets(session: Session, *, statuses: tuple[str, ...] | None = None, limit: int = 50) -> list[Ticket]:
    query = select(Ticket).options(selectinload(Ticket.requester)).order_by(Ticket.id.desc()).limit(limit)
    if statuses:
        query = query.where(Ticket.status.in_(statuses))
    return list(session.scalars(query))


def _require_open(ticket: Ticket) -> None:
    if ticket.status not in OPEN_STATUSES:
        raise TicketError(f"{ticket.number} is {ticket.status}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
