"""The agent side in Slack: ticket cards in the triage channel, and who counts as an agent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.desk import TicketView, TimelineEntry
from channels.slack import messages
from channels.slack.blocks import Block, desk_button, escape, fallback_text, person, sections
from channels.slack.webapi import call
from ticketing.service import OPEN_STATUSES

log = logging.getLogger(__name__)

TAKE, RESOLVE, HAND_BACK = "take", "resolve", "hand_back"
HEADER_CHARS = 150
SUMMARY_BLOCKS = 3


def card(view: TicketView) -> tuple[str, list[Block]]:
    """The ticket's card in the triage channel: (fallback text, blocks)."""
    title = messages.CARD_TITLE.format(number=view.number, subject=view.subject)
    if len(title) > HEADER_CHARS:
        title = title[: HEADER_CHARS - 1] + "…"
    fields = [
        ("Requester", f"{escape(view.requester_name)} ({escape(view.requester_channel)})"),
        ("Status", escape(view.status)),
        ("Priority", escape(view.priority)),
        ("Assigned to", person(view.assignee)),
        ("First response due", slack_date(view.first_response_due)),
        ("SLA", messages.SLA_LABELS.get(view.sla_state, escape(view.sla_state))),
    ]
    if view.group or view.category:
        fields.append(("Group / category", escape(" / ".join(x for x in (view.group, view.category) if x))))
    if view.csat_score is not None:
        fields.append(("Rating", f"{view.csat_score}/5"))
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in fields]},
    ]
    if view.summary.strip():
        blocks += sections(view.summary)[-SUMMARY_BLOCKS:]
    buttons = []
    if view.status in OPEN_STATUSES:
        if view.owner != "agent":
            buttons.append(desk_button(messages.BUTTON_TAKE, TAKE, view.number, style="primary"))
        buttons.append(desk_button(messages.BUTTON_RESOLVE, RESOLVE, view.number))
        if view.owner == "agent":
            buttons.append(desk_button(messages.BUTTON_HAND_BACK, HAND_BACK, view.number))
    if buttons:
        blocks.append({"type": "actions", "block_id": f"tz_desk_{view.number}", "elements": buttons})
    text = f"{title} ({view.status}, {view.priority}, assigned to {person(view.assignee)})"
    return fallback_text(text), blocks


def entry(view: TicketView, item: TimelineEntry) -> tuple[str, list[Block]]:
    """One timeline entry (a requester message, a reply from elsewhere, an SLA warning...) in the card's thread."""
    prefix = messages.ENTRY_PREFIX.get(item.kind, "*{author}*").format(author=person(item.author))
    text = item.text.strip()
    blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": prefix}]}] + sections(text or item.kind)
    return fallback_text(f"{view.number}: {text or item.kind}"), blocks


def slack_date(moment: datetime | None) -> str:
    """A date every reader sees in their own time zone, with a UTC fallback."""
    if moment is None:
        return "none"
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


class AgentDirectory:
    """Who may act as an agent: the configured Slack user ids, plus the members of a user group.

    The group's members are fetched with usergroups.users.list and kept for
    ``refresh_seconds``; if Slack cannot be asked, the last known list stays in use.
    """

    def __init__(
        self,
        *,
        user_ids: Iterable[str],
        group_id: str | None,
        client: AsyncWebClient,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._user_ids = frozenset(user_ids)
        self._group_id = group_id
        self._client = client
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._members: frozenset[str] = frozenset()
        self._fetched_at: float | None = None

    @property
    def configured(self) -> bool:
        return bool(self._user_ids or self._group_id)

    async def is_agent(self, user_id: str) -> bool:
        if user_id in self._user_ids:
            return True
        if self._group_id is None:
            return False
        return user_id in await self._group_members()

    async def _group_members(self) -> frozenset[str]:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at > self._refresh_seconds:
            try:
                response = await call(self._client, "usergroups.users.list", usergroup=self._group_id)
                users: Any = response.get("users")
                self._members = frozenset(u for u in users or () if isinstance(u, str))
                self._fetched_at = now
            except Exception as exc:  # keep the last known members; try again next time
                log.warning("slack: cannot list the members of agent group %s: %s", self._group_id, exc)
        return self._members
