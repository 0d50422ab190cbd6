"""Business-hours SLA arithmetic: nights, weekends, holidays, DST changes and pauses, with a pinned clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from bot.config import ConfigError, settings_from_mapping
from bot.service_desk_config import CalendarSettings
from ticketing import sla
from ticketing.db import Database
from ticketing.models import Conversation, Requester, Ticket, TicketStatus
from ticketing.service_desk_models import SlaClock
from ticketing.sla import BusinessCalendar, SlaPolicy

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def office_calendar(**overrides: object) -> BusinessCalendar:
    """Mon-Fri 09:00-17:00 in Berlin, German public holidays (Bavaria)."""
    values: dict[str, object] = {
        "time_zone": "Europe/Berlin",
        "hours": "09:00-17:00",
        "holidays_country": "DE",
        "holidays_subdivision": "BY",
    }
    values.update(overrides)
    return CalendarSettings.model_validate(values).calendar()


def policy(calendar: BusinessCalendar, *, at_risk_percent: float = 75) -> SlaPolicy:
    return SlaPolicy(
        calendar=calendar,
        targets={"urgent": (HOUR, 4 * HOUR), "high": (2 * HOUR, 8 * HOUR), "normal": (4 * HOUR, 16 * HOUR)},
        at_risk_percent=at_risk_percent,
    )


# -- adding working time -----------------------------------------------------------------------


def test_time_inside_one_working_day() -> None:
    assert office_calendar().add(berlin(2026, 12, 1, 10, 0), 4 * HOUR) == berlin(2026, 12, 1, 14, 0)


def test_the_clock_stops_overnight() -> None:
    # Tuesday 16:00 + 4h = 1h on Tuesday, 3h on Wednesday.
    assert office_calendar().add(berlin(2026, 12, 1, 16, 0), 4 * HOUR) == berlin(2026, 12, 2, 12, 0)


def test_opened_at_night_starts_counting_next_morning() -> None:
    assert office_calendar().add(berlin(2026, 12, 1, 22, 30), HOUR) == berlin(2026, 12, 2, 10, 0)
    assert office_calendar().add(berlin(2026, 12, 2, 3, 0), HOUR) == berlin(2026, 12, 2, 10, 0)


def test_the_weekend_does_not_count() -> None:
    # Friday 16:00 + 4h -> Monday 12:00; opened on Saturday -> Monday from 09:00.
    assert office_calendar().add(berlin(2026, 12, 4, 16, 0), 4 * HOUR) == berlin(2026, 12, 7, 12, 0)
    assert office_calendar().add(berlin(2026, 12, 5, 11, 0), 2 * HOUR) == berlin(2026, 12, 7, 11, 0)


def test_a_target_ending_exactly_at_closing_time_is_due_then() -> None:
    assert office_calendar().add(berlin(2026, 12, 1, 9, 0), 8 * HOUR) == berlin(2026, 12, 1, 17, 0)


def test_public_holidays_are_skipped() -> None:
    # Thu 24 Dec 16:00 + 4h: 1h on Thursday; 25 and 26 Dec are holidays, then the weekend -> Mon 28 Dec 12:00.
    assert office_calendar().add(berlin(2026, 12, 24, 16, 0), 4 * HOUR) == berlin(2026, 12, 28, 12, 0)
    # Bavaria also has Epiphany (Tue 6 Jan 2026); Berlin's state does not.
    assert office_calendar().add(berlin(2026, 1, 5, 16, 0), 2 * HOUR) == berlin(2026, 1, 7, 10, 0)
    assert office_calendar(holidays_subdivision="BE").add(berlin(2026, 1, 5, 16, 0), 2 * HOUR) == berlin(
        2026, 1, 6, 10, 0
    )


def test_explicit_closed_days_are_skipped() -> None:
    calendar = office_calendar(holidays=["2026-12-28", "2026-12-29"])
    assert calendar.add(berlin(2026, 12, 24, 16, 0), 4 * HOUR) == berlin(2026, 12, 30, 12, 0)


def test_spring_forward_day_counts_real_elapsed_time() -> None:
    # Round the clock in Berlin: 29 March 2026 has only 23 hours (02:00 -> 03:00).
    calendar = CalendarSettings(
        time_zone="Europe/Berlin", working_days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"), hours="00:00-24:00"
    ).calendar()
    start = berlin(2026, 3, 28, 12, 0)
    due = calendar.add(start, 24 * HOUR)
    assert due == start.astimezone(UTC) + timedelta(hours=24)  # 24 real hours later...
    assert due.astimezone(BERLIN).hour == 13  # ...which reads 13:00 on the local clock
    assert calendar.seconds_between(berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0)) == 23 * HOUR


def test_fall_back_day_has_twenty_five_hours() -> None:
    calendar = CalendarSettings(time_zone="Europe/Berlin", working_days=("sat", "sun"), hours="00:00-24:00").calendar()
    assert calendar.seconds_between(berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 26, 0, 0)) == 25 * HOUR


def test_working_hours_across_a_dst_change_stay_on_the_local_clock() -> None:
    # A seven-day desk, 09:00-17:00 local: Saturday before the change is UTC+1, Sunday after it UTC+2.
    calendar = office_calendar(working_days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
    due = calendar.add(berlin(2026, 3, 28, 16, 0), 2 * HOUR)
    assert due == berlin(2026, 3, 29, 10, 0)
    assert due == datetime(2026, 3, 29, 8, 0, tzinfo=UTC)  # summer time: UTC+2
    assert calendar.seconds_between(berlin(2026, 3, 28, 9, 0), berlin(2026, 3, 30, 9, 0)) == 16 * HOUR


def test_new_york_desk_in_utc_terms() -> None:
    calendar = CalendarSettings(time_zone="America/New_York", hours="08:00-18:00").calendar()
    # Friday 6 March 2026 17:00 EST + 2h -> Monday 9 March 09:00 EDT (DST began on Sunday 8 March).
    due = calendar.add(datetime(2026, 3, 6, 22, 0, tzinfo=UTC), 2 * HOUR)
    assert due == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)


def test_seconds_between_is_the_inverse_of_add() -> None:
    calendar = office_calendar()
    start = berlin(2026, 12, 18, 15, 17)
    for hours in (0.5, 3, 8, 17, 41, 200):
        assert calendar.seconds_between(start, calendar.add(start, hours * HOUR)) == pytest.approx(hours * HOUR)
    assert calendar.seconds_between(berlin(2026, 12, 5, 10, 0), berlin(2026, 12, 6, 10, 0)) == 0  # a weekend


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        office_calendar().add(datetime(2026, 12, 1, 10, 0), HOUR)


# -- due times and states ------------------------------------------------------------------------


def a_ticket(opened: datetime, rules: SlaPolicy, *, priority: str = "normal", **fields: object) -> SimpleNamespace:
    first_response_due, resolution_due = rules.due_times(priority, opened)
    values = {
        "priority": priority,
        "status": TicketStatus.NEW,
        "created_at": opened,
        "first_response_at": None,
        "resolved_at": None,
        "first_response_due": first_response_due,
        "resolution_due": resolution_due,
    }
    values.update(fields)
    return SimpleNamespace(**values)


def test_due_times_per_priority_in_business_hours() -> None:
    rules = policy(office_calendar())
    opened = berlin(2026, 12, 4, 15, 0)  # a Friday
    assert rules.due_times("urgent", opened) == (berlin(2026, 12, 4, 16, 0), berlin(2026, 12, 7, 11, 0))
    assert rules.due_times("normal", opened) == (berlin(2026, 12, 7, 11, 0), berlin(2026, 12, 8, 15, 0))
    # An unknown priority gets the normal policy.
    assert rules.due_times("whatever", opened) == rules.due_times("normal", opened)


def test_state_moves_from_ok_to_at_risk_to_breached_in_business_time() -> None:
    rules = policy(office_calendar())
    ticket = a_ticket(berlin(2026, 12, 4, 16, 0), rules)  # first response due Monday 12:00
    assert ticket.first_response_due == berlin(2026, 12, 7, 12, 0)
    assert rules.ticket_state(ticket, now=berlin(2026, 12, 5, 12, 0)) == "ok"  # Saturday: 1h of 4 used
    assert rules.ticket_state(ticket, now=berlin(2026, 12, 7, 10, 59)) == "ok"
    assert rules.ticket_state(ticket, now=berlin(2026, 12, 7, 11, 0)) == "at_risk"  # 3h of 4 = 75 %
    assert rules.ticket_state(ticket, now=berlin(2026, 12, 7, 12, 0)) == "breached"


def test_at_risk_threshold_is_configurable() -> None:
    rules = policy(office_calendar(), at_risk_percent=50)
    ticket = a_ticket(berlin(2026, 12, 1, 9, 0), rules)
    assert rules.ticket_state(ticket, now=berlin(2026, 12, 1, 10, 59)) == "ok"
    assert rules.ticket_state(ticket, now=berlin(2026, 12, 1, 11, 0)) == "at_risk"


def test_met_and_breached_are_final() -> None:
    rules = policy(office_calendar())
    opened = berlin(2026, 12, 1, 9, 0)
    on_time = a_ticket(
        opened,
        rules,
        status=TicketStatus.RESOLVED,
        first_response_at=opened + timedelta(hours=1),
        resolved_at=opened + timedelta(hours=5),
    )
    assert rules.ticket_state(on_time, now=berlin(2027, 1, 1, 9, 0)) == "met"
    late_answer = a_ticket(
        opened,
        rules,
        status=TicketStatus.RESOLVED,
        first_response_at=opened + timedelta(hours=5),
        resolved_at=opened + timedelta(hours=6),
    )
    assert rules.ticket_state(late_answer, now=opened + timedelta(hours=6)) == "breached"
    assert rules.states(late_answer, now=opened + timedelta(hours=6)) == {
        "first_response": "breached",
        "resolution": "met",
    }
    # Answered in time, resolution now running late.
    answered = a_ticket(opened, rules, status=TicketStatus.OPEN, first_response_at=opened + timedelta(minutes=5))
    assert rules.ticket_state(answered, now=berlin(2026, 12, 2, 16, 0)) == "at_risk"  # 15h of 16
    assert rules.ticket_state(answered, now=berlin(2026, 12, 3, 9, 0)) == "breached"


def test_a_pending_ticket_is_paused_and_its_clock_stands() -> None:
    rules = policy(office_calendar())
    opened = berlin(2026, 12, 1, 9, 0)
    pending = a_ticket(opened, rules, status=TicketStatus.PENDING)
    paused_at = opened + timedelta(hours=1)
    assert rules.ticket_state(pending, now=berlin(2026, 12, 20, 9, 0), paused_at=paused_at) == "paused"
    assert rules.ticket_state(pending, now=berlin(2026, 12, 20, 9, 0)) == "paused"
    # Breached before the pause: it stays breached.
    assert rules.ticket_state(pending, now=berlin(2026, 12, 20, 9, 0), paused_at=opened + timedelta(hours=5)) == (
        "breached"
    )


def test_compatibility_helpers_use_the_wall_clock_by_default() -> None:
    opened = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a Saturday: the default policy is round the clock
    assert sla.due_times("urgent", opened) == (opened + timedelta(minutes=30), opened + timedelta(hours=4))
    assert sla.sla_state(
        due=opened + timedelta(hours=4), done_at=None, now=opened + timedelta(hours=3), opened_at=opened
    ) == ("at_risk")


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calendar", "message"),
    [
        ({"time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"hours": "17:00-09:00"}, "working hours must end after they start"),
        ({"hours": "9-5"}, "expected HH:MM-HH:MM"),
        ({"working_days": ["mon", "funday"]}, "unknown weekday 'fun'"),
        ({"holidays_country": "XX"}, "holidays_country 'XX' is not a supported ISO country code"),
        ({"holidays_country": "DE", "holidays_subdivision": "ZZ"}, "holidays_subdivision 'ZZ' is not a subdivision"),
        ({"holidays": ["not-a-date"]}, "service_desk.calendar.holidays.0"),
    ],
)
def test_bad_calendars_are_refused_with_the_key_named(calendar: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"service_desk": {"calendar": calendar}})
    assert message in str(caught.value)
    assert "service_desk.calendar" in str(caught.value)


def test_every_priority_needs_a_policy() -> None:
    with pytest.raises(ConfigError, match="missing: low, normal, high"):
        settings_from_mapping(
            {"service_desk": {"sla": {"policies": {"urgent": {"first_response_hours": 1, "resolution_hours": 4}}}}}
        )


def test_configured_policy_counts_business_hours() -> None:
    settings = settings_from_mapping(
        {
            "service_desk": {
                "calendar": {"time_zone": "Europe/Berlin", "hours": "08:00-16:00", "holidays": ["2026-12-31"]},
                "sla": {"at_risk_percent": 80},
            }
        }
    )
    rules = settings.service_desk.sla_policy
    assert rules.at_risk_percent == 80
    # Normal: 4h to first response; Wed 30 Dec 15:00 -> 1h, 31 Dec closed, 1 Jan public? not configured -> Fri 1 Jan.
    assert rules.due_times("normal", berlin(2026, 12, 30, 15, 0))[0] == berlin(2027, 1, 1, 11, 0)


# -- pausing on the database -----------------------------------------------------------------------


def _stored_ticket(db: Database, opened: datetime, rules: SlaPolicy) -> int:
    with db.transaction() as session:
        requester = Requester(channel="test", platform_id="u1", display_name="U")
        session.add(requester)
        session.flush()
        conversation = Conversation(channel="test", channel_conversation_id="c1", requester_id=requester.id)
        session.add(conversation)
        session.flush()
        first, resolution = rules.due_times("normal", opened)
        ticket = Ticket(
            conversation_id=conversation.id,
            requester_id=requester.id,
            subject="s",
            created_at=opened,
            first_response_due=first,
            resolution_due=resolution,
        )
        session.add(ticket)
        session.flush()
        return ticket.id


def test_pending_time_moves_the_due_times_back(db: Database) -> None:
    rules = policy(office_calendar())
    opened = berlin(2026, 12, 1, 9, 0)
    ticket_id = _stored_ticket(db, opened, rules)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.first_response_due == berlin(2026, 12, 1, 13, 0)
        ticket.status = TicketStatus.PENDING
        sla.pause(session, ticket=ticket, now=berlin(2026, 12, 1, 10, 0))
        sla.pause(session, ticket=ticket, now=berlin(2026, 12, 1, 11, 0))  # idempotent: the first pause counts
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.status = TicketStatus.OPEN
        # Paused from Tue 10:00 to Wed 12:00: 7h + 3h = 10 business hours.
        paused = sla.resume(session, ticket=ticket, now=berlin(2026, 12, 2, 12, 0), policy=rules)
        assert paused == 10 * HOUR
        assert sla.resume(session, ticket=ticket, now=berlin(2026, 12, 2, 13, 0), policy=rules) == 0
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        clock = session.get(SlaClock, ticket_id)
        assert ticket is not None and clock is not None
        assert clock.paused_at is None and clock.paused_seconds == 10 * HOUR
        # 4h target + 10h paused from Tue 09:00 -> Wed 15:00; resolution 16h + 10h -> Fri 4 Dec 11:00.
        assert ticket.first_response_due == berlin(2026, 12, 2, 15, 0)
        assert ticket.resolution_due == berlin(2026, 12, 4, 11, 0)
        # Working time used: Tue 09-10 and Wed 12-13 = 2h of 4 (the pause does not count).
        assert rules.ticket_state(ticket, now=berlin(2026, 12, 2, 13, 0)) == "ok"
        assert rules.ticket_state(ticket, now=berlin(2026, 12, 2, 14, 0)) == "at_risk"
        assert rules.ticket_state(ticket, now=berlin(2026, 12, 2, 15, 0)) == "breached"


def test_the_shown_state_of_a_paused_ticket_stands_at_its_pause(db: Database) -> None:
    rules = policy(office_calendar())
    opened = berlin(2026, 12, 1, 9, 0)
    ticket_id = _stored_ticket(db, opened, rules)
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.status = TicketStatus.PENDING
        sla.pause(session, ticket=ticket, now=berlin(2026, 12, 1, 12, 30))  # 3.5h of 4 used: at risk, not late
    with db.transaction() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        # A week later the requester still has not answered: paused, not breached.
        assert sla.ticket_sla_state(session, ticket=ticket, now=berlin(2026, 12, 8, 9, 0), policy=rules) == "paused"
        ticket.status = TicketStatus.OPEN
        sla.resume(session, ticket=ticket, now=berlin(2026, 12, 8, 9, 0), policy=rules)
        # Back at 3.5h of 4: at risk; half an hour of working time later: breached.
        assert sla.ticket_sla_state(session, ticket=ticket, now=berlin(2026, 12, 8, 9, 0), policy=rules) == "at_risk"
        assert sla.ticket_sla_state(session, ticket=ticket, now=berlin(2026, 12, 8, 9, 30), policy=rules) == "breached"
