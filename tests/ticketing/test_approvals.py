"""Approvals of service requests: the manager from the directory or a fixed group decides; proceed or close."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.config import ConfigError, settings_from_mapping
from bot.service_rules import ServiceRules
from tests.fixtures.service_desk import make_ticket
from ticketing.approvals import Decision, Identity, parse_decision
from ticketing.db import Database
from ticketing.models import Conversation, Owner, Requester, Ticket, TicketEvent, TicketStatus
from ticketing.service import TicketError
from ticketing.service_desk_models import Approval

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SERVICE_DESK = {
    "groups": {"licensing": {"members": ["teams:aad-7", "Carol@Example.com"]}},
    "directory": {"bob@example.com": {"manager": "slack:U9"}},
    "catalog": {
        "new-laptop": {"title": "New laptop", "keywords": ["new laptop"], "approver": "manager", "group": "hardware"},
        "licence": {
            "title": "Software licence",
            "keywords": ["licence for"],
            "approver": "group",
            "approver_group": "licensing",
            "group": "software",
        },
        "mouse": {"title": "A mouse", "keywords": ["new mouse"], "approver": "none", "group": "hardware"},
    },
}

ALICE = Identity("slack", "U9")  # Bob's manager
CAROL = Identity("email", "carol@example.com", "carol@example.com")
MALLORY = Identity("slack", "U666")


def rules() -> ServiceRules:
    return ServiceRules(settings_from_mapping({"service_desk": SERVICE_DESK}).service_desk)


def open_request(db: Database, subject: str, *, user: str = "U1", email: str | None = "bob@example.com") -> int:
    with db.transaction() as session:
        ticket = make_ticket(session, subject=subject, channel="slack", user=user, email=email)
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation is not None
        rules().ticket_opened(session, ticket=ticket, conversation=conversation)
        return ticket.id


def decide(db: Database, ticket_id: int, who: Identity, *, approve: bool, comment: str = "") -> Approval:
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        requester = Requester(channel=who.channel, platform_id=who.platform_id, email=who.email)
        return rules().decide_approval(
            session, ticket=ticket, requester=requester, approve=approve, comment=comment, now=NOW
        )


def kinds(db: Database, ticket_id: int) -> list[str]:
    with db.transaction() as session:
        return [e.kind for e in session.query(TicketEvent).filter_by(ticket_id=ticket_id).order_by(TicketEvent.id)]


def test_the_managers_approval_lets_the_request_proceed(db: Database) -> None:
    ticket_id = open_request(db, "I need a new laptop, mine is 6 years old")
    with db.transaction() as session:
        approval = session.query(Approval).one()
        assert (approval.item, approval.approver_kind, approval.approver, approval.status) == (
            "new-laptop",
            "person",
            "slack:u9",
            "pending",
        )
    with pytest.raises(TicketError, match="you are not an approver of TZ-"):
        decide(db, ticket_id, MALLORY, approve=True)
    approval = decide(db, ticket_id, ALICE, approve=True, comment="ok for Q1")
    assert (approval.status, approval.decided_by, approval.comment) == ("approved", "slack:U9", "ok for Q1")
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert (ticket.status, ticket.group) == (TicketStatus.NEW, "hardware")
    assert kinds(db, ticket_id)[-3:] == ["approval_requested", "approval_approved", "group_changed"]
    with pytest.raises(TicketError, match="has no approval waiting"):
        decide(db, ticket_id, ALICE, approve=False)


def test_a_rejected_request_is_closed(db: Database) -> None:
    ticket_id = open_request(db, "new laptop please")
    decide(db, ticket_id, ALICE, approve=False, comment="no budget")
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation is not None
        assert ticket.status == TicketStatus.CLOSED and ticket.closed_at == NOW
        assert conversation.owner == Owner.CLOSED
    assert kinds(db, ticket_id)[-2:] == ["approval_rejected", "closed"]


def test_any_member_of_the_approver_group_decides(db: Database) -> None:
    ticket_id = open_request(db, "I need a licence for Visio")
    with pytest.raises(TicketError, match="not an approver"):
        decide(db, ticket_id, ALICE, approve=True)  # a manager, but not in the group
    approval = decide(db, ticket_id, CAROL, approve=True)
    assert approval.status == "approved" and approval.approver == "licensing"


def test_without_a_manager_on_record_the_desk_decides(db: Database) -> None:
    ticket_id = open_request(db, "new laptop", user="U2", email="dave@example.com")
    with db.transaction() as session:
        assert session.query(Approval).count() == 0
    assert "approval_unroutable" in kinds(db, ticket_id)


def test_items_without_approval_go_straight_to_their_group(db: Database) -> None:
    ticket_id = open_request(db, "could I get a new mouse")
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.group == "hardware"
        assert session.query(Approval).count() == 0


def test_ordinary_questions_need_no_approval(db: Database) -> None:
    open_request(db, "my laptop is slow")
    with db.transaction() as session:
        assert session.query(Approval).count() == 0


@pytest.mark.parametrize(
    ("text", "decision"),
    [
        ("approve TZ-1042", Decision(True, "TZ-1042", "")),
        ("Approved tz-1042: fine by me", Decision(True, "TZ-1042", "fine by me")),
        ("reject TZ-7 not in this year's budget", Decision(False, "TZ-7", "not in this year's budget")),
        ("  deny  ABC-12", Decision(False, "ABC-12", "")),
        ("please approve TZ-1042", None),
        ("approve", None),
        ("approve the laptop", None),
    ],
)
def test_approvers_answer_in_plain_words(text: str, decision: Decision | None) -> None:
    assert parse_decision(text) == decision


def test_group_approval_needs_a_group() -> None:
    with pytest.raises(ConfigError, match="approver 'group' needs approver_group"):
        settings_from_mapping({"service_desk": {"catalog": {"x": {"title": "X", "approver": "group"}}}})
