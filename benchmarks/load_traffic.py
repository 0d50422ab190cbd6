"""Traffic for the load benchmark: questions, one sender per channel, closed and open loop, statistics.

Every message comes from a requester of its own (a Slack user and DM channel, a Teams
personal conversation, an email sender), so every message starts a conversation with
the bot and is owed exactly one reply, and the reply is matched to its message by where
it is sent (``load_peers`` keys). Platform message ids (Slack event id and ts, Teams
activity id, Message-ID) are unique too.

Times are ``time.monotonic()`` in the benchmark process, where the fakes also run:
- acknowledgement: HTTP request sent -> response (Slack 200, Teams 202); SMTP end of
  DATA -> ``250``;
- inbound-to-reply: HTTP request sent (SMTP: end of DATA) -> the reply reaching the fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import smtplib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from pathlib import Path
from typing import Any

import frontmatter
import httpx

from benchmarks.load_peers import Peers, email_key, slack_key, teams_key
from tests.channels.slack.fake_slack import BOT_USER, TEAM, signed_headers

CHANNELS = ("slack", "teams", "email")
SUPPORT_ADDRESS = "help@tierzero.localhost"
TEAMS_APP_ID = "11111111-2222-3333-4444-555555555555"
TEAMS_BOT_ID = f"28:{TEAMS_APP_ID}"
TEAMS_APP_PASSWORD = "bench-client-secret-0123456789abcdef"
TEAMS_TENANT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
REJECTED_STATUSES = {503, 451, 421}  # backpressure: HTTP 503 + Retry-After, SMTP 451 (421 at greeting)
TICKET_NUMBER = re.compile(r"\b[A-Z][A-Z0-9]{0,9}-\d{3,}\b")
MAX_RETRY_WAIT_SECONDS = 5.0
PLATFORM_RETRIES = 2
RETRY_PAUSE_SECONDS = 1.0
TOKEN_LIFETIME_SECONDS = 3600.0

# -- questions ----------------------------------------------------------------------------

TEMPLATES = (
    "{q}",
    "{q}?",
    "hi, {q}",
    "help: {q}",
    "{q} - what should I do?",
    "how do I fix this: {q}",
    "{q}, can you help?",
    "quick question: {q}",
)
CONTEXTS = (
    "",
    " since this morning",
    " on my work laptop",
    " again today",
    " after the last update",
    " while working from home",
    " in the office",
    " for a new colleague",
)
# Not covered by the demo KB, or asking for a person: these should open a ticket.
OFF_TOPIC = (
    "can you order pizza for the team lunch",
    "what is the weather going to be tomorrow",
    "I want to talk to a person",
    "please book a flight to Berlin for next week",
    "who won the football match yesterday",
    "recommend a good restaurant near the office",
    "I need a human agent about my payslip",
    "when is the next company summer party",
    "how many vacation days do I have left",
    "the coffee machine on floor 3 is leaking water",
    "can I bring my dog to the office on Friday",
    "open a ticket please, my expense report was rejected",
    "what is the parking policy for visitors",
    "I would like to change my desk to one near the window",
    "agent please, I need to discuss my contract",
    "the lift in building B makes a strange noise",
)
# Section headings every article has: not questions anyone asks.
_STEP = re.compile(r"^(?:\d|option\b|step\b)", re.IGNORECASE)
_GENERIC_HEADINGS = {"steps", "before you start", "if that did not help", "windows", "macos", "timeline"}


def kb_subjects(kb_dir: Path) -> list[str]:
    """What the demo KB is about, as a requester would put it: titles (split at " - ") and specific headings."""
    subjects: list[str] = []
    for path in sorted(kb_dir.glob("*.md")):
        article = frontmatter.load(path)
        title = str(article.get("title") or path.stem.replace("-", " "))
        parts = [p.strip() for p in title.split(" - ") if p.strip()]
        subjects.extend(parts)
        for line in article.content.splitlines():
            heading = line.lstrip("#").strip() if line.startswith("### ") else ""
            if len(heading) >= 12 and heading.lower() not in _GENERIC_HEADINGS and not _STEP.match(heading):
                subjects.append(f"{heading} ({parts[0]})")
    return [_as_written(s) for s in subjects]


def _as_written(subject: str) -> str:
    """ "My laptop won't start" -> "my laptop won't start"; "VPN ...", "OneDrive ...", "I ..." stay."""
    first = subject.split(" ", 1)[0]
    return subject[0].lower() + subject[1:] if first[1:].islower() else subject


def question_pool(kb_dir: Path, *, off_topic_share: float, seed: int, size: int = 4096) -> list[str]:
    """``size`` distinct questions (fewer if the KB is small), about ``off_topic_share`` of them off-topic, shuffled."""
    rng = random.Random(seed)
    on_topic = [t.format(q=s + c) for s in kb_subjects(kb_dir) for t in TEMPLATES for c in CONTEXTS]
    off_topic = [t.format(q=s + c) for s in OFF_TOPIC for t in TEMPLATES for c in CONTEXTS]
    rng.shuffle(on_topic)
    rng.shuffle(off_topic)
    wanted_off = round(size * off_topic_share)
    pool = on_topic[: size - min(wanted_off, len(off_topic))] + off_topic[:wanted_off]
    rng.shuffle(pool)
    return pool


# -- bookkeeping --------------------------------------------------------------------------


@dataclass
class Record:
    """One message: when it was sent, how it was acknowledged, when its replies came."""

    number: int
    channel: str
    key: str
    measured: bool  # sent after the warm-up: counts in rates and percentiles
    sent_at: float = 0.0
    ack_seconds: float | None = None
    outcome: str = "pending"  # acked | rejected | error
    status: str = ""  # HTTP status or SMTP code, or the exception's name
    replies: list[float] = field(default_factory=list)
    ticket: bool = False  # the reply names a ticket (escalated)
    retry_after: float = 1.0  # what a rejection asked for
    retries: int = 0  # redeliveries after a 5xx or no answer
    replied: asyncio.Event = field(default_factory=asyncio.Event)


class Ledger:
    """Every message sent in a run, by reply key; fed by the fakes as replies arrive."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.unexpected: Counter[str] = Counter()  # replies to no message of ours, by channel
        self._numbers = itertools.count(1)

    def new(self, channel: str, key_of: Callable[[int], str], *, measured: bool) -> Record:
        number = next(self._numbers)
        record = Record(number, channel, key_of(number), measured)
        self.records[record.key] = record
        return record

    def on_reply(self, key: str, text: str) -> None:
        record = self.records.get(key)
        if record is None:
            self.unexpected[key.partition(":")[0]] += 1
            return
        record.replies.append(time.monotonic())
        record.ticket = record.ticket or bool(TICKET_NUMBER.search(text))
        record.replied.set()

    def outstanding(self) -> int:
        return sum(1 for r in self.records.values() if r.outcome == "acked" and not r.replies)


