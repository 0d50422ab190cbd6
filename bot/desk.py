"""The agent desk: where human agents see escalated tickets and act on them.

Two halves:

- ``Desk`` is what channels call when an agent presses "Take", replies in a
  ticket's thread, hands back or resolves. Who counts as an agent is each
  channel's decision (its config names them); the desk checks the ticket rules.
- ``DeskSync`` keeps every agent surface (a channel with ``hosts_agents``) up to
  date: each open ticket gets a card, the card is re-published whenever the
  ticket changes, and new timeline entries (requester messages, replies from
  other surfaces, SLA warnings, failed deliveries) are mirrored into the card's
  thread. Progress is kept as watermarks in ``desk_post`` rows, so a crash or a
  platform outage delays a card but never loses or duplicates an entry
  (at-least-once: a crash between posting and recording may repeat one entry).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import handoff
from bot.background import PollingLoop
from bot.channel import DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError
from bot.config import OutboxSettings
from bot.handoff import TicketChange
from bot.outbox_worker import backoff_delay
from ticketing import service, sla
from ticketing.clock import utcnow
from ticketing.db import Database
from ticketing.models import Conversation, Message, Requester, Ticket, TicketEvent
from ticketing.models import DeskPost as DeskPostRow

log = logging.getLogger(__name__)

# Timeline events worth showing in a ticket's thread on an agent surface. The
# card itself shows status changes (taken, handed back, resolved).
MIRRORED_KINDS = frozenset(
    {
        "requester_message",
        "agent_reply",
        "note",
        "reopened",
        "approval_requested",
        "vendor_handoff",
        "sla_at_risk",
        "sla_breached",
        "delivery_failed",
        "delivery_unknown",
        "csat",
    }
)
STALE_AFTER = timedelta(days=7)
SUMMARY_MESSAGES = 12  # the card's "conversation so far"
SUMMARY_CHARS = 2_000


@dataclass(frozen=True)
class AgentRef:
    """An agent as a channel identified them (a Slack user id, an AAD object id, an address)."""

    channel: str
    platform_id: str
    display_name: str = ""

    @property
    def key(self) -> str:
        """The assignee recorded on tickets: stable, unique across channels."""
        return f"{self.channel}:{self.platform_id}"

    @property
    def name(self) -> str:
        return self.display_name or self.platform_id


@dataclass(frozen=True)
class TicketView:
    number: str
    subject: str
    status: str
    priority: str
    category: str | None
    group: str | None
    tier: int
    assignee: str | None
    owner: str  # bot | queue | agent | closed: who answers the requester now
    requester_name: str
    requester_channel: str
    requester_id: str
    created_at: datetime
    first_response_due: datetime | None
    resolution_due: datetime | None
    sla_state: str  # ok | at_risk | breached | met
    summary: str  # the conversation so far, one "who: text" line per message
    csat_score: int | None = None
    version: int = 1


@dataclass(frozen=True)
class TimelineEntry:
    id: int
    kind: str
    author: str
    text: str
    at: datetime
    channel: str


@dataclass(frozen=True)
class DeskPost:
    """Where a ticket's card lives on one surface (returned by ``publish_ticket``)."""

    thread_key: str  # what agents' replies in that thread are found by (e.g. "C123:1700000000.0001")
    data: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class AgentSurface(Protocol):
    """A channel where agents work tickets, in addition to ``bot.channel.Channel``."""

    @property
    def name(self) -> str: ...

    @property
    def hosts_agents(self) -> bool:
        """True when configured to host agents (e.g. a Slack triage channel is set)."""
        ...

    async def publish_ticket(self, view: TicketView, post: DeskPost | None) -> DeskPost:
        """Post the ticket's card (``post`` is None) or update it in place."""
        ...

    async def post_to_ticket(self, post: DeskPost, view: TicketView, entry: TimelineEntry) -> None:
        """Show one timeline entry in the ticket's thread."""
        ...


