"""Delivers queued replies through their channels, with retries and backoff.

Replies of one conversation go out in order (only the oldest undelivered reply
of a conversation is claimed at a time); different conversations in parallel. A send that times out is recorded as
UNKNOWN, not retried: the platform may already show it, and a duplicate answer
is worse than a delayed one (``tierzero outbox retry`` resends after a look).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import telemetry
from bot.background import PollingLoop
from bot.channel import DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError
from bot.config import OutboxSettings
from bot.logs import log_context
from bot.model import OutboundReply
from ticketing import outbox, service
from ticketing.clock import utcnow
from ticketing.db import Database
from ticketing.models import Conversation, OutboxItem, Ticket

log = logging.getLogger(__name__)


class ReplySender(Protocol):
    @property
    def name(self) -> str: ...

    async def send(self, reply: OutboundReply) -> None: ...


def backoff_delay(
    attempts: int, *, settings: OutboxSettings, jitter: Callable[[], float], retry_after: float | None = None
) -> float:
    """Exponential backoff with jitter; a platform's Retry-After wins when it is longer."""
    base = settings.initial_backoff_seconds * 2 ** max(attempts - 1, 0)
    delay = min(base, settings.max_backoff_seconds) * (0.5 + jitter() / 2)
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True)
class _Claimed:
    item_id: int
    channel: str
    payload: dict[str, Any]
    attempts: int