# -- senders ------------------------------------------------------------------------------


class Senders:
    """Sends one message on a channel as its platform would, and records the acknowledgement."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        peers: Peers,
        server_url: str,
        smtp_port: int,
        connections: int,
        run_tag: str | None = None,
    ) -> None:
        self.ledger = ledger
        self.peers = peers
        self.smtp_port = smtp_port
        self.run = run_tag or uuid.uuid4().hex[:8]
        self.client = httpx.AsyncClient(
            base_url=server_url,
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self.smtp_threads = ThreadPoolExecutor(max_workers=max(4, min(connections, 128)), thread_name_prefix="smtp")
        self._token: str | None = None
        self._token_at = 0.0

    async def close(self) -> None:
        await self.client.aclose()
        self.smtp_threads.shutdown(wait=False, cancel_futures=True)

    async def send(self, channel: str, text: str, *, measured: bool) -> Record:
        if channel == "slack":
            return await self._slack(text, measured=measured)
        if channel == "teams":
            return await self._teams(text, measured=measured)
        return await self._email(text, measured=measured)

    # Slack: a DM from a user of its own, as an Events API callback signed with the signing secret.
    async def _slack(self, text: str, *, measured: bool) -> Record:
        record = self.ledger.new("slack", lambda n: slack_key(f"DB{self.run.upper()}{n:07d}"), measured=measured)
        n, channel_id = record.number, record.key.partition(":")[2]
        ts = f"{int(time.time())}.{n % 1_000_000:06d}"
        event = {
            "type": "message",
            "channel_type": "im",
            "user": f"UB{self.run.upper()}{n:07d}",
            "channel": channel_id,
            "text": text,
            "ts": ts,
            "event_ts": ts,
        }
        body = json.dumps(
            {
                "token": "legacy-verification-token",
                "team_id": TEAM,
                "api_app_id": "A0BENCH01",
                "event": event,
                "type": "event_callback",
                "event_id": f"Ev{self.run.upper()}{n:09d}",
                "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
            }
        )

        def headers(attempt: int) -> dict[str, str]:
            retry = {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_error"} if attempt else {}
            return signed_headers(body) | retry

        await self._post(record, "/slack/events", body, headers, ok=200)
        return record

    # Teams: a personal-chat message activity with a Bot Framework JWT signed by the fake's key.
    async def _teams(self, text: str, *, measured: bool) -> Record:
        record = self.ledger.new("teams", lambda n: teams_key(f"a:bench-{self.run}-{n}"), measured=measured)
        n, conversation_id = record.number, record.key.partition(":")[2]
        service_url = self.peers.bot_framework.service_url
        activity = {
            "type": "message",
            "id": f"bench-{self.run}-{n}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "channelId": "msteams",
            "serviceUrl": service_url,
            "from": {"id": f"29:bench-{n}", "name": f"Bench User {n}", "aadObjectId": str(uuid.uuid4())},
            "conversation": {"id": conversation_id, "conversationType": "personal", "tenantId": TEAMS_TENANT},
            "recipient": {"id": TEAMS_BOT_ID, "name": "tierzero"},
            "channelData": {"tenant": {"id": TEAMS_TENANT}},
            "textFormat": "plain",
            "locale": "en-US",
            "text": text,
        }
        headers = {"Authorization": f"Bearer {self._teams_token(service_url)}", "Content-Type": "application/json"}
        await self._post(record, "/api/messages", json.dumps(activity), lambda _: headers, ok=202)
        return record

    def _teams_token(self, service_url: str) -> str:
        # One token for many activities, as the Bot Framework does (RSA signing per message would load the driver).
        if self._token is None or time.monotonic() - self._token_at > TOKEN_LIFETIME_SECONDS / 2:
            self._token = self.peers.signing_key.token(app_id=TEAMS_APP_ID, service_url=service_url)
            self._token_at = time.monotonic()
        return self._token

    async def _post(
        self, record: Record, path: str, body: str, headers: Callable[[int], Mapping[str, str]], *, ok: int
    ) -> None:
        """POST as the platform does: a 5xx (but 503, backpressure) or no answer is redelivered, like
        Slack's and the Bot Framework's retries, ``PLATFORM_RETRIES`` times; the server must deduplicate."""
        record.sent_at = time.monotonic()
        for attempt in range(PLATFORM_RETRIES + 1):
            if attempt:
                record.retries += 1
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
            started = time.monotonic()
            try:
                response = await self.client.post(path, content=body, headers=headers(attempt))
            except httpx.HTTPError as exc:
                record.outcome, record.status = "error", type(exc).__name__
                continue
            record.ack_seconds = time.monotonic() - started
            record.status = str(response.status_code)
            if response.status_code == ok:
                record.outcome = "acked"
            elif response.status_code in REJECTED_STATUSES:
                record.outcome = "rejected"
                record.retry_after = _retry_after(response.headers.get("retry-after"))
            else:
                record.outcome = "error"
            if record.outcome != "error" or response.status_code < 500:
                return

    # Email: one SMTP session per mail from a sender of its own (smtplib, in a thread).
    async def _email(self, text: str, *, measured: bool) -> Record:
        record = self.ledger.new(
            "email", lambda n: email_key(f"user{n}.{self.run}@bench.example.org"), measured=measured
        )
        sender = record.key.partition(":")[2]
        message = EmailMessage()
        message["From"] = f"Bench User {record.number} <{sender}>"
        message["To"] = SUPPORT_ADDRESS
        message["Subject"] = text[:120]
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = f"<bench-{record.number}.{self.run}@bench.example.org>"
        message.set_content(f"{text}\n\nThanks,\nBench User {record.number}\n")
        data = message.as_bytes(policy=SMTP_POLICY)
        loop = asyncio.get_running_loop()
        record.sent_at = time.monotonic()  # replaced by the end of DATA once it is sent
        try:
            code, data_end, answered = await loop.run_in_executor(
                self.smtp_threads, _smtp_deliver, self.smtp_port, sender, data
            )
        except (OSError, smtplib.SMTPException) as exc:
            record.outcome, record.status = "error", type(exc).__name__
            return record
        record.status = str(code)
        if data_end is not None:
            record.sent_at = data_end
            record.ack_seconds = answered - data_end
        if code == 250:
            record.outcome = "acked"
        elif code in REJECTED_STATUSES or 400 <= code < 500:
            record.outcome = "rejected"
        else:
            record.outcome = "error"
        return record


def _smtp_deliver(port: int, sender: str, data: bytes) -> tuple[int, float | None, float]:
    """One mail: returns (final code, end of DATA, when the answer to it came). Blocking."""
    try:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    except smtplib.SMTPConnectError as exc:  # 421 at the greeting: too many sessions
        return exc.smtp_code, None, time.monotonic()
    with smtp:
        for command in (lambda: smtp.ehlo("bench.example.org"), lambda: smtp.mail(sender)):
            code, _ = command()
            if code != 250:
                return code, None, time.monotonic()
        code, _ = smtp.rcpt(SUPPORT_ADDRESS)
        if code not in (250, 251):
            return code, None, time.monotonic()
        code, _ = smtp.docmd("data")
        if code != 354:
            return code, None, time.monotonic()
        # Dot-stuffing as smtplib.SMTP.data does it; the message already has CRLF line ends.
        quoted = re.sub(rb"(?m)^\.", b"..", data)
        if not quoted.endswith(b"\r\n"):
            quoted += b"\r\n"
        smtp.send(quoted + b".\r\n")
        data_end = time.monotonic()
        code, _ = smtp.getreply()
        return code, data_end, time.monotonic()


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 1.0
    except ValueError:
        return 1.0


async def prime(senders: Senders, questions: Sequence[str], off_topic: str, *, timeout: float) -> list[Record]:
    """One message per channel (one of them off-topic, so a ticket is opened), waited for before measuring.

    The first message of a fresh server pays for one-time work (token and key fetches, the
    routing model's labelled texts, lazy imports): it must not land in the measured numbers.
    """
    records = await asyncio.gather(
        senders.send("slack", questions[0], measured=False),
        senders.send("teams", off_topic, measured=False),
        senders.send("email", questions[1 % len(questions)], measured=False),
    )
    waiting = [r.replied.wait() for r in records if r.outcome == "acked"]
    if waiting:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waiting), timeout)
    return list(records)


def channel_picker(mix: Mapping[str, float], rng: random.Random) -> Callable[[], str]:
    names = [c for c in CHANNELS if mix.get(c, 0) > 0]
    weights = [mix[c] for c in names]
    return lambda: rng.choices(names, weights)[0]


# -- load shapes -------------------------------------------------------------------------------


@dataclass
class Phase:
    """When traffic runs: a warm-up, then the measured window."""

    warmup: float
    duration: float
    start: float = 0.0  # monotonic start of the warm-up

    @property
    def measure_from(self) -> float:
        return self.start + self.warmup

    @property
    def end(self) -> float:
        return self.start + self.warmup + self.duration


async def closed_loop(
    senders: Senders,
    questions: Sequence[str],
    *,
    phase: Phase,
    concurrency: int,
    mix: Mapping[str, float],
    seed: int,
    reply_timeout: float,
) -> None:
    """``concurrency`` virtual users; each sends a question, waits for its reply, sends the next."""
    counter = itertools.count()

    async def user(index: int) -> None:
        pick = channel_picker(mix, random.Random(seed * 1000 + index))
        while (now := time.monotonic()) < phase.end:
            text = questions[next(counter) % len(questions)]
            record = await senders.send(pick(), text, measured=now >= phase.measure_from)
            if record.outcome == "acked":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(record.replied.wait(), reply_timeout)
            elif record.outcome == "rejected":
                await asyncio.sleep(min(record.retry_after, MAX_RETRY_WAIT_SECONDS))
            else:
                await asyncio.sleep(0.2)  # an error: do not spin on it

    phase.start = time.monotonic()
    await asyncio.gather(*(user(i) for i in range(concurrency)))


@dataclass
class OpenLoopStats:
    skipped: int = 0  # not sent: the driver already had max_in_flight sends waiting for their answer


async def open_loop(
    senders: Senders,
    questions: Sequence[str],
    *,
    phase: Phase,
    rate: float,
    mix: Mapping[str, float],
    seed: int,
    max_in_flight: int,
) -> OpenLoopStats:
    """Messages at a fixed ``rate`` per second, whatever the server's answers (no waiting for replies)."""
    pick = channel_picker(mix, random.Random(seed))
    stats = OpenLoopStats()
    in_flight: set[asyncio.Task[Record]] = set()
    phase.start = time.monotonic()
    for n in itertools.count():
        due = phase.start + n / rate
        if due >= phase.end:
            break
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if len(in_flight) >= max_in_flight:
            stats.skipped += 1
            continue
        task = asyncio.create_task(
            senders.send(pick(), questions[n % len(questions)], measured=due >= phase.measure_from)
        )
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight, return_exceptions=True)
    return stats