class Desk:
    """Agent actions for channels; every call commits and audits, or raises ``TicketError``."""

    def __init__(self, db: Database, *, sla_policy: sla.SlaPolicy | None = None) -> None:
        self._db = db
        self.sla_policy = sla_policy
        # Set by the running Runtime: wakes the outbox and the desk sync after a change.
        self.on_change: Callable[[], None] = lambda: None

    async def take(self, number: str, agent: AgentRef) -> TicketChange:
        change = await asyncio.to_thread(
            handoff.take, self._db, number=number, agent=agent.key, channel=agent.channel, agent_name=agent.name
        )
        self.on_change()
        return change

    async def reply(self, number: str, agent: AgentRef, text: str, source_id: str) -> TicketChange | None:
        """Relay ``text`` to the requester; None if ``source_id`` was relayed before."""
        change = await asyncio.to_thread(
            handoff.reply,
            self._db,
            number=number,
            agent=agent.key,
            text=text,
            channel=agent.channel,
            source_id=source_id,
            agent_name=agent.name,
        )
        if change is not None:
            self.on_change()
        return change

    async def hand_back(self, number: str, agent: AgentRef) -> TicketChange:
        change = await asyncio.to_thread(
            handoff.hand_back, self._db, number=number, agent=agent.key, channel=agent.channel
        )
        self.on_change()
        return change

    async def wait_for_requester(self, number: str, agent: AgentRef) -> TicketChange:
        """Pending on the requester: the SLA clock stops until they answer."""
        change = await asyncio.to_thread(
            handoff.wait_for_requester, self._db, number=number, agent=agent.key, channel=agent.channel
        )
        self.on_change()
        return change

    async def resolve(self, number: str, agent: AgentRef, resolution: str = "") -> TicketChange:
        change = await asyncio.to_thread(
            handoff.resolve, self._db, number=number, agent=agent.key, channel=agent.channel, resolution=resolution
        )
        self.on_change()
        return change

    async def ticket_by_thread(self, surface: str, thread_key: str) -> str | None:
        """The number of the ticket whose card on ``surface`` is the thread ``thread_key``."""
        return await asyncio.to_thread(self._ticket_by_thread, surface, thread_key)

    async def view(self, number: str) -> TicketView | None:
        return await asyncio.to_thread(self._view, number)

    async def open_tickets_of(self, channel: str, platform_id: str) -> list[TicketView]:
        """A requester's open tickets, newest first (for "/tierzero tickets" and the portal)."""
        return await asyncio.to_thread(self._open_tickets_of, channel, platform_id)

    def _ticket_by_thread(self, surface: str, thread_key: str) -> str | None:
        with self._db.transaction() as session:
            return session.scalar(
                select(Ticket.number)
                .join(DeskPostRow, DeskPostRow.ticket_id == Ticket.id)
                .where(DeskPostRow.surface == surface, DeskPostRow.thread_key == thread_key)
            )

    def _view(self, number: str) -> TicketView | None:
        with self._db.transaction() as session:
            ticket = service.get_ticket(session, number=number)
            return self.ticket_view(session, ticket) if ticket is not None else None

    def _open_tickets_of(self, channel: str, platform_id: str) -> list[TicketView]:
        with self._db.transaction() as session:
            tickets = session.scalars(
                select(Ticket)
                .join(Requester, Requester.id == Ticket.requester_id)
                .where(
                    Requester.channel == channel,
                    Requester.platform_id == platform_id,
                    Ticket.status.in_(service.OPEN_STATUSES),
                )
                .order_by(Ticket.id.desc())
            )
            return [self.ticket_view(session, t) for t in tickets]

    def ticket_view(self, session: Session, ticket: Ticket, *, now: datetime | None = None) -> TicketView:
        """``ticket_view`` with this desk's SLA calendar, for callers holding a session."""
        return ticket_view(session, ticket, now=now, policy=self.sla_policy)


def ticket_view(
    session: Session, ticket: Ticket, *, now: datetime | None = None, policy: sla.SlaPolicy | None = None
) -> TicketView:
    """What agents and requesters see of a ticket; ``policy`` is the service desk's SLA calendar."""
    conversation = session.get(Conversation, ticket.conversation_id)
    assert conversation is not None
    requester = session.get(Requester, ticket.requester_id)
    assert requester is not None
    sla_state = sla.ticket_sla_state(session, ticket=ticket, now=now or utcnow(), policy=policy)
    return TicketView(
        number=ticket.number or "",
        subject=ticket.subject,
        status=ticket.status,
        priority=ticket.priority,
        category=ticket.category,
        group=ticket.group,
        tier=ticket.tier,
        assignee=ticket.assignee,
        owner=conversation.owner,
        requester_name=requester.display_name or requester.platform_id,
        requester_channel=requester.channel,
        requester_id=requester.platform_id,
        created_at=ticket.created_at,
        first_response_due=ticket.first_response_due,
        resolution_due=ticket.resolution_due,
        sla_state=sla_state,
        summary=_summary(session, conversation.id),
        csat_score=ticket.csat_score,
        version=ticket.version,
    )


