"""Durability under crashes: SIGKILL a loaded server again and again, then check nothing was lost or doubled.

    python -m benchmarks.crash --json [--kills 5] [--database-url URL] [--concurrency N]

Starts the real server (``tierzero run`` with a generated config) with the Slack
channel, pointed at a fake Slack Web API, and the HTTP API channel, whose replies
are pushed to a fake webhook; both fakes run in this process and record every
delivery. Drivers post signed Slack DM events from many users and HTTP API
messages (a share off-topic, so tickets get opened), each in its own
conversation. At random moments the server is killed with SIGKILL and started
again on the same database; drivers retry every request that got no 2xx the way
Slack does (same event, ``X-Slack-Retry-Num``) or an integration would (same
``message_id``). After ``--kills`` kills the load stops, the server drains and is
stopped with SIGTERM, and the outcome is read from the database and the fakes:

- every acknowledged message is stored exactly once (none lost, none doubled);
- every stored question has exactly one reply delivered, or its reply is still
  in the outbox: ``pending`` (not yet sent), or ``unknown`` / ``sending``: a send
  that was in flight when the process died. The outbox never resends those blindly
  (the platform may already show them; a duplicate answer is worse than a late one):
  ``sending`` becomes ``unknown`` when its lease runs out, and an operator decides
  with ``tierzero outbox retry``. Whether the fake got them is reported;
- never two deliveries of one reply, never two tickets for one conversation.

The knowledge index of ``--kb`` is cached in ``--data-dir`` (default
``data/crash``), so only the first run embeds the KB; each run starts from an
empty database and leaves its config and server log in ``<data-dir>/run`` (one
run per data dir at a time). ``--fake-knowledge`` swaps the model and index for
the tests' fake retriever, so restarts take seconds (what tests/test_crash.py
runs). Prints a JSON report; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import uvicorn
import yaml
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.channels.slack.fake_slack import BOT_TOKEN, BOT_USER, SIGNING_SECRET, TEAM, FakeSlack, signed_headers
from ticketing.db import private_schema
from ticketing.models import Direction, Message, OutboxItem, OutboxStatus, Ticket

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "crash"
TIERZERO = Path(sys.executable).parent / "tierzero"
SLACK_EVENTS = "/slack/events"
API_MESSAGES = "/api/v1/messages"
# ``tierzero run`` with the tests' fake retriever in place of the embedding model and index.
FAKE_KNOWLEDGE_SERVER = """
import sys
from pathlib import Path
from bot.app import TierZero
from bot.config import load_settings
from bot.logs import configure_logging
from bot.server import serve
from tests.fixtures.fakes import it_retriever
settings = load_settings(Path(sys.argv[1]))
configure_logging(settings.log_level)
serve(TierZero(settings, retriever=it_retriever()))
"""

# Questions the demo KB answers, and requests it cannot (they open tickets).
ON_TOPIC = (
    "my VPN keeps disconnecting every few minutes",
    "I am locked out of my account after too many attempts",
    "how do I add a printer on my laptop",
    "outlook is not syncing my mail",
    "my laptop won't turn on",
    "the external monitor is not detected",
    "how do I set an out of office reply",
    "onedrive is not syncing",
    "I forgot my password, how do I reset it",
    "teams audio and video not working in calls",
    "how do I map a network drive",
    "my computer is very slow",
    "I clicked a phishing link",
    "my mailbox is full",
    "how do I share my calendar",
)
OFF_TOPIC = (
    "can you order pizza for the team friday",
    "please book me a flight to Lisbon next week",
    "who won the football match yesterday",
    "the coffee machine on floor 3 is leaking water everywhere",
    "I need a parking permit for my new car",
    "can someone water the plants in reception",
)


@dataclass(frozen=True)
class Options:
    kills: int = 5
    concurrency: int = 8
    rate: float = 10.0  # messages per second offered, across all drivers
    database_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    kb: Path = REPO_ROOT / "kb"
    min_uptime: float = 3.0  # seconds of load between a start and the next kill (random in between)
    max_uptime: float = 8.0
    tail_seconds: float = 3.0  # load after the last restart
    off_topic_share: float = 0.3
    http_share: float = 0.35  # the rest is Slack
    workers: int = 4
    drain_timeout: float = 300.0
    shutdown_timeout: float = 30.0
    start_timeout: float = 600.0  # the first start may embed the whole KB
    give_up_seconds: float = 120.0  # a driver stops retrying one message after this
    seed: int | None = None
    keep_schema: bool = False
    # Answer from a small fixed fake index instead of the embedding model and ``kb``: the
    # server then starts in about a second (for tests; what is checked does not depend on it).
    fake_knowledge: bool = False


# -- the fakes: Slack's Web API and an HTTP API webhook ---------------------------------------------------


@dataclass
class Fakes:
    """The other side of both channels; records each delivery with its idempotency key."""

    slack: FakeSlack = field(default_factory=FakeSlack)
    webhook: list[str] = field(default_factory=list)  # the Idempotency-Key of every webhook delivery
    # While held, webhook deliveries are recorded but answered only on release (or after
    # HOLD_SECONDS): a test keeps replies in flight this way. ``held`` counts those waiting.
    held: int = 0
    _holding: bool = False
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    HOLD_SECONDS: ClassVar[float] = 3.0

    def asgi(self) -> Starlette:
        return Starlette(routes=[*self.slack.asgi().routes, Route("/webhook", self._webhook, methods=["POST"])])

    def hold_webhook(self) -> None:
        self._release.clear()
        self._holding = True

    def release_webhook(self) -> None:
        self._holding = False
        self._release.set()

    async def _webhook(self, request: Request) -> Response:
        await request.body()
        self.webhook.append(request.headers.get("idempotency-key", ""))
        if self._holding:
            self.held += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.HOLD_SECONDS)
            self.held -= 1
        return JSONResponse({"ok": True})

    def deliveries(self) -> Counter[str]:
        """How often each reply (by idempotency key) reached the other side."""
        counts: Counter[str] = Counter(self.webhook)
        for call in self.slack.calls_to("chat.postMessage"):
            metadata = call.args.get("metadata")
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            key = ((metadata or {}).get("event_payload") or {}).get("idempotency_key", "")
            counts[key or f"slack-without-key:{call.args.get('channel')}:{call.args.get('thread_ts')}"] += 1
        return counts


@contextlib.asynccontextmanager
async def serving(asgi: Any) -> AsyncIterator[str]:
    """Serve ``asgi`` with uvicorn on a free loopback port in this event loop; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(asgi, lifespan="off", log_config=None, access_log=False, ws="none", http="h11")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the fake server stopped during start-up")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        listener.close()