async def drain(ledger: Ledger, *, grace: float, progress: Callable[[str], None]) -> float:
    """Wait until every acknowledged message has its reply, or ``grace`` seconds; returns the time waited."""
    started = time.monotonic()
    last_report = started
    while ledger.outstanding() and time.monotonic() - started < grace:
        await asyncio.sleep(0.05)
        if time.monotonic() - last_report >= 5:
            progress(f"waiting for {ledger.outstanding()} replies...")
            last_report = time.monotonic()
    # A moment more, so a duplicate sent right after the last reply is seen too.
    await asyncio.sleep(min(1.0, grace))
    return time.monotonic() - started


# -- statistics ------------------------------------------------------------------------------


def percentiles(values: Sequence[float], *, scale: float = 1000.0) -> dict[str, float | int | None]:
    """p50/p95/p99/max (nearest rank) in milliseconds, and how many values."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))] * scale, 1)

    return {"n": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99), "max": round(ordered[-1] * scale, 1)}


def summarise(ledger: Ledger, phase: Phase) -> dict[str, Any]:
    """Counts over every message; rates and latency percentiles over those sent in the measured window."""
    records = list(ledger.records.values())
    measured = [r for r in records if r.measured]
    window = max(phase.duration, 1e-9)

    def counts(rs: Sequence[Record]) -> dict[str, int]:
        acked = [r for r in rs if r.outcome == "acked"]
        return {
            "sent": len(rs),
            "acked": len(acked),
            "replied": sum(1 for r in acked if r.replies),
            "lost": sum(1 for r in acked if not r.replies),
            "duplicate_replies": sum(len(r.replies) - 1 for r in rs if len(r.replies) > 1),
            "rejected": sum(1 for r in rs if r.outcome == "rejected"),
            "errors": sum(1 for r in rs if r.outcome == "error"),
            "replies_to_unacked": sum(1 for r in rs if r.outcome != "acked" and r.replies),
            "redeliveries": sum(r.retries for r in rs),
        }

    by_channel = {c: [r for r in records if r.channel == c] for c in CHANNELS}
    first_replies = [r.replies[0] for r in records if r.replies]
    in_window = [t for t in first_replies if phase.measure_from <= t < phase.end]
    acked_in_window = [r for r in measured if r.outcome == "acked"]
    ack_latency = {
        c: percentiles([r.ack_seconds for r in measured if r.channel == c and r.ack_seconds is not None])
        for c in CHANNELS
    }
    reply_latency = {
        c: percentiles([r.replies[0] - r.sent_at for r in measured if r.channel == c and r.replies]) for c in CHANNELS
    }
    reply_latency["all"] = percentiles([r.replies[0] - r.sent_at for r in measured if r.replies])
    statuses = Counter(f"{r.channel}:{r.status}" for r in records if r.outcome != "acked")
    return {
        "accepted_per_s": round(len(acked_in_window) / window, 2),
        "answered_per_s": round(len(in_window) / window, 2),
        "sent_per_s": round(len(measured) / window, 2),
        "ack_latency_ms": ack_latency,
        "reply_latency_ms": reply_latency,
        "counts": {**counts(records), "unexpected_replies": sum(ledger.unexpected.values())},
        "counts_by_channel": {c: counts(rs) for c, rs in by_channel.items()},
        "not_acked_by_status": dict(sorted(statuses.items())),
        "replies_naming_a_ticket": sum(1 for r in records if r.ticket),
    }


def iter_mix(text: str) -> Iterator[tuple[str, float]]:
    """``slack=60,teams=25,email=15`` -> (channel, weight) pairs; raises ValueError naming the problem."""
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in CHANNELS:
            raise ValueError(f"--mix: {part!r} is not channel=weight with channel one of {', '.join(CHANNELS)}")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"--mix: weight of {name} is not a number: {weight!r}") from None
        if value < 0:
            raise ValueError(f"--mix: weight of {name} is negative")
        yield name, value
