"""CSAT ratings with comments, and reopening a resolved ticket by a reply within the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.fixtures.service_desk import make_ticket
from ticketing import csat
from ticketing.db import Database
from ticketing.models import Conversation, Owner, Ticket, TicketEvent, TicketStatus
from ticketing.service import TicketError

RESOLVED_AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def resolved_ticket(db: Database, *, assignee: str | None = "slack:agent1") -> int:
    with db.transaction() as session:
        ticket = make_ticket(session, status=TicketStatus.RESOLVED, resolved_at=RESOLVED_AT, assignee=assignee)
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation is not None
        conversation.owner = Owner.CLOSED
        conversation.resolved_by = "agent"
        return ticket.id


def test_a_rating_and_its_comment_are_stored(db: Database) -> None:
    ticket_id = resolved_ticket(db)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        csat.record_csat(session, ticket=ticket, score=4, comment="  quick\n and friendly ", actor="r", channel="web")
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert (ticket.csat_score, ticket.csat_comment) == (4, "quick and friendly")
        assert session.query(TicketEvent).filter_by(ticket_id=ticket_id, kind="csat").one().detail == {"score": 4}
        # A later rating replaces the score; without a comment the earlier comment stays.
        csat.record_csat(session, ticket=ticket, score=5, actor="r", channel="web")
        assert (ticket.csat_score, ticket.csat_comment) == (5, "quick and friendly")


@pytest.mark.parametrize("score", [0, 6, -1])
def test_ratings_outside_one_to_five_are_refused(db: Database, score: int) -> None:
    ticket_id = resolved_ticket(db)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        with pytest.raises(TicketError, match="from 1 to 5"):
            csat.record_csat(session, ticket=ticket, score=score, actor="r", channel="web")


def test_an_open_ticket_cannot_be_rated(db: Database) -> None:
    with db.transaction() as session:
        ticket = make_ticket(session, status=TicketStatus.OPEN)
        with pytest.raises(TicketError, match="not resolved yet"):
            csat.record_csat(session, ticket=ticket, score=3, actor="r", channel="web")


def test_long_comments_are_cut(db: Database) -> None:
    ticket_id = resolved_ticket(db)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        csat.record_csat(session, ticket=ticket, score=2, comment="x" * 5000, actor="r", channel="web")
        assert ticket.csat_comment is not None and len(ticket.csat_comment) == csat.MAX_COMMENT_CHARS


def test_reopen_window(db: Database) -> None:
    ticket_id = resolved_ticket(db)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert csat.reopens(ticket, now=RESOLVED_AT + timedelta(days=6, hours=23), window=WEEK)
        assert csat.reopens(ticket, now=RESOLVED_AT + WEEK, window=WEEK)
        assert not csat.reopens(ticket, now=RESOLVED_AT + WEEK + timedelta(seconds=1), window=WEEK)
        assert csat.reopens(ticket, now=RESOLVED_AT, window=timedelta(0))
        assert not csat.reopens(None, now=RESOLVED_AT, window=WEEK)
        assert ticket is not None
        ticket.status = TicketStatus.CLOSED
        assert not csat.reopens(ticket, now=RESOLVED_AT + timedelta(hours=1), window=WEEK)


@pytest.mark.parametrize(("assignee", "status", "owner"), [("slack:agent1", "open", "agent"), (None, "new", "queue")])
def test_a_reopened_ticket_goes_back_to_its_agent_or_the_queue(
    db: Database, assignee: str | None, status: str, owner: str
) -> None:
    ticket_id = resolved_ticket(db, assignee=assignee)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation is not None
        now = RESOLVED_AT + timedelta(days=1)
        csat.reopen(session, ticket=ticket, conversation=conversation, actor="requester:u1", channel="web", now=now)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        conversation = session.get(Conversation, ticket.conversation_id)
        assert conversation is not None
        assert (ticket.status, ticket.resolved_at, conversation.owner) == (status, None, owner)
        assert conversation.resolved_by is None
        event = session.query(TicketEvent).filter_by(ticket_id=ticket_id, kind="reopened").one()
        assert event.actor == "requester:u1"


@pytest.mark.parametrize(
    ("text", "comment"),
    [
        ("4", None),
        ("rate:4", None),
        (" 5/5 ", None),
        ("\u2605\u2605\u2605", None),
        ("", None),
        (None, None),
        ("4 - quick fix, thanks", "4 - quick fix, thanks"),
        ("took three days", "took three days"),
    ],
)
def test_a_button_label_is_not_a_comment(text: str | None, comment: str | None) -> None:
    assert csat.comment_of(text) == comment