# -- the server under test -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    folder: Path,
    *,
    port: int,
    fakes_url: str,
    database_url: str,
    kb: Path,
    index_dir: Path,
    workers: int = 4,
    shutdown_timeout: float = 30.0,
) -> Path:
    """A config for ``tierzero run``: Slack against the fake, the HTTP API pushing replies to the fake webhook."""
    settings = {
        "data_dir": str(folder / "data"),
        "log_level": "INFO",
        "database": {"url": database_url},
        "kb": {"path": str(kb), "index_dir": str(index_dir), "auto_index": True},
        "pipeline": {"workers": workers},
        # Short backoff: a retried send should not outlast the run; a short send timeout keeps
        # the lease of a send cut by a kill (2 x timeout + 30 s) as short as it gets.
        "outbox": {
            "poll_interval_seconds": 0.2,
            "initial_backoff_seconds": 0.2,
            "max_backoff_seconds": 2.0,
            "send_timeout_seconds": 5.0,
        },
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout_seconds": shutdown_timeout},
        "channels": {
            "http_api": {"webhook_url": f"{fakes_url}/webhook"},
            "slack": {
                "bot_token": BOT_TOKEN,
                "signing_secret": SIGNING_SECRET,
                "team_ids": [TEAM],
                "api_url": f"{fakes_url}/api/",
            },
        },
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


class ServerProcess:
    """``tierzero run`` as a child process; every start appends to one log file."""

    def __init__(self, config: Path, *, port: int, log_path: Path, fake_knowledge: bool = False) -> None:
        self.config = config
        self.command = (
            [sys.executable, "-c", FAKE_KNOWLEDGE_SERVER, str(config)]
            if fake_knowledge
            else [str(TIERZERO), "--config", str(config), "run"]
        )
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if k not in ("TIERZERO_DATABASE_URL", "TIERZERO_CONFIG")}
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
            )

    async def wait_ready(self, timeout: float) -> None:
        """Until ``/readyz`` answers 200; raises if the process exits or the time is up."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log_path}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.base_url}/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server was not ready within {timeout:.0f}s; see {self.log_path}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM and wait; the exit code, or None (then killed) if it did not exit within ``timeout``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


# -- the driver: posts messages and retries until each is acknowledged ----------------------------------


@dataclass
class Sent:
    """One message the driver offered, and what happened to its requests."""

    channel: str  # "slack" | "http_api"
    key: str  # the channel message id it is stored under (each message is its own conversation)
    body: dict[str, Any]
    attempts: int = 0
    acked: bool = False
    failures: list[str] = field(default_factory=list)  # why an attempt got no 2xx


class Driver:
    """``concurrency`` tasks posting messages at ``rate`` per second until ``stop()``."""

    def __init__(self, base_url: str, options: Options, rng: random.Random) -> None:
        self.base_url = base_url
        self.options = options
        self.rng = rng
        self.sent: list[Sent] = []
        self._stopping = asyncio.Event()
        self._numbers = itertools.count(1)
        self._next_send = time.monotonic()
        self._nonce = uuid.uuid4().hex[:8]

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.options.concurrency * 2)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5.0, limits=limits) as client:
            await asyncio.gather(*(self._work(client) for _ in range(self.options.concurrency)))

    async def _work(self, client: httpx.AsyncClient) -> None:
        while not self._stopping.is_set():
            # Pace all drivers together: one new message every 1/rate seconds.
            self._next_send = max(self._next_send + 1 / self.options.rate, time.monotonic())
            await asyncio.sleep(max(0.0, self._next_send - time.monotonic()))
            if self._stopping.is_set():
                return
            message = self.new_message()
            self.sent.append(message)
            await self._deliver(client, message)

    def new_message(self, channel: str | None = None) -> Sent:
        """A new question in its own conversation, on ``channel`` or on one picked at random."""
        number = next(self._numbers)
        topics = OFF_TOPIC if self.rng.random() < self.options.off_topic_share else ON_TOPIC
        question = self.rng.choice(topics)
        user = self.rng.randrange(1, 201)
        if channel is None:
            channel = "http_api" if self.rng.random() < self.options.http_share else "slack"
        if channel == "http_api":
            message_id = f"crash-{self._nonce}-{number}"
            body = {
                "requester_id": f"user-{user}",
                "message_id": message_id,
                "conversation_id": message_id,  # its own conversation: one question, one reply
                "text": question,
            }
            return Sent("http_api", message_id, body)
        user_id, dm = f"U0CR{user:05d}", f"D0CR{user:05d}"
        ts = f"{1_700_000_000 + number}.{int(self._nonce[:5], 16) % 1_000_000:06d}"
        event = {"type": "message", "channel_type": "im", "user": user_id, "text": question}
        event |= {"ts": ts, "event_ts": ts, "channel": dm}
        body = {
            "token": "legacy-verification-token",
            "team_id": TEAM,
            "api_app_id": "A0APP0001",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{self._nonce}{number:08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        }
        # A top-level DM is its own conversation: (DM channel, its ts).
        return Sent("slack", f"{TEAM}:{dm}:{ts}", body)

    async def _deliver(self, client: httpx.AsyncClient, message: Sent) -> None:
        """Post until a 2xx, retrying like the platform would; give up after ``give_up_seconds``."""
        deadline = time.monotonic() + self.options.give_up_seconds
        while True:
            message.attempts += 1
            delay = min(2.0, 0.1 * 2 ** min(message.attempts, 5)) * (0.5 + self.rng.random())
            try:
                response = await self.post(client, message)
            except httpx.TransportError as exc:
                message.failures.append(type(exc).__name__)
            else:
                if response.is_success:
                    message.acked = True
                    return
                message.failures.append(str(response.status_code))
                if response.status_code < 500 and response.status_code != 429:
                    return  # refused: a bug in this driver or the server, reported as not acknowledged
                with contextlib.suppress(ValueError):
                    delay = min(float(response.headers.get("retry-after", delay)), 2.0)
            if time.monotonic() + delay > deadline:
                return
            await asyncio.sleep(delay)

    async def post(self, client: httpx.AsyncClient, message: Sent) -> httpx.Response:
        """One attempt; a retry (``attempts`` > 1) of a Slack event carries Slack's retry headers."""
        raw = json.dumps(message.body)
        if message.channel == "http_api":
            return await client.post(API_MESSAGES, content=raw, headers={"Content-Type": "application/json"})
        headers = signed_headers(raw)
        if message.attempts > 1:
            # Slack's redelivery: the same body, a fresh signature, and the retry headers.
            reason = "http_timeout" if message.failures and "Timeout" in message.failures[-1] else "http_error"
            headers |= {"X-Slack-Retry-Num": str(message.attempts - 1), "X-Slack-Retry-Reason": reason}
        return await client.post(SLACK_EVENTS, content=raw, headers=headers)


