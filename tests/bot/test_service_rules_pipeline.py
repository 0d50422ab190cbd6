"""The service rules inside the running pipeline: routing at escalation, CSAT comment, reopen, approvals, pauses."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import handoff
from bot.app import TierZero
from bot.model import Action, ConversationRef, InboundMessage, OutboundReply, Participant, ReplyKind
from bot.service_rules import ServiceRules
from tests.conftest import make_settings
from tests.fixtures.fakes import RecordingChannel, it_retriever
from ticketing.clock import utcnow
from ticketing.models import Conversation, Owner, Ticket, TicketEvent, TicketStatus
from ticketing.service_desk_models import Approval, SlaClock

SERVICE_DESK: dict[str, Any] = {
    "calendar": {"working_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": "00:00-24:00"},
    "routing": {"categories": {"food": {"keywords": ["pizza"], "group": "facilities"}}},
    "directory": {"test:u1": {"manager": "test:boss"}},
    "catalog": {"laptop": {"title": "New laptop", "keywords": ["new laptop"], "approver": "manager", "group": "hw"}},
    "csat": {"reopen_window_days": 7},
    "escalation": {"enabled": False},
}


def inbound(
    text: str, number: int, *, user: str = "U1", conversation: str = "c1", action: str | None = None
) -> InboundMessage:
    return InboundMessage(
        channel_message_id=f"{conversation}-{number}",
        conversation=ConversationRef("test", conversation),
        sender=Participant("test", user, display_name=user.title()),
        text=text,
        action=action,
    )


class Desk:
    def __init__(self, app: TierZero) -> None:
        self.app = app
        self.channel = RecordingChannel()
        self.runtime = app.runtime([self.channel])  # type: ignore[list-item]

    async def say(self, message: InboundMessage) -> list[OutboundReply]:
        before = len(self.channel.sent)
        receipt = await self.runtime.pipeline.accept(message)
        assert receipt.handled is not None
        replies = await asyncio.wait_for(receipt.handled, 10)
        await self.channel.wait_for(before + replies)
        return self.channel.sent[before:]

    async def delivered(self, count: int) -> None:
        self.runtime.outbox.notify()
        await self.channel.wait_for(count)

    async def queued(self, message: InboundMessage) -> int:
        """How many replies the message caused (without waiting for their delivery)."""
        receipt = await self.runtime.pipeline.accept(message)
        assert receipt.handled is not None
        return await asyncio.wait_for(receipt.handled, 10)

    def ticket(self, number: str = "TZ-1001") -> Ticket:
        with self.app.db.transaction() as session:
            ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
            session.expunge(ticket)
            return ticket

    def event_kinds(self) -> list[str]:
        with self.app.db.transaction() as session:
            return [e.kind for e in session.scalars(select(TicketEvent).order_by(TicketEvent.id))]


@pytest.fixture
async def desk(tmp_path: Path, database_url: str):
    app = TierZero(make_settings(tmp_path, database_url, service_desk=SERVICE_DESK), retriever=it_retriever())
    running = Desk(app)
    await running.runtime.start()
    yield running
    await running.runtime.stop()
    app.db.dispose()


async def test_an_escalated_question_is_routed_with_business_due_times(desk: Desk) -> None:
    [reply] = await desk.say(inbound("everyone here wants pizza, outage of lunch", 1))
    assert reply.kind == ReplyKind.ESCALATION
    ticket = desk.ticket()
    assert (ticket.category, ticket.priority, ticket.group) == ("food", "urgent", "facilities")
    assert ticket.first_response_due == ticket.created_at + timedelta(hours=1)  # urgent, round-the-clock calendar
    with desk.app.db.transaction() as session:
        opened = session.scalars(select(TicketEvent).where(TicketEvent.kind == "opened")).one()
        assert opened.detail["routing"]["category_reason"] == "keyword:pizza"


async def test_rating_with_a_comment_and_a_reply_after_resolution_reopens(desk: Desk) -> None:
    await desk.say(inbound("pizza please", 1))
    handoff.take(desk.app.db, number="TZ-1001", agent="test:agent", channel="test")
    handoff.resolve(desk.app.db, number="TZ-1001", agent="test:agent", channel="test")
    await desk.delivered(4)  # the escalation, "an agent joined", "resolved", the rating request
    await desk.say(inbound("5", 2, action=f"{Action.RATE}:5"))  # a chat button: its label is no comment
    assert (desk.ticket().csat_score, desk.ticket().csat_comment) == (5, None)
    await desk.say(inbound("quick and friendly", 3, action=f"{Action.RATE}:4"))  # a form with a comment box
    assert (desk.ticket().csat_score, desk.ticket().csat_comment) == (4, "quick and friendly")

    # The agent has it again; the bot stays silent.
    assert await desk.queued(inbound("sorry, it is broken again", 4)) == 0
    ticket = desk.ticket()
    assert (ticket.status, ticket.assignee, ticket.resolved_at) == (TicketStatus.OPEN, "test:agent", None)
    with desk.app.db.transaction() as session:
        assert session.scalars(select(Conversation)).one().owner == Owner.AGENT
    assert desk.event_kinds()[-2:] == ["reopened", "requester_message"]


async def test_a_reply_after_the_window_starts_a_new_round_with_the_bot(desk: Desk) -> None:
    await desk.say(inbound("pizza please", 1))
    handoff.resolve(desk.app.db, number="TZ-1001", agent="test:agent", channel="test")
    await desk.delivered(3)
    with desk.app.db.transaction() as session:
        session.scalars(select(Ticket)).one().resolved_at = utcnow() - timedelta(days=8)
    [reply] = await desk.say(inbound("my VPN keeps disconnecting", 2))
    assert reply.kind == ReplyKind.ANSWER
    assert desk.ticket().status == TicketStatus.RESOLVED


async def test_the_manager_approves_a_request_from_their_own_chat(desk: Desk) -> None:
    # The manager has talked to tierzero before, so there is a conversation to ask them in.
    await desk.say(inbound("my VPN keeps disconnecting", 1, user="boss", conversation="boss-chat"))
    before = len(desk.channel.sent)
    await desk.say(inbound("I need a new laptop, please get me a human", 2))
    replies = (await desk.channel.wait_for(before + 2))[before:]  # the escalation and the approver's question
    [escalation] = [r for r in replies if r.conversation.conversation_id == "c1"]
    assert escalation.ticket_number == "TZ-1001"
    [question] = [r for r in replies if r.conversation.conversation_id == "boss-chat"]
    assert 'Reply "approve TZ-1001"' in question.text

    [refused] = await desk.say(inbound("approve TZ-1001", 3, user="mallory", conversation="m"))
    assert refused.text == "you are not an approver of TZ-1001"
    before = len(desk.channel.sent)
    await desk.say(inbound("approve TZ-1001 fine", 4, user="boss", conversation="boss-chat"))
    replies = (await desk.channel.wait_for(before + 2))[before:]  # the approver's answer and the requester's news
    [answer] = [r for r in replies if r.conversation.conversation_id == "boss-chat"]
    assert answer.text == "Thanks, TZ-1001 is approved; the request goes ahead."
    [told] = [r for r in replies if r.conversation.conversation_id == "c1"]
    assert told.text == "Your request TZ-1001 was approved (fine); we are on it."
    assert desk.ticket().group == "hw"
    with desk.app.db.transaction() as session:
        assert session.scalars(select(Approval)).one().status == "approved"


async def test_a_requesters_answer_restarts_a_paused_clock(desk: Desk) -> None:
    await desk.say(inbound("pizza please", 1))
    rules = ServiceRules(desk.app.settings.service_desk)
    paused_at = utcnow() - timedelta(hours=2)
    with desk.app.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        rules.set_pending(session, ticket=ticket, actor="test:agent", channel="test", now=paused_at)
        due = ticket.resolution_due
    await desk.say(inbound("here is the screenshot you asked for", 2))
    ticket = desk.ticket()
    assert ticket.status == TicketStatus.OPEN
    assert due is not None and ticket.resolution_due is not None
    with desk.app.db.transaction() as session:
        clock = session.get(SlaClock, ticket.id)
        assert clock is not None and clock.paused_at is None
        assert clock.paused_seconds == pytest.approx(2 * 3600, abs=60)
    assert ticket.resolution_due - due == timedelta(seconds=clock.paused_seconds)
    assert desk.event_kinds()[-3:] == ["sla_paused", "requester_message", "sla_resumed"]
