"""The SLA escalation job: warnings and rules fire once per ticket and state, also with two replicas at once."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from bot.config import ConfigError, settings_from_mapping
from bot.escalation_job import EscalationJob, Fired
from bot.service_desk_config import ServiceDeskSettings
from tests.fixtures.service_desk import make_ticket
from ticketing.db import Database
from ticketing.models import Conversation, OutboxItem, Owner, Ticket, TicketEvent, TicketStatus
from ticketing.service_desk_models import SlaMarker

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
ROUND_THE_CLOCK = {"working_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": "00:00-24:00"}
POLICIES = {
    "urgent": {"first_response_hours": 0.5, "resolution_hours": 2},
    "high": {"first_response_hours": 1, "resolution_hours": 4},
    "normal": {"first_response_hours": 2, "resolution_hours": 8},
    "low": {"first_response_hours": 4, "resolution_hours": 16},
}


def desk_settings(*rules: dict[str, Any]) -> ServiceDeskSettings:
    escalation: dict[str, Any] = {"rules": list(rules)} if rules else {}
    raw = {"calendar": ROUND_THE_CLOCK, "sla": {"policies": POLICIES, "at_risk_percent": 75}, "escalation": escalation}
    return settings_from_mapping({"service_desk": raw}).service_desk


def add_ticket(db: Database, settings: ServiceDeskSettings, *, priority: str = "normal", **fields: Any) -> int:
    with db.transaction() as session:
        first, resolution = settings.sla_policy.due_times(priority, T0)
        values: dict[str, Any] = {"priority": priority, "first_response_due": first, "resolution_due": resolution}
        values.update(fields)
        ticket = make_ticket(session, created_at=T0, **values)
        return ticket.id


def events(db: Database, ticket_id: int, kind: str | None = None) -> list[TicketEvent]:
    with db.transaction() as session:
        query = session.query(TicketEvent).filter_by(ticket_id=ticket_id)
        if kind:
            query = query.filter_by(kind=kind)
        return list(query.order_by(TicketEvent.id))


def ticket(db: Database, ticket_id: int) -> Ticket:
    with db.transaction() as session:
        row = session.get(Ticket, ticket_id)
        assert row is not None
        return row


def test_at_risk_then_breached_each_fire_once(db: Database) -> None:
    settings = desk_settings()  # defaults: notify when at risk, up a tier when breached
    ticket_id = add_ticket(db, settings)  # first response due at T0 + 2h
    job = EscalationJob(db=db, settings=settings)
    assert job.run_once(now=T0 + timedelta(minutes=89)) == []
    assert job.run_once(now=T0 + timedelta(minutes=90)) == [
        Fired("TZ-" + str(1000 + ticket_id), "first_response", "at_risk", ("notify",))
    ]
    assert job.run_once(now=T0 + timedelta(minutes=100)) == []
    fired = job.run_once(now=T0 + timedelta(hours=2))
    assert [(f.target, f.state, f.actions) for f in fired] == [("first_response", "breached", ("tier:1->2",))]
    assert job.run_once(now=T0 + timedelta(hours=3)) == []

    warning = events(db, ticket_id, "sla_at_risk")
    assert len(warning) == 1
    assert warning[0].detail["target"] == "first_response"
    assert warning[0].detail["text"] == "SLA at risk: first response due 2026-12-02 12:00 UTC"
    assert (warning[0].actor, warning[0].channel) == ("sla-escalation", "system")
    assert len(events(db, ticket_id, "sla_breached")) == 1
    assert ticket(db, ticket_id).tier == 2


def test_the_resolution_target_escalates_separately_up_to_tier_three(db: Database) -> None:
    settings = desk_settings({"when": "breached", "action": "tier_up"})
    ticket_id = add_ticket(db, settings, tier=2, first_response_at=T0 + timedelta(minutes=5))
    job = EscalationJob(db=db, settings=settings)
    fired = job.run_once(now=T0 + timedelta(hours=9))
    assert [(f.target, f.state) for f in fired] == [("resolution", "breached")]
    assert ticket(db, ticket_id).tier == 3
    # Already at the highest internal tier: the warning is written, the rule has nothing to do.
    other = add_ticket(db, settings, tier=3)
    assert [f.actions for f in job.run_once(now=T0 + timedelta(hours=9))] == [(), ()]
    assert ticket(db, other).tier == 3


def test_raise_priority_shortens_the_due_times(db: Database) -> None:
    settings = desk_settings({"when": "at_risk", "action": "raise_priority"})
    ticket_id = add_ticket(db, settings, priority="low")  # first response due T0 + 4h
    fired = EscalationJob(db=db, settings=settings).run_once(now=T0 + timedelta(hours=3))
    assert fired[0].actions == ("priority:low->normal",)
    row = ticket(db, ticket_id)
    assert (row.priority, row.first_response_due) == ("normal", T0 + timedelta(hours=2))
    change = events(db, ticket_id, "priority_changed")[0]
    assert change.detail == {"from": "low", "to": "normal", "reason": "sla"}


def test_reassign_moves_the_ticket_to_the_groups_queue(db: Database) -> None:
    settings = desk_settings({"when": "breached", "action": "reassign", "group": "major-incidents"})
    ticket_id = add_ticket(db, settings, group="service-desk", assignee="slack:U1", status=TicketStatus.OPEN)
    with db.transaction() as session:
        conversation = session.get(Conversation, ticket(db, ticket_id).conversation_id)
        assert conversation is not None
        conversation.owner = Owner.AGENT
    EscalationJob(db=db, settings=settings).run_once(now=T0 + timedelta(hours=2))
    row = ticket(db, ticket_id)
    assert (row.group, row.assignee) == ("major-incidents", None)
    with db.transaction() as session:
        conversation = session.get(Conversation, row.conversation_id)
        assert conversation is not None and conversation.owner == Owner.QUEUE


def test_vendor_handoff_is_tier_four_by_email(db: Database) -> None:
    settings = desk_settings(
        {"when": "breached", "action": "vendor", "vendor_email": "support@printco.example", "categories": ["printing"]}
    )
    printing = add_ticket(db, settings, category="printing", subject="Plotter broken")
    other = add_ticket(db, settings, category="network")
    EscalationJob(db=db, settings=settings).run_once(now=T0 + timedelta(hours=2))
    row = ticket(db, printing)
    assert (row.tier, row.assignee) == (4, "support@printco.example")
    handoff = events(db, printing, "vendor_handoff")[0].detail
    assert handoff["to"] == "support@printco.example"
    assert handoff["subject"] == f"[{row.number}] Plotter broken"
    assert ticket(db, other).tier == 1  # the category filter left it alone


def test_priority_filters_select_the_rule(db: Database) -> None:
    settings = desk_settings(
        {"when": "breached", "action": "tier_up", "priorities": ["urgent"]},
        {"when": "breached", "action": "reassign", "group": "backlog", "priorities": ["low", "normal"]},
    )
    urgent = add_ticket(db, settings, priority="urgent")
    normal = add_ticket(db, settings, priority="normal")
    EscalationJob(db=db, settings=settings).run_once(now=T0 + timedelta(hours=3))
    assert (ticket(db, urgent).tier, ticket(db, urgent).group) == (2, None)
    assert (ticket(db, normal).tier, ticket(db, normal).group) == (1, "backlog")


@pytest.mark.parametrize("status", [TicketStatus.PENDING, TicketStatus.RESOLVED, TicketStatus.CLOSED])
def test_paused_and_finished_tickets_never_escalate(db: Database, status: str) -> None:
    settings = desk_settings()
    ticket_id = add_ticket(db, settings, status=status)
    assert EscalationJob(db=db, settings=settings).run_once(now=T0 + timedelta(days=3)) == []
    assert events(db, ticket_id, "sla_breached") == []


def test_two_replicas_at_once_fire_each_state_once(database_url: str) -> None:
    settings = desk_settings()
    setup = Database(database_url)
    ids = [add_ticket(setup, settings) for _ in range(20)]
    setup.dispose()
    now = T0 + timedelta(hours=2, minutes=30)  # every first response breached, resolution still fine
    start = threading.Barrier(2)
    results: list[list[Fired]] = []
    errors: list[BaseException] = []

    def replica() -> None:
        db = Database(database_url)
        try:
            job = EscalationJob(db=db, settings=settings)
            start.wait()
            results.append(job.run_once(now=now))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    # A replica may skip a ticket the other holds; a later round picks up anything left.
    db = Database(database_url)
    try:
        leftovers = EscalationJob(db=db, settings=settings).run_once(now=now)
        fired = [f for result in results for f in result] + leftovers
        assert sorted(f.number for f in fired) == sorted(f"TZ-{1000 + i}" for i in ids)
        with db.transaction() as session:
            assert session.query(SlaMarker).count() == 20
            assert session.query(TicketEvent).filter_by(kind="sla_breached").count() == 20
            assert session.query(TicketEvent).filter_by(kind="tier_changed").count() == 20
            assert {t.tier for t in session.query(Ticket)} == {2}
    finally:
        db.dispose()


async def test_the_job_runs_on_its_schedule_inside_the_server(db: Database) -> None:
    settings = desk_settings()
    settings = settings.model_copy(
        update={"escalation": settings.escalation.model_copy(update={"interval_seconds": 1})}
    )
    ticket_id = add_ticket(db, settings)
    changed = asyncio.Event()
    job = EscalationJob(db=db, settings=settings, clock=lambda: T0 + timedelta(days=1), on_change=changed.set)
    job.start()
    try:
        await asyncio.wait_for(changed.wait(), timeout=30)
    finally:
        await job.stop()
    assert len(events(db, ticket_id, "sla_breached")) == 2  # first response and resolution


def test_the_vendor_gets_the_mail_through_the_outbox(db: Database) -> None:
    settings = desk_settings({"when": "breached", "action": "vendor", "vendor_email": "support@printco.example"})
    ticket_id = add_ticket(db, settings, subject="Plotter broken", description="It prints in purple.")
    job = EscalationJob(db=db, settings=settings, vendor_mail_channel="email")
    job.run_once(now=T0 + timedelta(hours=9))  # both targets breached: one hand-off
    with db.transaction() as session:
        [item] = session.query(OutboxItem).all()
        conversation = session.get(Conversation, item.conversation_id)
        assert conversation is not None
        assert (item.channel, conversation.owner, conversation.ticket_id) == ("email", Owner.AGENT, ticket_id)
        assert conversation.channel_data["requester"] == "support@printco.example"
        assert conversation.channel_data["subject"].endswith("] Plotter broken")
        assert "It prints in purple." in item.payload["text"]
        assert session.query(TicketEvent).filter_by(kind="vendor_handoff").one().detail["mailed"] is True


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{on: breached, action: tier_up}", "write 'when: at_risk' or 'when: breached'"),
        ("{when: breached, action: vendor}", "action 'vendor' needs vendor_email"),
        ("{when: breached, action: vendor, vendor_email: nobody}", "vendor_email: String should match pattern"),
        ("{when: breached, action: reassign}", "action 'reassign' needs group"),
        ("{when: late, action: tier_up}", "service_desk.escalation.rules.0.when"),
        ("{when: breached, action: tier_up, priorities: [critical]}", "unknown priority 'critical'"),
    ],
)
def test_bad_escalation_rules_are_refused_with_the_key_named(rule: str, message: str) -> None:
    raw = yaml.safe_load(f"service_desk:\n  escalation:\n    rules:\n      - {rule}\n")
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(raw)
    assert message in str(caught.value)
    assert "service_desk.escalation.rules.0" in str(caught.value)
