"""``tierzero report``: the service-desk metrics of a period, as text or JSON."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from bot.cli import app_from_context, friendly_errors
from ticketing.clock import utcnow
from ticketing.metrics import service_desk_metrics

_RELATIVE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, *, now: datetime) -> datetime:
    """ "30d", "12h", "4w" before ``now``, or an ISO date/time (UTC unless it says otherwise)."""
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        if amount <= 0:
            raise click.BadParameter("give a period longer than zero, e.g. 30d", param_hint="--since")
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use e.g. 30d, 12h, 4w or a date like 2026-11-01", param_hint="--since"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment >= now:
        raise click.BadParameter(f"{value!r} is not in the past", param_hint="--since")
    return moment


@click.command()
@click.option("--since", "since_text", default="30d", show_default=True, help="Period start: 30d, 12h, 4w or a date.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the same keys as the API).")
@click.pass_context
@friendly_errors
def report(ctx: click.Context, since_text: str, as_json: bool) -> None:
    """Service-desk metrics: volume, deflection, FCR, response times, SLA, CSAT, backlog, cost."""
    now = utcnow()
    since = parse_since(since_text, now=now)
    app = app_from_context(ctx)
    app.db.migrate()
    desk = app.settings.service_desk
    with app.db.transaction() as session:
        metrics = service_desk_metrics(
            session, since=since, until=now, now=now, policy=desk.sla_policy, cost=desk.cost_model()
        )
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(render_text(metrics))


def render_text(metrics: dict[str, Any]) -> str:
    def pct(rate: float | None) -> str:
        return "n/a" if rate is None else f"{rate:.1%}"

    def hours(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} h"

    volume, deflection, fcr = metrics["volume"], metrics["deflection"], metrics["first_contact_resolution"]
    times, sla, csat = metrics["response_times"], metrics["sla"], metrics["csat"]
    backlog, cost = metrics["backlog"], metrics["cost"]
    period = metrics["period"]
    lines = [
        f"Service desk report, {period['since'][:16]} to {period['until'][:16]} UTC ({period['days']:g} days)",
        "",
        f"Conversations          {volume['conversations']}",
        f"Tickets opened         {volume['tickets']}",
        "  per channel          " + _pairs(volume["per_channel"]),
        "  per category         " + _pairs(volume["per_category"]),
        "  per week             " + (", ".join(f"{w['week']}: {w['tickets']}" for w in volume["per_week"]) or "-"),
        f"Tier-0 deflection      {pct(deflection['rate'])} "
        f"({deflection['resolved_by_bot']} of {deflection['conversations_with_question']} conversations)",
        f"First-contact res.     {pct(fcr['rate'])} ({fcr['first_contact']} of {fcr['resolved']} resolved tickets)",
        f"Mean first response    {hours(times['first_response']['mean_business_hours'])} business, "
        f"{hours(times['first_response']['mean_wall_hours'])} wall clock ({times['first_response']['count']} tickets)",
        f"Mean time to resolve   {hours(times['resolution']['mean_business_hours'])} business, "
        f"{hours(times['resolution']['mean_wall_hours'])} wall clock ({times['resolution']['count']} tickets)",
        f"SLA compliance         {pct(sla['compliance_rate'])} ({sla['met']} met, {sla['breached']} breached); "
        f"first response {pct(sla['first_response_compliance_rate'])}",
        f"  open now             {sla['open_at_risk']} at risk, {sla['open_breached']} breached",
        f"CSAT                   {'n/a' if csat['average'] is None else format(csat['average'], '.2f')} / 5, "
        f"response rate {pct(csat['response_rate'])} ({csat['rated']} of {csat['resolved']})",
        f"Backlog                {backlog['open']} open; ageing " + _pairs(backlog["ageing"]),
        f"Cost                   {cost['total']:.2f} {cost['currency']} total; per ticket "
        + ("n/a" if cost["cost_per_ticket"] is None else f"{cost['cost_per_ticket']:.2f}")
        + f"; deflection saved {cost['deflection_savings']:.2f}",
        "",
        "KB articles that deflected most:",
        *(
            [f"  {a['deflections']:>4}  {a['title']} ({a['article_id']})" for a in metrics["top_deflecting_articles"]]
            or ["     -"]
        ),
        "Questions that escalated most (candidates for new articles):",
        *([f"  {q['tickets']:>4}  {q['question']}" for q in metrics["top_escalated_questions"]] or ["     -"]),
    ]
    return "\n".join(lines)


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in mapping.items()) or "-"
