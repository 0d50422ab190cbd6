"""Approvals of service requests (catalog items such as a new laptop or a licence).

A request that matches a catalog item waits for its approver: the requester's
manager from the directory, or any member of a fixed group. The approver
approves or rejects (from any channel: "approve TZ-1042" / "reject TZ-1042 no
budget"); an approved ticket proceeds to the item's fulfilment group, a
rejected one is closed. Every step is on the ticket's audit trail. Functions
never commit; the caller tells the requester in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ticketing.models import Conversation, Owner, Requester, Ticket, TicketStatus
from ticketing.routing import find_phrase
from ticketing.service import OPEN_STATUSES, TicketError, add_event
from ticketing.service_desk_models import Approval

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
_DECISION = re.compile(
    r"^\s*(approve|approved|reject|rejected|deny|decline)\s+([A-Za-z][A-Za-z0-9]*-\d+)\b[\s:,.-]*(.*)$", re.I | re.S
)


@dataclass(frozen=True)
class CatalogItem:
    key: str
    title: str
    keywords: tuple[str, ...] = ()
    approver: str = "manager"  # manager | group | none
    approver_group: str | None = None
    group: str | None = None  # who fulfils it once approved


@dataclass(frozen=True)
class Identity:
    """Who acts, from verified platform ids (never from display names)."""

    channel: str
    platform_id: str
    email: str | None = None

    def keys(self) -> frozenset[str]:
        keys = {f"{self.channel}:{self.platform_id}".lower()}
        if self.email:
            keys.add(self.email.lower())
        return frozenset(keys)

    @classmethod
    def of(cls, requester: Requester) -> Identity:
        return cls(requester.channel, requester.platform_id, requester.email)


@dataclass(frozen=True)
class Directory:
    """Requester -> manager, and group -> members; keys are "channel:platform_id" or e-mail, lower case."""

    managers: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def manager_of(self, who: Identity) -> str | None:
        for key in sorted(who.keys()):
            if key in self.managers:
                return self.managers[key]
        return None

    def is_member(self, who: Identity, group: str) -> bool:
        return bool(who.keys() & self.groups.get(group, frozenset()))


@dataclass(frozen=True)
class Decision:
    approve: bool
    number: str
    comment: str


def parse_decision(text: str) -> Decision | None:
    """ "approve TZ-1042" / "reject TZ-1042 not in this year's budget" -> Decision; anything else None."""
    match = _DECISION.match(text or "")
    if not match:
        return None
    verb, number, comment = match.groups()
    return Decision(approve=verb.lower().startswith("approve"), number=number.upper(), comment=comment.strip())


def match_catalog_item(text: str, items: Sequence[CatalogItem]) -> CatalogItem | None:
    for item in items:
        if find_phrase(text, item.keywords):
            return item
    return None


def pending_approval(session: Session, *, ticket: Ticket) -> Approval | None:
    return session.scalar(
        select(Approval).where(Approval.ticket_id == ticket.id, Approval.status == PENDING).order_by(Approval.id)
    )


def request_approval(
    session: Session,
    *,
    ticket: Ticket,
    item: CatalogItem,
    directory: Directory,
    channel: str,
    actor: str = "bot",
) -> Approval | None:
    """Open the approval step of ``item`` on the ticket; None when the item needs none or has no approver."""
    ticket.category = ticket.category or item.key
    if item.approver == "none":
        _proceed(session, ticket=ticket, item=item, actor=actor, channel=channel)
        return None
    if item.approver == "group":
        assert item.approver_group is not None  # the configuration requires it
        kind, approver = "group", item.approver_group
    else:
        requester = session.get(Requester, ticket.requester_id)
        manager = directory.manager_of(Identity.of(requester)) if requester else None
        if manager is None:
            # Nobody to ask: the desk decides by hand rather than the request waiting forever.
            add_event(
                session,
                ticket=ticket,
                actor=actor,
                channel=channel,
                kind="approval_unroutable",
                detail={"item": item.key},
            )
            return None
        kind, approver = "person", manager.lower()
    approval = Approval(ticket_id=ticket.id, item=item.key, approver_kind=kind, approver=approver, status=PENDING)
    session.add(approval)
    add_event(
        session,
        ticket=ticket,
        actor=actor,
        channel=channel,
        kind="approval_requested",
        detail={"item": item.key, "title": item.title, "approver": approver, "approver_kind": kind},
    )
    return approval


def may_decide(approval: Approval, *, who: Identity, directory: Directory) -> bool:
    if approval.approver_kind == "group":
        return directory.is_member(who, approval.approver)
    return approval.approver in who.keys()


def decide(
    session: Session,
    *,
    ticket: Ticket,
    who: Identity,
    approve: bool,
    directory: Directory,
    items: Sequence[CatalogItem],
    now: datetime,
    comment: str = "",
) -> Approval:
    """The approver's answer: an approved request proceeds, a rejected one is closed. Raises TicketError."""
    approval = pending_approval(session, ticket=ticket)
    if approval is None:
        raise TicketError(f"{ticket.number} has no approval waiting")
    if not may_decide(approval, who=who, directory=directory):
        raise TicketError(f"you are not an approver of {ticket.number}")
    if ticket.status not in OPEN_STATUSES:
        raise TicketError(f"{ticket.number} is {ticket.status}")
    actor = f"{who.channel}:{who.platform_id}"
    approval.status = APPROVED if approve else REJECTED
    approval.decided_by = actor
    approval.decided_at = now
    approval.comment = comment or None
    add_event(
        session,
        ticket=ticket,
        actor=actor,
        channel=who.channel,
        kind="approval_approved" if approve else "approval_rejected",
        detail={"item": approval.item, "comment": comment},
    )
    if approve:
        item = next((i for i in items if i.key == approval.item), None)
        _proceed(session, ticket=ticket, item=item, actor=actor, channel=who.channel)
    else:
        ticket.status = TicketStatus.CLOSED
        ticket.closed_at = now
        conversation = session.get(Conversation, ticket.conversation_id)
        if conversation is not None:
            conversation.owner = Owner.CLOSED
            conversation.resolved_at = now
            conversation.resolved_by = "approver"
        add_event(
            session, ticket=ticket, actor=actor, channel=who.channel, kind="closed", detail={"reason": "rejected"}
        )
    return approval


def _proceed(session: Session, *, ticket: Ticket, item: CatalogItem | None, actor: str, channel: str) -> None:
    """Hand an approved (or approval-free) request to the group that fulfils it."""
    if item is not None and item.group and ticket.group != item.group:
        add_event(
            session,
            ticket=ticket,
            actor=actor,
            channel=channel,
            kind="group_changed",
            detail={"from": ticket.group, "to": item.group, "reason": f"catalog:{item.key}"},
        )
        ticket.group = item.group
