"""GET /metrics on a real server: what it counts after real messages, who may read it, request ids."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select

from bot import telemetry
from bot.agent import AskForQuestion
from bot.channel import InvalidMessage, Overloaded, Receipt
from bot.config import Settings
from bot.escalation_job import EscalationJob
from bot.index_watch import start_index_watch, stop_index_watch
from bot.model import ConversationRef, InboundMessage, Participant, ReplyKind
from tests.bot.test_escalation_job import T0, add_ticket, desk_settings
from tests.bot.test_index_watch import Reloading
from tests.channels.test_http_api import Api, running_api, until
from tests.conftest import make_settings
from ticketing import outbox
from ticketing.clock import utcnow
from ticketing.conversations import get_or_create_conversation, get_or_create_requester
from ticketing.db import Database
from ticketing.models import Direction, Message, OutboxItem, OutboxStatus

METRICS_TOKEN = "prometheus-scrape-token-0123"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """Metric family names and every sample (name, sorted labels) -> value of an exposition."""
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return {f.name for f in families}, samples


async def scrape(api: Api, **kwargs: object) -> tuple[set[str], Samples]:
    response = await api.client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    """Settings on SQLite only: for what does not depend on the database."""
    return make_settings(tmp_path)


def with_metrics_token(settings: Settings) -> Settings:
    server = settings.server.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    return settings.model_copy(update={"server": server})


async def test_metrics_count_a_message_from_acceptance_to_delivery(settings: Settings) -> None:
    async with running_api(settings) as api:
        _, before = await scrape(api)
        body = {"requester_id": "alice", "text": "My VPN keeps disconnecting", "message_id": "m1"}
        assert (await api.post(body)).status_code == 202
        assert (await api.post(body)).status_code == 200  # a redelivery: stored once
        assert (await api.post({"requester_id": "alice", "text": "  "})).status_code == 400
        [reply] = await api.replies("alice", count=1)
        assert reply["kind"] == ReplyKind.ANSWER
        await until(lambda: [i.status for i in api.outbox_items()] == ["sent"], "the reply to be delivered")

        families, after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    inbound = "tierzero_inbound_messages_total"
    assert moved(inbound, channel="http_api", outcome="accepted") == 1
    assert moved(inbound, channel="http_api", outcome="duplicate") == 1
    assert moved(inbound, channel="http_api", outcome="rejected") == 1
    assert moved(inbound, channel="http_api", outcome="overloaded") == 0
    assert moved("tierzero_agent_decisions_total", decision="answer") == 1
    assert moved("tierzero_replies_queued_total") == 1
    assert moved("tierzero_outbox_sends_total", channel="http_api", outcome="sent") == 1
    # Every acknowledgement is timed; the one accepted message was answered and its reply sent.
    assert moved("tierzero_accept_seconds_count", channel="http_api") == 3
    assert moved("tierzero_inbound_to_reply_queued_seconds_count", channel="http_api") == 1
    assert moved("tierzero_processing_seconds_count") == 1
    assert moved("tierzero_outbox_send_seconds_count", channel="http_api") == 1
    assert value(after, "tierzero_outbox_items", status="pending") == 0
    assert value(after, "tierzero_pipeline_queue_length") == 0
    assert value(after, "tierzero_database_up") == 1
    assert {
        "tierzero_sla_events",
        "tierzero_index_reloads",
        "tierzero_outbox_oldest_due_seconds",
        "process_resident_memory_bytes",
    } <= families


async def test_no_personal_data_in_label_values(local: Settings) -> None:
    async with running_api(local) as api:
        await api.post({"requester_id": "alice@example.com", "text": "my vpn drops at alice-secret-desk"})
        await api.replies("alice@example.com", count=1)
        text = (await api.client.get("/metrics")).text
    assert "alice" not in text


async def test_metrics_are_served_to_loopback_clients_only_without_a_token(local: Settings) -> None:
    async with running_api(local) as api:
        # A proxy on this machine connects from loopback on behalf of someone else.
        proxied = await api.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
        assert proxied.status_code == 403
        assert "metrics_token" in proxied.json()["error"]
        assert (await api.client.get("/metrics")).status_code == 200


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-wrong-token", METRICS_TOKEN, f"Basic {METRICS_TOKEN}"]
)
async def test_a_configured_token_is_required(local: Settings, authorization: str | None) -> None:
    async with running_api(with_metrics_token(local)) as api:
        headers = {"Authorization": authorization} if authorization else {}
        refused = await api.client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert METRICS_TOKEN not in refused.text


async def test_the_right_token_is_accepted_also_through_a_proxy(local: Settings) -> None:
    async with running_api(with_metrics_token(local)) as api:
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}", "X-Forwarded-For": "10.0.0.9"}
        families, _ = await scrape(api, headers=headers)
        assert "tierzero_inbound_messages" in families


async def test_openmetrics_is_served_when_asked_for(local: Settings) -> None:
    async with running_api(local) as api:
        response = await api.client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# -- request ids ---------------------------------------------------------------------------------


async def test_a_sane_request_id_is_echoed(local: Settings) -> None:
    async with running_api(local) as api:
        response = await api.client.get("/healthz", headers={"X-Request-ID": "edge-7f3a.42"})
        assert response.headers["x-request-id"] == "edge-7f3a.42"
        refused = await api.post({"requester_id": "alice", "text": ""}, headers={"X-Request-ID": "req-1"})
        assert (refused.status_code, refused.headers["x-request-id"]) == (400, "req-1")


@pytest.mark.parametrize("incoming", [None, "", "has spaces", "x" * 200, "<script>", "line\\nbreak"])
async def test_a_missing_or_odd_request_id_is_replaced(local: Settings, incoming: str | None) -> None:
    async with running_api(local) as api:
        headers = {"X-Request-ID": incoming} if incoming is not None else {}
        response = await api.client.get("/healthz", headers=headers)
        generated = response.headers["x-request-id"]
        assert generated != incoming and len(generated) == 32 and int(generated, 16) >= 0
        again = await api.client.get("/healthz", headers=headers)
        assert again.headers["x-request-id"] != generated


# -- scrape-time values ----------------------------------------------------------------------------


def outbox_items(db: Database, count: int) -> list[int]:
    with db.transaction() as session:
        requester = get_or_create_requester(session, channel="test", platform_id="U1")
        conversation = get_or_create_conversation(
            session, channel="test", channel_conversation_id="c1", thread_id=None, requester=requester
        )
        ids = []
        for _ in range(count):
            message = Message(
                conversation_id=conversation.id, direction=Direction.OUTBOUND, channel="test", author_kind="bot"
            )
            session.add(message)
            session.flush()
            ids.append(outbox.enqueue(session, conversation=conversation, message=message, payload={}).id)
        return ids


def test_outbox_depth_is_read_from_the_database_at_scrape_time(db: Database) -> None:
    collector = telemetry.RuntimeCollector(db=db, queue_length=lambda: 3)
    overdue, waiting, dead, unknown = outbox_items(db, 4)
    with db.transaction() as session:
        outbox.mark_dead(session, item_id=dead, error="gone")
        outbox.mark_unknown(session, item_id=unknown, error="timeout")
        session.get(OutboxItem, overdue).next_attempt_at = utcnow() - timedelta(minutes=2)
        session.get(OutboxItem, waiting).next_attempt_at = utcnow() + timedelta(minutes=5)

    body, _ = telemetry.exposition(collector, None)
    _, samples = parse(body.decode())

    assert {status: value(samples, "tierzero_outbox_items", status=status) for status in OutboxStatus} == {
        "pending": 2,
        "sending": 0,
        "sent": 0,  # not reported: history, not depth
        "unknown": 1,
        "dead": 1,
    }
    assert 120 <= value(samples, "tierzero_outbox_oldest_due_seconds") < 3600
    assert value(samples, "tierzero_pipeline_queue_length") == 3
    with db.transaction() as session:
        assert session.scalar(select(OutboxItem.status).where(OutboxItem.id == waiting)) == "pending"


def test_a_scrape_still_answers_when_the_database_is_down(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'missing' / 'folder' / 'tierzero.db'}")
    try:
        body, _ = telemetry.exposition(telemetry.RuntimeCollector(db=db, queue_length=lambda: 0), None)
    finally:
        db.dispose()
    families, samples = parse(body.decode())
    assert value(samples, "tierzero_database_up") == 0
    assert "tierzero_outbox_items" not in families
    assert "tierzero_inbound_messages" in families


def test_decision_labels_are_the_decision_type_names() -> None:
    before = sample("tierzero_agent_decisions_total", decision="ask_for_question")
    telemetry.count_decision(AskForQuestion())
    assert sample("tierzero_agent_decisions_total", decision="ask_for_question") - before == 1


def sample(name: str, **labels: str) -> float:
    return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0


def test_sla_warnings_are_counted_once_per_ticket_and_state(db: Database) -> None:
    settings = desk_settings()
    add_ticket(db, settings)  # first response due at T0 + 2h
    job = EscalationJob(db=db, settings=settings)
    before = sample("tierzero_sla_events_total", target="first_response", state="breached")
    job.run_once(now=T0 + timedelta(hours=2))
    job.run_once(now=T0 + timedelta(hours=3))  # already fired: not counted again
    assert sample("tierzero_sla_events_total", target="first_response", state="breached") - before == 1


async def test_index_reloads_and_failed_reload_checks_are_counted() -> None:
    reloaded, failed = (
        sample("tierzero_index_reloads_total", outcome="reloaded"),
        sample("tierzero_index_reloads_total", outcome="failed"),
    )
    retriever = Reloading(failures=1)
    task = start_index_watch(retriever, interval=0.01)
    await asyncio.wait_for(retriever.reloaded.wait(), timeout=5)
    await stop_index_watch(task)
    assert sample("tierzero_index_reloads_total", outcome="failed") - failed == 1
    assert sample("tierzero_index_reloads_total", outcome="reloaded") - reloaded >= 1


@pytest.mark.parametrize(
    ("error", "outcome"),
    [(Overloaded(retry_after=2), "overloaded"), (InvalidMessage("empty"), "rejected"), (OSError("db"), "error")],
)
async def test_refusals_are_counted_by_kind_and_still_raised(error: Exception, outcome: str) -> None:
    async def refuse(_: InboundMessage) -> Receipt:
        raise error

    accept = telemetry.instrument("probe", refuse)
    before = sample("tierzero_inbound_messages_total", channel="probe", outcome=outcome)
    message = InboundMessage(
        channel_message_id="m1",
        conversation=ConversationRef("probe", "c1"),
        sender=Participant("probe", "U1"),
        text="hi",
    )
    with pytest.raises(type(error)):
        await accept(message)
    assert sample("tierzero_inbound_messages_total", channel="probe", outcome=outcome) - before == 1
    assert sample("tierzero_inbound_messages_total", channel="probe", outcome="accepted") == 0
