"""The web front under a real uvicorn server on a loopback port, with the fake knowledge base."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from bot.app import TierZero
from bot.config import Settings
from bot.registry import build_channels
from bot.server import create_app
from tests.conftest import make_settings
from tests.fixtures.fakes import it_retriever
from ticketing import service
from ticketing.access import Role, create_api_token
from ticketing.conversations import get_or_create_conversation, get_or_create_requester
from ticketing.db import Database

WAIT_SECONDS = 15.0
AGENTS = [
    {"id": "alice@example.com", "name": "Alice", "role": "agent", "groups": ["network"]},
    {"id": "bob@example.com", "name": "Bob", "role": "agent", "groups": ["hardware"]},
    {"id": "dana@example.com", "name": "Dana", "role": "agent", "groups": ["network"], "take_over": True},
    {"id": "carol@example.com", "name": "Carol", "role": "admin"},
]
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def web_settings(tmp_path: Path, database_url: str, **web: Any) -> Settings:
    section = {"sign_in": "demo", "agents": AGENTS, "poll_seconds": 0.2, **web}
    return make_settings(tmp_path, database_url, channels={"web": section})


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Web:
    base_url: str
    app: TierZero
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client closed when the test ends."""
        client = httpx.AsyncClient(base_url=self.base_url, timeout=WAIT_SECONDS, follow_redirects=False, **kwargs)
        self.clients.append(client)
        return client

    @property
    def db(self) -> Database:
        return self.app.db

    async def person(self, *, name: str | None = None, agent: str | None = None) -> Person:
        """A browser-like client signed in through the demo sign-in form."""
        client = self.client()
        form = {"agent": agent} if agent else {"name": name or "Erin"}
        response = await client.post("/signin", data=form)
        assert response.status_code == 303, response.text
        page = await client.get("/")
        match = _CSRF.search(page.text)
        assert match, page.text[:500]
        return Person(client=client, csrf=match.group(1))

    def token(self, agent: str, role: Role = Role.AGENT) -> str:
        with self.db.transaction() as session:
            _, plain = create_api_token(session, agent=agent, role=role)
        return plain

    def ticket(
        self, *, requester: str = "erin@demo.local", group: str | None = None, subject: str = "VPN broken"
    ) -> str:
        """A ticket opened for a portal requester, as the bot would."""
        settings = self.app.settings
        with self.db.transaction() as session:
            person = get_or_create_requester(session, channel="web", platform_id=requester, display_name="Erin")
            conversation = get_or_create_conversation(
                session, channel="web", channel_conversation_id=requester, thread_id=None, requester=person
            )
            ticket = service.open_ticket(
                session,
                conversation=conversation,
                subject=subject,
                description=subject,
                actor="bot",
                channel="web",
                number_prefix=settings.tickets.number_prefix,
                first_number=settings.tickets.first_number,
            )
            ticket.group = group
            return ticket.number or ""


@dataclass
class Person:
    client: httpx.AsyncClient
    csrf: str

    async def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)


@contextmanager
def serve_in_thread(asgi: Any) -> Iterator[str]:
    """uvicorn on a free loopback port in its own thread and event loop (for sync clients: browsers)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        asgi, lifespan="on", log_config=None, access_log=False, ws="none", http="h11", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: server.run(sockets=[listener]), name="web-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_SECONDS)
        listener.close()


def web_app(settings: Settings) -> tuple[TierZero, Any]:
    app = TierZero(settings, retriever=it_retriever())
    channels = build_channels(app.channel_context())
    assert [c.name for c in channels.enabled] == ["web"], channels.disabled
    return app, create_app(app.runtime(channels.enabled))


@asynccontextmanager
async def running_web(settings: Settings) -> AsyncIterator[Web]:
    app, asgi = web_app(settings)
    try:
        with serve_in_thread(asgi) as base_url:
            web = Web(base_url=base_url, app=app)
            try:
                yield web
            finally:
                for client in web.clients:
                    await client.aclose()
    finally:
        # After the server (and its workers) stopped, so no connection is opened after this.
        app.db.dispose()


@pytest.fixture
async def web(tmp_path: Path, database_url: str) -> AsyncIterator[Web]:
    async with running_web(web_settings(tmp_path, database_url)) as running:
        yield running
