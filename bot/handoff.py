"""What human agents do to a ticket: take it, reply, hand it back, resolve it.

Each action commits the ticket change, its audit event and the message to the
requester together; the outbox delivers the message on the requester's channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from bot import messages
from bot.model import OutboundReply, ReplyKind
from bot.outgoing import conversation_ref, queue_reply
from bot.replies import csat_request, notice
from ticketing import service
from ticketing.clock import utcnow
from ticketing.conversations import record_inbound_message
from ticketing.db import Database
from ticketing.models import Conversation, Ticket


@dataclass(frozen=True)
class TicketChange:
    number: str
    status: str
    owner: str
    assignee: str | None


def take(db: Database, *, number: str, agent: str, channel: str, agent_name: str = "") -> TicketChange:
    with db.transaction() as session:
        ticket, conversation = _load(session, number)
        service.take_ticket(session, ticket=ticket, conversation=conversation, agent=agent, channel=channel)
        text = messages.AGENT_JOINED.format(agent=agent_name or agent, number=ticket.number)
        queue_reply(
            session,
            conversation=conversation,
            reply=notice(conversation_ref(conversation), text, ticket_number=ticket.number),
        )
        return _change(ticket, conversation)


def reply(
    db: Database,
    *,
    number: str,
    agent: str,
    text: str,
    channel: str,
    source_id: str | None = None,
    agent_name: str = "",
) -> TicketChange | None:
    """Relay an agent's reply to the requester's channel, signed with ``agent_name`` (default: ``agent``).

    ``source_id`` is the platform id of the agent's message (a Slack ts, a Teams
    activity id); a redelivery of the same id relays nothing and returns None.
    """
    if not text.strip():
        raise service.TicketError("the reply is empty")
    with db.transaction() as session:
        ticket, conversation = _load(session, number)
        if ticket.assignee != agent:
            raise service.TicketError(f"take {ticket.number} before replying (assignee: {ticket.assignee or 'nobody'})")
        if source_id is not None and not _first_delivery(session, conversation, channel, source_id, agent, text):
            return None
        reply = OutboundReply(
            conversation_ref(conversation),
            text.strip(),
            ReplyKind.AGENT,
            ticket_number=ticket.number,
            author_name=agent_name or agent,
        )
        item = queue_reply(session, conversation=conversation, reply=reply, author_kind="agent", author_id=agent)
        service.record_agent_reply(session, ticket=ticket, agent=agent, channel=channel, message_id=item.message_id)
        return _change(ticket, conversation)


def hand_back(db: Database, *, number: str, agent: str, channel: str) -> TicketChange:
    with db.transaction() as session:
        ticket, conversation = _load(session, number)
        service.hand_back_to_bot(session, ticket=ticket, conversation=conversation, agent=agent, channel=channel)
        text = messages.HANDED_BACK.format(number=ticket.number)
        queue_reply(
            session,
            conversation=conversation,
            reply=notice(conversation_ref(conversation), text, ticket_number=ticket.number),
        )
        return _change(ticket, conversation)


def wait_for_requester(db: Database, *, number: str, agent: str, channel: str) -> TicketChange:
    """The agent asked the requester something: the ticket is pending and its SLA clock stops
    until the requester answers (the pipeline restarts it)."""
    with db.transaction() as session:
        ticket, conversation = _load(session, number)
        service.set_pending(session, ticket=ticket, actor=agent, channel=channel, now=utcnow())
        return _change(ticket, conversation)


def resolve(db: Database, *, number: str, agent: str, channel: str, resolution: str = "") -> TicketChange:
    with db.transaction() as session:
        ticket, conversation = _load(session, number)
        service.resolve_ticket(
            session, ticket=ticket, conversation=conversation, actor=agent, channel=channel, resolution=resolution
        )
        conversation.resolved_by = "agent"
        conversation.resolved_at = ticket.resolved_at
        text = messages.TICKET_RESOLVED.format(number=ticket.number)
        ref = conversation_ref(conversation)
        queue_reply(session, conversation=conversation, reply=notice(ref, text, ticket_number=ticket.number))
        queue_reply(session, conversation=conversation, reply=csat_request(ref, ticket_number=ticket.number or ""))
        return _change(ticket, conversation)


def _first_delivery(
    session: Session, conversation: Conversation, channel: str, source_id: str, agent: str, text: str
) -> bool:
    """Record the agent's own message once; False if this platform message was relayed before."""
    row = record_inbound_message(
        session,
        conversation=conversation,
        channel=channel,
        channel_message_id=source_id,
        author_id=agent,
        author_kind="agent",
        text=text,
        attachments=[],
        raw=None,
        received_at=utcnow(),
        processed=True,
    )
    return row is not None


def _load(session: Session, number: str) -> tuple[Ticket, Conversation]:
    ticket = service.get_ticket(session, number=number)
    if ticket is None:
        raise service.TicketError(f"no ticket {number}")
    conversation = session.get(Conversation, ticket.conversation_id, with_for_update=True)
    assert conversation is not None
    return ticket, conversation


def _change(ticket: Ticket, conversation: Conversation) -> TicketChange:
    return TicketChange(ticket.number or "", ticket.status, conversation.owner, ticket.assignee)
