"""service_desk_metrics on a small, hand-checked week of a service desk."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session

from bot.cli import main
from bot.cli_report import parse_since
from bot.config import settings_from_mapping
from tests.fixtures.service_desk import make_ticket
from ticketing.clock import utcnow
from ticketing.db import Database
from ticketing.metrics import CostModel, service_desk_metrics
from ticketing.models import Conversation, Message, Requester, Ticket, TicketEvent
from ticketing.service_desk_models import SlaClock
from ticketing.sla import SlaPolicy

SINCE = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
UNTIL = datetime(2026, 12, 7, tzinfo=UTC)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC) if day < 30 else datetime(2026, 11, 30, hour, tzinfo=UTC)


def office_policy() -> SlaPolicy:
    """Mon-Fri 09:00-17:00 UTC; the default targets (normal: 4h first response, 16h resolution)."""
    return settings_from_mapping({"service_desk": {"calendar": {"time_zone": "UTC"}}}).service_desk.sla_policy


def ticket(
    session: Session,
    *,
    subject: str,
    channel: str,
    opened: datetime,
    opened_by: str = "bot",
    agent_replies: int = 0,
    reopened: bool = False,
    **fields: Any,
) -> Ticket:
    first_due, resolution_due = office_policy().due_times("normal", opened)
    row = make_ticket(
        session,
        subject=subject,
        channel=channel,
        user=f"{channel}-user",
        created_at=opened,
        first_response_due=first_due,
        resolution_due=resolution_due,
        **fields,
    )
    conversation = session.get(Conversation, row.conversation_id)
    assert conversation is not None
    conversation.created_at = opened
    session.add(_message(conversation, "in", "requester", subject, opened))
    session.add(TicketEvent(ticket_id=row.id, actor=opened_by, channel=channel, kind="opened", at=opened))
    for _ in range(agent_replies):
        session.add(TicketEvent(ticket_id=row.id, actor="agent:a", channel="slack", kind="agent_reply", at=opened))
    if reopened:
        session.add(TicketEvent(ticket_id=row.id, actor="requester", channel=channel, kind="reopened", at=opened))
    return row


def _message(
    conversation: Conversation, direction: str, author: str, text: str, when: datetime, **parts: Any
) -> Message:
    return Message(
        conversation_id=conversation.id,
        direction=direction,
        channel=conversation.channel,
        author_kind=author,
        text=text,
        parts=parts,
        received_at=when,
    )


def bot_conversation(session: Session, *, name: str, started: datetime, article: str | None, resolved: bool) -> None:
    requester = Requester(channel="web", platform_id=name)
    session.add(requester)
    session.flush()
    conversation = Conversation(
        channel="web", channel_conversation_id=name, requester_id=requester.id, created_at=started
    )
    session.add(conversation)
    session.flush()
    if article is None:
        return  # opened, never asked anything
    session.add(_message(conversation, "in", "requester", "question", started))
    citation = {"article_id": article, "title": article.replace("-", " ").title()}
    session.add(_message(conversation, "out", "bot", "answer", started + timedelta(seconds=5), citations=[citation]))
    if resolved:
        conversation.resolved_by = "bot"
        conversation.resolved_at = started + timedelta(minutes=1)


def a_week(db: Database) -> None:
    with db.transaction() as session:
        t1 = ticket(
            session,
            subject="VPN drops every hour",
            channel="email",
            opened=at(30, 10),
            category="network",
            status="resolved",
            first_response_at=at(30, 11),
            resolved_at=at(30, 15),
            csat_score=5,
            agent_replies=1,
        )
        ticket(
            session,
            subject="Outlook asks for my password",
            channel="slack",
            opened=at(4, 16),
            opened_by="agent:a",
            category="network",
            status="open",
            first_response_at=at(4, 16, 30),
        )
        t3 = ticket(
            session,
            subject="vpn drops every hour!",
            channel="web",
            opened=at(1, 9),
            category="hardware",
            status="closed",
            tier=2,
            first_response_at=at(2, 9),
            resolved_at=at(2, 10),
            csat_score=2,
            agent_replies=2,
            reopened=True,
        )
        ticket(session, subject="Printer jam", channel="slack", opened=at(5, 10), status="new")
        old = ticket(session, subject="Old one", channel="slack", opened=datetime(2026, 10, 1, tzinfo=UTC))
        old.status = "pending"
        session.add(SlaClock(ticket_id=t3.id, paused_seconds=3600.0))
        bot_conversation(session, name="c1", started=at(1, 12), article="vpn-drops", resolved=True)
        bot_conversation(session, name="c2", started=at(2, 12), article="vpn-drops", resolved=True)
        bot_conversation(session, name="c3", started=at(3, 12), article="printer-add", resolved=True)
        bot_conversation(session, name="c4", started=at(3, 13), article=None, resolved=False)
        assert t1.id and t3.id


def test_metrics_of_a_week(db: Database) -> None:
    a_week(db)
    with db.transaction() as session:
        report = service_desk_metrics(session, since=SINCE, until=UNTIL, now=NOW, policy=office_policy())
    assert json.loads(json.dumps(report)) == report  # JSON as it is

    assert report["period"]["days"] == 7
    volume = report["volume"]
    assert volume["tickets"] == 4
    assert [d["tickets"] for d in volume["per_day"]] == [1, 1, 0, 0, 1, 1, 0]
    assert volume["per_day"][0] == {"date": "2026-11-30", "tickets": 1}
    assert volume["per_week"] == [{"week": "2026-W49", "tickets": 4}]
    assert volume["per_channel"] == {"slack": 2, "email": 1, "web": 1}
    assert volume["per_category"] == {"network": 2, "hardware": 1, "uncategorised": 1}
    assert volume["conversations"] == 8

    # 3 conversations resolved by the bot of 7 with a question (c4 never asked anything).
    assert report["deflection"] == {"conversations_with_question": 7, "resolved_by_bot": 3, "rate": 0.4286}
    # Resolved in the week: t1 (one reply) and t3 (two replies, reopened).
    assert report["first_contact_resolution"] == {"resolved": 2, "first_contact": 1, "rate": 0.5}

    times = report["response_times"]
    # First replies: 1h, 0.5h and 24h on the clock; 1h, 0.5h and 8h of working time.
    assert times["first_response"] == {"count": 3, "mean_wall_hours": 8.5, "mean_business_hours": 3.17}
    # Resolutions: 5h and 25h on the clock; 5h and 9h - 1h paused of working time.
    assert times["resolution"] == {"count": 2, "mean_wall_hours": 15.0, "mean_business_hours": 6.5}

    # t1 met both targets; t3 answered late; t2 and t4 still running. First response: t1, t2 met, t3 missed.
    assert report["sla"] == {
        "met": 1,
        "breached": 1,
        "compliance_rate": 0.5,
        "first_response_compliance_rate": 0.6667,
        "open_at_risk": 1,  # t4: opened Saturday, 3 of 4 working hours gone on Monday at noon
        "open_breached": 0,
    }
    assert report["csat"] == {
        "resolved": 2,
        "rated": 2,
        "response_rate": 1.0,
        "average": 3.5,
        "distribution": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
    }
    backlog = report["backlog"]
    assert backlog["open"] == 3
    assert backlog["by_status"] == {"open": 1, "new": 1, "pending": 1}
    assert backlog["ageing"] == {"<1d": 0, "1-3d": 2, "3-7d": 0, "7-30d": 0, ">30d": 1}
    assert backlog["oldest_days"] == 67.5

    # Tiers 1, 1, 2, 1: 15 + 15 + 35 + 15; 8 conversations at 0.10; 3 deflections would have cost 15 each.
    assert report["cost"] == {
        "currency": "EUR",
        "ticket_cost": 80.0,
        "bot_cost": 0.8,
        "total": 80.8,
        "cost_per_ticket": 20.0,
        "cost_per_conversation": 10.1,
        "deflection_savings": 45.0,
    }
    assert report["top_deflecting_articles"] == [
        {"article_id": "vpn-drops", "title": "Vpn Drops", "deflections": 2},
        {"article_id": "printer-add", "title": "Printer Add", "deflections": 1},
    ]
    # The agent-opened ticket is not an escalated question.
    assert report["top_escalated_questions"] == [
        {"question": "VPN drops every hour", "tickets": 2},
        {"question": "Printer jam", "tickets": 1},
    ]


def test_an_empty_period_has_null_rates(db: Database) -> None:
    with db.transaction() as session:
        report = service_desk_metrics(
            session, since=SINCE, until=UNTIL, now=NOW, cost=CostModel(currency="USD", per_bot_conversation=0)
        )
    assert report["volume"]["tickets"] == 0
    assert len(report["volume"]["per_day"]) == 7
    assert report["deflection"]["rate"] is None
    assert report["first_contact_resolution"]["rate"] is None
    assert report["response_times"]["first_response"] == {
        "count": 0,
        "mean_wall_hours": None,
        "mean_business_hours": None,
    }
    assert report["sla"]["compliance_rate"] is None
    assert report["csat"]["average"] is None
    assert report["backlog"] == {
        "open": 0,
        "by_status": {},
        "ageing": {"<1d": 0, "1-3d": 0, "3-7d": 0, "7-30d": 0, ">30d": 0},
        "oldest_days": None,
    }
    assert report["cost"]["cost_per_ticket"] is None and report["cost"]["currency"] == "USD"
    assert report["top_deflecting_articles"] == [] and report["top_escalated_questions"] == []


# -- tierzero report -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # The command configures the root logger for a terminal (CliRunner's, closed afterwards).
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_report(tmp_path: Path, database_url: str, *args: str) -> Result:
    config = {
        "data_dir": str(tmp_path / "data"),
        "database": {"url": database_url},
        "kb": {"auto_index": False},
        "channels": {},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return CliRunner().invoke(main, ["--config", str(path), "report", *args])


def test_report_prints_json_with_the_documented_keys(tmp_path: Path, database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        ticket(session, subject="VPN drops", channel="slack", opened=utcnow() - timedelta(days=2))
    db.dispose()
    result = run_report(tmp_path, database_url, "--since", "30d", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {
        "period",
        "volume",
        "deflection",
        "first_contact_resolution",
        "response_times",
        "sla",
        "csat",
        "backlog",
        "cost",
        "top_deflecting_articles",
        "top_escalated_questions",
    }
    assert report["volume"]["tickets"] == 1 and len(report["volume"]["per_day"]) == 31


def test_report_as_text(tmp_path: Path, database_url: str) -> None:
    result = run_report(tmp_path, database_url, "--since", "2w")
    assert result.exit_code == 0, result.output
    assert "Tier-0 deflection      n/a (0 of 0 conversations)" in result.stdout
    assert "(14 days)" in result.stdout


@pytest.mark.parametrize(
    ("since", "message"),
    [("30x", "use e.g. 30d, 12h, 4w"), ("0d", "longer than zero"), ("2999-01-01", "not in the past")],
)
def test_report_refuses_a_bad_period(tmp_path: Path, since: str, message: str) -> None:
    result = run_report(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", "--since", since)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_since_accepts_dates_and_relative_periods() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since("12h", now=now) == now - timedelta(hours=12)
    assert parse_since("4W", now=now) == now - timedelta(weeks=4)
    assert parse_since("2026-11-01", now=now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T10:00+01:00", now=now) == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