def _summary(session: Session, conversation_id: int) -> str:
    rows = list(
        session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc())
            .limit(SUMMARY_MESSAGES)
        )
    )
    lines = []
    for message in reversed(rows):
        who = "Requester" if message.author_kind == "requester" else message.author_kind.capitalize()
        text = " ".join(message.text.split())
        lines.append(f"{who}: {text[:300]}")
    summary = "\n".join(lines)
    return summary if len(summary) <= SUMMARY_CHARS else "…" + summary[-SUMMARY_CHARS:]


def timeline_entries(session: Session, ticket: Ticket, *, after_id: int, limit: int = 20) -> list[TimelineEntry]:
    events = session.scalars(
        select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id, TicketEvent.id > after_id, TicketEvent.kind.in_(MIRRORED_KINDS))
        .order_by(TicketEvent.id)
        .limit(limit)
    )
    entries = []
    for event in events:
        entries.append(
            TimelineEntry(
                id=event.id,
                kind=event.kind,
                author=event.actor,
                text=_event_text(session, event),
                at=event.at,
                channel=event.channel,
            )
        )
    return entries


def _event_text(session: Session, event: TicketEvent) -> str:
    detail = event.detail or {}
    message_id = detail.get("message_id")
    if message_id is not None:
        message = session.get(Message, message_id)
        if message is not None:
            return message.text
    if event.kind == "csat":
        return f"Rated {detail.get('score')}/5"
    return str(detail.get("text") or detail.get("error") or event.kind.replace("_", " "))


