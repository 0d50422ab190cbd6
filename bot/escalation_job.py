"""The SLA escalation job: warns about at-risk and breached tickets and applies the escalation rules.

It runs inside the server every ``service_desk.escalation.interval_seconds``.
For each open ticket whose first response or resolution is at risk or breached
it writes a ticket event (``sla_at_risk`` / ``sla_breached``; the desk mirrors
it into the ticket's thread on every agent surface, which is how the assignee
and the group hear of it) and applies the configured rules: raise the
priority, move up a tier (1 -> 2 -> 3), reassign to a group, or hand over to an
external vendor (tier 4, an e-mail to the vendor recorded on the ticket).

Once only, also with several replicas on one PostgreSQL database: each ticket
is handled in its own transaction that locks the ticket row with
``FOR UPDATE SKIP LOCKED`` (another replica busy with it: skipped), and the
(ticket, target, state) marker row has a unique key, so a second firing of the
same state can never commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from bot import telemetry
from bot.background import PollingLoop
from bot.outgoing import conversation_ref, queue_reply
from bot.replies import notice
from bot.service_desk_config import EscalationRule, ServiceDeskSettings
from ticketing import service, sla
from ticketing.clock import utcnow
from ticketing.conversations import get_or_create_conversation, get_or_create_requester
from ticketing.db import Database
from ticketing.models import Conversation, Owner, Priority, Ticket, TicketStatus
from ticketing.service_desk_models import SlaMarker

log = logging.getLogger(__name__)

ACTOR = "sla-escalation"
CHANNEL = "system"
PRIORITY_LADDER = (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT)
HIGHEST_INTERNAL_TIER = 3
VENDOR_TIER = 4
# Tickets whose clock runs; pending tickets are paused and never escalate.
RUNNING_STATUSES = (TicketStatus.NEW, TicketStatus.OPEN)


@dataclass(frozen=True)
class Fired:
    number: str
    target: str  # first_response | resolution
    state: str  # at_risk | breached
    actions: tuple[str, ...]


class EscalationJob:
    def __init__(
        self,
        *,
        db: Database,
        settings: ServiceDeskSettings,
        clock: Callable[[], datetime] = utcnow,
        on_change: Callable[[], None] = lambda: None,
        vendor_mail_channel: str | None = None,
    ) -> None:
        self._db = db
        # The running e-mail channel's name; None: vendor hand-offs are recorded on the ticket only.
        self._vendor_mail_channel = vendor_mail_channel
        self._settings = settings
        self._policy = settings.sla_policy
        self._clock = clock
        self._on_change = on_change
        self._loop = PollingLoop(self._round, interval=settings.escalation.interval_seconds, name="sla-escalation")

    def start(self) -> None:
        if self._settings.escalation.enabled:
            self._loop.start()

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Let a round in progress finish (its transactions are short), then stop."""
        await self._loop.stop(timeout=timeout)

    async def _round(self) -> int:
        if await asyncio.to_thread(self.run_once):
            self._on_change()
        return 0  # rounds run on the interval, never back to back

    def run_once(self, *, now: datetime | None = None) -> list[Fired]:
        """One round over every running ticket; returns what fired (for tests and logs)."""
        now = now or self._clock()
        fired: list[Fired] = []
        for ticket_id in self._due_for_action(now):
            try:
                fired.extend(self._check(ticket_id, now))
            except (IntegrityError, OperationalError) as exc:
                # Another replica fired it first, or SQLite's single writer was busy: the next round sees it.
                log.info("SLA check of ticket %s skipped this round: %s", ticket_id, type(exc).__name__)
        for item in fired:
            log.info("SLA %s %s on %s: %s", item.target, item.state, item.number, ", ".join(item.actions) or "no rule")
            telemetry.count_sla_event(target=item.target, state=item.state)
        return fired

    def _due_for_action(self, now: datetime) -> list[int]:
        """Running tickets with an at-risk or breached target that has not fired yet (one read, no locks)."""
        with self._db.transaction() as session:
            fired = {
                (m.ticket_id, m.target, m.state)
                for m in session.execute(
                    select(SlaMarker.ticket_id, SlaMarker.target, SlaMarker.state)
                    .join(Ticket, Ticket.id == SlaMarker.ticket_id)
                    .where(Ticket.status.in_(RUNNING_STATUSES))
                )
            }
            tickets = session.scalars(select(Ticket).where(Ticket.status.in_(RUNNING_STATUSES)).order_by(Ticket.id))
            return [
                ticket.id
                for ticket in tickets
                if any(
                    state in ("at_risk", "breached") and (ticket.id, target, state) not in fired
                    for target, state in self._policy.states(ticket, now=now).items()
                )
            ]

    def _check(self, ticket_id: int, now: datetime) -> list[Fired]:
        with self._db.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.id == ticket_id).with_for_update(skip_locked=True))
            if ticket is None or ticket.status not in RUNNING_STATUSES:
                return []  # another replica holds it, or it changed meanwhile
            fired: list[Fired] = []
            for target, state in self._policy.states(ticket, now=now).items():
                if state not in ("at_risk", "breached") or not self._claim(session, ticket, target, state, now):
                    continue
                due = ticket.first_response_due if target == "first_response" else ticket.resolution_due
                service.add_event(
                    session,
                    ticket=ticket,
                    actor=ACTOR,
                    channel=CHANNEL,
                    kind=f"sla_{state}",
                    detail={
                        "target": target,
                        "due": due.isoformat() if due else None,
                        "text": _warning(ticket, target, state),
                    },
                )
                # Both targets reaching a state in the same round (the job was down) escalate once, not twice.
                acted = state in {f.state for f in fired}
                actions = () if acted else self._apply_rules(session, ticket, state, now)
                fired.append(Fired(ticket.number or "", target, state, actions))
            return fired

    def _apply_rules(self, session: Session, ticket: Ticket, state: str, now: datetime) -> tuple[str, ...]:
        actions = []
        for rule in self._settings.escalation.rules:
            if rule.when == state and _applies(rule, ticket):
                action = self._apply(session, ticket, rule, now)
                if action:
                    actions.append(action)
        return tuple(actions)

    def _claim(self, session: Session, ticket: Ticket, target: str, state: str, now: datetime) -> bool:
        """Insert the once-only marker; False when this state already fired for the ticket."""
        exists = session.scalar(
            select(SlaMarker.id).where(
                SlaMarker.ticket_id == ticket.id, SlaMarker.target == target, SlaMarker.state == state
            )
        )
        if exists is not None:
            return False
        try:
            with session.begin_nested():
                session.add(SlaMarker(ticket_id=ticket.id, target=target, state=state, at=now))
        except IntegrityError:
            return False  # a replica that did not see our row lock (or none was taken) got there first
        return True

    def _apply(self, session: Session, ticket: Ticket, rule: EscalationRule, now: datetime) -> str | None:
        """Apply one rule; returns what it did, or None when there was nothing to do."""
        if rule.action == "notify":
            return "notify"  # the sla_* event itself is the notification on every agent surface
        if rule.action == "raise_priority":
            ladder = [str(p) for p in PRIORITY_LADDER]
            position = ladder.index(ticket.priority) if ticket.priority in ladder else 1
            if position + 1 >= len(ladder):
                return None
            return self._change(session, ticket, "priority", ladder[position + 1], policy_changed=True)
        if rule.action == "tier_up":
            if ticket.tier >= HIGHEST_INTERNAL_TIER:
                return None
            return self._change(session, ticket, "tier", ticket.tier + 1)
        if rule.action == "reassign":
            assert rule.group is not None  # required by the configuration
            if ticket.group == rule.group:
                return None
            changed = self._change(session, ticket, "group", rule.group)
            self._back_to_queue(session, ticket)
            return changed
        if rule.action == "vendor":
            return self._to_vendor(session, ticket, rule, now)
        raise ValueError(f"unknown escalation action {rule.action!r}")

    def _change(
        self, session: Session, ticket: Ticket, field: str, value: object, *, policy_changed: bool = False
    ) -> str:
        before = getattr(ticket, field)
        setattr(ticket, field, value)
        if policy_changed:
            sla.recompute_due_times(session, ticket=ticket, policy=self._policy)
        service.add_event(
            session,
            ticket=ticket,
            actor=ACTOR,
            channel=CHANNEL,
            kind=f"{field}_changed",
            detail={"from": before, "to": value, "reason": "sla"},
        )
        return f"{field}:{before}->{value}"

    def _back_to_queue(self, session: Session, ticket: Ticket) -> None:
        """A ticket moved to another group waits in that group's queue, not with the old assignee."""
        if ticket.assignee is None:
            return
        ticket.assignee = None
        conversation = session.get(Conversation, ticket.conversation_id)
        if conversation is not None and conversation.owner == Owner.AGENT:
            conversation.owner = Owner.QUEUE

    def _to_vendor(self, session: Session, ticket: Ticket, rule: EscalationRule, now: datetime) -> str | None:
        if ticket.tier == VENDOR_TIER:
            return None
        assert rule.vendor_email is not None  # required by the configuration
        self._change(session, ticket, "tier", VENDOR_TIER)
        ticket.assignee = rule.vendor_email
        subject = f"[{ticket.number}] {ticket.subject}"
        text = (
            f"Ticket {ticket.number} is handed to you (tier {VENDOR_TIER}) after its service level "
            f"was missed.\n\n{ticket.subject}\n\n{ticket.description}"
        )
        mailed = self._mail_vendor(session, ticket, rule.vendor_email, subject=subject, text=text)
        service.add_event(
            session,
            ticket=ticket,
            actor=ACTOR,
            channel=CHANNEL,
            kind="vendor_handoff",
            detail={"to": rule.vendor_email, "subject": subject, "text": text, "mailed": mailed, "at": now.isoformat()},
        )
        return f"vendor:{rule.vendor_email}"

    def _mail_vendor(self, session: Session, ticket: Ticket, address: str, *, subject: str, text: str) -> bool:
        """Queue the hand-off mail in a conversation of its own on the e-mail channel, linked to the ticket
        and owned by "agent": the vendor's answers are recorded on the ticket and the bot never replies."""
        if self._vendor_mail_channel is None:
            return False
        channel = self._vendor_mail_channel
        vendor = get_or_create_requester(
            session, channel=channel, platform_id=address, display_name=address, email=address
        )
        conversation = get_or_create_conversation(
            session,
            channel=channel,
            channel_conversation_id=f"vendor-{ticket.number}",
            thread_id=None,
            requester=vendor,
        )
        conversation.ticket_id = ticket.id
        conversation.owner = Owner.AGENT
        conversation.channel_data = {**(conversation.channel_data or {}), "requester": address, "subject": subject}
        queue_reply(
            session,
            conversation=conversation,
            reply=notice(conversation_ref(conversation), text, ticket_number=ticket.number),
            author_kind="agent",
            author_id=ACTOR,
        )
        return True


def _applies(rule: EscalationRule, ticket: Ticket) -> bool:
    if rule.priorities and ticket.priority not in rule.priorities:
        return False
    return not rule.categories or ticket.category in rule.categories


def _warning(ticket: Ticket, target: str, state: str) -> str:
    what = "first response" if target == "first_response" else "resolution"
    due = ticket.first_response_due if target == "first_response" else ticket.resolution_due
    when = due.strftime("%Y-%m-%d %H:%M UTC") if due else "unknown"
    if state == "breached":
        return f"SLA breached: {what} was due {when}"
    return f"SLA at risk: {what} due {when}"
