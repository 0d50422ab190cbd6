"""Service-level due times and states, counted in business hours.

A ``BusinessCalendar`` says when the desk works: working days and hours in a
time zone, minus public and explicit holidays. All arithmetic walks the
calendar's working windows converted to UTC, so DST changes, nights and
weekends need no special cases. Time a ticket spends pending on the requester
does not count: it is added to the targets (``paused_seconds``), which pushes
the due times back by exactly the business time that was paused.

Every function takes the current time as an argument (``now``); nothing here
reads the clock, so tests pin it.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from ticketing.models import Priority, TicketStatus
from ticketing.service_desk_models import SlaClock, sla_clock_of

# The longest stretch searched for working time before giving up (a calendar with
# no working day at all is refused by the configuration before it gets here).
MAX_DAYS_SEARCHED = 3 * 366

SLA_STATES = ("ok", "at_risk", "breached", "met", "paused")


@dataclass(frozen=True)
class BusinessCalendar:
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    working_days: frozenset[int] = frozenset(range(7))  # Monday = 0
    start: time = time(0, 0)
    end: time | None = None  # None: midnight at the end of the day
    closed_days: frozenset[date] = frozenset()
    public_holidays: Container[date] | None = None

    def is_working_day(self, day: date) -> bool:
        if day.weekday() not in self.working_days or day in self.closed_days:
            return False
        return self.public_holidays is None or day not in self.public_holidays

    def window(self, day: date) -> tuple[datetime, datetime]:
        """That local day's working hours as UTC instants (DST-aware)."""
        opens = datetime.combine(day, self.start, tzinfo=self.zone)
        if self.end is None:
            closes = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=self.zone)
        else:
            closes = datetime.combine(day, self.end, tzinfo=self.zone)
        return opens.astimezone(UTC), closes.astimezone(UTC)

    def windows_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working windows, in order, that end after ``moment`` (the first one clipped to it)."""
        day = _aware(moment).astimezone(self.zone).date() - timedelta(days=1)  # a window may span midnight UTC
        for _ in range(MAX_DAYS_SEARCHED):
            if self.is_working_day(day):
                opens, closes = self.window(day)
                if closes > moment:
                    yield max(opens, moment), closes
            day += timedelta(days=1)
        raise ValueError(f"the business calendar has no working time within {MAX_DAYS_SEARCHED} days")

    def add(self, moment: datetime, seconds: float) -> datetime:
        """The instant when ``seconds`` of working time have passed after ``moment``."""
        moment = _aware(moment)
        if seconds <= 0:
            return moment
        remaining = timedelta(seconds=seconds)
        for opens, closes in self.windows_from(moment):
            if remaining <= closes - opens:
                return opens + remaining
            remaining -= closes - opens
        raise AssertionError("unreachable: windows_from raises when it runs out")

    def seconds_between(self, earlier: datetime, later: datetime) -> float:
        """Working seconds in [earlier, later); negative when ``later`` comes first."""
        earlier, later = _aware(earlier), _aware(later)
        if later < earlier:
            return -self.seconds_between(later, earlier)
        total = 0.0
        for opens, closes in self.windows_from(earlier):
            if opens >= later:
                break
            total += (min(closes, later) - opens).total_seconds()
        return total


ALWAYS_OPEN = BusinessCalendar()

# priority -> (first response, resolution) in working seconds; the wall-clock defaults
# that apply when no service_desk configuration is handed in.
DEFAULT_TARGETS: dict[str, tuple[float, float]] = {
    Priority.URGENT: (30 * 60, 4 * 3600),
    Priority.HIGH: (3600, 8 * 3600),
    Priority.NORMAL: (4 * 3600, 48 * 3600),
    Priority.LOW: (8 * 3600, 5 * 24 * 3600),
}


class SlaTicket(Protocol):
    """What the SLA needs to know about a ticket (a ``Ticket`` row fits)."""

    priority: str
    status: str
    created_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    first_response_due: datetime | None
    resolution_due: datetime | None


@dataclass(frozen=True)
class SlaPolicy:
    calendar: BusinessCalendar = ALWAYS_OPEN
    targets: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    at_risk_percent: float = 75.0

    def target(self, priority: str) -> tuple[float, float]:
        return self.targets.get(priority) or self.targets[Priority.NORMAL]

    def due_times(self, priority: str, opened_at: datetime, *, paused_seconds: float = 0) -> tuple[datetime, datetime]:
        """(first response due, resolution due); ``paused_seconds`` of paused working time push both back."""
        first_response, resolution = self.target(priority)
        return (
            self.calendar.add(opened_at, first_response + paused_seconds),
            self.calendar.add(opened_at, resolution + paused_seconds),
        )

    def target_state(
        self,
        *,
        opened_at: datetime,
        due: datetime | None,
        done_at: datetime | None,
        now: datetime,
        target_seconds: float | None = None,
    ) -> str:
        """ok | at_risk | breached | met for one target (first response or resolution).

        At risk: the working time left before ``due`` is at most (100 - at_risk_percent) %
        of the target; the target defaults to the working time from opening to due
        (pass it when paused time pushed the due time back).
        """
        if due is None:
            return "ok"
        if done_at is not None:
            return "met" if done_at <= due else "breached"
        if now >= due:
            return "breached"
        if now <= opened_at:
            return "ok"
        total = target_seconds if target_seconds is not None else self.calendar.seconds_between(opened_at, due)
        left = self.calendar.seconds_between(now, due)
        if total > 0 and (total - left) / total * 100 >= self.at_risk_percent:
            return "at_risk"
        return "ok"

    def states(self, ticket: SlaTicket, *, now: datetime) -> dict[str, str]:
        """Each target's state: {"first_response": ..., "resolution": ...}."""
        first_response, resolution = self.target(ticket.priority)
        return {
            "first_response": self.target_state(
                opened_at=ticket.created_at,
                due=ticket.first_response_due,
                done_at=ticket.first_response_at,
                now=now,
                target_seconds=first_response,
            ),
            "resolution": self.target_state(
                opened_at=ticket.created_at,
                due=ticket.resolution_due,
                done_at=ticket.resolved_at,
                now=now,
                target_seconds=resolution,
            ),
        }

    def ticket_state(self, ticket: SlaTicket, *, now: datetime, paused_at: datetime | None = None) -> str:
        """The one state shown on a ticket: ok, at_risk, breached, met or paused.

        A missed target stays "breached" for good; a resolved ticket that met both
        is "met"; a ticket pending on the requester is "paused": its clock stands
        at ``paused_at`` (when that is unknown, only targets already done count).
        """
        if ticket.status == TicketStatus.PENDING:
            now = paused_at or datetime.min.replace(tzinfo=UTC)
        states = self.states(ticket, now=now)
        if "breached" in states.values():
            return "breached"
        if ticket.status in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
            return "met"
        if ticket.status == TicketStatus.PENDING:
            return "paused"
        return "at_risk" if "at_risk" in states.values() else "ok"


