"""The ``service_desk:`` section of config.yaml: calendar, SLAs, routing, approvals, CSAT, costs, escalation.

Validated as strictly as the rest of the settings; the ``*_rules()`` helpers turn
it into the plain values the ``ticketing`` modules work with (``ticketing`` never
imports ``bot``).
"""

from __future__ import annotations

import functools
import re
from datetime import date, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ticketing.approvals import CatalogItem, Directory
from ticketing.metrics import CostModel
from ticketing.routing import CategoryRule, PriorityCues, RoutingRules
from ticketing.sla import BusinessCalendar, SlaPolicy

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
PRIORITIES = ("low", "normal", "high", "urgent")


class _Strict(BaseModel):
    # The same rules as bot.config.StrictModel (not imported: bot.config imports this module).
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalendarSettings(_Strict):
    time_zone: str = "UTC"
    working_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    # Local working hours on a working day; "00:00-24:00" for round the clock.
    hours: str = "09:00-17:00"
    # Public holidays from the `holidays` package (ISO country code, optional subdivision)...
    holidays_country: str | None = None
    holidays_subdivision: str | None = None
    # ...plus explicit closed days (YYYY-MM-DD).
    holidays: tuple[date, ...] = ()

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("working_days")
    @classmethod
    def _weekday_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        days = tuple(day.strip().lower()[:3] for day in value)
        unknown = [day for day in days if day not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday {unknown[0]!r}; use {', '.join(WEEKDAYS)}")
        if not days:
            raise ValueError("at least one working day is needed")
        return days

    @field_validator("hours")
    @classmethod
    def _hours_range(cls, value: str) -> str:
        _parse_hours(value)
        return value

    @model_validator(mode="after")
    def _known_country(self) -> CalendarSettings:
        if self.holidays_country is not None:
            supported = holidays.list_supported_countries()
            if self.holidays_country not in supported:
                raise ValueError(f"holidays_country {self.holidays_country!r} is not a supported ISO country code")
            subdivisions = supported[self.holidays_country]
            if self.holidays_subdivision is not None and self.holidays_subdivision not in subdivisions:
                raise ValueError(
                    f"holidays_subdivision {self.holidays_subdivision!r} is not a subdivision of "
                    f"{self.holidays_country} ({', '.join(subdivisions) or 'none'})"
                )
        elif self.holidays_subdivision is not None:
            raise ValueError("holidays_subdivision needs holidays_country")
        return self

    def calendar(self) -> BusinessCalendar:
        start, end = _parse_hours(self.hours)
        public = _public_holidays(self.holidays_country, self.holidays_subdivision) if self.holidays_country else None
        return BusinessCalendar(
            zone=ZoneInfo(self.time_zone),
            working_days=frozenset(WEEKDAYS.index(day) for day in self.working_days),
            start=start,
            end=end,
            closed_days=frozenset(self.holidays),
            public_holidays=public,
        )


@functools.lru_cache(maxsize=16)
def _public_holidays(country: str, subdivision: str | None) -> holidays.HolidayBase:
    """One table per country and region, shared by every calendar built from the settings. Years around
    today are filled in up front: later ones are added on first use, better not by several threads at once."""
    this_year = date.today().year
    return holidays.country_holidays(country, subdiv=subdivision, years=range(this_year - 5, this_year + 6))


def _parse_hours(value: str) -> tuple[time, time | None]:
    """("09:00-17:00") -> (09:00, 17:00); an end of 24:00 is None (midnight of the next day)."""
    match = _HOURS.match(value.strip())
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM, got {value!r}")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"not a time of day in {value!r}")
    start, end = time(h1, m1), None if h2 == 24 else time(h2, m2)
    if end is not None and end <= start:
        raise ValueError(f"working hours must end after they start ({value!r})")
    return start, end


class SlaTarget(_Strict):
    # Business hours of the calendar (pending-on-requester time does not count).
    first_response_hours: float = Field(gt=0, le=10_000)
    resolution_hours: float = Field(gt=0, le=100_000)

    @model_validator(mode="after")
    def _resolution_after_response(self) -> SlaTarget:
        if self.resolution_hours < self.first_response_hours:
            raise ValueError("resolution_hours must not be shorter than first_response_hours")
        return self


def _default_policies() -> dict[str, SlaTarget]:
    return {
        "urgent": SlaTarget(first_response_hours=1, resolution_hours=4),
        "high": SlaTarget(first_response_hours=2, resolution_hours=8),
        "normal": SlaTarget(first_response_hours=4, resolution_hours=16),
        "low": SlaTarget(first_response_hours=8, resolution_hours=40),
    }


class SlaSettings(_Strict):
    # A ticket is "at risk" once this share of a target's business time has elapsed.
    at_risk_percent: float = Field(default=75, gt=0, lt=100)
    policies: dict[str, SlaTarget] = Field(default_factory=_default_policies)

    @field_validator("policies")
    @classmethod
    def _every_priority(cls, value: dict[str, SlaTarget]) -> dict[str, SlaTarget]:
        unknown = sorted(set(value) - set(PRIORITIES))
        if unknown:
            raise ValueError(f"unknown priority {unknown[0]!r}; priorities are {', '.join(PRIORITIES)}")
        missing = [p for p in PRIORITIES if p not in value]
        if missing:
            raise ValueError(f"a policy is needed for every priority; missing: {', '.join(missing)}")
        return value


class CategorySettings(_Strict):
    # A case-insensitive word or phrase in the question puts the ticket in this category.
    keywords: tuple[str, ...] = ()
    # Every ticket from these channels lands here unless a keyword matched another category.
    channels: tuple[str, ...] = ()
    group: str | None = None  # default: routing.default_group


def _default_categories() -> dict[str, CategorySettings]:
    return {
        "access": CategorySettings(keywords=("password", "locked out", "mfa", "sign in", "sign-in", "login")),
        "network": CategorySettings(keywords=("vpn", "wifi", "wi-fi", "network", "internet")),
        "hardware": CategorySettings(keywords=("laptop", "printer", "monitor", "keyboard", "dock")),
        "software": CategorySettings(keywords=("install", "licence", "license", "outlook", "teams", "excel")),
    }


class PriorityCueSettings(_Strict):
    urgent: tuple[str, ...] = ("outage", "everyone", "whole office", "all users", "nobody can", "production down")
    high: tuple[str, ...] = ("can't work", "cannot work", "can not work", "blocked", "asap", "urgent", "deadline")
    low: tuple[str, ...] = ("when you have time", "no rush", "no hurry", "whenever", "low priority", "not urgent")


class RoutingSettings(_Strict):
    default_category: str = "general"
    default_group: str = "service-desk"
    categories: dict[str, CategorySettings] = Field(default_factory=_default_categories)
    priority_cues: PriorityCueSettings = PriorityCueSettings()
    # Nearest labelled neighbours (past tickets, agents' corrections, KB articles) by cosine similarity.
    neighbours: int = Field(default=5, ge=1, le=50)
    min_similarity: float = Field(default=0.45, ge=0.0, le=1.0)

    def rules(self) -> RoutingRules:
        return RoutingRules(
            categories=tuple(
                CategoryRule(name=name, keywords=c.keywords, channels=c.channels, group=c.group)
                for name, c in self.categories.items()
            ),
            default_category=self.default_category,
            default_group=self.default_group,
            cues=PriorityCues(
                urgent=self.priority_cues.urgent, high=self.priority_cues.high, low=self.priority_cues.low
            ),
            neighbours=self.neighbours,
            min_similarity=self.min_similarity,
        )


class GroupSettings(_Strict):
    # Who belongs to the group: "channel:platform_id" (e.g. "slack:U012AB") or an e-mail address.
    members: tuple[str, ...] = ()


class DirectoryEntry(_Strict):
    manager: str  # "channel:platform_id" or an e-mail address


class CatalogItemSettings(_Strict):
    title: str
    # Phrases that identify a request for this item in the requester's message.
    keywords: tuple[str, ...] = ()
    approver: Literal["manager", "group", "none"] = "manager"
    approver_group: str | None = None
    group: str | None = None  # who fulfils it once approved

    @model_validator(mode="after")
    def _group_for_group_approval(self) -> CatalogItemSettings:
        if self.approver == "group" and not self.approver_group:
            raise ValueError("approver 'group' needs approver_group")
        return self


def _default_catalog() -> dict[str, CatalogItemSettings]:
    return {
        "new-laptop": CatalogItemSettings(title="New laptop", keywords=("new laptop", "replacement laptop")),
        "software-licence": CatalogItemSettings(
            title="Software licence", keywords=("licence for", "license for", "software licence", "software license")
        ),
        "shared-drive-access": CatalogItemSettings(
            title="Access to a shared drive", keywords=("access to the shared drive", "shared drive access")
        ),
    }


class CsatSettings(_Strict):
    # A requester's message within this many days after resolution reopens the ticket
    # (later, it starts a new conversation with the bot).
    reopen_window_days: float = Field(default=7, ge=0, le=365)


class CostSettings(_Strict):
    currency: str = "EUR"
    # Handling cost of a ticket by the highest tier it reached (4 = external vendor).
    per_ticket_by_tier: dict[int, float] = Field(default_factory=lambda: {1: 15.0, 2: 35.0, 3: 70.0, 4: 150.0})
    # Running cost of one bot conversation (infrastructure), whether or not it became a ticket.
    per_bot_conversation: float = Field(default=0.10, ge=0)

    @field_validator("per_ticket_by_tier")
    @classmethod
    def _tiers(cls, value: dict[int, float]) -> dict[int, float]:
        if sorted(value) != [1, 2, 3, 4] or any(cost < 0 for cost in value.values()):
            raise ValueError("give a cost (>= 0) for each of the tiers 1, 2, 3 and 4")
        return value


class EscalationRule(_Strict):
    when: Literal["at_risk", "breached"]  # ("on" would read as a YAML boolean)
    action: Literal["notify", "raise_priority", "tier_up", "reassign", "vendor"]
    # Only tickets of these priorities / categories (empty: all).
    priorities: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    group: str | None = None  # reassign: the group that takes over
    vendor_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:
            raise ValueError("write 'when: at_risk' or 'when: breached' (YAML reads a bare 'on' as true)")
        return data

    @model_validator(mode="after")
    def _needed_fields(self) -> EscalationRule:
        if self.action == "reassign" and not self.group:
            raise ValueError("action 'reassign' needs group")
        if self.action == "vendor" and not self.vendor_email:
            raise ValueError("action 'vendor' needs vendor_email")
        unknown = sorted(set(self.priorities) - set(PRIORITIES))
        if unknown:
            raise ValueError(f"unknown priority {unknown[0]!r}")
        return self


def _default_escalation_rules() -> tuple[EscalationRule, ...]:
    return (
        EscalationRule(when="at_risk", action="notify"),
        EscalationRule(when="breached", action="tier_up"),
    )


class EscalationSettings(_Strict):
    enabled: bool = True
    interval_seconds: float = Field(default=60, ge=1, le=3600)
    rules: tuple[EscalationRule, ...] = Field(default_factory=_default_escalation_rules)


class ServiceDeskSettings(_Strict):
    calendar: CalendarSettings = CalendarSettings()
    sla: SlaSettings = SlaSettings()
    routing: RoutingSettings = RoutingSettings()
    groups: dict[str, GroupSettings] = Field(default_factory=dict)
    # Requester ("channel:platform_id" or e-mail) -> their manager, for manager approvals.
    directory: dict[str, DirectoryEntry] = Field(default_factory=dict)
    catalog: dict[str, CatalogItemSettings] = Field(default_factory=_default_catalog)
    csat: CsatSettings = CsatSettings()
    cost: CostSettings = CostSettings()
    escalation: EscalationSettings = EscalationSettings()

    @property
    def sla_policy(self) -> SlaPolicy:
        """The calendar and targets as ``ticketing.sla`` uses them (the holiday tables are shared)."""
        return SlaPolicy(
            calendar=self.calendar.calendar(),
            targets={
                p: (t.first_response_hours * 3600, t.resolution_hours * 3600) for p, t in self.sla.policies.items()
            },
            at_risk_percent=self.sla.at_risk_percent,
        )

    def cost_model(self) -> CostModel:
        return CostModel(
            currency=self.cost.currency,
            per_ticket_by_tier=dict(self.cost.per_ticket_by_tier),
            per_bot_conversation=self.cost.per_bot_conversation,
        )

    def catalog_items(self) -> tuple[CatalogItem, ...]:
        return tuple(
            CatalogItem(
                key=key,
                title=item.title,
                keywords=item.keywords,
                approver=item.approver,
                approver_group=item.approver_group,
                group=item.group,
            )
            for key, item in self.catalog.items()
        )

    def approval_directory(self) -> Directory:
        return Directory(
            managers={who.lower(): entry.manager for who, entry in self.directory.items()},
            groups={name: frozenset(m.lower() for m in g.members) for name, g in self.groups.items()},
        )
