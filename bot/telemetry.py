"""Prometheus metrics: what tierzero counts and times, and the text served at ``GET /metrics``.

The metric objects live at module level in one process-wide registry, because one process runs one
server; tests that build many runtimes in one process share the counters and assert on differences.
Numbers that belong to a runtime or to the database (pipeline queue, outbox depth) are read when
Prometheus scrapes, by a ``RuntimeCollector`` bound to that runtime, so they are never stale and
nothing has to keep them up to date.

Label values come from small fixed sets only: channel names from config.yaml, outcome and decision
names defined here. Never message text, user ids or addresses: they would leak personal data into
the monitoring system and give every label a new series per user.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from pydantic import SecretStr
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.agent import Decision
from bot.channel import Acceptance, InvalidMessage, MessageHandler, Overloaded, Receipt
from bot.logs import log_context, message_request_id
from bot.model import InboundMessage
from ticketing.models import OutboxItem, OutboxStatus

if TYPE_CHECKING:
    from ticketing.db import Database

log = logging.getLogger(__name__)

# The *_created series (a timestamp per counter and label set) double the scrape and no query uses them.
disable_created_metrics()
REGISTRY = CollectorRegistry()
# CPU, memory, open files, GC: what an operator looks at first when latency grows.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Seconds. Acknowledgements take ~1-100 ms, answering a message ~5-250 ms, a send up to its
# timeout: fine steps around the targets (100 ms ack p99, 250 ms reply p95), coarse above.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

INBOUND_OUTCOMES = ("accepted", "duplicate", "rejected", "overloaded", "error")
SEND_OUTCOMES = ("sent", "retry", "unknown", "dead")
# Outbox states worth watching; "sent" is history (and grows forever), not depth.
DEPTH_STATUSES = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.UNKNOWN, OutboxStatus.DEAD)

INBOUND_MESSAGES = Counter(
    "tierzero_inbound_messages",
    "Messages channels handed to the pipeline, by outcome: accepted (stored), duplicate (seen before), "
    "rejected (invalid: empty, too long), overloaded (refused, the sender retries), error.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
ACCEPT_SECONDS = Histogram(
    "tierzero_accept_seconds",
    "Time to validate and commit an inbound message; the channel acknowledges the platform right after.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
INBOUND_TO_REPLY_SECONDS = Histogram(
    "tierzero_inbound_to_reply_queued_seconds",
    "From a channel handing in a message to its reply being committed to the outbox (this process only).",
    ["channel"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "tierzero_processing_seconds",
    "Time to route, decide and commit one accepted message (waiting in the queue not included).",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
PROCESSING_FAILURES = Counter(
    "tierzero_processing_failures",
    "Attempts to process a message that failed; the message stays stored and is retried.",
    registry=REGISTRY,
)
AGENT_DECISIONS = Counter(
    "tierzero_agent_decisions",
    "Decisions of the tier-0 agent that were committed (answer, clarify, escalate, close...).",
    ["decision"],
    registry=REGISTRY,
)
REPLIES_QUEUED = Counter(
    "tierzero_replies_queued",
    "Replies the pipeline committed to the outbox.",
    registry=REGISTRY,
)
OUTBOX_SENDS = Counter(
    "tierzero_outbox_sends",
    "Delivery attempts by outcome: sent, retry (temporary failure), unknown (may have arrived; not "
    "resent), dead (gave up).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
OUTBOX_SEND_SECONDS = Histogram(
    "tierzero_outbox_send_seconds",
    "Time of one delivery attempt through a channel.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SLA_EVENTS = Counter(
    "tierzero_sla_events",
    "SLA warnings fired by the escalation job (state: at_risk, breached), on the replica that fired them.",
    ["target", "state"],
    registry=REGISTRY,
)
INDEX_RELOADS = Counter(
    "tierzero_index_reloads",
    "Knowledge index reloads: reloaded (a new version swapped in) or failed.",
    ["outcome"],
    registry=REGISTRY,
)
# Series exist from the start, so rate() and alerts see a 0 rather than nothing.
for _outcome in ("reloaded", "failed"):
    INDEX_RELOADS.labels(_outcome)
for _target in ("first_response", "resolution"):
    for _state in ("at_risk", "breached"):
        SLA_EVENTS.labels(_target, _state)


# -- inbound -----------------------------------------------------------------------------------


def instrument(channel: str, handler: MessageHandler) -> MessageHandler:
    """``handler`` (the pipeline's accept), counting and timing what ``channel`` hands it."""
    counts = {outcome: INBOUND_MESSAGES.labels(channel, outcome) for outcome in INBOUND_OUTCOMES}
    for outcome in SEND_OUTCOMES:  # the channel's replies: series from the start, like the inbound ones
        OUTBOX_SENDS.labels(channel, outcome)
    accept_seconds = ACCEPT_SECONDS.labels(channel)
    to_reply_seconds = INBOUND_TO_REPLY_SECONDS.labels(channel)

    async def accept(message: InboundMessage) -> Receipt:
        started = time.perf_counter()
        outcome = "error"
        with log_context(channel=channel):
            try:
                receipt = await handler(message)
                outcome = str(receipt.status)
            except Overloaded:
                outcome = "overloaded"
                raise
            except InvalidMessage:
                outcome = "rejected"
                raise
            finally:
                accept_seconds.observe(time.perf_counter() - started)
                counts[outcome].inc()
            if receipt.status is Acceptance.ACCEPTED:
                # Ties this request's id to the message's own (msg-<id>) used by the pipeline and outbox.
                log.debug(
                    "message stored as %s",
                    message_request_id(receipt.message_id),
                    extra={"message_id": receipt.message_id},
                )
        if receipt.handled is not None:

            def replied(future: asyncio.Future[int]) -> None:
                if not future.cancelled() and future.exception() is None and future.result() > 0:
                    to_reply_seconds.observe(time.perf_counter() - started)

            receipt.handled.add_done_callback(replied)
        return receipt

    return accept


# -- processing --------------------------------------------------------------------------------

_Pipeline = TypeVar("_Pipeline")


def timed_processing(
    process: Callable[[_Pipeline, int], Awaitable[int]],
) -> Callable[[_Pipeline, int], Awaitable[int]]:
    """Decorates ``Pipeline.process``: request id ``msg-<id>`` on its log lines, duration, replies, failures."""

    @wraps(process)
    async def timed(pipeline: _Pipeline, message_id: int) -> int:
        started = time.perf_counter()
        with log_context(request_id=message_request_id(message_id), message_id=message_id):
            try:
                replies = await process(pipeline, message_id)
            except Exception:
                PROCESSING_FAILURES.inc()
                raise
            finally:
                PROCESSING_SECONDS.observe(time.perf_counter() - started)
        if replies:
            REPLIES_QUEUED.inc(replies)
        return replies

    return timed


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _decision_label(kind: type) -> str:
    """``Answer`` -> answer, ``AskForQuestion`` -> ask_for_question: a fixed set, the agent's decision types."""
    return _CAMEL.sub("_", kind.__name__).lower()


def count_decision(decision: object) -> None:
    AGENT_DECISIONS.labels(_decision_label(type(decision))).inc()


for _kind in get_args(Decision):
    AGENT_DECISIONS.labels(_decision_label(_kind))


# -- outbox and jobs -----------------------------------------------------------------------------


def count_send(channel: str, outcome: str, seconds: float) -> None:
    OUTBOX_SEND_SECONDS.labels(channel).observe(seconds)
    OUTBOX_SENDS.labels(channel, outcome).inc()


def count_sla_event(*, target: str, state: str) -> None:
    SLA_EVENTS.labels(target, state).inc()


def count_index_reload(*, failed: bool = False) -> None:
    INDEX_RELOADS.labels("failed" if failed else "reloaded").inc()


# -- scrape time -----------------------------------------------------------------------------------


class RuntimeCollector(Collector):
    """Values read when Prometheus scrapes: the pipeline queue of this process, the outbox of the database.

    The outbox depth is database-wide: with several replicas on one PostgreSQL database every replica
    reports the same numbers, so aggregate them with ``max``, not ``sum``. The query only reads the
    (status, next_attempt_at) index over undelivered rows; it never touches sent history.
    """

    def __init__(self, *, db: Database, queue_length: Callable[[], int]) -> None:
        self._db = db
        self._queue_length = queue_length

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tierzero_pipeline_queue_length",
            "Accepted messages of this process waiting for a pipeline worker.",
            value=self._queue_length(),
        )
        try:
            counts, oldest_due = self._outbox()
        except Exception as exc:  # a scrape must still answer: the failure is itself the signal
            log.warning("metrics: cannot read the outbox depth: %s", type(exc).__name__)
            yield GaugeMetricFamily("tierzero_database_up", "1 when the database answered the scrape.", value=0)
            return
        yield GaugeMetricFamily("tierzero_database_up", "1 when the database answered the scrape.", value=1)
        depth = GaugeMetricFamily(
            "tierzero_outbox_items",
            "Undelivered outbox items by status, database-wide: pending (due or waiting for a retry), "
            "sending (claimed), unknown (may have arrived; an operator decides), dead (gave up).",
            labels=["status"],
        )
        for status in DEPTH_STATUSES:
            depth.add_metric([str(status)], counts.get(str(status), 0))
        yield depth
        overdue = 0.0 if oldest_due is None else max((datetime.now(UTC) - oldest_due).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "tierzero_outbox_oldest_due_seconds",
            "How long the most overdue pending reply has been due (0 when none): delivery is stuck when it grows.",
            value=overdue,
        )

    def _outbox(self) -> tuple[dict[str, int], datetime | None]:
        with self._db.transaction() as session:
            rows = session.execute(
                select(OutboxItem.status, func.count())
                .where(OutboxItem.status.in_([str(s) for s in DEPTH_STATUSES]))
                .group_by(OutboxItem.status)
            )
            counts = {str(status): int(count) for status, count in rows}
            oldest_due = session.scalar(
                select(func.min(OutboxItem.next_attempt_at)).where(OutboxItem.status == OutboxStatus.PENDING)
            )
        return counts, oldest_due


