"""Service-desk metrics over a period, with their formulas.

One function, ``service_desk_metrics``, returns a JSON-serialisable dict; the
CLI (``tierzero report``), the REST API and the dashboard all show it.
Aggregation happens in Python over the period's rows: simple, identical on
SQLite and PostgreSQL, and fast enough for a desk's volumes (tens of thousands
of tickets a month).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ticketing.models import Conversation, Direction, Message, Ticket, TicketEvent, TicketStatus
from ticketing.service_desk_models import SlaClock
from ticketing.sla import DEFAULT_POLICY, SlaPolicy

OPEN = (TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING)
DONE = (TicketStatus.RESOLVED, TicketStatus.CLOSED)
AGEING_BUCKETS = (("<1d", 1), ("1-3d", 3), ("3-7d", 7), ("7-30d", 30), (">30d", None))
TOP = 10


@dataclass(frozen=True)
class CostModel:
    currency: str = "EUR"
    # Handling cost of a ticket by the highest tier it reached (4: external vendor).
    per_ticket_by_tier: Mapping[int, float] = field(default_factory=lambda: {1: 15.0, 2: 35.0, 3: 70.0, 4: 150.0})
    # Running cost of one bot conversation.
    per_bot_conversation: float = 0.10


def service_desk_metrics(
    session: Session,
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    policy: SlaPolicy = DEFAULT_POLICY,
    cost: CostModel | None = None,
) -> dict[str, Any]:
    """Metrics of the period [since, until); backlog and ageing as of ``now``.

    Keys and formulas (a rate is null when its denominator is 0; hours are
    rounded to 0.01, rates to 0.0001):

    - ``period``: since, until, now (ISO 8601), days.
    - ``volume``: tickets opened in the period: ``tickets``; ``per_day`` (every
      day, zeros included, UTC dates) and ``per_week`` (ISO weeks) as lists of
      {"date"/"week", "tickets"}; ``per_channel`` (the channel the requester
      wrote on) and ``per_category`` ("uncategorised" for none) as mappings;
      ``conversations``: conversations started in the period.
    - ``deflection`` (tier 0): ``rate`` = conversations resolved by the bot
      without a ticket and confirmed by the requester (``resolved_by = "bot"``,
      set only when the requester says it is solved) / conversations started in
      the period with at least one question from the requester.
    - ``first_contact_resolution``: ``rate`` = tickets resolved in the period with
      at most one agent reply and never reopened / tickets resolved in the period.
    - ``response_times``: for ``first_response`` (tickets whose first agent
      reply came in the period: first reply - opened) and ``resolution`` (tickets
      resolved in the period: resolved - opened); ``mean_wall_hours`` on the
      clock, ``mean_business_hours`` in the calendar's working time, less time
      paused pending on the requester (resolution only); ``count``.
    - ``sla``: over tickets opened in the period whose outcome is known (resolved,
      or a target already missed): ``met``, ``breached`` (either target missed),
      ``compliance_rate`` = met / (met + breached); ``first_response_compliance_rate``
      likewise for the first-response target alone; ``open_at_risk`` and
      ``open_breached``: open tickets (any age) in that state now.
    - ``csat``: tickets resolved in the period: ``resolved``, ``rated``,
      ``response_rate`` = rated / resolved, ``average`` score of the rated ones,
      ``distribution`` {"1".."5": count}.
    - ``backlog``: open tickets now (new, open, pending; any age): ``open``,
      ``by_status``, ``ageing`` by time since opened (<1d, 1-3d, 3-7d, 7-30d, >30d),
      ``oldest_days``.
    - ``cost``: ``ticket_cost`` = sum over tickets opened in the period of the
      cost of the highest tier they reached (their current tier); ``bot_cost`` =
      conversations started x per_bot_conversation; ``total`` = both;
      ``cost_per_ticket`` = ticket_cost / tickets; ``cost_per_conversation`` =
      total / conversations; ``deflection_savings`` = bot-resolved conversations x
      tier-1 ticket cost (what they would have cost as tickets).
    - ``top_deflecting_articles``: the KB articles cited in the bot's last answer
      before each bot-resolved conversation, most frequent first (article_id,
      title, deflections); at most 10.
    - ``top_escalated_questions``: escalated questions (ticket subjects opened by
      the bot, compared case- and punctuation-insensitively), most frequent
      first (question, tickets); candidates for new articles; at most 10.
    """
    cost = cost or CostModel()
    calendar = policy.calendar

    opened = list(
        session.execute(
            select(Ticket, Conversation.channel)
            .join(Conversation, Conversation.id == Ticket.conversation_id)
            .where(Ticket.created_at >= since, Ticket.created_at < until)
            .order_by(Ticket.id)
        )
    )
    tickets = [t for t, _ in opened]
    resolved = list(
        session.scalars(
            select(Ticket).where(Ticket.resolved_at >= since, Ticket.resolved_at < until, Ticket.status.in_(DONE))
        )
    )
    answered = list(
        session.scalars(select(Ticket).where(Ticket.first_response_at >= since, Ticket.first_response_at < until))
    )
    conversations = list(
        session.scalars(select(Conversation).where(Conversation.created_at >= since, Conversation.created_at < until))
    )
    asked = _with_requester_message(session, [c.id for c in conversations])
    deflected = [c for c in conversations if c.resolved_by == "bot" and c.ticket_id is None and c.id in asked]

    events = _event_kinds(session, [t.id for t in resolved])
    first_contact = [t for t in resolved if events[t.id]["agent_reply"] <= 1 and events[t.id]["reopened"] == 0]
    paused = _paused_seconds(session, [t.id for t in resolved])

    return {
        "period": {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "now": now.isoformat(),
            "days": round((until - since).total_seconds() / 86400, 2),
        },
        "volume": {
            "tickets": len(tickets),
            "per_day": _per_day(tickets, since, until),
            "per_week": _per_week(tickets),
            "per_channel": dict(Counter(channel for _, channel in opened).most_common()),
            "per_category": dict(Counter(t.category or "uncategorised" for t in tickets).most_common()),
            "conversations": len(conversations),
        },
        "deflection": {
            "conversations_with_question": len(asked),
            "resolved_by_bot": len(deflected),
            "rate": _rate(len(deflected), len(asked)),
        },
        "first_contact_resolution": {
            "resolved": len(resolved),
            "first_contact": len(first_contact),
            "rate": _rate(len(first_contact), len(resolved)),
        },
        "response_times": {
            "first_response": _durations(
                ((t.created_at, t.first_response_at, 0.0) for t in answered if t.first_response_at), calendar
            ),
            "resolution": _durations(
                ((t.created_at, t.resolved_at, paused.get(t.id, 0.0)) for t in resolved if t.resolved_at), calendar
            ),
        },
        "sla": _sla(session, tickets, policy=policy, now=now),
        "csat": _csat(resolved),
        "backlog": _backlog(session, now),
        "cost": _cost(tickets, conversations=len(conversations), deflected=len(deflected), model=cost),
        "top_deflecting_articles": _top_articles(session, deflected),
        "top_escalated_questions": _top_questions(session, tickets),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 2)


def _with_requester_message(session: Session, conversation_ids: list[int]) -> set[int]:
    found: set[int] = set()
    for chunk in _chunks(conversation_ids):
        found.update(
            session.scalars(
                select(Message.conversation_id)
                .where(
                    Message.conversation_id.in_(chunk),
                    Message.direction == Direction.INBOUND,
                    Message.author_kind == "requester",
                )
                .distinct()
            )
        )
    return found


def _event_kinds(session: Session, ticket_ids: list[int]) -> dict[int, Counter[str]]:
    counts: dict[int, Counter[str]] = {ticket_id: Counter() for ticket_id in ticket_ids}
    for chunk in _chunks(ticket_ids):
        rows = session.execute(
            select(TicketEvent.ticket_id, TicketEvent.kind, func.count())
            .where(TicketEvent.ticket_id.in_(chunk), TicketEvent.kind.in_(("agent_reply", "reopened")))
            .group_by(TicketEvent.ticket_id, TicketEvent.kind)
        )
        for ticket_id, kind, count in rows:
            counts[ticket_id][kind] = count
    return counts


def _paused_seconds(session: Session, ticket_ids: list[int]) -> dict[int, float]:
    paused: dict[int, float] = {}
    for chunk in _chunks(ticket_ids):
        for clock in session.scalars(select(SlaClock).where(SlaClock.ticket_id.in_(chunk))):
            paused[clock.ticket_id] = clock.paused_seconds or 0.0
    return paused


def _chunks(ids: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _per_day(tickets: list[Ticket], since: datetime, until: datetime) -> list[dict[str, Any]]:
    counts = Counter(t.created_at.date() for t in tickets)
    day, last = since.date(), (until - timedelta(microseconds=1)).date()
    series = []
    while day <= last:
        series.append({"date": day.isoformat(), "tickets": counts.get(day, 0)})
        day += timedelta(days=1)
    return series


def _per_week(tickets: list[Ticket]) -> list[dict[str, Any]]:
    counts = Counter("{}-W{:02d}".format(*t.created_at.isocalendar()[:2]) for t in tickets)
    return [{"week": week, "tickets": counts[week]} for week in sorted(counts)]


def _durations(spans: Iterable[tuple[datetime, datetime, float]], calendar: Any) -> dict[str, Any]:
    wall, business = [], []
    for start, end, paused in spans:
        wall.append((end - start).total_seconds())
        business.append(max(0.0, calendar.seconds_between(start, end) - paused))
    if not wall:
        return {"count": 0, "mean_wall_hours": None, "mean_business_hours": None}
    return {
        "count": len(wall),
        "mean_wall_hours": _hours(sum(wall) / len(wall)),
        "mean_business_hours": _hours(sum(business) / len(business)),
    }


def _sla(session: Session, tickets: list[Ticket], *, policy: SlaPolicy, now: datetime) -> dict[str, Any]:
    met = breached = first_met = first_breached = 0
    for ticket in tickets:
        states = policy.states(ticket, now=now)
        if "breached" in states.values():
            breached += 1
        elif ticket.status in DONE:
            met += 1
        if states["first_response"] == "breached":
            first_breached += 1
        elif states["first_response"] == "met":
            first_met += 1
    open_states = Counter(
        policy.ticket_state(t, now=now, paused_at=None)
        for t in session.scalars(select(Ticket).where(Ticket.status.in_(OPEN)))
    )
    return {
        "met": met,
        "breached": breached,
        "compliance_rate": _rate(met, met + breached),
        "first_response_compliance_rate": _rate(first_met, first_met + first_breached),
        "open_at_risk": open_states.get("at_risk", 0),
        "open_breached": open_states.get("breached", 0),
    }


def _csat(resolved: list[Ticket]) -> dict[str, Any]:
    scores = [t.csat_score for t in resolved if t.csat_score is not None]
    return {
        "resolved": len(resolved),
        "rated": len(scores),
        "response_rate": _rate(len(scores), len(resolved)),
        "average": round(sum(scores) / len(scores), 2) if scores else None,
        "distribution": {str(score): scores.count(score) for score in range(1, 6)},
    }


def _backlog(session: Session, now: datetime) -> dict[str, Any]:
    rows = session.execute(select(Ticket.status, Ticket.created_at).where(Ticket.status.in_(OPEN))).all()
    ageing = dict.fromkeys((name for name, _ in AGEING_BUCKETS), 0)
    oldest = 0.0
    for _, created_at in rows:
        age_days = (now - created_at).total_seconds() / 86400
        oldest = max(oldest, age_days)
        for name, limit in AGEING_BUCKETS:
            if limit is None or age_days < limit:
                ageing[name] += 1
                break
    return {
        "open": len(rows),
        "by_status": {str(s): n for s, n in Counter(status for status, _ in rows).most_common()},
        "ageing": ageing,
        "oldest_days": round(oldest, 2) if rows else None,
    }


def _cost(tickets: list[Ticket], *, conversations: int, deflected: int, model: CostModel) -> dict[str, Any]:
    ticket_cost = sum(model.per_ticket_by_tier.get(t.tier, max(model.per_ticket_by_tier.values())) for t in tickets)
    bot_cost = conversations * model.per_bot_conversation
    total = ticket_cost + bot_cost
    return {
        "currency": model.currency,
        "ticket_cost": round(ticket_cost, 2),
        "bot_cost": round(bot_cost, 2),
        "total": round(total, 2),
        "cost_per_ticket": round(ticket_cost / len(tickets), 2) if tickets else None,
        "cost_per_conversation": round(total / conversations, 2) if conversations else None,
        "deflection_savings": round(deflected * model.per_ticket_by_tier.get(1, 0.0), 2),
    }


def _top_articles(session: Session, deflected: list[Conversation]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    titles: dict[str, str] = {}
    for conversation in deflected:
        answers = session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation.id, Message.direction == Direction.OUTBOUND)
            .order_by(Message.id.desc())
        )
        for message in answers:
            if conversation.resolved_at and message.received_at > conversation.resolved_at:
                continue
            citations = (message.parts or {}).get("citations") or []
            if citations:
                article = citations[0]
                counts[article.get("article_id", "")] += 1
                titles[article.get("article_id", "")] = article.get("title", "")
                break
    return [
        {"article_id": article_id, "title": titles[article_id], "deflections": n}
        for article_id, n in counts.most_common(TOP)
    ]


_PUNCTUATION = re.compile(r"[^\w\s]")


def _top_questions(session: Session, tickets: list[Ticket]) -> list[dict[str, Any]]:
    escalated_by_bot: set[int] = set()
    ids = [t.id for t in tickets]
    for chunk in _chunks(ids):
        escalated_by_bot.update(
            session.scalars(
                select(TicketEvent.ticket_id).where(
                    TicketEvent.ticket_id.in_(chunk), TicketEvent.kind == "opened", TicketEvent.actor == "bot"
                )
            )
        )
    counts: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for ticket in tickets:
        if ticket.id not in escalated_by_bot:
            continue
        key = " ".join(_PUNCTUATION.sub(" ", ticket.subject.lower()).split())
        counts[key] += 1
        shown.setdefault(key, ticket.subject)
    return [{"question": shown[key], "tickets": n} for key, n in counts.most_common(TOP)]
