"""Outbox delivery: retries with backoff, Retry-After, dead letters, unknown outcomes, order."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.channel import DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError
from bot.config import OutboxSettings
from bot.model import ConversationRef, OutboundReply
from bot.outbox_worker import OutboxWorker
from bot.outgoing import queue_reply
from tests.fixtures.fakes import RecordingChannel
from ticketing import outbox, service
from ticketing.clock import utcnow
from ticketing.conversations import get_or_create_conversation, get_or_create_requester
from ticketing.db import Database
from ticketing.models import OutboxItem, OutboxStatus, TicketEvent

SETTINGS = OutboxSettings(
    max_attempts=3,
    initial_backoff_seconds=0.01,
    max_backoff_seconds=0.05,
    send_timeout_seconds=0.3,
    poll_interval_seconds=0.02,
)


def queue(db: Database, *texts: str, conversation_id: str = "c1", with_ticket: bool = False) -> list[int]:
    with db.transaction() as session:
        requester = get_or_create_requester(session, channel="test", platform_id="U1")
        conversation = get_or_create_conversation(
            session, channel="test", channel_conversation_id=conversation_id, thread_id=None, requester=requester
        )
        if with_ticket:
            service.open_ticket(
                session,
                conversation=conversation,
                subject="s",
                description="d",
                actor="bot",
                channel="test",
                number_prefix="TZ",
                first_number=1001,
            )
        ref = ConversationRef("test", conversation_id)
        return [queue_reply(session, conversation=conversation, reply=OutboundReply(ref, t)).id for t in texts]


def statuses(db: Database) -> list[str]:
    with db.transaction() as session:
        return [i.status for i in session.scalars(select(OutboxItem).order_by(OutboxItem.id))]


async def run_until(worker: OutboxWorker, condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async def loop() -> None:
        while not condition():
            await worker.deliver_due()
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)


async def test_delivers_and_marks_sent(db: Database) -> None:
    channel = RecordingChannel()
    queue(db, "hello")
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS)
    assert await worker.deliver_due() == 1
    assert [r.text for r in channel.sent] == ["hello"]
    assert channel.sent[0].idempotency_key.startswith("tierzero-")
    assert statuses(db) == [OutboxStatus.SENT]


async def test_temporary_failures_are_retried_with_the_same_idempotency_key(db: Database) -> None:
    channel = RecordingChannel()
    keys: list[str] = []
    original_send = channel.send

    async def send(reply: OutboundReply) -> None:
        keys.append(reply.idempotency_key)
        await original_send(reply)

    channel.send = send  # type: ignore[method-assign]
    channel.failures = [TemporaryDeliveryError("502"), TemporaryDeliveryError("429", retry_after=0.05)]
    queue(db, "hello")
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS)
    await run_until(worker, lambda: channel.sent)
    assert len(set(keys)) == 1 and len(keys) == 3
    assert statuses(db) == [OutboxStatus.SENT]


async def test_retry_after_is_honoured(db: Database) -> None:
    worker = OutboxWorker(db=db, senders={}, settings=SETTINGS, jitter=lambda: 0.0)
    assert worker.backoff(1) == pytest.approx(0.005)
    assert worker.backoff(1, retry_after=30) == 30
    assert worker.backoff(10) == pytest.approx(0.025)  # capped at max_backoff * (0.5 + jitter/2)


async def test_gives_up_after_max_attempts_and_tells_agents(db: Database) -> None:
    channel = RecordingChannel()
    channel.failures = [TemporaryDeliveryError("503")] * 5
    queue(db, "hello", with_ticket=True)
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS)
    await run_until(worker, lambda: statuses(db) == [OutboxStatus.DEAD])
    assert channel.sent == []
    with db.transaction() as session:
        assert "delivery_failed" in [e.kind for e in session.scalars(select(TicketEvent))]


async def test_permanent_failure_is_not_retried(db: Database) -> None:
    channel = RecordingChannel()
    channel.failures = [PermanentDeliveryError("channel_not_found")]
    queue(db, "hello")
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS)
    await worker.deliver_due()
    assert statuses(db) == [OutboxStatus.DEAD]


async def test_a_timed_out_send_is_marked_unknown_and_not_resent(db: Database) -> None:
    sends = 0

    class Slow(RecordingChannel):
        async def send(self, reply: OutboundReply) -> None:
            nonlocal sends
            sends += 1
            await asyncio.sleep(5)

    queue(db, "hello")
    worker = OutboxWorker(db=db, senders={"test": Slow()}, settings=SETTINGS)
    await worker.deliver_due()
    await worker.deliver_due()
    assert sends == 1
    assert statuses(db) == [OutboxStatus.UNKNOWN]
    with db.transaction() as session:
        assert outbox.retry_unknown(session) == 1
    assert statuses(db) == [OutboxStatus.PENDING]


async def test_unknown_from_the_channel_is_recorded(db: Database) -> None:
    channel = RecordingChannel()
    channel.failures = [DeliveryOutcomeUnknown("connection reset after sending")]
    queue(db, "hello")
    await OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS).deliver_due()
    assert statuses(db) == [OutboxStatus.UNKNOWN]


async def test_a_claim_abandoned_by_a_dead_worker_becomes_unknown(db: Database) -> None:
    queue(db, "hello")
    with db.transaction() as session:
        outbox.claim_due(session, channels=["test"], now=utcnow(), lease=timedelta(seconds=-1))
    channel = RecordingChannel()
    await OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS).deliver_due()
    assert channel.sent == []
    assert statuses(db) == [OutboxStatus.UNKNOWN]


async def test_replies_of_one_conversation_stay_in_order_across_a_retry(db: Database) -> None:
    channel = RecordingChannel()
    channel.failures = [TemporaryDeliveryError("429", retry_after=0.05)]
    queue(db, "first", "second", "third")
    queue(db, "other", conversation_id="c2")
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS)
    await run_until(worker, lambda: len(channel.sent) == 4)
    mine = [r.text for r in channel.sent if r.conversation.conversation_id == "c1"]
    assert mine == ["first", "second", "third"]


async def test_only_channels_this_process_runs_are_claimed(db: Database) -> None:
    queue(db, "hello")
    worker = OutboxWorker(db=db, senders={"elsewhere": RecordingChannel("elsewhere")}, settings=SETTINGS)
    assert await worker.deliver_due() == 0
    assert statuses(db) == [OutboxStatus.PENDING]


async def test_stop_flushes_what_is_due(db: Database) -> None:
    channel = RecordingChannel()
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=OutboxSettings(poll_interval_seconds=60))
    worker.start()
    queue(db, "one", "two")
    await worker.stop(timeout=5)
    assert [r.text for r in channel.sent] == ["one", "two"]
