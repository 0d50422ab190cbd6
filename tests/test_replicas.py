"""Several replicas on one PostgreSQL: nothing answered twice, nothing lost, one index for all.

What makes replicas safe, each proven here:

* inbound dedupe is the database's unique key on (channel, direction, channel message id),
  so the same Slack event delivered to two replicas at once is stored once and answered once;
* outbox deliveries (and desk cards) are claimed with ``FOR UPDATE SKIP LOCKED``: a row
  another replica holds is skipped, never sent twice;
* the pipeline's per-conversation lock is per process; across replicas the conversation row
  lock plus a check that the owner and agent state did not change since the decision keep two
  turns of one conversation from overwriting each other;
* index writers hold ``<index_dir>/.lock``; readers swap in a new generation atomically.

The end-to-end test starts two real ``tierzero run`` processes on one private PostgreSQL
schema and one shared index folder, both talking to one fake Slack Web API served here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
import yaml
from sqlalchemy import func, select, text

from bot.agent import AgentState, Greet, Outcome, Turn
from bot.model import ConversationRef, InboundMessage, Participant
from bot.pipeline import Pipeline
from kb_index.index import KnowledgeIndex
from kb_index.lexical import tokenize
from kb_index.store import read_index
from tests.channels.slack.conftest import dm, event_body, slack_config
from tests.channels.slack.fake_slack import FakeSlack, signed_headers
from tests.conftest import POSTGRES_URL_ENV, REPO_ROOT, make_settings
from ticketing import outbox
from ticketing.clock import utcnow
from ticketing.db import Database, private_schema
from ticketing.models import Conversation, Direction, Message, OutboxItem, OutboxStatus, Ticket

TIERZERO = str(Path(sys.executable).parent / "tierzero")
TRIAGE = "C0TRIAGE1"
FIRST_ARTICLES = ("vpn-keeps-disconnecting.md", "account-locked-out.md", "add-a-printer.md")
NEW_ARTICLE = "guest-wifi-for-visitors.md"
WAIT_SECONDS = 60.0


def until(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- the index writer lock ------------------------------------------------------------------------


class _GatedEmbedder:
    """Bag-of-words vectors; ``encode`` can be held at a gate to keep a sync inside its write."""

    model_id = "test-gated-embedder"
    dimension = 64

    def __init__(self, gate: threading.Event | None = None, entered: threading.Event | None = None) -> None:
        self.gate, self.entered = gate, entered
        self.encoded: list[str] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if self.entered is not None:
            self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT_SECONDS)
        self.encoded.extend(texts)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, passage in enumerate(texts):
            for token in tokenize(passage) or ["-"]:
                vectors[row, zlib.crc32(token.encode()) % self.dimension] += 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_two_writers_of_one_index_write_one_after_the_other(tmp_path: Path) -> None:
    """Two replicas starting at once on a shared index folder: the second waits for the first's
    write, then reuses it (embeds nothing) instead of deleting its vectors file mid-write."""
    kb = tmp_path / "kb"
    kb.mkdir()
    for name in FIRST_ARTICLES:
        shutil.copy(REPO_ROOT / "kb" / name, kb / name)
    index_dir = tmp_path / "index"
    gate, entered = threading.Event(), threading.Event()
    first = KnowledgeIndex(index_dir=index_dir, embedder=_GatedEmbedder(gate, entered))
    second_embedder = _GatedEmbedder()
    second = KnowledgeIndex(index_dir=index_dir, embedder=second_embedder)

    with ThreadPoolExecutor(2) as pool:
        first_sync = pool.submit(first.sync, kb)
        assert entered.wait(WAIT_SECONDS)  # the first writer holds the lock, busy embedding
        second_sync = pool.submit(second.sync, kb)
        time.sleep(0.3)
        assert not second_sync.done(), "the second writer did not wait for the first"
        gate.set()
        first_report, second_report = first_sync.result(WAIT_SECONDS), second_sync.result(WAIT_SECONDS)

    assert first_report.added == len(FIRST_ARTICLES)
    assert (second_report.added, second_report.unchanged) == (0, len(FIRST_ARTICLES))
    assert second_embedder.encoded == []
    stored = read_index(index_dir)  # complete and consistent: every vectors file it names exists
    assert len(stored.articles) == len(FIRST_ARTICLES)
    assert len(list(index_dir.glob("vectors-*.faiss"))) == 1


def test_a_forced_rebuild_embeds_everything_again(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    shutil.copy(REPO_ROOT / "kb" / FIRST_ARTICLES[0], kb / FIRST_ARTICLES[0])
    index_dir = tmp_path / "index"
    KnowledgeIndex(index_dir=index_dir, embedder=_GatedEmbedder()).sync(kb)
    rebuild_embedder = _GatedEmbedder()
    report = KnowledgeIndex(index_dir=index_dir, embedder=rebuild_embedder, reuse_stored=False).sync(kb)
    assert report.added == 1 and rebuild_embedder.encoded


# -- one conversation, two replicas, in-process ----------------------------------------------------


class _CountingAgent:
    """Counts turns in the agent state. Its first two decisions wait for each other, so the two
    replicas both decide from the same snapshot before either commits."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=WAIT_SECONDS)
        self.calls = 0
        self._lock = threading.Lock()

    def decide(self, turn: Turn) -> Outcome:
        with self._lock:
            self.calls += 1
            first_two = self.calls <= 2
        if first_two:
            self.barrier.wait()
        return Outcome(Greet(), replace(turn.state, unhelpful_turns=turn.state.unhelpful_turns + 1))


