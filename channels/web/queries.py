"""What the web pages and the API read from the database, as plain values.

Pages never hold a database session: every function here runs inside the
caller's transaction and returns frozen dataclasses the templates can use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from bot.desk import TicketView, ticket_view
from ticketing import service
from ticketing.access import Principal
from ticketing.models import Conversation, Direction, Message, Requester, Ticket, TicketEvent
from ticketing.sla import SlaPolicy

WEB_CHANNEL = "web"
QUEUES = ("mine", "groups", "unassigned", "at_risk", "breached", "all")
# Events shown on the agent's timeline besides the messages themselves (notes are internal).
STATUS_EVENTS = {
    "opened": "opened the ticket",
    "taken": "took the ticket",
    "taken_over": "took the ticket over",
    "handed_back": "handed the conversation back to the bot",
    "resolved": "resolved the ticket",
    "reopened": "reopened the ticket",
    "updated": "changed",
    "csat": "rated",
    "sla_at_risk": "SLA at risk",
    "sla_breached": "SLA breached",
    "delivery_failed": "a reply could not be delivered",
    "delivery_unknown": "a reply may not have been delivered",
    "escalated": "escalated",
}


@dataclass(frozen=True)
class ChatMessage:
    id: int
    mine: bool  # written by the requester (shown on the right in the portal)
    author: str
    text: str
    kind: str
    at: datetime
    channel: str
    buttons: tuple[dict[str, str], ...] = ()
    citations: tuple[dict[str, Any], ...] = ()
    ticket_number: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mine": self.mine,
            "author": self.author,
            "text": self.text,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "channel": self.channel,
            "buttons": list(self.buttons),
            "citations": list(self.citations),
            "ticket_number": self.ticket_number,
        }


@dataclass(frozen=True)
class TimelineItem:
    key: str
    at: datetime
    kind: str  # requester | bot | agent | note | event
    author: str
    text: str
    channel: str
    internal: bool = False


# -- requesters and conversations ------------------------------------------------------


def requester_filter(principal: Principal) -> ColumnElement[bool]:
    """The requester rows that are this person: their portal identity, or their verified e-mail elsewhere."""
    mine = and_(Requester.channel == WEB_CHANNEL, Requester.platform_id == principal.identity)
    if principal.email:
        return or_(mine, func.lower(Requester.email) == principal.email.casefold())
    return mine


def portal_conversation(session: Session, *, conversation_id: str) -> Conversation | None:
    return session.scalar(
        select(Conversation).where(
            Conversation.channel == WEB_CHANNEL,
            Conversation.channel_conversation_id == conversation_id,
            Conversation.thread_id == "",
        )
    )


def chat_messages(
    session: Session,
    *,
    conversation: Conversation,
    after_id: int = 0,
    limit: int = 200,
    agent_names: Mapping[str, str] | None = None,
) -> list[ChatMessage]:
    rows = session.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation.id,
            Message.id > after_id,
            # An agent's own message is kept inbound only to deduplicate it; the requester
            # sees the outbound copy that was sent to them.
            or_(Message.direction == Direction.OUTBOUND, Message.author_kind == "requester"),
        )
        .order_by(Message.id.desc())
        .limit(limit)
    )
    return [_chat_message(m, agent_names or {}) for m in reversed(list(rows))]


def _chat_message(message: Message, agent_names: Mapping[str, str]) -> ChatMessage:
    parts = message.parts or {}
    inbound = message.direction == Direction.INBOUND
    if inbound:
        author = "You" if message.author_kind == "requester" else message.author_id
    else:
        named = agent_names.get(message.author_id) or str(parts.get("author_name") or "")
        author = "tierzero" if message.author_kind == "bot" else (named or "IT team")
    return ChatMessage(
        id=message.id,
        mine=inbound and message.author_kind == "requester",
        author=author,
        text=message.text,
        kind=str(parts.get("kind", "message" if inbound else "notice")),
        at=message.received_at,
        channel=message.channel,
        buttons=tuple(b for b in parts.get("buttons", []) if isinstance(b, dict)),
        citations=tuple(c for c in parts.get("citations", []) if isinstance(c, dict)),
        ticket_number=parts.get("ticket_number"),
    )


# -- tickets ------------------------------------------------------------------------------


def agent_scope(principal: Principal) -> ColumnElement[bool]:
    if principal.is_admin:
        return Ticket.id.is_not(None)
    if not principal.is_agent:
        return false()
    return or_(
        Ticket.group.is_(None),
        Ticket.group.in_(sorted(principal.groups)),
        Ticket.assignee == principal.assignee_key,
    )


def visible_tickets(principal: Principal) -> ColumnElement[bool]:
    """Agents: their queues. Requesters: their own tickets."""
    if principal.is_agent:
        return agent_scope(principal)
    return Ticket.requester_id.in_(select(Requester.id).where(requester_filter(principal)))


def list_ticket_views(
    session: Session,
    principal: Principal,
    *,
    queue: str | None = None,
    statuses: Sequence[str] = (),
    priority: str | None = None,
    group: str | None = None,
    assignee: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
    policy: SlaPolicy | None = None,
) -> list[TicketView]:
    query = select(Ticket).where(visible_tickets(principal)).options(selectinload(Ticket.requester))
    open_only = queue in ("mine", "groups", "unassigned", "at_risk", "breached")
    if open_only:
        query = query.where(Ticket.status.in_(service.OPEN_STATUSES))
    if queue == "mine":
        query = query.where(Ticket.assignee == principal.assignee_key)
    elif queue == "groups":
        query = query.where(Ticket.group.in_(sorted(principal.groups)))
    elif queue == "unassigned":
        query = query.where(Ticket.assignee.is_(None))
    if statuses:
        query = query.where(Ticket.status.in_(list(statuses)))
    if priority:
        query = query.where(Ticket.priority == priority)
    if group:
        query = query.where(Ticket.group == group)
    if assignee:
        query = query.where(Ticket.assignee == assignee)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(or_(func.lower(Ticket.subject).like(pattern), func.lower(Ticket.number).like(pattern)))
    query = query.order_by(Ticket.id.desc())
    if queue in ("at_risk", "breached"):
        # The SLA state is computed, not stored: filter after computing it (open tickets only).
        views = [ticket_view(session, t, now=now, policy=policy) for t in session.scalars(query.limit(1000))]
        return [v for v in views if v.sla_state == queue][offset : offset + limit]
    rows = session.scalars(query.limit(limit).offset(offset))
    return [ticket_view(session, t, now=now, policy=policy) for t in rows]


def queue_counts(
    session: Session, principal: Principal, *, now: datetime | None = None, policy: SlaPolicy | None = None
) -> dict[str, int]:
    views = list_ticket_views(session, principal, statuses=service.OPEN_STATUSES, limit=1000, now=now, policy=policy)
    return {
        "mine": sum(v.assignee == principal.assignee_key for v in views),
        "groups": sum(v.group in principal.groups for v in views),
        "unassigned": sum(v.assignee is None for v in views),
        "at_risk": sum(v.sla_state == "at_risk" for v in views),
        "breached": sum(v.sla_state == "breached" for v in views),
    }


def find_ticket(session: Session, number: str) -> Ticket | None:
    if not number or len(number) > 32:
        return None
    return service.get_ticket(session, number=number)


def ticket_messages(
    session: Session, ticket: Ticket, *, agent_names: Mapping[str, str] | None = None
) -> list[ChatMessage]:
    conversation = session.get(Conversation, ticket.conversation_id)
    if conversation is None:
        return []
    return chat_messages(session, conversation=conversation, limit=500, agent_names=agent_names)


def timeline(session: Session, ticket: Ticket, *, include_internal: bool) -> list[TimelineItem]:
    """The ticket's whole story: messages on every channel, status changes and (for agents) notes."""
    items: list[TimelineItem] = []
    conversation = session.get(Conversation, ticket.conversation_id)
    if conversation is not None:
        requester = session.get(Requester, conversation.requester_id)
        requester_name = (requester.display_name or requester.platform_id) if requester else "requester"
        # Which channel each agent reply was written on (the message itself is stored on the requester's).
        reply_channels = {
            (event.detail or {}).get("message_id"): event.channel
            for event in session.scalars(
                select(TicketEvent).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "agent_reply")
            )
        }
        for message in session.scalars(
            select(Message)
            .where(
                Message.conversation_id == conversation.id,
                # Automatic mail (out-of-office, bounces) is shown too: agents should know of it.
                or_(Message.direction == Direction.OUTBOUND, Message.author_kind.in_(("requester", "automatic"))),
            )
            .order_by(Message.id)
        ):
            kind = message.author_kind
            agent_name = str((message.parts or {}).get("author_name") or message.author_id)
            if kind in ("requester", "automatic"):
                author = requester_name if kind == "requester" else f"{requester_name} (automatic)"
            else:
                author = "tierzero" if kind == "bot" else agent_name
            channel = reply_channels.get(message.id, message.channel)
            items.append(TimelineItem(f"m{message.id}", message.received_at, kind, author, message.text, channel))
    if include_internal:
        for event in session.scalars(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)
        ):
            detail = event.detail or {}
            if event.kind == "note":
                text = str(detail.get("text", ""))
                items.append(TimelineItem(f"e{event.id}", event.at, "note", event.actor, text, event.channel, True))
            elif event.kind in STATUS_EVENTS:
                text = _event_text(event.kind, detail)
                items.append(TimelineItem(f"e{event.id}", event.at, "event", event.actor, text, event.channel, True))
    items.sort(key=lambda item: (item.at, item.key))
    return items