# -- the database ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(options: Options, run_dir: Path) -> Iterator[str]:
    """The database of one run: SQLite in the run folder, or a private schema on the given PostgreSQL."""
    if not options.database_url:
        yield f"sqlite:///{run_dir / 'tierzero.db'}"
        return
    url = make_url(options.database_url)
    if url.get_backend_name() != "postgresql":
        yield options.database_url
        return
    with private_schema(options.database_url, prefix="tz_crash", keep=options.keep_schema) as schema_url:
        yield schema_url


def backlog(database_url: str) -> tuple[int, int]:
    """(inbound messages not answered yet, replies due in the outbox)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            unanswered = connection.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == Direction.INBOUND, Message.processed_at.is_(None))
            )
            pending = connection.scalar(
                select(func.count()).select_from(OutboxItem).where(OutboxItem.status == OutboxStatus.PENDING)
            )
        return int(unanswered or 0), int(pending or 0)
    finally:
        engine.dispose()


async def wait_for_drain(database_url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(backlog, database_url) == (0, 0):
                return True
        except Exception:  # tables not created yet, or a busy SQLite file: look again
            pass
        await asyncio.sleep(0.5)
    return False


# -- the verdict --------------------------------------------------------------------------------------


def verify(database_url: str, sent: list[Sent], deliveries: Counter[str]) -> dict[str, Any]:
    """Account for every message the driver offered, from the database and the fakes' records."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            inbound = connection.execute(
                select(Message.channel, Message.channel_message_id, Message.conversation_id, Message.processed_at)
                .where(Message.direction == Direction.INBOUND)
            ).all()  # fmt: skip
            outbox_rows = connection.execute(
                select(OutboxItem.conversation_id, OutboxItem.status, OutboxItem.payload).order_by(OutboxItem.id)
            ).all()
            ticket_rows = connection.execute(select(Ticket.conversation_id)).all()
    finally:
        engine.dispose()

    stored: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in inbound:
        stored[(row.channel, row.channel_message_id or "")].append(row)
    replies: dict[int, list[Any]] = defaultdict(list)
    for row in outbox_rows:
        replies[row.conversation_id].append(row)
    tickets_per_conversation = Counter(row.conversation_id for row in ticket_rows)

    counts: Counter[str] = Counter()
    in_outbox: Counter[str] = Counter()
    problems: list[str] = []
    offered = {(m.channel, m.key) for m in sent}
    for message in sent:
        rows = stored.get((message.channel, message.key), [])
        counts["stored"] += bool(rows)
        if not message.acked:
            counts["not_acked"] += 1
            counts["not_acked_but_stored"] += bool(rows)
            if not rows:
                continue
        if len(rows) > 1:
            counts["duplicates"] += 1
            problems.append(f"{message.key} stored {len(rows)} times")
        if not rows:
            counts["lost"] += 1
            problems.append(f"{message.key} was acknowledged but is not stored")
            continue
        if message.acked:
            counts["stored_exactly_once"] += len(rows) == 1
        row = rows[0]
        if row.processed_at is None:
            counts["unanswered"] += 1
            problems.append(f"{message.key} was never answered")
            continue
        items = replies.get(row.conversation_id, [])
        delivered = [deliveries.get(str(item.payload.get("idempotency_key")), 0) for item in items]
        if len(items) != 1:
            counts["no_reply" if not items else "several_replies_queued"] += 1
            problems.append(f"{message.key}: {len(items)} replies queued")
        if sum(delivered) > 1:
            counts["duplicate_replies"] += 1
            problems.append(f"{message.key}: reply delivered {sum(delivered)} times")
        for item, times in zip(items, delivered, strict=True):
            status = item.status
            if status == OutboxStatus.SENT:
                counts["replied_once" if times == 1 else "sent_but_not_received"] += times <= 1
                if times == 0:
                    problems.append(f"{message.key}: reply marked sent but the fake never got it")
            elif status in (OutboxStatus.UNKNOWN, OutboxStatus.SENDING):
                in_outbox[f"{status}_{'delivered' if times else 'not_delivered'}"] += 1
            else:
                in_outbox[str(status)] += 1
                if status == OutboxStatus.DEAD:
                    problems.append(f"{message.key}: reply dead-lettered")

    unexpected = [key for key in stored if key not in offered]
    tickets = sum(tickets_per_conversation.values())
    duplicate_tickets = sum(n - 1 for n in tickets_per_conversation.values() if n > 1)
    if unexpected:
        problems.append(f"{len(unexpected)} stored messages were never offered, e.g. {unexpected[0]}")
    if duplicate_tickets:
        problems.append(f"{duplicate_tickets} duplicate tickets")
    acked = sum(m.acked for m in sent)
    report = {
        "sent": len(sent),
        "acked": acked,
        "not_acked": counts["not_acked"],
        "not_acked_but_stored": counts["not_acked_but_stored"],
        "retried": sum(m.attempts > 1 for m in sent),
        "attempts": sum(m.attempts for m in sent),
        "stored": counts["stored"],
        "stored_exactly_once": counts["stored_exactly_once"],
        "duplicates": counts["duplicates"],
        "lost": counts["lost"],
        "unanswered": counts["unanswered"],
        "replied_once": counts["replied_once"],
        "still_in_outbox": dict(sorted(in_outbox.items())),
        "duplicate_replies": counts["duplicate_replies"],
        "no_reply": counts["no_reply"],
        "several_replies_queued": counts["several_replies_queued"],
        "sent_but_not_received": counts["sent_but_not_received"],
        "unexpected_stored": len(unexpected),
        "tickets": tickets,
        "duplicate_tickets": duplicate_tickets,
        "by_channel": {
            channel: {
                "sent": sum(m.channel == channel for m in sent),
                "acked": sum(m.acked and m.channel == channel for m in sent),
            }
            for channel in ("slack", "http_api")
        },
        "failures_seen": dict(Counter(f for m in sent for f in m.failures).most_common()),
        "problems": problems[:20],
    }
    report["ok"] = not problems and acked == counts["stored_exactly_once"] and acked > 0
    return report


