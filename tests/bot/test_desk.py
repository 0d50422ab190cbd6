"""The agent desk: ticket cards on agent surfaces, agent actions, CSAT, silent messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import select

from bot.app import TierZero
from bot.channel import TemporaryDeliveryError
from bot.config import Settings
from bot.desk import AgentRef, DeskPost, TicketView, TimelineEntry, surfaces_of
from bot.model import Action, ConversationRef, InboundMessage, Participant, ReplyKind
from tests.fixtures.fakes import RecordingChannel, it_retriever
from ticketing.models import Conversation, Message, Ticket, TicketEvent
from ticketing.service import TicketError

AGENT = AgentRef("desk", "A1", "Dana")


class RecordingSurface(RecordingChannel):
    """A channel that hosts agents and records every card and thread post."""

    def __init__(self) -> None:
        super().__init__("desk")
        self.hosts_agents = True
        self.cards: list[TicketView] = []
        self.posts: list[tuple[str, TimelineEntry]] = []
        self.failures_left = 0

    async def publish_ticket(self, view: TicketView, post: DeskPost | None) -> DeskPost:
        if self.failures_left:
            self.failures_left -= 1
            raise TemporaryDeliveryError("rate limited", retry_after=0.01)
        self.cards.append(view)
        return post or DeskPost(f"thread-{view.number}", {"posted": len(self.cards)})

    async def post_to_ticket(self, post: DeskPost, view: TicketView, entry: TimelineEntry) -> None:
        self.posts.append((post.thread_key, entry))


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def inbound(text: str, number: int, **kwargs: object) -> InboundMessage:
    return InboundMessage(
        channel_message_id=f"m-{number}",
        conversation=ConversationRef("test", "c1"),
        sender=Participant("test", "U1", display_name="Alice"),
        text=text,
        **kwargs,  # type: ignore[arg-type]
    )


class Desk:
    def __init__(self, settings: Settings) -> None:
        self.app = TierZero(settings, retriever=it_retriever())
        self.requester = RecordingChannel()
        self.surface = RecordingSurface()
        self.runtime = self.app.runtime([self.requester, self.surface])

    async def say(self, text: str, number: int, **kwargs: object) -> int:
        receipt = await self.runtime.pipeline.accept(inbound(text, number, **kwargs))
        assert receipt.handled is not None
        return await asyncio.wait_for(receipt.handled, 10)

    async def escalate(self) -> str:
        await self.say("can you order pizza for the team", 1)
        await self.requester.wait_for(1)
        assert self.requester.sent[0].kind == ReplyKind.ESCALATION
        number = self.requester.sent[0].ticket_number
        assert number
        return number


@pytest.fixture
async def desk(settings: Settings):
    d = Desk(settings)
    await d.runtime.start()
    yield d
    await d.runtime.stop()
    d.app.db.dispose()


def test_only_configured_surfaces_host_agents() -> None:
    off = RecordingSurface()
    off.hosts_agents = False
    assert surfaces_of([RecordingChannel(), off, RecordingSurface()]) != []
    assert surfaces_of([RecordingChannel(), off]) == []


async def test_escalation_posts_a_card_with_due_times_and_the_conversation(desk: Desk) -> None:
    number = await desk.escalate()
    assert "Expected first response by" in desk.requester.sent[0].text
    await eventually(lambda: bool(desk.surface.cards))
    card = desk.surface.cards[-1]
    assert card.number == number and card.owner == "queue" and card.assignee is None
    assert card.first_response_due is not None and card.sla_state == "ok"
    assert "Requester: can you order pizza for the team" in card.summary
    # Agents' replies in that thread are found by its key once the card is recorded.
    for _ in range(100):
        if await desk.app.desk.ticket_by_thread("desk", f"thread-{number}") == number:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the card's thread was never recorded")


async def test_take_reply_and_mirroring_keep_both_sides_in_step(desk: Desk) -> None:
    number = await desk.escalate()
    await eventually(lambda: bool(desk.surface.cards))

    await desk.app.desk.take(number, AGENT)
    await eventually(lambda: desk.surface.cards[-1].assignee == AGENT.key)
    await desk.requester.wait_for(2)
    assert "Dana" in desk.requester.sent[1].text

    # The requester writes while the agent owns the conversation: the bot stays silent,
    # the message is mirrored into the ticket's thread.
    assert await desk.say("it is for 12 people", 2) == 0
    await eventually(lambda: any(e.kind == "requester_message" for _, e in desk.surface.posts))
    [(thread, entry)] = [(t, e) for t, e in desk.surface.posts if e.kind == "requester_message"]
    assert (thread, entry.text) == (f"thread-{number}", "it is for 12 people")

    # The agent's reply reaches the requester once, however often the platform redelivers it.
    assert await desk.app.desk.reply(number, AGENT, "Ordered, arriving at noon.", source_id="ts-1") is not None
    assert await desk.app.desk.reply(number, AGENT, "Ordered, arriving at noon.", source_id="ts-1") is None
    await desk.requester.wait_for(3)
    await asyncio.sleep(0.2)
    agent_replies = [r for r in desk.requester.sent if r.kind == ReplyKind.AGENT]
    assert [r.text for r in agent_replies] == ["Ordered, arriving at noon."]
    # ...and is not echoed back into the thread it came from.
    assert not [e for _, e in desk.surface.posts if e.kind == "agent_reply"]


async def test_resolve_asks_for_a_rating_and_stores_it(desk: Desk) -> None:
    number = await desk.escalate()
    await eventually(lambda: bool(desk.surface.cards))
    await desk.app.desk.take(number, AGENT)
    await desk.app.desk.resolve(number, AGENT)
    await desk.requester.wait_for(4)
    csat = desk.requester.sent[-1]
    assert csat.kind == ReplyKind.CSAT
    assert [b.action for b in csat.buttons] == [f"{Action.RATE}:{n}" for n in range(1, 6)]

    assert await desk.say("4", 2, action=f"{Action.RATE}:4") == 1
    with desk.app.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.csat_score, ticket.status) == (4, "resolved")
    await eventually(lambda: desk.surface.cards[-1].csat_score == 4)


async def test_agent_actions_follow_the_ticket_rules(desk: Desk) -> None:
    number = await desk.escalate()
    with pytest.raises(TicketError, match="take"):
        await desk.app.desk.reply(number, AGENT, "hello", source_id="x")
    await desk.app.desk.take(number, AGENT)
    with pytest.raises(TicketError, match="already taken"):
        await desk.app.desk.take(number, AgentRef("desk", "A2"))
    with pytest.raises(TicketError, match="no ticket"):
        await desk.app.desk.take("TZ-9", AGENT)
    [view] = await desk.app.desk.open_tickets_of("test", "U1")
    assert view.number == number and view.status == "open"


async def test_a_rate_limited_surface_gets_the_card_after_a_retry(desk: Desk) -> None:
    desk.surface.failures_left = 2
    number = await desk.escalate()
    await eventually(lambda: bool(desk.surface.cards))
    assert desk.surface.cards[-1].number == number


async def test_messages_that_must_not_be_answered_are_stored_silently(desk: Desk) -> None:
    assert await desk.say("Out of office until Monday", 1, auto_reply=False) == 0
    with desk.app.db.transaction() as session:
        message = session.scalars(select(Message)).one()
        assert message.processed_at is not None and message.text == "Out of office until Monday"
        # Kept apart from what requesters ask (history, metrics), but kept.
        assert message.author_kind == "automatic"
    assert desk.requester.sent == []


async def test_channel_data_is_kept_and_travels_with_replies(desk: Desk) -> None:
    await desk.say("my vpn drops", 1, channel_data={"service_url": "https://x.example"})
    await desk.requester.wait_for(1)
    assert desk.requester.sent[0].channel_data == {"service_url": "https://x.example"}
    with desk.app.db.transaction() as session:
        assert session.scalars(select(Conversation)).one().channel_data == {"service_url": "https://x.example"}


async def test_edits_and_deletions_are_recorded_on_the_stored_message(desk: Desk) -> None:
    await desk.say("my vpn drops", 1)
    conversations = desk.app.conversations
    assert await conversations.record_edit(channel="test", channel_message_id="m-1", text="my vpn drops at home")
    assert await conversations.record_deletion(channel="test", channel_message_id="m-1")
    assert not await conversations.record_edit(channel="test", channel_message_id="unknown", text="x")
    with desk.app.db.transaction() as session:
        message = session.scalars(select(Message).where(Message.direction == "in")).one()
        assert message.text == "my vpn drops at home"
        assert message.parts["original_text"] == "my vpn drops"
        assert "deleted_at" in message.parts


async def test_waiting_on_the_requester_pauses_the_sla_until_they_answer(desk: Desk) -> None:
    number = await desk.escalate()
    await desk.app.desk.take(number, AGENT)
    change = await desk.app.desk.wait_for_requester(number, AGENT)
    assert change.status == "pending"
    view = await desk.app.desk.view(number)
    assert view is not None and view.sla_state == "paused"

    await desk.say("here is the screenshot you asked for", 2)
    view = await desk.app.desk.view(number)
    assert view is not None and (view.status, view.sla_state) == ("open", "ok")
    with desk.app.db.transaction() as session:
        kinds = [e.kind for e in session.scalars(select(TicketEvent).order_by(TicketEvent.id))]
    assert kinds.index("sla_paused") < kinds.index("sla_resumed")
