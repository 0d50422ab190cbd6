"""What people do to tickets from the web front, with the access rules applied first.

Take, reply, hand back and resolve go through the desk (``bot.desk.Desk``), so
they behave the same as from Slack or Teams. Field changes, internal notes,
take-over and ratings are written here, each with its audit event (who, when,
channel "web") in the same transaction as the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from bot import handoff
from bot.desk import AgentRef, Desk
from ticketing import service
from ticketing.access import (
    AccessDenied,
    Principal,
    owns_ticket,
    require_reply,
    require_take,
    require_view,
    require_work,
)
from ticketing.db import Database
from ticketing.models import Priority, Requester, Ticket, TicketStatus
from ticketing.routing import ROUTED_FIELDS, Router

CHANNEL = "web"
MAX_NOTE_CHARS = 20_000
UPDATABLE = ("priority", "category", "group", "tier")


class NotFound(Exception):
    """No such ticket (or conversation); ``str()`` is safe to show."""


class InvalidInput(Exception):
    """A field has a value the service does not accept."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class TicketUpdate:
    priority: str | None = None
    category: str | None = None
    group: str | None = None
    tier: int | None = None

    def validate(self) -> None:
        if self.priority is not None and self.priority not in {str(p) for p in Priority}:
            raise InvalidInput("priority", f"must be one of {', '.join(str(p) for p in Priority)}")
        if self.tier is not None and not 1 <= self.tier <= 4:
            raise InvalidInput("tier", "must be 1, 2, 3 or 4 (4 = external vendor)")
        for name in ("category", "group"):
            value = getattr(self, name)
            if value is not None and (not value.strip() or len(value) > 64):
                raise InvalidInput(name, "must be 1 to 64 characters")


def agent_ref(principal: Principal) -> AgentRef:
    return AgentRef(channel=CHANNEL, platform_id=principal.identity, display_name=principal.display_name)