# -- one run ---------------------------------------------------------------------------------------------


async def run(options: Options) -> dict[str, Any]:
    """One crash run; returns the report (``ok`` says whether every check passed)."""
    rng = random.Random(options.seed)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = options.data_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    fakes = Fakes()
    started = time.monotonic()
    with bench_database(options, run_dir) as database_url:
        async with serving(fakes.asgi()) as fakes_url:
            port = free_port()
            config = write_config(
                run_dir,
                port=port,
                fakes_url=fakes_url,
                database_url=database_url,
                kb=options.kb,
                index_dir=options.data_dir / "index",
                workers=options.workers,
                shutdown_timeout=options.shutdown_timeout,
            )
            server = ServerProcess(
                config, port=port, log_path=run_dir / "server.log", fake_knowledge=options.fake_knowledge
            )
            try:
                report = await _crash_and_check(options, rng, server, fakes, database_url)
            finally:
                server.stop_quietly()
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    report["database"] = make_url(database_url).get_backend_name()
    report["server_log"] = str(run_dir / "server.log")
    return report


async def _crash_and_check(
    options: Options, rng: random.Random, server: ServerProcess, fakes: Fakes, database_url: str
) -> dict[str, Any]:
    first = time.monotonic()
    server.start()
    await server.wait_ready(options.start_timeout)
    first_start = time.monotonic() - first

    driver = Driver(server.base_url, options, rng)
    load_started = time.monotonic()
    load = asyncio.create_task(driver.run())
    restarts: list[float] = []
    try:
        for _ in range(options.kills):
            await asyncio.sleep(rng.uniform(options.min_uptime, options.max_uptime))
            killed_at = time.monotonic()
            server.kill()
            server.start()
            await server.wait_ready(options.start_timeout)
            restarts.append(round(time.monotonic() - killed_at, 2))
        await asyncio.sleep(options.tail_seconds)
    finally:
        driver.stop()
        await load  # each driver finishes retrying the message it holds
    load_seconds = time.monotonic() - load_started

    draining = time.monotonic()
    backlog_at_end = await asyncio.to_thread(backlog, database_url)
    drained = await wait_for_drain(database_url, options.drain_timeout)
    drain_seconds = time.monotonic() - draining
    stopping = time.monotonic()
    exit_code = await server.terminate(options.shutdown_timeout + 15)
    shutdown_seconds = time.monotonic() - stopping

    report = await asyncio.to_thread(verify, database_url, driver.sent, fakes.deliveries())
    report.update(
        kills=len(restarts),
        first_start_seconds=round(first_start, 2),
        restart_seconds=restarts,
        load_seconds=round(load_seconds, 1),
        backlog_when_load_stopped={"unanswered": backlog_at_end[0], "replies_pending": backlog_at_end[1]},
        drained=drained,
        drain_seconds=round(drain_seconds, 1),
        sigterm_exit_code=exit_code,
        shutdown_seconds=round(shutdown_seconds, 2),
    )
    if not drained:
        report["problems"].append(f"backlog not drained within {options.drain_timeout:.0f}s")
    if exit_code != 0:
        report["problems"].append(f"SIGTERM exit code {exit_code}")
    report["ok"] = report["ok"] and drained and exit_code == 0
    return report