def _event_text(kind: str, detail: dict[str, Any]) -> str:
    label = STATUS_EVENTS[kind]
    if kind == "updated":
        changes = detail.get("changes") or {}
        shown = ", ".join(f"{field} {old or '-'} → {new or '-'}" for field, (old, new) in changes.items())
        return f"{label} {shown}".strip()
    if kind == "csat":
        return f"{label} {detail.get('score')}/5"
    if kind == "taken_over":
        return f"{label} from {detail.get('from') or 'nobody'}"
    return label


def last_change_marker(session: Session, ticket: Ticket) -> tuple[int, int]:
    """Changes whenever the ticket or its conversation changes (for live updates)."""
    last_message = session.scalar(select(func.max(Message.id)).where(Message.conversation_id == ticket.conversation_id))
    return (ticket.version or 0, last_message or 0)


def desk_marker(session: Session) -> tuple[int, int]:
    """Changes whenever any ticket changes (for the live queue view)."""
    return (session.scalar(select(func.max(TicketEvent.id))) or 0, session.scalar(select(func.count(Ticket.id))) or 0)


def conversations_for(
    session: Session, principal: Principal, *, limit: int = 50, offset: int = 0
) -> list[tuple[Conversation, Requester]]:
    query = select(Conversation, Requester).join(Requester, Requester.id == Conversation.requester_id)
    if principal.is_admin:
        pass
    elif principal.is_agent:
        query = query.join(Ticket, Ticket.id == Conversation.ticket_id).where(agent_scope(principal))
    else:
        query = query.where(requester_filter(principal))
    rows = session.execute(query.order_by(Conversation.id.desc()).limit(limit).offset(offset))
    return [(row[0], row[1]) for row in rows]


def can_see_conversation(session: Session, principal: Principal, conversation: Conversation) -> bool:
    if principal.is_admin:
        return True
    if principal.is_agent:
        if conversation.ticket_id is None:
            return False
        return (
            session.scalar(select(Ticket.id).where(Ticket.id == conversation.ticket_id, agent_scope(principal)))
            is not None
        )
    return (
        session.scalar(
            select(Requester.id).where(Requester.id == conversation.requester_id, requester_filter(principal))
        )
        is not None
    )
