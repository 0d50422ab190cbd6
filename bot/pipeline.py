"""The conversation pipeline: persist, route by owner, decide, reply through the outbox.

For every inbound message:
1. ``accept`` commits it, deduplicated by (channel, channel message id), and
   only then returns: the channel acknowledges the platform after this.
2. A worker routes it by the conversation's owner: ``bot`` asks the tier-0
   agent; ``queue`` and ``agent`` record it on the ticket (the bot stays
   silent for an agent); ``closed`` starts a new round with the bot.
3. The reply and the state change commit together with ``processed_at``; the
   outbox worker delivers the reply. A crash anywhere leaves either an
   unprocessed message (picked up again at start) or a committed reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import ParamSpec, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import messages, telemetry
from bot.agent import AgentState, Close, Escalate, Outcome, Tier0Agent, Turn
from bot.backpressure import InboundLimit
from bot.channel import Acceptance, InvalidMessage, MessageTooLong, Receipt
from bot.config import Settings
from bot.logs import log_context, message_request_id
from bot.model import Action, InboundMessage
from bot.outgoing import conversation_ref, queue_reply
from bot.replies import notice, reply_for_decision
from bot.service_rules import ServiceRules
from ticketing import csat, service
from ticketing.approvals import Decision, parse_decision
from ticketing.clock import utcnow
from ticketing.conversations import (
    find_inbound_message,
    get_or_create_conversation,
    get_or_create_requester,
    record_inbound_message,
    unprocessed_inbound_message_ids,
)
from ticketing.db import Database
from ticketing.models import Conversation, Direction, Message, Owner, Ticket

log = logging.getLogger(__name__)

# How often to look for accepted messages that no worker has (after a restart,
# a full queue, or a failed attempt).
SWEEP_INTERVAL_SECONDS = 5.0
# Threads for the workers' database steps: short, and on SQLite one writer at a time anyway.
DB_THREADS = 4
HISTORY_TURNS = 20


_P = ParamSpec("_P")
_T = TypeVar("_T")

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """Text any database accepts: NUL (refused by PostgreSQL) and lone surrogates
    (not encodable as UTF-8) become U+FFFD, so the message is kept, not refused."""
    return _UNSTORABLE.sub("\ufffd", text)


class _Threads:
    """A thread pool for blocking calls from the event loop, started on first use (log context included)."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._size, thread_name_prefix=self._name)
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def shutdown(self) -> None:
        # Called once the workers stopped: nothing waits for these threads any more.
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


@dataclass(frozen=True)
class _Snapshot:
    owner: str
    text: str
    action: str | None
    auto_reply: bool
    state: AgentState
    history: tuple[str, ...]

    @property
    def rating(self) -> int | None:
        """The score of a pressed rating button ("rate:4"), else None."""
        if self.action and self.action.startswith(f"{Action.RATE}:"):
            score = self.action.partition(":")[2]
            return int(score) if score.isdigit() else 0
        return None

    @property
    def approval(self) -> Decision | None:
        """An approver's "approve TZ-1042" / "reject TZ-1042 <reason>", where the bot would otherwise answer."""
        if self.action or not self.auto_reply or self.owner not in (Owner.BOT, Owner.CLOSED):
            return None
        return parse_decision(self.text)