def parse_args(argv: list[str] | None = None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="Print the report as JSON (the default is a summary).")
    parser.add_argument("--kills", type=int, default=Options.kills)
    parser.add_argument("--concurrency", type=int, default=Options.concurrency, help="Concurrent senders.")
    parser.add_argument("--rate", type=float, default=Options.rate, help="New messages per second, in total.")
    parser.add_argument("--database-url", default=None, help="Default: SQLite in the run folder.")
    parser.add_argument("--data-dir", type=Path, default=Options.data_dir, help="Index cache and run folder.")
    parser.add_argument("--kb", type=Path, default=Options.kb, help="The knowledge base folder.")
    parser.add_argument("--min-uptime", type=float, default=Options.min_uptime)
    parser.add_argument("--max-uptime", type=float, default=Options.max_uptime)
    parser.add_argument("--tail-seconds", type=float, default=Options.tail_seconds)
    parser.add_argument("--off-topic-share", type=float, default=Options.off_topic_share)
    parser.add_argument("--http-share", type=float, default=Options.http_share)
    parser.add_argument("--workers", type=int, default=Options.workers, help="pipeline.workers of the server.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-schema", action="store_true", help="Keep the PostgreSQL schema for inspection.")
    parser.add_argument(
        "--fake-knowledge",
        action="store_true",
        help="Answer from a fixed fake index instead of the model and --kb (starts in a second; for tests).",
    )
    args = parser.parse_args(argv)
    if args.kills < 0 or args.concurrency < 1 or args.rate <= 0 or args.min_uptime > args.max_uptime:
        parser.error("need --kills >= 0, --concurrency >= 1, --rate > 0 and --min-uptime <= --max-uptime")
    options = Options(
        kills=args.kills,
        concurrency=args.concurrency,
        rate=args.rate,
        database_url=args.database_url,
        data_dir=args.data_dir.resolve(),
        kb=args.kb.resolve(),
        min_uptime=args.min_uptime,
        max_uptime=args.max_uptime,
        tail_seconds=args.tail_seconds,
        off_topic_share=args.off_topic_share,
        http_share=args.http_share,
        workers=args.workers,
        seed=args.seed,
        keep_schema=args.keep_schema,
        fake_knowledge=args.fake_knowledge,
    )
    return options, args.json


def main(argv: list[str] | None = None) -> int:
    options, as_json = parse_args(argv)
    report = asyncio.run(run(options))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        outbox = ", ".join(f"{k} {v}" for k, v in report["still_in_outbox"].items()) or "none"
        print(
            f"{report['kills']} kills, restarts {report['restart_seconds']} s; sent {report['sent']}, "
            f"acked {report['acked']}, stored once {report['stored_exactly_once']}, lost {report['lost']}, "
            f"duplicates {report['duplicates']}; replied once {report['replied_once']}, still in outbox: {outbox}; "
            f"duplicate replies {report['duplicate_replies']}; tickets {report['tickets']} "
            f"(duplicates {report['duplicate_tickets']}); SIGTERM exit {report['sigterm_exit_code']} "
            f"after {report['shutdown_seconds']} s"
        )
        for problem in report["problems"]:
            print(f"problem: {problem}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
