"""The pipeline end to end on both databases: persist, route by owner, reply via the outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import handoff
from bot.app import TierZero
from bot.channel import Acceptance, InvalidMessage, MessageTooLong
from bot.config import Settings
from bot.model import Action, ConversationRef, InboundMessage, Participant, ReplyKind
from tests.fixtures.fakes import FakeRetriever, RecordingChannel, it_retriever
from ticketing.models import Conversation, Message, OutboxItem, Owner, Ticket, TicketEvent


def inbound(text: str, number: int, *, conversation: str = "c1", action: str | None = None) -> InboundMessage:
    return InboundMessage(
        channel_message_id=f"{conversation}-{number}",
        conversation=ConversationRef("test", conversation),
        sender=Participant("test", "U1", display_name="Alice"),
        text=text,
        action=action,
        raw={"payload": text},
    )


class Harness:
    """A running runtime with a recording channel, and helpers to talk through it."""

    def __init__(self, settings: Settings, retriever: FakeRetriever) -> None:
        self.app = TierZero(settings, retriever=retriever)
        self.channel = RecordingChannel()
        self.runtime = self.app.runtime([self.channel])

    async def say(self, text: str, number: int, **kwargs: object) -> list:
        before = len(self.channel.sent)
        receipt = await self.runtime.pipeline.accept(inbound(text, number, **kwargs))
        assert receipt.handled is not None
        replies = await asyncio.wait_for(receipt.handled, 10)
        await self.channel.wait_for(before + replies)
        return self.channel.sent[before:]

    def count(self, model: type) -> int:
        with self.app.db.transaction() as session:
            return session.scalar(select(func.count()).select_from(model))

    def conversation(self) -> Conversation:
        with self.app.db.transaction() as session:
            return session.scalars(select(Conversation)).one()


@pytest.fixture
async def harness(settings: Settings):
    h = Harness(settings, it_retriever())
    await h.runtime.start()
    yield h
    await h.runtime.stop()
    h.app.db.dispose()


async def test_answers_from_the_knowledge_base_with_a_citation(harness: Harness) -> None:
    [reply] = await harness.say("My VPN keeps disconnecting", 1)
    assert reply.kind == ReplyKind.ANSWER
    assert "Turn off Wi-Fi power saving." in reply.text
    assert reply.citations[0].title == "VPN keeps disconnecting"
    assert "https://it.example.com/kb/vpn-drops" in reply.text
    assert [b.action for b in reply.buttons] == [Action.SOLVED, Action.HUMAN]
    assert reply.idempotency_key
    assert harness.conversation().owner == Owner.BOT


async def test_unanswerable_question_opens_a_ticket_and_tells_its_number(harness: Harness) -> None:
    [reply] = await harness.say("can you order pizza for the team", 1)
    assert reply.kind == ReplyKind.ESCALATION
    assert "TZ-1001" in reply.text and reply.ticket_number == "TZ-1001"
    with harness.app.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.subject == "can you order pizza for the team"
        assert "pizza" in ticket.description
        assert [e.kind for e in session.scalars(select(TicketEvent))] == ["opened"]
    assert harness.conversation().owner == Owner.QUEUE


async def test_redelivered_message_gets_no_second_reply_or_ticket(harness: Harness) -> None:
    await harness.say("pizza please", 1)
    for _ in range(3):
        receipt = await harness.runtime.pipeline.accept(inbound("pizza please", 1))
        assert receipt.status is Acceptance.DUPLICATE
    await asyncio.sleep(0.2)
    assert len(harness.channel.sent) == 1
    assert harness.count(Ticket) == 1
    assert harness.count(Message) == 2  # one in, one out


async def test_concurrent_redeliveries_store_the_message_once(harness: Harness) -> None:
    receipts = await asyncio.gather(*(harness.runtime.pipeline.accept(inbound("vpn help", 7)) for _ in range(5)))
    assert sorted(r.status for r in receipts).count(Acceptance.ACCEPTED) == 1
    await harness.channel.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(harness.channel.sent) == 1


async def test_requester_can_ask_for_a_person(harness: Harness) -> None:
    await harness.say("my vpn drops", 1)
    [reply] = await harness.say("Talk to a person", 2, action=Action.HUMAN)
    assert reply.kind == ReplyKind.ESCALATION
    with harness.app.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        # The subject is the real question, not the request for a human.
        assert ticket.subject == "my vpn drops"


async def test_queue_owner_confirms_once_then_records_silently(harness: Harness) -> None:
    await harness.say("pizza", 1)
    [note] = await harness.say("also the printer is broken", 2)
    assert "TZ-1001" in note.text
    assert await harness.say("and my vpn", 3) == []
    with harness.app.db.transaction() as session:
        kinds = [e.kind for e in session.scalars(select(TicketEvent).order_by(TicketEvent.id))]
    assert kinds == ["opened", "requester_message", "requester_message"]


async def test_bot_is_silent_while_an_agent_owns_the_conversation(harness: Harness) -> None:
    await harness.say("pizza", 1)
    handoff.take(harness.app.db, number="TZ-1001", agent="bob", channel="cli")
    harness.runtime.outbox.notify()
    joined = (await harness.channel.wait_for(2))[1]
    assert "bob" in joined.text
    assert await harness.say("my vpn keeps disconnecting", 2) == []
    handoff.reply(harness.app.db, number="TZ-1001", agent="bob", text="Pizza is on its way.", channel="cli")
    harness.runtime.outbox.notify()
    agent_reply = (await harness.channel.wait_for(3))[2]
    assert agent_reply.text == "Pizza is on its way." and agent_reply.kind == ReplyKind.AGENT
    assert agent_reply.author == "bob"

    handoff.hand_back(harness.app.db, number="TZ-1001", agent="bob", channel="cli")
    harness.runtime.outbox.notify()
    await harness.channel.wait_for(4)
    [answer] = await harness.say("my vpn keeps disconnecting", 3)
    assert answer.kind == ReplyKind.ANSWER


async def test_that_solved_it_closes_and_a_new_message_starts_a_new_round(harness: Harness) -> None:
    await harness.say("vpn drops", 1)
    [closed] = await harness.say("That solved it", 2, action=Action.SOLVED)
    conversation = harness.conversation()
    assert conversation.owner == Owner.CLOSED and conversation.resolved_by == "bot"
    [reply] = await harness.say("pizza", 3)
    assert reply.kind == ReplyKind.ESCALATION
    with harness.app.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
    # The closed round's question is not part of the new ticket.
    assert "vpn" not in ticket.description
    assert harness.conversation().resolved_by is None


async def test_thanks_offers_to_close(harness: Harness) -> None:
    await harness.say("vpn drops", 1)
    [offer] = await harness.say("thanks, that fixed it!", 2)
    assert [b.action for b in offer.buttons] == [Action.CLOSE, Action.NOT_SOLVED]
    [closed] = await harness.say("yes", 3)
    assert harness.conversation().owner == Owner.CLOSED


async def test_replies_of_a_conversation_arrive_in_order(harness: Harness) -> None:
    texts = ["hello", "vpn drops", "no", "thanks", "yes"]
    receipts = [await harness.runtime.pipeline.accept(inbound(t, i)) for i, t in enumerate(texts)]
    counts = [await asyncio.wait_for(r.handled, 10) for r in receipts]
    sent = await harness.channel.wait_for(sum(counts))
    kinds = [r.kind for r in sent]
    assert kinds[0] == ReplyKind.NOTICE and kinds[1] == ReplyKind.ANSWER
    assert sent[2].kind == ReplyKind.ANSWER and "another article" in sent[2].text


@pytest.mark.parametrize("text", ["", "   \n\t "])
async def test_empty_messages_are_refused_with_a_clear_error(harness: Harness, text: str) -> None:
    with pytest.raises(InvalidMessage, match="empty"):
        await harness.runtime.pipeline.accept(inbound(text, 1))
    assert harness.count(Message) == 0


async def test_overlong_messages_are_refused_before_acceptance(harness: Harness) -> None:
    with pytest.raises(MessageTooLong, match="limit is 20000"):
        await harness.runtime.pipeline.accept(inbound("x" * 100_000, 1))
    assert harness.count(Message) == 0


async def test_undecodable_text_is_stored_and_answered(harness: Harness) -> None:
    # Channels decode with errors="replace"; the replacement character must flow through.
    [reply] = await harness.say("vpn \ufffd\ufffd broken", 1)
    assert reply.kind == ReplyKind.ANSWER


async def test_message_accepted_before_a_crash_is_answered_after_restart(tmp_path: Path, settings: Settings) -> None:
    crashed = Harness(settings, it_retriever())
    # Accepted (committed) but never processed: the process "died" before its workers ran.
    receipt = await crashed.runtime.pipeline.accept(inbound("vpn drops", 1))
    assert receipt.status is Acceptance.ACCEPTED
    crashed.app.db.dispose()

    restarted = Harness(settings, it_retriever())
    await restarted.runtime.start()
    try:
        [reply] = await restarted.channel.wait_for(1)
        assert reply.kind == ReplyKind.ANSWER
        with restarted.app.db.transaction() as session:
            assert session.scalar(select(func.count()).select_from(OutboxItem)) == 1
    finally:
        await restarted.runtime.stop()
        restarted.app.db.dispose()


async def test_text_no_database_can_store_is_kept_with_replacement_characters(harness: Harness) -> None:
    [reply] = await harness.say("vpn\x00 broken \ud800", 1)
    assert reply.kind == ReplyKind.ANSWER
    with harness.app.db.transaction() as session:
        stored = session.scalars(select(Message).order_by(Message.id)).first()
        assert stored.text == "vpn\ufffd broken \ufffd"
