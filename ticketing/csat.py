"""Customer satisfaction after a resolution, and reopening by a late reply.

After an agent resolves a ticket the requester is asked for a 1-5 rating; the
rating may carry a comment (the text sent with the rating button or form). A
requester's message within the reopen window after resolution reopens the
ticket (back to its agent, or to the queue); later messages start a new round
with the bot.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ticketing import service
from ticketing.models import Conversation, Owner, Ticket, TicketStatus

MAX_COMMENT_CHARS = 2_000
# What chat buttons send as the text of a rating press: the label ("4", "4/5", stars) or the action ("rate:4").
_BARE_RATING = re.compile(r"^\s*(?:rate:\s*)?[1-5](?:\s*/\s*5)?\s*$|^[\s\u2605\u2606\u2b50]*$", re.IGNORECASE)


def comment_of(text: str | None) -> str | None:
    """The comment sent with a rating, or None when the text is only the button's label."""
    if text is None or _BARE_RATING.match(text):
        return None
    return text


def record_csat(
    session: Session,
    *,
    ticket: Ticket,
    score: int,
    actor: str,
    channel: str,
    comment: str | None = None,
) -> None:
    """Store the rating (1-5) and an optional comment; a later rating replaces an earlier one. Raises TicketError."""
    if ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        raise service.TicketError(f"{ticket.number} is not resolved yet; rate it once it is")
    text = " ".join((comment or "").split())[:MAX_COMMENT_CHARS] or None
    service.record_rating(session, ticket=ticket, score=score, actor=actor, channel=channel, comment=text)


def reopens(ticket: Ticket | None, *, now: datetime, window: timedelta) -> bool:
    """Whether a requester's message at ``now`` reopens ``ticket`` (resolved, within the window)."""
    if ticket is None or ticket.status != TicketStatus.RESOLVED or ticket.resolved_at is None:
        return False
    return ticket.resolved_at <= now <= ticket.resolved_at + window


def reopen(
    session: Session,
    *,
    ticket: Ticket,
    conversation: Conversation,
    actor: str,
    channel: str,
    now: datetime,
) -> None:
    """Back to work: to the agent who resolved it if there was one, else to the queue."""
    resolved_at = ticket.resolved_at
    ticket.status = TicketStatus.OPEN if ticket.assignee else TicketStatus.NEW
    ticket.resolved_at = None
    conversation.owner = Owner.AGENT if ticket.assignee else Owner.QUEUE
    conversation.resolved_at = None
    conversation.resolved_by = None
    service.add_event(
        session,
        ticket=ticket,
        actor=actor,
        channel=channel,
        kind="reopened",
        detail={"resolved_at": resolved_at.isoformat() if resolved_at else None, "at": now.isoformat()},
    )
