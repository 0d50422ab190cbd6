"""The dashboard: the service-desk metrics (``ticketing.metrics``) as server-rendered SVG charts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from channels.web import charts, texts
from channels.web.front import WebFront
from channels.web.portal import signed_in
from ticketing.clock import utcnow

log = logging.getLogger(__name__)
PERIODS = {"7d": 7, "30d": 30, "90d": 90}


def routes(front: WebFront) -> Sequence[BaseRoute]:
    @signed_in
    async def page(request: Request) -> Response:
        identity, principal = front.page_principal(request)
        if not principal.is_agent:
            return front.error_page(request, 403, texts.NOT_AN_AGENT, identity=identity)
        period = request.query_params.get("period", "30d")
        period = period if period in PERIODS else "30d"
        now = utcnow()
        metrics = await asyncio.to_thread(
            load_metrics, front, since=now - timedelta(days=PERIODS[period]), until=now, now=now
        )
        return front.render(
            request,
            "dashboard.html",
            identity=identity,
            principal=principal,
            period=period,
            periods=list(PERIODS),
            available=metrics is not None,
            panels=panels(metrics or {}),
            figures=headline_figures(metrics or {}),
        )

    return [Route("/dashboard", page, methods=["GET"])]


def load_metrics(front: WebFront, *, since: datetime, until: datetime, now: datetime) -> dict[str, Any] | None:
    """The metrics of ``ticketing.metrics`` with this deployment's SLA policy and cost model."""
    try:
        from ticketing.metrics import CostModel, service_desk_metrics
    except ImportError:
        return None
    desk = front.app_settings.service_desk
    cost = CostModel(
        currency=desk.cost.currency,
        per_ticket_by_tier=dict(desk.cost.per_ticket_by_tier),
        per_bot_conversation=desk.cost.per_bot_conversation,
    )
    with front.db.transaction() as session:
        return service_desk_metrics(session, since=since, until=until, now=now, policy=desk.sla_policy, cost=cost)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _get(metrics: dict[str, Any], *path: str) -> Any:
    value: Any = metrics
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _mapping_points(value: Any) -> list[tuple[str, float]]:
    if not isinstance(value, dict):
        return []
    return [(str(k), n) for k, v in value.items() if (n := _number(v)) is not None]


def _daily_points(value: Any) -> list[tuple[str, float]]:
    """[{"date": "2026-12-04", "tickets": 3}, ...] -> [("12-04", 3.0), ...]"""
    if not isinstance(value, list):
        return []
    points = []
    for row in value:
        if isinstance(row, dict) and (n := _number(row.get("tickets"))) is not None:
            points.append((str(row.get("date", ""))[5:], n))
    return points


def panels(metrics: dict[str, Any]) -> list[tuple[str, Markup]]:
    times: list[tuple[str, float]] = []
    for label, key in (("first response", "first_response"), ("resolution", "resolution")):
        for clock, field in (("business", "mean_business_hours"), ("wall", "mean_wall_hours")):
            if (n := _number(_get(metrics, "response_times", key, field))) is not None:
                times.append((f"{label} ({clock})", n))
    rates = [
        ("SLA compliance", _number(_get(metrics, "sla", "compliance_rate"))),
        ("First response in SLA", _number(_get(metrics, "sla", "first_response_compliance_rate"))),
        ("Tier-0 deflection", _number(_get(metrics, "deflection", "rate"))),
        ("First-contact resolution", _number(_get(metrics, "first_contact_resolution", "rate"))),
        ("CSAT response rate", _number(_get(metrics, "csat", "response_rate"))),
    ]
    return [
        (
            "Ticket volume per day",
            charts.bar_chart(_daily_points(_get(metrics, "volume", "per_day")), title="Tickets opened per day"),
        ),
        ("SLA compliance and deflection", charts.ratio_bars(rates, title="Rates")),
        (
            "Mean time to first response and to resolution (MTTR), hours",
            charts.bar_chart(times, title="Hours", unit="h", color=charts.PALETTE[3]),
        ),
        (
            "CSAT ratings (1-5)",
            charts.bar_chart(
                _mapping_points(_get(metrics, "csat", "distribution")), title="Ratings", color=charts.PALETTE[1]
            ),
        ),
        (
            "Tickets per channel",
            charts.bar_chart(
                _mapping_points(_get(metrics, "volume", "per_channel")), title="Per channel", color=charts.PALETTE[4]
            ),
        ),
        (
            "Tickets per category",
            charts.bar_chart(
                _mapping_points(_get(metrics, "volume", "per_category")), title="Per category", color=charts.PALETTE[5]
            ),
        ),
    ]


def headline_figures(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    def percent(value: Any) -> str:
        number = _number(value)
        return "-" if number is None else f"{number * 100:.0f}%"

    def plain(value: Any, suffix: str = "") -> str:
        number = _number(value)
        return "-" if number is None else f"{number:g}{suffix}"

    return [
        ("Tickets", plain(_get(metrics, "volume", "tickets"))),
        ("SLA compliance", percent(_get(metrics, "sla", "compliance_rate"))),
        ("Tier-0 deflection", percent(_get(metrics, "deflection", "rate"))),
        ("MTTR (business hours)", plain(_get(metrics, "response_times", "resolution", "mean_business_hours"), " h")),
        ("CSAT average", plain(_get(metrics, "csat", "average"), " / 5")),
        ("Open backlog", plain(_get(metrics, "backlog", "open"))),
    ]