class WebActions:
    def __init__(self, *, db: Database, desk: Desk, router: Router | None = None) -> None:
        self._db = db
        self._desk = desk
        # Agents' changes of category, priority and group teach later routing predictions.
        self._router = router

    def _check(self, number: str, check: Callable[[Principal, Ticket], None], principal: Principal) -> None:
        with self._db.transaction() as session:
            ticket = _ticket(session, number)
            requester = session.get(Requester, ticket.requester_id)
            assert requester is not None
            require_view(principal, ticket, requester=requester)
            check(principal, ticket)

    async def take(self, principal: Principal, number: str) -> None:
        await asyncio.to_thread(self._check, number, require_take, principal)
        taken_over = await asyncio.to_thread(self._release_for_take_over, principal, number)
        await self._desk.take(number, agent_ref(principal))
        if taken_over:
            self._desk.on_change()

    def _release_for_take_over(self, principal: Principal, number: str) -> bool:
        """Taking a ticket from a colleague: record it, then the desk's ordinary take applies."""
        with self._db.transaction() as session:
            ticket = _ticket(session, number, lock=True)
            previous = ticket.assignee
            if not previous or previous == principal.assignee_key:
                return False
            require_take(principal, ticket)
            ticket.assignee = None
            service.add_event(
                session,
                ticket=ticket,
                actor=principal.assignee_key,
                channel=CHANNEL,
                kind="taken_over",
                detail={"from": previous},
            )
            return True

    async def reply(self, principal: Principal, number: str, text: str, *, source_id: str) -> bool:
        if not text.strip():
            raise InvalidInput("text", "the reply is empty")
        await asyncio.to_thread(self._check, number, require_reply, principal)
        change = await self._desk.reply(number, agent_ref(principal), text, source_id)
        return change is not None

    async def hand_back(self, principal: Principal, number: str) -> None:
        await asyncio.to_thread(self._check, number, require_work, principal)
        await self._desk.hand_back(number, agent_ref(principal))

    async def wait_for_requester(self, principal: Principal, number: str) -> None:
        await asyncio.to_thread(self._check, number, require_work, principal)
        await self._desk.wait_for_requester(number, agent_ref(principal))

    async def resolve(self, principal: Principal, number: str, resolution: str = "") -> None:
        await asyncio.to_thread(self._check, number, require_work, principal)
        await self._desk.resolve(number, agent_ref(principal), resolution)

    async def note(self, principal: Principal, number: str, text: str) -> None:
        text = text.strip()
        if not text:
            raise InvalidInput("text", "the note is empty")
        if len(text) > MAX_NOTE_CHARS:
            raise InvalidInput("text", f"at most {MAX_NOTE_CHARS} characters")
        await asyncio.to_thread(self._note, principal, number, text)
        self._desk.on_change()

    def _note(self, principal: Principal, number: str, text: str) -> None:
        with self._db.transaction() as session:
            ticket = _ticket(session, number, lock=True)
            require_work(principal, ticket)
            # Internal: an event on the ticket, never a message, so it cannot reach the requester.
            service.add_event(
                session,
                ticket=ticket,
                actor=principal.assignee_key,
                channel=CHANNEL,
                kind="note",
                detail={"text": text},
            )

    async def update(self, principal: Principal, number: str, update: TicketUpdate) -> dict[str, list[object]]:
        update.validate()
        changes = await asyncio.to_thread(self._update, principal, number, update)
        if changes:
            self._desk.on_change()
        return changes

    def _update(self, principal: Principal, number: str, update: TicketUpdate) -> dict[str, list[object]]:
        with self._db.transaction() as session:
            ticket = _ticket(session, number, lock=True)
            require_work(principal, ticket)
            changes: dict[str, list[object]] = {}
            for name in UPDATABLE:
                new = getattr(update, name)
                if new is None:
                    continue
                old = getattr(ticket, name)
                if new != old:
                    setattr(ticket, name, new)
                    changes[name] = [old, new]
            if changes:
                service.add_event(
                    session,
                    ticket=ticket,
                    actor=principal.assignee_key,
                    channel=CHANNEL,
                    kind="updated",
                    detail={"changes": changes},
                )
            for name in [field for field in ROUTED_FIELDS if field in changes]:
                if self._router is not None:
                    old, new = changes[name]
                    self._router.record_correction(
                        session,
                        ticket=ticket,
                        field_name=name,
                        predicted=None if old is None else str(old),
                        corrected=str(new),
                        actor=principal.assignee_key,
                    )
            return changes

    async def requester_resolve(self, principal: Principal, number: str) -> None:
        """The requester says their ticket is solved: resolved as by an agent, and they are asked to rate it."""
        await asyncio.to_thread(self._check_owner, number, principal)
        await asyncio.to_thread(
            handoff.resolve,
            self._db,
            number=number,
            agent=f"requester:{CHANNEL}:{principal.identity}",
            channel=CHANNEL,
            resolution="solved, says the requester",
        )
        self._desk.on_change()

    def _check_owner(self, number: str, principal: Principal) -> None:
        with self._db.transaction() as session:
            ticket = _ticket(session, number)
            requester = session.get(Requester, ticket.requester_id)
            assert requester is not None
            if not owns_ticket(principal, ticket, requester=requester):
                raise AccessDenied(f"{ticket.number} is not your ticket")

    async def rate(self, principal: Principal, number: str, score: int, comment: str | None) -> None:
        if not 1 <= score <= 5:
            raise InvalidInput("score", "a rating is a whole number from 1 to 5")
        if comment is not None and len(comment) > 2000:
            raise InvalidInput("comment", "at most 2000 characters")
        await asyncio.to_thread(self._rate, principal, number, score, comment)
        self._desk.on_change()

    def _rate(self, principal: Principal, number: str, score: int, comment: str | None) -> None:
        with self._db.transaction() as session:
            ticket = _ticket(session, number, lock=True)
            requester = session.get(Requester, ticket.requester_id)
            assert requester is not None
            require_view(principal, ticket, requester=requester)
            if ticket.status not in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
                raise service.TicketError(f"{ticket.number} can be rated once it is resolved")
            service.record_rating(
                session,
                ticket=ticket,
                score=score,
                actor=f"requester:{CHANNEL}:{principal.identity}",
                channel=CHANNEL,
                comment=comment.strip() if comment and comment.strip() else None,
            )


def _ticket(session: Session, number: str, *, lock: bool = False) -> Ticket:
    ticket = service.get_ticket(session, number=number) if number and len(number) <= 32 else None
    if ticket is None:
        raise NotFound(f"no ticket {number}")
    if lock:
        session.refresh(ticket, with_for_update=True)
    return ticket
