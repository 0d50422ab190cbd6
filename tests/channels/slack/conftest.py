"""A running tierzero with the Slack channel, talking to the fake Slack Web API over loopback sockets."""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.app import Runtime, TierZero
from bot.server import create_app, prepare
from tests.channels.slack.fake_slack import BOT_TOKEN, BOT_USER, SIGNING_SECRET, TEAM, FakeSlack, signed_headers
from tests.channels.test_http_api import serving
from tests.conftest import make_settings
from tests.fixtures.fakes import it_retriever
from ticketing.models import Ticket

EVENTS = "/slack/events"
TRIAGE = "C0TRIAGE1"
AGENT = "U0AGENT01"
ALICE = "U0ALICE01"
ALICE_DM = "D0ALICE01"
_event_ids = itertools.count(1)
_ts = itertools.count(1)


def next_ts() -> str:
    return f"1710000{next(_ts):03d}.000200"


def slack_config(api_url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "team_ids": [TEAM],
        "api_url": api_url,
        "files_url": api_url.removesuffix("api/") + "files/",  # the fake's file host
        "triage_channel": TRIAGE,
        "agents": [AGENT],
        **overrides,
    }


@dataclass
class Slack:
    """Tierzero's Slack endpoint, as Slack calls it, and the fake Web API it calls back."""

    app: TierZero
    runtime: Runtime
    client: httpx.AsyncClient
    api: FakeSlack
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def post(self, body: dict[str, Any], *, retry: int | None = None, **sign: Any) -> httpx.Response:
        raw = json.dumps(body)
        headers = signed_headers(raw, **sign)
        if retry is not None:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        return await self.client.post(EVENTS, content=raw, headers=headers)

    async def post_form(self, fields: dict[str, str]) -> httpx.Response:
        raw = urllib.parse.urlencode(fields)
        headers = signed_headers(raw) | {"Content-Type": "application/x-www-form-urlencoded"}
        return await self.client.post(EVENTS, content=raw, headers=headers)

    async def press(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post_form({"payload": json.dumps(payload)})

    def tickets(self) -> list[Ticket]:
        with self.app.db.transaction() as session:
            tickets = list(session.scalars(select(Ticket).order_by(Ticket.id)))
            session.expunge_all()
            return tickets


@asynccontextmanager
async def running_slack(
    tmp_path: Path, database_url: str, fake: FakeSlack, *, pipeline: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Slack]:
    async with serving(fake.asgi(), lifespan="off") as api_url:
        settings = make_settings(
            tmp_path,
            database_url,
            channels={"slack": slack_config(f"{api_url}/api/", **overrides)},
            pipeline=pipeline or {},
        )
        app = TierZero(settings, retriever=it_retriever())
        runtime, channels = prepare(app)
        assert [c.name for c in channels.enabled] == ["slack"], channels.disabled
        try:
            async with (
                serving(create_app(runtime)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client,
            ):
                yield Slack(app, runtime, client, fake)
        finally:
            app.db.dispose()


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack(users={ALICE: "Alice Example", AGENT: "Ada Agent"})


@pytest.fixture
async def slack(tmp_path: Path, database_url: str, fake: FakeSlack) -> AsyncIterator[Slack]:
    async with running_slack(tmp_path, database_url, fake) as running:
        yield running


# -- payloads as Slack sends them ------------------------------------------------------------------


def event_body(event: dict[str, Any], *, team: str = TEAM, event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": team,
        "api_app_id": "A0APP0001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_event_ids):08d}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
    }


def dm(text: str, *, ts: str | None = None, user: str = ALICE, channel: str = ALICE_DM, **extra: Any) -> dict[str, Any]:
    ts = ts or next_ts()
    event = {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    return event | {"channel_type": "im"} | extra


def channel_message(text: str, *, channel: str, ts: str | None = None, user: str = ALICE, **extra: Any) -> dict:
    ts = ts or next_ts()
    event = {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel, "event_ts": ts}
    return event | {"channel_type": "channel"} | extra


def button_press(
    *,
    value: str,
    action_id: str,
    channel: str,
    message_ts: str,
    thread_ts: str | None = None,
    user: str = ALICE,
    team: str = TEAM,
    label: str = "",
    blocks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel,
        "is_ephemeral": False,
    }
    message: dict[str, Any] = {
        "type": "message",
        "user": BOT_USER,
        "ts": message_ts,
        "text": "",
        "blocks": blocks or [],
    }
    if thread_ts:
        container["thread_ts"] = message["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "api_app_id": "A0APP0001",
        "token": "legacy-verification-token",
        "container": container,
        "trigger_id": f"{next_ts()}.trigger",
        "team": {"id": team, "domain": "acme"},
        "channel": {"id": channel, "name": "x"},
        "message": message,
        "response_url": "https://hooks.slack.com/actions/T/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b",
                "text": {"type": "plain_text", "text": label or value},
                "value": value,
                "action_ts": next_ts(),
            }
        ],
    }


def buttons_of(call_args: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in call_args.get("blocks", []) if b.get("type") == "actions" for e in b["elements"]]