class _Together(Collector):
    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exposition(runtime: RuntimeCollector, accept_header: str | None) -> tuple[bytes, str]:
    """The scrape body and its content type (Prometheus text, or OpenMetrics when asked for).

    Blocking (it reads the database): call it in a worker thread.
    """
    encode, content_type = choose_encoder(accept_header or "")
    return encode(_Together(REGISTRY, runtime)), content_type


# -- GET /metrics ----------------------------------------------------------------------------------

_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def metrics_route(collector: RuntimeCollector, *, token: SecretStr | None) -> Route:
    """``GET /metrics`` for Prometheus.

    With ``server.metrics_token`` the scraper must send it as a bearer token, from anywhere (in
    compose, Prometheus runs in its own container). Without one only loopback clients are served,
    like the HTTP API without its token: metrics hold no personal data, but rates and queue depths
    are nobody else's business. A request that came through a proxy is not a loopback client even
    when the proxy runs on this machine, so forwarded requests need the token too.
    """
    expected = f"Bearer {token.get_secret_value()}".encode() if token is not None else None

    async def metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {"error": "a valid bearer token (server.metrics_token) is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        elif not _is_loopback_client(request):
            return JSONResponse(
                {"error": "/metrics is served to loopback clients only; set server.metrics_token to scrape it"},
                status_code=403,
            )
        body, content_type = await asyncio.to_thread(exposition, collector, request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return Route("/metrics", metrics, methods=["GET"])


def _is_loopback_client(request: Request) -> bool:
    if any(name in request.headers for name in _FORWARDING_HEADERS) or request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False