class Pipeline:
    def __init__(
        self,
        *,
        db: Database,
        agent: Tier0Agent,
        settings: Settings,
        on_reply_queued: Callable[[], None] = lambda: None,
        service_rules: ServiceRules | None = None,
    ) -> None:
        self._db = db
        self._agent = agent
        self._settings = settings
        # Routing, SLA due times, approvals, reopening (issue 6); keyword rules only unless given an embedder.
        self._rules = service_rules or ServiceRules(settings.service_desk)
        self._on_reply_queued = on_reply_queued
        # Messages queued or being answered (_in_flight) plus those being stored number at most
        # pipeline.max_pending; at that many accept() refuses (Overloaded). That bounds the queue too.
        self._limit = InboundLimit(settings.pipeline.max_pending)
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._in_flight: set[int] = set()  # ids queued or being answered
        self._done: dict[int, asyncio.Future[int]] = {}
        self._conversation_ids: dict[int, int] = {}  # message -> conversation, known from accept()
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}  # conversation -> (lock, users)
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[object]] = set()
        self._stopping = asyncio.Event()
        self._channels: list[str] = []
        # The agent's decisions (and routing's embedding) run on threads of their own, one per worker:
        # asyncio's default pool has only min(32, cores + 4) threads, which would cap how many questions
        # reach the encoder's micro-batches at once. The workers' database steps get a few threads of
        # their own too, so that accept() (and with it the channels' acknowledgements) never queues
        # behind them in the default pool.
        self._agent_threads = _Threads(settings.pipeline.workers, "pipeline-agent")
        self._db_threads = _Threads(min(settings.pipeline.workers, DB_THREADS), "pipeline-db")

    @property
    def queue_length(self) -> int:
        """Accepted messages waiting for a worker (a metric)."""
        return self._queue.qsize()

    # -- accepting -----------------------------------------------------------

    def validate(self, message: InboundMessage) -> None:
        text = message.text.strip()
        if not text and not message.attachments and not message.action:
            raise InvalidMessage(messages.EMPTY_MESSAGE)
        limit = self._settings.pipeline.max_message_chars
        if len(message.text) > limit:
            raise MessageTooLong(messages.MESSAGE_TOO_LONG.format(length=len(message.text), limit=limit))

    async def accept(self, message: InboundMessage) -> Receipt:
        """Commit the message and queue it for an answer.

        Raises InvalidMessage, or Overloaded (nothing stored) while pipeline.max_pending
        messages wait for an answer. A redelivery is refused then too: a database lookup
        per refusal would load what is already overloaded, and its retry is recognised later.
        """
        message = replace(message, text=storable_text(message.text))
        self.validate(message)
        with self._limit.slot(len(self._in_flight)):
            receipt = await asyncio.to_thread(self._persist, message)
        if receipt.status is Acceptance.ACCEPTED:
            handled = asyncio.get_running_loop().create_future()
            self._done[receipt.message_id] = handled
            self._conversation_ids[receipt.message_id] = receipt.conversation_id
            receipt = replace(receipt, handled=handled)
            self._schedule(receipt.message_id)
        return receipt

    def _persist(self, message: InboundMessage) -> Receipt:
        with self._db.transaction() as session:
            requester = get_or_create_requester(
                session,
                channel=message.sender.channel,
                platform_id=message.sender.platform_id,
                display_name=message.sender.display_name,
                email=message.sender.email,
            )
            conversation = get_or_create_conversation(
                session,
                channel=message.conversation.channel,
                channel_conversation_id=message.conversation.conversation_id,
                thread_id=message.conversation.thread_id,
                requester=requester,
            )
            row = record_inbound_message(
                session,
                conversation=conversation,
                channel=message.conversation.channel,
                channel_message_id=message.channel_message_id,
                author_id=message.sender.platform_id,
                text=message.text,
                attachments=[a.__dict__ for a in message.attachments],
                raw=dict(message.raw) if message.raw is not None else None,
                received_at=message.received_at,
                # Silent messages (auto-replies, bounces, "bot added") are kept apart from what
                # requesters ask: not in the agent's history, not counted as questions in metrics.
                author_kind="requester" if message.auto_reply else "automatic",
            )
            if row is None:
                existing = find_inbound_message(
                    session, channel=message.conversation.channel, channel_message_id=message.channel_message_id
                )
                assert existing is not None
                return Receipt(Acceptance.DUPLICATE, existing.id, existing.conversation_id)
            # The button's action travels with the stored message, so a restart keeps it.
            parts: dict[str, object] = {}
            if message.action:
                parts["action"] = message.action
            if not message.auto_reply:
                parts["auto_reply"] = False
            row.parts = parts
            if message.channel_data:
                conversation.channel_data = {**(conversation.channel_data or {}), **message.channel_data}
            session.flush()
            return Receipt(Acceptance.ACCEPTED, row.id, conversation.id)

    # -- workers ---------------------------------------------------------------

    async def start(self, *, channels: list[str]) -> None:
        """Start workers for messages of ``channels`` and pick up what a previous run left."""
        self._channels = list(channels)
        for number in range(self._settings.pipeline.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"pipeline-worker-{number}"))
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="pipeline-sweeper"))

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Finish queued work (up to ``timeout``), then stop the workers."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning(
                "pipeline stopped with %s messages still queued; they resume at next start", self._queue.qsize()
            )
        self._stopping.set()
        # Idle tasks only wait: cancel them. Busy ones finish what they hold, because their
        # database work runs in a thread that a cancellation would orphan mid-transaction.
        for task in self._tasks:
            if task not in self._busy:
                task.cancel()
        _, late = await asyncio.wait(self._tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._agent_threads.shutdown()
        self._db_threads.shutdown()

    async def sweep(self) -> int:
        """Queue every accepted-but-unanswered message that no worker holds."""
        ids = await asyncio.to_thread(self._unprocessed_ids)
        queued = 0
        for message_id in ids:
            if message_id not in self._in_flight and self._schedule(message_id):
                queued += 1
        return queued

    def _unprocessed_ids(self) -> list[int]:
        with self._db.transaction() as session:
            return unprocessed_inbound_message_ids(session, channels=self._channels)

    def _schedule(self, message_id: int) -> bool:
        if message_id in self._in_flight:
            return False
        if self._limit.full(len(self._in_flight)):
            # Stays unprocessed in the database; the sweeper comes back for it. (A message that
            # accept() just stored always fits: its place was held while it was stored.)
            return False
        self._queue.put_nowait(message_id)
        self._in_flight.add(message_id)
        return True

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            with self._busy_while():
                try:
                    await self.sweep()
                except Exception:
                    log.exception("pipeline sweep failed; retrying in %ss", SWEEP_INTERVAL_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SWEEP_INTERVAL_SECONDS)

    async def _work(self) -> None:
        while not self._stopping.is_set():
            message_id = await self._queue.get()
            replies = 0
            with self._busy_while(), log_context(request_id=message_request_id(message_id), message_id=message_id):
                try:
                    replies = await self.process(message_id)
                except Exception:
                    # The message stays unprocessed and the sweeper retries it later.
                    log.exception("processing message %s failed", message_id)
                finally:
                    self._resolve(message_id, replies)
                    self._in_flight.discard(message_id)
                    self._limit.answered()
                    self._queue.task_done()

    @contextlib.contextmanager
    def _busy_while(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._busy.add(task)
        try:
            yield
        finally:
            self._busy.discard(task)

    def _resolve(self, message_id: int, replies: int) -> None:
        self._conversation_ids.pop(message_id, None)
        future = self._done.pop(message_id, None)
        if future is not None and not future.done():
            future.set_result(replies)

    # -- processing --------------------------------------------------------------

    @telemetry.timed_processing
    async def process(self, message_id: int) -> int:
        """Answer one accepted message; returns how many replies were queued."""
        # Known when accept() stored it; looked up for what the sweeper found.
        conversation_id = self._conversation_ids.pop(message_id, None)
        if conversation_id is None:
            conversation_id = await self._db_threads.run(self._conversation_of, message_id)
        async with self._conversation_lock(conversation_id):
            for _ in range(3):
                snapshot = await self._db_threads.run(self._snapshot, message_id)
                if snapshot is None:
                    return 0  # already processed (redelivery raced us, or another replica)
                outcome = None
                if not snapshot.auto_reply or snapshot.rating is not None or snapshot.approval is not None:
                    pass  # recorded without asking the agent
                elif snapshot.owner in (Owner.BOT, Owner.CLOSED):
                    turn = Turn(
                        text=snapshot.text,
                        action=snapshot.action,
                        state=snapshot.state if snapshot.owner == Owner.BOT else AgentState(),
                        history=snapshot.history,
                    )
                    outcome = await self._agent_threads.run(self._agent.decide, turn)
                    if isinstance(outcome.decision, Escalate):
                        # Routing embeds the ticket's text: do it now, not while holding the write lock.
                        decision = outcome.decision
                        await self._agent_threads.run(
                            self._rules.prepare, subject=decision.subject, description=decision.summary
                        )
                queued = await self._db_threads.run(self._apply, message_id, snapshot, outcome)
                if queued is not None:
                    if outcome is not None:
                        telemetry.count_decision(outcome.decision)
                    if queued:
                        self._on_reply_queued()
                    return queued
                # The owner or state changed while the agent was thinking (an agent took over, or another
                # replica answered an earlier message of this conversation): route again.
            raise RuntimeError(f"message {message_id}: conversation kept changing; the sweeper retries it")

    @contextlib.asynccontextmanager
    async def _conversation_lock(self, conversation_id: int) -> AsyncIterator[None]:
        """One message at a time per conversation; the lock is dropped when nobody needs it."""
        lock, users = self._locks.get(conversation_id, (asyncio.Lock(), 0))
        self._locks[conversation_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)

    def _conversation_of(self, message_id: int) -> int:
        with self._db.transaction() as session:
            conversation_id = session.scalar(select(Message.conversation_id).where(Message.id == message_id))
            if conversation_id is None:
                raise LookupError(f"message {message_id} does not exist")
            return conversation_id

    def _snapshot(self, message_id: int) -> _Snapshot | None:
        with self._db.transaction() as session:
            message = session.get(Message, message_id)
            if message is None or message.processed_at is not None:
                return None
            conversation = session.get(Conversation, message.conversation_id)
            assert conversation is not None
            state = AgentState.from_json(conversation.agent_state)
            history = session.scalars(
                select(Message.text)
                .where(
                    Message.conversation_id == conversation.id,
                    Message.direction == Direction.INBOUND,
                    Message.author_kind == "requester",
                    Message.id < message.id,
                    Message.id > state.round_start,
                )
                .order_by(Message.id.desc())
                .limit(HISTORY_TURNS)
            )
            parts = message.parts or {}
            return _Snapshot(
                owner=conversation.owner,
                text=message.text,
                action=parts.get("action"),
                auto_reply=parts.get("auto_reply", True),
                state=state,
                history=tuple(reversed(list(history))),
            )

    def _apply(self, message_id: int, snapshot: _Snapshot, outcome: Outcome | None) -> int | None:
        """Commit the consequence of one message; None if the owner changed meanwhile."""
        with self._db.transaction() as session:
            message = session.get(Message, message_id, with_for_update=True)
            if message is None or message.processed_at is not None:
                return 0
            conversation = session.get(Conversation, message.conversation_id, with_for_update=True)
            assert conversation is not None
            # The conversation lock is per process: another replica may have committed a turn of this
            # conversation since the snapshot. The row lock above orders the commits; a changed owner or
            # agent state means the decision was made on stale state, so route again from the new one.
            if conversation.owner != snapshot.owner or AgentState.from_json(conversation.agent_state) != snapshot.state:
                return None
            message.processed_at = utcnow()
            if snapshot.rating is not None:
                return self._apply_rating(session, conversation, message, snapshot.rating)
            if snapshot.approval is not None:
                text = self._rules.decide_from_message(
                    session, conversation=conversation, decision=snapshot.approval, now=utcnow()
                )
                queue_reply(session, conversation=conversation, reply=notice(conversation_ref(conversation), text))
                return 1
            if snapshot.auto_reply and self._reopen_recently_resolved(session, conversation, message):
                return self._apply_human_owned(session, conversation, message)
            if outcome is not None:
                return self._apply_decision(session, conversation, message, outcome)
            return self._apply_human_owned(session, conversation, message, auto_reply=snapshot.auto_reply)

    def _apply_decision(self, session: Session, conversation: Conversation, message: Message, outcome: Outcome) -> int:
        decision = outcome.decision
        # The agent does not track rounds; keep where the current one started.
        state = replace(outcome.state, round_start=AgentState.from_json(conversation.agent_state).round_start)
        if conversation.owner == Owner.CLOSED:
            conversation.owner = Owner.BOT  # a message after closing starts a new round
            conversation.resolved_by = conversation.resolved_at = None
        ticket = None
        if isinstance(decision, Escalate):
            ticket = service.open_ticket(
                session,
                conversation=conversation,
                subject=decision.subject,
                description=decision.summary,
                actor="bot",
                channel=conversation.channel,
                number_prefix=self._settings.tickets.number_prefix,
                first_number=self._settings.tickets.first_number,
                reason=decision.reason,
            )
            self._rules.ticket_opened(session, ticket=ticket, conversation=conversation)
        elif isinstance(decision, Close):
            conversation.owner = Owner.CLOSED
            conversation.resolved_at = utcnow()
            conversation.resolved_by = "bot" if decision.solved_by_bot else "requester"
            state = replace(state, round_start=message.id)
        conversation.agent_state = state.to_json()
        reply = reply_for_decision(decision, conversation=conversation_ref(conversation), ticket=ticket)
        queue_reply(session, conversation=conversation, reply=reply)
        return 1

    def _apply_rating(self, session: Session, conversation: Conversation, message: Message, score: int) -> int:
        ticket = session.get(Ticket, conversation.ticket_id) if conversation.ticket_id else None
        if ticket is None:
            return 0  # a rating button outside any ticket: nothing to rate
        try:
            # Text sent with the rating (a form's or card's comment box) is the optional comment.
            csat.record_csat(
                session,
                ticket=ticket,
                score=score,
                actor=f"requester:{message.author_id}",
                channel=message.channel,
                comment=csat.comment_of(message.text),
            )
        except service.TicketError as exc:
            text = str(exc)
        else:
            text = messages.CSAT_THANKS
        queue_reply(session, conversation=conversation, reply=notice(conversation_ref(conversation), text))
        return 1

    def _reopen_recently_resolved(self, session: Session, conversation: Conversation, message: Message) -> bool:
        """A requester's message soon after an agent resolved their ticket reopens it (csat.reopen_window_days)."""
        if conversation.owner != Owner.CLOSED or conversation.resolved_by in ("bot", "requester"):
            return False
        ticket = session.get(Ticket, conversation.ticket_id) if conversation.ticket_id else None
        now = utcnow()
        if ticket is None or not self._rules.reopens(ticket, now=now):
            return False
        csat.reopen(
            session,
            ticket=ticket,
            conversation=conversation,
            actor=f"requester:{message.author_id}",
            channel=message.channel,
            now=now,
        )
        return True

    def _apply_human_owned(
        self, session: Session, conversation: Conversation, message: Message, *, auto_reply: bool = True
    ) -> int:
        ticket = session.get(Ticket, conversation.ticket_id) if conversation.ticket_id else None
        if ticket is None or conversation.owner not in (Owner.QUEUE, Owner.AGENT):
            return 0
        service.add_event(
            session,
            ticket=ticket,
            actor=f"requester:{message.author_id}",
            channel=message.channel,
            kind="requester_message",
            detail={"message_id": message.id, **({} if auto_reply else {"auto_reply": False})},
        )
        if auto_reply:  # the requester answered: a ticket pending on them runs again
            self._rules.requester_wrote(
                session, ticket=ticket, actor=f"requester:{message.author_id}", channel=message.channel, now=utcnow()
            )
        state = dict(conversation.agent_state or {})
        # Waiting in the queue: confirm once that the message reached the ticket.
        if auto_reply and conversation.owner == Owner.QUEUE and state.get("queued_note_for") != ticket.number:
            conversation.agent_state = {**state, "queued_note_for": ticket.number}
            reply = notice(
                conversation_ref(conversation),
                messages.QUEUED_NOTE.format(number=ticket.number),
                ticket_number=ticket.number,
            )
            queue_reply(session, conversation=conversation, reply=reply)
            return 1
        return 0