DEFAULT_POLICY = SlaPolicy()


def due_times(priority: str, opened_at: datetime, policy: SlaPolicy | None = None) -> tuple[datetime, datetime]:
    """(first response due, resolution due) for a ticket opened at ``opened_at``."""
    return (policy or DEFAULT_POLICY).due_times(priority, opened_at)


def sla_state(
    *,
    due: datetime | None,
    done_at: datetime | None,
    now: datetime,
    opened_at: datetime,
    at_risk: float = 0.75,
    policy: SlaPolicy | None = None,
) -> str:
    """ok | at_risk | breached | met, for one due time (``at_risk`` is a fraction; the policy's calendar counts)."""
    base = policy or DEFAULT_POLICY
    fitted = SlaPolicy(calendar=base.calendar, targets=base.targets, at_risk_percent=at_risk * 100)
    return fitted.target_state(opened_at=opened_at, due=due, done_at=done_at, now=now)


def ticket_sla_state(session: Session, *, ticket: Any, now: datetime, policy: SlaPolicy | None = None) -> str:
    """The state to show on a ticket (ok, at_risk, breached, met, paused), its pause taken into account."""
    clock = session.get(SlaClock, ticket.id)
    return (policy or DEFAULT_POLICY).ticket_state(ticket, now=now, paused_at=clock.paused_at if clock else None)


# -- pausing while pending on the requester ---------------------------------------------


def pause(session: Session, *, ticket: Any, now: datetime) -> None:
    """Stop the ticket's SLA clock (it is pending on the requester). Idempotent."""
    clock = sla_clock_of(session, ticket_id=ticket.id)
    if clock.paused_at is None:
        clock.paused_at = now


def resume(session: Session, *, ticket: Any, now: datetime, policy: SlaPolicy | None = None) -> float:
    """Restart the clock; the paused working time moves both due times back. Returns it (seconds)."""
    policy = policy or DEFAULT_POLICY
    clock = sla_clock_of(session, ticket_id=ticket.id)
    if clock.paused_at is None:
        return 0.0
    paused = max(0.0, policy.calendar.seconds_between(clock.paused_at, now))
    clock.paused_seconds = (clock.paused_seconds or 0) + paused
    clock.paused_at = None
    recompute_due_times(session, ticket=ticket, policy=policy)
    return paused


def recompute_due_times(session: Session, *, ticket: Any, policy: SlaPolicy | None = None) -> None:
    """Due times from the ticket's creation, its current priority and its paused time (after a priority change)."""
    clock = sla_clock_of(session, ticket_id=ticket.id)
    ticket.first_response_due, ticket.resolution_due = (policy or DEFAULT_POLICY).due_times(
        ticket.priority, ticket.created_at, paused_seconds=clock.paused_seconds or 0
    )


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the SLA calendar; pass timezone-aware times")
    return moment