class OutboxWorker:
    def __init__(
        self,
        *,
        db: Database,
        senders: Mapping[str, ReplySender],
        settings: OutboxSettings,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._db = db
        self._senders = dict(senders)
        self._settings = settings
        self._jitter = jitter
        self._loop = PollingLoop(
            self.deliver_due, interval=settings.poll_interval_seconds, name="outbox-worker", drain_on_stop=True
        )
        self._round = asyncio.Lock()  # held while a round claims and sends
        self._sent: list[tuple[int, asyncio.Future[None]]] = []  # delivered, not yet marked sent
        self._marking: asyncio.Task[None] | None = None
        self._paused = False

    def notify(self) -> None:
        """New replies were queued: deliver now rather than at the next poll."""
        self._loop.notify()

    def start(self) -> None:
        self._loop.start()

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Deliver what is due (up to ``timeout``), then stop."""
        self._paused = False
        if not await self._loop.stop(timeout=timeout):
            log.warning("outbox not flushed within %ss; the rest is sent at next start", timeout)

    async def pause(self, *, timeout: float = 10.0) -> None:
        """Let the round in progress finish (up to ``timeout``) and start none until ``resume()``.

        Channels close their connections when they stop; a send in flight through one would
        fail and wait for a retry after the restart. Pausing around ``channel.stop()`` avoids that.
        """
        self._paused = True
        try:
            await asyncio.wait_for(self._round.acquire(), timeout)
        except TimeoutError:
            log.warning("outbox: a send still in flight after %ss; stopping the channels anyway", timeout)
        else:
            self._round.release()

    def resume(self) -> None:
        self._paused = False
        self.notify()

    async def deliver_due(self) -> int:
        """One round: claim due replies, send them, record outcomes. Returns items handled."""
        if not self._senders or self._paused:
            return 0
        async with self._round:
            items = await asyncio.to_thread(self._claim)
            await asyncio.gather(*(self._deliver(item) for item in items))
            return len(items)

    def _claim(self) -> list[_Claimed]:
        now = utcnow()
        lease = timedelta(seconds=self._settings.send_timeout_seconds * 2 + 30)
        with self._db.transaction() as session:
            outbox.expire_stale_claims(session, now=now)
            claimed = outbox.claim_due(session, channels=list(self._senders), now=now, lease=lease)
            return [_Claimed(i.id, i.channel, i.payload, i.attempts) for i in claimed]

    async def _deliver(self, item: _Claimed) -> None:
        reply = OutboundReply.from_payload(item.payload)
        # The id of the work that queued the reply (msg-<id> for an answer), so its lines read together.
        request_id = item.payload.get("request_id") or f"outbox-{item.item_id}"
        with log_context(request_id=request_id, channel=item.channel):
            started = time.perf_counter()
            outcome = await self._send(self._senders[item.channel], reply)
            seconds = time.perf_counter() - started
            result = await self._record_outcome(item.item_id, item.attempts, outcome)
            telemetry.count_send(item.channel, result, seconds)

    async def _send(self, sender: ReplySender, reply: OutboundReply) -> Exception | None:
        try:
            await asyncio.wait_for(sender.send(reply), self._settings.send_timeout_seconds)
        except TimeoutError:
            return DeliveryOutcomeUnknown(f"no answer within {self._settings.send_timeout_seconds}s")
        except (TemporaryDeliveryError, PermanentDeliveryError, DeliveryOutcomeUnknown) as exc:
            return exc
        except Exception as exc:  # an adapter bug: treat as temporary, keep the reply
            log.exception("channel %s failed to send", sender.name)
            return TemporaryDeliveryError(f"{type(exc).__name__}: {exc}")
        return None

    async def _record_outcome(self, item_id: int, attempts: int, outcome: Exception | None) -> str:
        if outcome is not None:
            return await asyncio.to_thread(self._record, item_id, attempts, outcome)
        # Sends that succeed while an earlier batch is being marked are marked together:
        # one transaction (one fsync on SQLite) for the many replies of a busy round.
        marked = asyncio.get_running_loop().create_future()
        self._sent.append((item_id, marked))
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_sent_batches(), name="outbox-mark-sent")
        await marked
        return "sent"

    async def _mark_sent_batches(self) -> None:
        while self._sent:
            batch, self._sent = self._sent, []
            try:
                await asyncio.to_thread(self._mark_sent, [item_id for item_id, _ in batch])
            except Exception as exc:  # each waiting delivery reports it, as a lone _record would
                for _, marked in batch:
                    if not marked.done():
                        marked.set_exception(exc)
            else:
                for _, marked in batch:
                    if not marked.done():
                        marked.set_result(None)

    def _mark_sent(self, item_ids: list[int]) -> None:
        with self._db.transaction() as session:
            outbox.mark_sent_many(session, item_ids=item_ids)

    def _record(self, item_id: int, attempts: int, outcome: Exception | None) -> str:
        """Store the outcome of a send; returns it as sent, unknown, dead or retry."""
        with self._db.transaction() as session:
            if outcome is None:
                outbox.mark_sent(session, item_id=item_id)
                return "sent"
            error = str(outcome)[:1000]
            if isinstance(outcome, DeliveryOutcomeUnknown):
                outbox.mark_unknown(session, item_id=item_id, error=error)
                self._tell_agents(session, item_id, "delivery_unknown", error)
                return "unknown"
            elif isinstance(outcome, PermanentDeliveryError) or attempts >= self._settings.max_attempts:
                outbox.mark_dead(session, item_id=item_id, error=error)
                self._tell_agents(session, item_id, "delivery_failed", error)
                return "dead"
            else:
                retry_after = getattr(outcome, "retry_after", None)
                delay = self.backoff(attempts, retry_after=retry_after)
                outbox.schedule_retry(session, item_id=item_id, at=utcnow() + timedelta(seconds=delay), error=error)
                log.warning(
                    "outbox item %s: attempt %s failed (%s); retrying in %.1fs", item_id, attempts, error, delay
                )
                return "retry"

    def backoff(self, attempts: int, *, retry_after: float | None = None) -> float:
        return backoff_delay(attempts, settings=self._settings, jitter=self._jitter, retry_after=retry_after)

    def _tell_agents(self, session: Session, item_id: int, kind: str, error: str) -> None:
        """Put a failed delivery on the ticket's audit trail, where agents look."""
        ticket = session.scalar(
            select(Ticket)
            .join(Conversation, Conversation.ticket_id == Ticket.id)
            .join(OutboxItem, OutboxItem.conversation_id == Conversation.id)
            .where(OutboxItem.id == item_id)
        )
        log.error("outbox item %s: %s: %s", item_id, kind, error)
        if ticket is not None:
            service.add_event(
                session,
                ticket=ticket,
                actor="tierzero",
                channel="outbox",
                kind=kind,
                detail={"outbox_id": item_id, "error": error},
            )