class DeskSync:
    """Brings every agent surface's ticket cards and threads up to date, durably."""

    def __init__(
        self,
        *,
        db: Database,
        surfaces: Sequence[AgentSurface],
        settings: OutboxSettings,
        sla_policy: sla.SlaPolicy | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._db = db
        self._sla_policy = sla_policy
        self._surfaces = {s.name: s for s in surfaces}
        self._settings = settings
        self._jitter = jitter
        self._loop = PollingLoop(self.sync_once, interval=settings.poll_interval_seconds, name="desk-sync")

    def notify(self) -> None:
        self._loop.notify()

    def start(self) -> None:
        if self._surfaces:
            self._loop.start()

    async def stop(self, *, timeout: float = 10.0) -> None:
        await self._loop.stop(timeout=timeout)

    async def sync_once(self) -> int:
        """One round over stale cards; returns how many were worked on."""
        claimed = await asyncio.to_thread(self._claim)
        await asyncio.gather(*(self._sync(post_id) for post_id in claimed))
        return len(claimed)

    def _claim(self, limit: int = 20) -> list[int]:
        now = utcnow()
        with self._db.transaction() as session:
            self._add_missing_posts(session)
            last_event = (
                select(func.max(TicketEvent.id)).where(TicketEvent.ticket_id == DeskPostRow.ticket_id).scalar_subquery()
            )
            query = (
                select(DeskPostRow)
                .join(Ticket, Ticket.id == DeskPostRow.ticket_id)
                .where(
                    DeskPostRow.surface.in_(self._surfaces),
                    # Every change touches the ticket; cards of tickets quiet for a week are long in step
                    # (or their surface has refused them for a week), so the scan stays small over the years.
                    Ticket.updated_at >= now - STALE_AFTER,
                    DeskPostRow.next_attempt_at <= now,
                    or_(DeskPostRow.lease_until.is_(None), DeskPostRow.lease_until < now),
                    or_(DeskPostRow.published_version < Ticket.version, DeskPostRow.mirrored_event_id < last_event),
                )
                .order_by(DeskPostRow.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True, of=DeskPostRow)
            )
            posts = list(session.scalars(query))
            lease = now + timedelta(seconds=self._settings.send_timeout_seconds * 4 + 30)
            for post in posts:
                post.lease_until = lease
            return [p.id for p in posts]

    def _add_missing_posts(self, session: Session) -> None:
        """Every open ticket gets a card on every surface."""
        for surface in self._surfaces:
            missing = session.scalars(
                select(Ticket.id).where(
                    Ticket.status.in_(service.OPEN_STATUSES),
                    ~exists().where(DeskPostRow.ticket_id == Ticket.id, DeskPostRow.surface == surface),
                )
            )
            for ticket_id in missing:
                # Only what happens after the card exists is mirrored; the card's summary covers the rest.
                first_event = session.scalar(select(func.min(TicketEvent.id)).where(TicketEvent.ticket_id == ticket_id))
                try:
                    with session.begin_nested():
                        session.add(
                            DeskPostRow(
                                ticket_id=ticket_id,
                                surface=surface,
                                data={},
                                mirrored_event_id=first_event or 0,
                                next_attempt_at=utcnow(),
                            )
                        )
                except IntegrityError:  # another replica added it first (unique ticket + surface)
                    log.debug("desk post for ticket %s on %s already exists", ticket_id, surface)

    async def _sync(self, post_id: int) -> None:
        view, post, surface_name, entries, version = await asyncio.to_thread(self._load, post_id)
        surface = self._surfaces[surface_name]
        try:
            if post is None or version is not None:
                post = await surface.publish_ticket(view, post)
                await asyncio.to_thread(self._published, post_id, post, view.version)
            for entry in entries:
                await surface.post_to_ticket(post, view, entry)
                await asyncio.to_thread(self._mirrored, post_id, entry.id)
        except Exception as exc:
            await asyncio.to_thread(self._failed, post_id, exc)
            return
        await asyncio.to_thread(self._release, post_id)

    def _load(self, post_id: int) -> tuple[TicketView, DeskPost | None, str, list[TimelineEntry], int | None]:
        with self._db.transaction() as session:
            row = session.get(DeskPostRow, post_id)
            assert row is not None
            ticket = session.get(Ticket, row.ticket_id)
            assert ticket is not None
            view = ticket_view(session, ticket, policy=self._sla_policy)
            post = DeskPost(row.thread_key, dict(row.data)) if row.thread_key else None
            stale = ticket.version if row.published_version < ticket.version else None
            # Read before the entries: an event committed in between (each statement sees new commits
            # under READ COMMITTED) must not be skipped by the watermark below.
            last = session.scalar(select(func.max(TicketEvent.id)).where(TicketEvent.ticket_id == ticket.id))
            entries = [
                e
                for e in timeline_entries(session, ticket, after_id=row.mirrored_event_id)
                if not (e.kind == "agent_reply" and e.channel == row.surface)  # already in that thread
            ]
            # Skipped entries still advance the watermark.
            if not entries:
                row.mirrored_event_id = max(row.mirrored_event_id, last or 0)
            return view, post, row.surface, entries, stale

    def _published(self, post_id: int, post: DeskPost, version: int) -> None:
        with self._db.transaction() as session:
            row = session.get(DeskPostRow, post_id, with_for_update=True)
            assert row is not None
            row.thread_key = post.thread_key
            row.data = dict(post.data)
            row.published_version = max(row.published_version, version)

    def _mirrored(self, post_id: int, event_id: int) -> None:
        with self._db.transaction() as session:
            row = session.get(DeskPostRow, post_id, with_for_update=True)
            assert row is not None
            row.mirrored_event_id = max(row.mirrored_event_id, event_id)

    def _release(self, post_id: int) -> None:
        with self._db.transaction() as session:
            row = session.get(DeskPostRow, post_id, with_for_update=True)
            assert row is not None
            row.lease_until = None
            row.attempts = 0
            row.last_error = None

    def _failed(self, post_id: int, exc: Exception) -> None:
        with self._db.transaction() as session:
            row = session.get(DeskPostRow, post_id, with_for_update=True)
            assert row is not None
            row.attempts += 1
            row.lease_until = None
            row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
            if isinstance(exc, PermanentDeliveryError | DeliveryOutcomeUnknown):
                # Retrying cannot help (or could duplicate): skip to the current state.
                log.error("desk post %s on %s: %s; skipping to the current state", post_id, row.surface, exc)
                ticket = session.get(Ticket, row.ticket_id)
                last = session.scalar(select(func.max(TicketEvent.id)).where(TicketEvent.ticket_id == row.ticket_id))
                row.published_version = ticket.version if ticket is not None else row.published_version
                row.mirrored_event_id = max(row.mirrored_event_id, last or 0)
                return
            if not isinstance(exc, TemporaryDeliveryError):
                log.error("desk post %s on %s failed", post_id, row.surface, exc_info=exc)
            retry_after = getattr(exc, "retry_after", None)
            delay = backoff_delay(row.attempts, settings=self._settings, jitter=self._jitter, retry_after=retry_after)
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)


def surfaces_of(channels: Sequence[object]) -> list[AgentSurface]:
    """The channels configured to host agents."""
    return [c for c in channels if isinstance(c, AgentSurface) and c.hosts_agents]


__all__ = [
    "AgentRef",
    "AgentSurface",
    "Desk",
    "DeskPost",
    "DeskSync",
    "TicketView",
    "TimelineEntry",
    "surfaces_of",
    "ticket_view",
    "timeline_entries",
]
