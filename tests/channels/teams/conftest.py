"""A running tierzero with the Teams channel, talking to a fake Bot Framework over localhost."""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from bot.app import Runtime, TierZero
from bot.config import Settings
from bot.server import create_app
from channels.teams import TeamsChannel
from tests.channels.teams.fakes import FakeBotFramework, SigningKey
from tests.channels.test_http_api import WAIT_SECONDS, serving, until
from tests.fixtures.fakes import it_retriever
from ticketing import outbox
from ticketing.models import DeskPost, Message, OutboxItem, OutboxStatus, Ticket

APP_ID = "11111111-2222-3333-4444-555555555555"
BOT_ID = f"28:{APP_ID}"
APP_PASSWORD = "not-a-real-client-secret-0123456789"
TENANT = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
REQUESTER_AAD = "00000000-1111-2222-3333-444444444444"
AGENT_AAD = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
TEAM_ID = "19:team-general@thread.tacv2"
AGENT_CHANNEL = "19:it-desk@thread.tacv2"
PERSONAL = "a:personal-chat-with-alice"

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey(kid="bf-key-1")


@pytest.fixture
async def bot_framework(signing_key: SigningKey) -> AsyncIterator[FakeBotFramework]:
    fake = FakeBotFramework(keys=[signing_key])
    async with serving(fake.app()) as url:
        fake.base_url = url
        yield fake


def teams_section(fake: FakeBotFramework, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "app_id": APP_ID,
        "app_password": APP_PASSWORD,
        "tenants": [TENANT],
        "openid_metadata_url": fake.openid_url,
        "token_url": fake.token_url,
        "connector_timeout_seconds": 5,
        "agent_channel": {
            "team_id": TEAM_ID,
            "channel_id": AGENT_CHANNEL,
            "service_url": fake.service_url,
            "agents": [AGENT_AAD],
        },
    }
    section.update(overrides)
    return section


@dataclass
class TeamsBot:
    """tierzero serving /api/messages, the fake Bot Framework it talks to, and a signed client."""

    app: TierZero
    runtime: Runtime
    channel: TeamsChannel
    client: httpx.AsyncClient
    fake: FakeBotFramework
    key: SigningKey

    def token(self, activity: dict[str, Any], **overrides: Any) -> str:
        return self.key.token(app_id=APP_ID, service_url=activity.get("serviceUrl", ""), **overrides)

    async def post(self, activity: dict[str, Any], *, token: str | None = None) -> httpx.Response:
        token = token if token is not None else self.token(activity)
        return await self.client.post("/api/messages", json=activity, headers={"Authorization": f"Bearer {token}"})

    def outbox(self) -> list[OutboxItem]:
        with self.app.db.transaction() as session:
            items = outbox.list_items(session)
            session.expunge_all()
            return sorted(items, key=lambda item: item.id)

    async def outbox_settled(self, count: int) -> list[OutboxItem]:
        """Wait until ``count`` replies are queued and none is pending or being sent."""
        busy = {OutboxStatus.PENDING, OutboxStatus.SENDING}
        await until(
            lambda: len(items := self.outbox()) == count and not any(i.status in busy for i in items),
            f"{count} settled outbox items",
        )
        return self.outbox()

    def inbound_count(self) -> int:
        with self.app.db.transaction() as session:
            return session.scalar(select(func.count()).select_from(Message).where(Message.direction == "in")) or 0

    def thread_of(self, number: str) -> str | None:
        """The thread of the ticket's card in the agent channel, once the desk has recorded it."""
        with self.app.db.transaction() as session:
            return session.scalar(
                select(DeskPost.thread_key).join(Ticket, Ticket.id == DeskPost.ticket_id).where(Ticket.number == number)
            )

    def ticket(self, number: str) -> Ticket:
        with self.app.db.transaction() as session:
            ticket = session.scalar(select(Ticket).where(Ticket.number == number))
            assert ticket is not None, number
            session.expunge(ticket)
            return ticket


@asynccontextmanager
async def running_teams(
    settings: Settings, fake: FakeBotFramework, key: SigningKey, **section: Any
) -> AsyncIterator[TeamsBot]:
    config = teams_section(fake, **section)
    settings = settings.model_copy(update={"channels": {"teams": config}})
    app = TierZero(settings, retriever=it_retriever())
    channel = TeamsChannel.from_config(copy.deepcopy(config), context=app.channel_context())
    runtime = app.runtime([channel])
    try:
        async with (
            serving(create_app(runtime)) as url,
            httpx.AsyncClient(base_url=url, timeout=WAIT_SECONDS) as client,
        ):
            yield TeamsBot(app, runtime, channel, client, fake, key)
    finally:
        app.db.dispose()


@pytest.fixture
async def teams(
    settings: Settings, bot_framework: FakeBotFramework, signing_key: SigningKey
) -> AsyncIterator[TeamsBot]:
    async with running_teams(settings, bot_framework, signing_key) as bot:
        yield bot


def activity(
    fake: FakeBotFramework,
    *,
    text: str = "",
    kind: str = "message",
    conversation: str = PERSONAL,
    conversation_type: str = "personal",
    sender: str = "29:alice",
    aad: str | None = REQUESTER_AAD,
    sender_name: str = "Alice Example",
    tenant: str = TENANT,
    activity_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Teams activity as the Bot Framework would post it, addressed to our bot."""
    body: dict[str, Any] = {
        "type": kind,
        "id": activity_id or f"1767{next(_ids):09d}",
        "channelId": "msteams",
        "serviceUrl": fake.service_url,
        "from": {"id": sender, "name": sender_name, **({"aadObjectId": aad} if aad else {})},
        "conversation": {"id": conversation, "conversationType": conversation_type, "tenantId": tenant},
        "recipient": {"id": BOT_ID, "name": "tierzero"},
        "channelData": {"tenant": {"id": tenant}},
        "textFormat": "plain",
        "locale": "en-US",
    }
    if text:
        body["text"] = text
    body.update(extra)
    return body


def channel_activity(
    fake: FakeBotFramework, *, thread: str, channel: str, mention: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """A message in a channel reply chain ("<channel>;messageid=<root>")."""
    body = activity(fake, conversation=thread, conversation_type="channel", **kwargs)
    body["conversation"]["isGroup"] = True
    body["channelData"].update({"channel": {"id": channel}, "team": {"id": TEAM_ID}})
    if mention:
        body["text"] = f"<at>tierzero</at> {body.get('text', '')}"
        body["entities"] = [
            {"type": "mention", "text": "<at>tierzero</at>", "mentioned": {"id": BOT_ID, "name": "tierzero"}}
        ]
    return body


Poster = Callable[[dict[str, Any]], Awaitable[httpx.Response]]