def _inbound(number: int) -> InboundMessage:
    return InboundMessage(
        channel_message_id=f"same-conversation-{number}",
        conversation=ConversationRef("test", "c1"),
        sender=Participant("test", "U1", display_name="Alice"),
        text=f"message {number}",
    )


# Replicas need PostgreSQL: SQLite (pysqlite) reads outside the write transaction, so it has no row locks to order them.
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_answering_one_conversation_never_lose_a_turn(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    agent = _CountingAgent()  # shared: the two replicas' decisions meet at its barrier
    databases = [Database(database_url), Database(database_url)]
    replicas = [Pipeline(db=db, agent=agent, settings=settings) for db in databases]  # type: ignore[arg-type]
    try:
        receipts = [await replica.accept(_inbound(n)) for n, replica in enumerate(replicas)]
        queued = await asyncio.gather(
            *(r.process(receipt.message_id) for r, receipt in zip(replicas, receipts, strict=True))
        )
        assert queued == [1, 1]
        with databases[0].transaction() as session:
            state = AgentState.from_json(session.scalars(select(Conversation.agent_state)).one())
            unprocessed = session.scalar(select(func.count()).where(Message.processed_at.is_(None)))
        # Without the state check, the later commit overwrites the earlier turn: 1 instead of 2.
        assert state.unhelpful_turns == 2
        assert unprocessed == 0
        assert agent.calls == 3  # the replica that lost the race decided once more, on fresh state
    finally:
        for db in databases:
            db.dispose()


# -- PostgreSQL: SKIP LOCKED claims ----------------------------------------------------------------


@pytest.mark.postgres
def test_outbox_claims_skip_rows_another_replica_holds(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        with db.transaction() as session:
            session.execute(text("TRUNCATE outbox, message, conversation, requester RESTART IDENTITY CASCADE"))
        with db.transaction() as session:
            from ticketing.conversations import get_or_create_conversation, get_or_create_requester

            for number in range(4):
                requester = get_or_create_requester(session, channel="test", platform_id=f"U{number}")
                conversation = get_or_create_conversation(
                    session, channel="test", channel_conversation_id=f"c{number}", thread_id=None, requester=requester
                )
                message = Message(
                    conversation_id=conversation.id, direction=Direction.OUTBOUND, channel="test", author_kind="bot"
                )
                session.add(message)
                session.flush()
                outbox.enqueue(session, conversation=conversation, message=message, payload={"n": number})
        lease = timedelta(minutes=1)
        # Replica A claims and is still sending (its transaction open); replica B claims meanwhile.
        with db.transaction() as first:
            held = outbox.claim_due(first, channels=["test"], now=utcnow(), lease=lease, limit=2)
            with db.transaction() as second:
                taken = outbox.claim_due(second, channels=["test"], now=utcnow(), lease=lease)
            assert len(held) == 2 and len(taken) == 2
            assert {i.id for i in held}.isdisjoint({i.id for i in taken})
        with db.transaction() as session:
            statuses = session.scalars(select(OutboxItem.status)).all()
            assert statuses == [OutboxStatus.SENDING] * 4
    finally:
        db.dispose()


# -- two real `tierzero run` replicas ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ThreadedServer:
    """The fake Slack Web API under uvicorn, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="off", log_config=None, ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="fake-slack", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        until(lambda: self.server.started, "the fake Slack API to start", timeout=15)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def replica_database() -> Iterator[str]:
    """A private PostgreSQL schema for the replicas, migrated by the replicas themselves."""
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"PostgreSQL variant skipped: set {POSTGRES_URL_ENV} (CI sets it)")
    with private_schema(base, prefix="tz_replicas") as url:
        yield url


@dataclass
class Replicas:
    urls: list[str]
    fake: FakeSlack
    db: Database
    home: Path
    config: Path
    kb: Path
    _ts: Iterator[int] = itertools.count(1)

    def next_ts(self) -> str:
        return f"1720000{next(self._ts):03d}.000300"

    def post(self, replica: int, body: dict[str, Any], *, retry: int | None = None) -> httpx.Response:
        raw = json.dumps(body)
        headers = signed_headers(raw)
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return httpx.post(f"{self.urls[replica]}/slack/events", content=raw, headers=headers, timeout=30)

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        return [c.args for c in self.fake.calls_to("chat.postMessage", channel=channel, thread_ts=thread_ts)]

    def settle(self) -> None:
        """Wait until every accepted message is processed and no reply is waiting to be sent:
        from then on no further chat.postMessage can come, so counts are final."""

        def idle() -> bool:
            with self.db.transaction() as session:
                unprocessed = session.scalar(
                    select(func.count()).where(Message.direction == Direction.INBOUND, Message.processed_at.is_(None))
                )
                sending = session.scalar(
                    select(func.count()).where(OutboxItem.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]))
                )
            return unprocessed == 0 and sending == 0

        until(idle, "both replicas to finish their work")

    def stored(self, ts: str) -> int:
        with self.db.transaction() as session:
            return int(
                session.scalar(
                    select(func.count()).where(
                        Message.direction == Direction.INBOUND, Message.channel_message_id.like(f"%:{ts}")
                    )
                )
                or 0
            )


def _write_config(home: Path, *, database_url: str, api_url: str, port: int = 8080) -> Path:
    settings = {
        "data_dir": str(home / "data"),  # shared by both replicas, as the compose volume is
        "log_level": "WARNING",
        "database": {"url": database_url},
        "kb": {"path": str(home / "kb"), "auto_index": True},
        "server": {"host": "127.0.0.1", "port": port},
        "outbox": {"poll_interval_seconds": 0.2},
        "channels": {"slack": slack_config(f"{api_url}/api/", triage_channel=TRIAGE)},
    }
    path = home / f"config-{port}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TIERZERO_DATABASE_URL"} | {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def replicas(replica_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    home = tmp_path_factory.mktemp("replicas")
    kb = home / "kb"
    kb.mkdir()
    for name in FIRST_ARTICLES:
        shutil.copy(REPO_ROOT / "kb" / name, kb / name)
    fake = FakeSlack(users={f"U0USER{n:03d}": f"User {n}" for n in range(50)})
    with _ThreadedServer(fake.asgi()) as api_url:
        ports = [free_port(), free_port()]
        configs = [_write_config(home, database_url=replica_database, api_url=api_url, port=p) for p in ports]
        processes = []
        logs = []
        # Both start at once with no index: both find it missing, the index lock makes them build it in turn.
        for number, config in enumerate(configs):
            log = (home / f"replica-{number}.log").open("w")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [TIERZERO, "--config", str(config), "run"],
                    env=_environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        db = Database(replica_database)
        try:
            for process, url, number in zip(processes, urls, range(2), strict=True):
                _wait_ready(url, process, home / f"replica-{number}.log")
            yield Replicas(urls, fake, db, home, configs[0], kb)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            for log in logs:
                log.close()
            db.dispose()
        for number, process in enumerate(processes):
            output = (home / f"replica-{number}.log").read_text()
            assert process.returncode == 0, output
            assert "Traceback" not in output, output


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"replica exited early: {log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"replica did not become ready: {log.read_text()}")


def _dm_event(replicas: Replicas, text_: str, user: int, ts: str | None = None) -> tuple[dict[str, Any], str, str]:
    ts = ts or replicas.next_ts()
    channel = f"D0USER{user:03d}"
    return event_body(dm(text_, ts=ts, user=f"U0USER{user:03d}", channel=channel)), channel, ts


@pytest.mark.postgres
@pytest.mark.slow
def test_the_same_event_at_both_replicas_gets_one_reply(replicas: Replicas) -> None:
    body, channel, ts = _dm_event(replicas, "my VPN keeps disconnecting", user=1)
    # Slack's first delivery and its retry land on different replicas at the same moment, plus a late retry.
    with ThreadPoolExecutor(4) as pool:
        sent = [
            pool.submit(replicas.post, 0, body),
            pool.submit(replicas.post, 1, body, retry=1),
            pool.submit(replicas.post, 1, body),
            pool.submit(replicas.post, 0, body, retry=2),
        ]
        statuses = [future.result().status_code for future in sent]
    assert statuses == [200, 200, 200, 200]
    until(lambda: replicas.replies(channel, ts), "the answer")
    assert replicas.post(1, body, retry=3).status_code == 200
    replicas.settle()
    [answer] = replicas.replies(channel, ts)
    assert "kb/vpn-keeps-disconnecting" in json.dumps(answer)
    assert replicas.stored(ts) == 1


@pytest.mark.postgres
@pytest.mark.slow
def test_distinct_events_spread_over_both_replicas_each_get_one_reply(replicas: Replicas) -> None:
    questions = ["my VPN keeps disconnecting", "I am locked out of my account", "how do I add a printer"]
    events = [_dm_event(replicas, questions[n % 3], user=10 + n) for n in range(12)]
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda n: replicas.post(n % 2, events[n][0]).status_code, range(len(events))))
    assert statuses == [200] * len(events)
    until(lambda: all(replicas.replies(channel, ts) for _, channel, ts in events), "an answer to every event")
    replicas.settle()
    assert [len(replicas.replies(channel, ts)) for _, channel, ts in events] == [1] * len(events)
    assert [replicas.stored(ts) for _, _, ts in events] == [1] * len(events)


@pytest.mark.postgres
@pytest.mark.slow
def test_an_escalation_at_both_replicas_opens_one_ticket_with_one_card(replicas: Replicas) -> None:
    body, channel, ts = _dm_event(replicas, "I need to talk to a person about my expenses", user=40)
    with ThreadPoolExecutor(2) as pool:
        assert [f.status_code for f in pool.map(lambda n: replicas.post(n, body, retry=n or None), (0, 1))] == [
            200,
            200,
        ]
    [escalation] = until(lambda: replicas.replies(channel, ts), "the escalation notice")
    replicas.settle()
    with replicas.db.transaction() as session:
        asked = select(Message.conversation_id).where(Message.channel_message_id.like(f"%:{ts}"))
        tickets = session.scalars(select(Ticket.number).where(Ticket.conversation_id.in_(asked))).all()
    assert len(tickets) == 1
    assert tickets[0] in escalation["text"]
    assert len(replicas.replies(channel, ts)) == 1

    def cards() -> list[Any]:
        return [
            c
            for c in replicas.fake.calls_to("chat.postMessage", channel=TRIAGE)
            if not c.args.get("thread_ts") and tickets[0] in json.dumps(c.args)
        ]

    until(cards, "the ticket's card in the triage channel")
    # Both replicas run the desk sync; the card row is claimed with SKIP LOCKED, so one posts it.
    until(lambda: _desk_idle(replicas.db), "the desk sync to catch up")
    assert len(cards()) == 1


def _desk_idle(db: Database) -> bool:
    from ticketing.models import DeskPost

    with db.transaction() as session:
        behind = session.scalar(
            select(func.count())
            .select_from(DeskPost)
            .join(Ticket, Ticket.id == DeskPost.ticket_id)
            .where((DeskPost.published_version < Ticket.version) | DeskPost.lease_until.is_not(None))
        )
    return behind == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_a_new_index_generation_reaches_both_replicas(replicas: Replicas) -> None:
    shutil.copy(REPO_ROOT / "kb" / NEW_ARTICLE, replicas.kb / NEW_ARTICLE)
    indexed = subprocess.run(
        [TIERZERO, "--config", str(replicas.config), "kb", "index"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert indexed.returncode == 0, indexed.stderr
    assert "1 added" in indexed.stdout

    def answers_from_new_article(replica: int) -> bool:
        body, channel, ts = _dm_event(replicas, "what is the guest Wi-Fi password for my visitor?", user=45 + replica)
        assert replicas.post(replica, body).status_code == 200
        [reply] = until(lambda: replicas.replies(channel, ts), "an answer")
        return "kb/guest-wifi-for-visitors" in json.dumps(reply)

    # Each replica polls the manifest every 2 s; ask each until it answers from the new article.
    for replica in (0, 1):
        until(lambda replica=replica: answers_from_new_article(replica), f"replica {replica} to use the new index", 30)
