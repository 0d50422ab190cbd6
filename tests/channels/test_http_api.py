"""The HTTP API channel end to end: the real ASGI app under uvicorn, over loopback sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import messages
from bot.app import Runtime, TierZero
from bot.config import Settings, settings_from_mapping
from bot.model import ConversationRef, OutboundReply, ReplyKind
from bot.registry import build_channels
from bot.server import banner, create_app, prepare
from tests.conftest import REPO_ROOT
from tests.fixtures.fakes import it_retriever
from ticketing import outbox
from ticketing.db import Database
from ticketing.models import Conversation, Message, OutboxItem, Owner

MESSAGES = "/api/v1/messages"
TOKEN = "s3cret-api-token"
WAIT_SECONDS = 10.0


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``condition`` every few milliseconds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(asgi: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Serve ``asgi`` with a real uvicorn server on a free loopback port; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(asgi, lifespan=lifespan, log_config=None, access_log=False, ws="none", http="h11")
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=[listener])
        except SystemExit as exc:  # uvicorn exits the process when start-up fails
            raise RuntimeError(f"uvicorn stopped during start-up (exit code {exc.code})") from None

    task = asyncio.create_task(serve())
    try:
        await until(lambda: server.started or task.done(), "the server to start")
        if task.done():
            task.result()
            raise RuntimeError("uvicorn returned before it started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, WAIT_SECONDS)
        finally:
            listener.close()  # uvicorn closes it after serving; not if start-up failed


@dataclass
class Api:
    """A running tierzero server and a client talking to it."""

    app: TierZero
    runtime: Runtime
    client: httpx.AsyncClient

    async def post(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.client.post(MESSAGES, json=body, **kwargs)

    async def replies(self, conversation: str, *, count: int, after: int = 0) -> list[dict[str, Any]]:
        """Poll the replies endpoint until ``count`` replies are there; return exactly those."""
        found: list[dict[str, Any]] = []

        async def fetch() -> None:
            response = await self.client.get(f"/api/v1/conversations/{conversation}/replies", params={"after": after})
            if response.status_code == 200:
                found[:] = response.json()["replies"]

        deadline = time.monotonic() + WAIT_SECONDS
        await fetch()
        while len(found) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} replies in {conversation}, got {found}")
            await asyncio.sleep(0.02)
            await fetch()
        assert len(found) == count, found
        return found

    def count_messages(self) -> int:
        with self.app.db.transaction() as session:
            return session.scalar(select(func.count()).select_from(Message))

    def outbox_items(self) -> list[OutboxItem]:
        with self.app.db.transaction() as session:
            return outbox.list_items(session)


def with_http_api(settings: Settings, **http_api: Any) -> Settings:
    return settings.model_copy(update={"channels": {"http_api": http_api}})


@asynccontextmanager
async def running_api(
    settings: Settings, *, headers: dict[str, str] | None = None, **http_api: Any
) -> AsyncIterator[Api]:
    app = TierZero(with_http_api(settings, **http_api), retriever=it_retriever())
    runtime, channels = prepare(app)
    assert [c.name for c in channels.enabled] == ["http_api"], channels.disabled
    try:
        async with (
            serving(create_app(runtime)) as url,
            httpx.AsyncClient(base_url=url, headers=headers, timeout=WAIT_SECONDS) as client,
        ):
            yield Api(app, runtime, client)
    finally:
        app.db.dispose()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


# -- conversations ---------------------------------------------------------------


async def test_message_is_accepted_then_answered_with_citations_and_buttons(api: Api) -> None:
    response = await api.post({"requester_id": "alice", "text": "My VPN keeps disconnecting", "message_id": "m1"})
    assert response.status_code == 202
    assert response.json() == {
        "status": "accepted",
        "message_id": "m1",
        "conversation_id": "alice",
        "replies_url": "/api/v1/conversations/alice/replies",
    }

    [answer] = await api.replies("alice", count=1)
    assert answer["kind"] == ReplyKind.ANSWER
    assert "Turn off Wi-Fi power saving." in answer["text"]
    assert answer["citations"] == [
        {
            "title": "VPN keeps disconnecting",
            "article_id": "vpn-drops",
            "url": "https://it.example.com/kb/vpn-drops",
            "source_path": "",
        }
    ]
    assert [(b["label"], b["action"]) for b in answer["buttons"]] == [
        (messages.BUTTON_SOLVED, "solved"),
        (messages.BUTTON_HUMAN, "human"),
    ]

    # Pressing a button is a message carrying the button's action.
    pressed = await api.post({"requester_id": "alice", "text": messages.BUTTON_SOLVED, "action": "solved"})
    assert pressed.status_code == 202
    [closed] = await api.replies("alice", count=1, after=answer["id"])
    assert closed["text"] == messages.CLOSED


async def test_duplicate_message_id_is_acknowledged_and_answered_once(api: Api) -> None:
    body = {"requester_id": "alice", "text": "my vpn drops", "message_id": "retry-me"}
    first = await api.post(body)
    second = await api.post(body)
    assert (first.status_code, first.json()["status"]) == (202, "accepted")
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")
    await api.replies("alice", count=1)
    # One inbound message stored, so nothing is left that could cause a second reply.
    assert api.count_messages() == 2


async def test_escalation_reply_tells_the_ticket_number(api: Api) -> None:
    await api.post({"requester_id": "bob", "text": "can you order pizza for the team"})
    [reply] = await api.replies("bob", count=1)
    assert reply["kind"] == ReplyKind.ESCALATION
    assert reply["ticket_number"] == "TZ-1001"
    assert "TZ-1001" in reply["text"]


async def test_conversation_id_separates_threads_of_one_requester(api: Api) -> None:
    await api.post({"requester_id": "alice", "conversation_id": "laptop", "text": "vpn drops"})
    await api.post({"requester_id": "alice", "conversation_id": "office", "text": "order pizza"})
    [laptop] = await api.replies("laptop", count=1)
    [office] = await api.replies("office", count=1)
    assert (laptop["kind"], office["kind"]) == (ReplyKind.ANSWER, ReplyKind.ESCALATION)


# -- authentication ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
async def test_bearer_token_is_required_when_configured(settings: Settings, headers: dict[str, str]) -> None:
    async with running_api(settings, auth_token=TOKEN) as api:
        refused = await api.post({"requester_id": "alice", "text": "vpn drops"}, headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in refused.text
        reading = await api.client.get("/api/v1/conversations/alice/replies", headers=headers)
        assert reading.status_code == 401
        assert api.count_messages() == 0


async def test_the_right_bearer_token_is_accepted(settings: Settings) -> None:
    async with running_api(settings, auth_token=TOKEN, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        response = await api.post({"requester_id": "alice", "text": "vpn drops"})
        assert response.status_code == 202
        [reply] = await api.replies("alice", count=1)
        assert reply["kind"] == ReplyKind.ANSWER


# -- refused requests ----------------------------------------------------------------


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


BAD_BODIES = {
    "invalid-json": (b'{"requester_id": "alice", "text": ', 400, "not valid JSON"),
    "invalid-utf8": (b'{"requester_id": "alice", "text": "vpn \xff\xfe"}', 400, "not valid UTF-8"),
    "not-an-object": (_json(["vpn drops"]), 400, "valid dictionary"),
    "deeply-nested": (b"[" * 100_000, 400, "not valid JSON"),
    "missing-requester": (_json({"text": "vpn drops"}), 400, "requester_id: Field required"),
    "unknown-field": (
        _json({"requester_id": "alice", "text": "hi", "priority": "high"}),
        400,
        "priority: Extra inputs are not permitted",
    ),
    "empty-text": (_json({"requester_id": "alice", "text": ""}), 400, messages.EMPTY_MESSAGE),
    "blank-text": (_json({"requester_id": "alice", "text": " \n\t "}), 400, messages.EMPTY_MESSAGE),
    "nul-in-text": (_json({"requester_id": "alice", "text": "vpn\u0000drops"}), 400, "text: "),
    "lone-surrogate": (b'{"requester_id": "alice", "text": "vpn \\ud800"}', 400, "text: "),
    "100-kb-text": (
        _json({"requester_id": "alice", "text": "x" * 100_000}),
        413,
        "100000 characters long; the limit is 20000",
    ),
}


@pytest.mark.parametrize(("body", "status", "error"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_bad_requests_are_refused_with_a_clear_error_and_nothing_stored(
    api: Api, body: bytes, status: int, error: str
) -> None:
    response = await api.client.post(MESSAGES, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    payload = response.json()
    assert list(payload) == ["error"]
    assert error in payload["error"]
    assert "Traceback" not in response.text
    assert api.count_messages() == 0


async def test_after_must_be_an_integer(api: Api) -> None:
    await api.post({"requester_id": "alice", "text": "hello"})
    await api.replies("alice", count=1)
    response = await api.client.get("/api/v1/conversations/alice/replies", params={"after": "yesterday"})
    assert response.status_code == 400
    assert response.json() == {"error": "after must be a reply id (an integer)"}


async def test_unknown_conversation_is_404(api: Api) -> None:
    response = await api.client.get("/api/v1/conversations/nobody/replies")
    assert response.status_code == 404
    assert response.json() == {"error": "no conversation nobody"}


# -- health and routing ------------------------------------------------------------------


async def test_health_and_readiness(api: Api) -> None:
    health = await api.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await api.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "channels": ["http_api"]})


async def test_not_ready_until_the_runtime_has_started(settings: Settings) -> None:
    app = TierZero(with_http_api(settings), retriever=it_retriever())
    runtime, _ = prepare(app)
    try:
        async with serving(create_app(runtime), lifespan="off") as url, httpx.AsyncClient(base_url=url) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "unavailable", "problems": ["not started"]}
            # A channel that has not started refuses messages instead of losing them.
            refused = await client.post(MESSAGES, json={"requester_id": "alice", "text": "vpn drops"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
    finally:
        app.db.dispose()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/route", 404),
        ("GET", "/api/v1/messages", 405),
        ("DELETE", "/api/v1/conversations/alice/replies", 405),
    ],
)
async def test_unknown_routes_and_methods_answer_json_without_a_stack_trace(
    api: Api, method: str, path: str, status: int
) -> None:
    response = await api.client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert "Traceback" not in response.text and "File " not in response.text


async def test_an_unexpected_error_is_a_json_500_without_a_stack_trace(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(**_: object) -> None:
        raise RuntimeError("database exploded at /srv/secret/path")

    monkeypatch.setattr(api.app.conversations, "replies", broken)
    response = await api.client.get("/api/v1/conversations/alice/replies")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error; the request was logged"}
    assert "/srv/secret/path" not in response.text
    assert any(r.name == "bot.server" and r.exc_info for r in caplog.records)


# -- webhook push -----------------------------------------------------------------------


@dataclass
class Attempt:
    at: float
    idempotency_key: str | None
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """A fake integration: records every POST; answers the queued failures first, then 200."""

    failures: list[Response] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    async def _hook(self, request: Request) -> Response:
        body = await request.json()
        self.attempts.append(Attempt(time.monotonic(), request.headers.get("idempotency-key"), body))
        if self.failures:
            return self.failures.pop(0)
        self.delivered.append(body)
        return JSONResponse({"ok": True})

    def asgi(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])


async def test_webhook_is_retried_after_429_and_the_reply_arrives_once(settings: Settings) -> None:
    receiver = WebhookReceiver(failures=[Response(status_code=429, headers={"Retry-After": "0.2"})])
    async with serving(receiver.asgi(), lifespan="off") as hook:
        async with running_api(settings, webhook_url=f"{hook}/hook") as api:
            await api.post({"requester_id": "alice", "text": "my vpn keeps disconnecting"})
            [stored] = await api.replies("alice", count=1)
            await until(lambda: [i.status for i in api.outbox_items()] == ["sent"], "the outbox to record the send")
            [item] = api.outbox_items()
            assert item.attempts == 2

        first, second = receiver.attempts  # exactly one retry, even after the graceful stop
        assert first.idempotency_key == second.idempotency_key == f"tierzero-{stored['id']}"
        assert second.at - first.at >= 0.19, "Retry-After: 0.2 was not honoured"
        [pushed] = receiver.delivered
        assert pushed == second.body == first.body
        assert pushed["text"] == stored["text"]
        assert pushed["kind"] == ReplyKind.ANSWER
        assert pushed["citations"][0]["article_id"] == "vpn-drops"
        assert pushed["conversation"] == {"channel": "http_api", "conversation_id": "alice", "thread_id": None}


async def test_a_reply_sent_after_stop_still_reaches_the_webhook(tmp_path: Path) -> None:
    # Runtime.stop() stops the channels first and flushes the outbox afterwards, so a
    # channel must still deliver after stop(), and never report an undelivered reply as sent.
    receiver = WebhookReceiver()
    async with serving(receiver.asgi(), lifespan="off") as hook:
        settings = settings_from_mapping(
            {
                "data_dir": str(tmp_path),
                "channels": {"http_api": {"webhook_url": f"{hook}/hook"}},
            }
        )
        app = TierZero(settings, retriever=it_retriever())
        [channel] = build_channels(app.channel_context()).enabled

        async def refuse(_: object) -> None:
            raise AssertionError("no message expected")

        await channel.start(refuse)
        await channel.stop()
        reply = OutboundReply(ConversationRef("http_api", "alice"), "Your ticket is resolved.", idempotency_key="k-1")
        await channel.send(reply)
        app.db.dispose()
    assert [(a.idempotency_key, a.body["text"]) for a in receiver.attempts] == [("k-1", "Your ticket is resolved.")]


# -- configuration -----------------------------------------------------------------------


def _public_settings(tmp_path: Path, **http_api: Any) -> Settings:
    return settings_from_mapping(
        {
            "data_dir": str(tmp_path),
            "server": {"host": "0.0.0.0"},
            "channels": {"http_api": http_api},
        }
    )


def test_without_a_token_on_a_public_interface_the_channel_is_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIERZERO_API_TOKEN", raising=False)
    app = TierZero(_public_settings(tmp_path, auth_token="${TIERZERO_API_TOKEN}"), retriever=it_retriever())
    try:
        runtime, channels = prepare(app)
        assert runtime.channels == []
        assert list(channels.disabled) == ["http_api"]
        assert "no auth_token" in channels.disabled["http_api"] and "0.0.0.0" in channels.disabled["http_api"]
        assert "http_api: disabled (no auth_token" in banner(app, channels)
    finally:
        app.db.dispose()


def test_with_a_token_on_a_public_interface_the_channel_is_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERZERO_API_TOKEN", TOKEN)
    app = TierZero(_public_settings(tmp_path, auth_token="${TIERZERO_API_TOKEN}"), retriever=it_retriever())
    try:
        channels = build_channels(app.channel_context())
        assert [c.name for c in channels.enabled] == ["http_api"] and channels.disabled == {}
        text = banner(app, channels)
        assert "bearer token" in text and TOKEN not in text
    finally:
        app.db.dispose()


async def test_stopping_the_server_finishes_accepted_messages(settings: Settings) -> None:
    async with running_api(settings) as api:
        for number in range(3):
            response = await api.post({"requester_id": f"user{number}", "text": "vpn drops"})
            assert response.status_code == 202
    # After the graceful stop every accepted message has its reply committed and sent.
    try:
        with api.app.db.transaction() as session:
            owners = session.scalars(select(Conversation.owner)).all()
            unanswered = session.scalar(select(func.count()).select_from(Message).where(Message.processed_at.is_(None)))
        assert owners == [Owner.BOT] * 3
        assert unanswered == 0
        assert [item.status for item in api.outbox_items()] == ["sent"] * 3
    finally:
        api.app.db.dispose()


# -- the server process -------------------------------------------------------------------------

SERVE = """
import sys
from pathlib import Path
from bot.app import TierZero
from bot.config import load_settings
from bot.server import serve
from tests.fixtures.fakes import it_retriever
serve(TierZero(load_settings(Path(sys.argv[1])), retriever=it_retriever()))
"""


def run_server_until(stop_signal: signal.Signals, *, database_url: str, folder: Path) -> tuple[int, str, str]:
    """``bot.server.serve`` in a child process: post one message, send ``stop_signal``; (exit code, out, err)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(folder / "data"),
                "log_level": "WARNING",
                "database": {"url": database_url},
                "kb": {"auto_index": False},
                "server": {"host": "127.0.0.1", "port": port},
                "channels": {"http_api": {}},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "TIERZERO_DATABASE_URL"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(config)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(base):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.05)
        posted = httpx.post(f"{base}{MESSAGES}", json={"requester_id": "alice", "text": "vpn drops"})
        assert posted.status_code == 202
    finally:
        server.send_signal(stop_signal)
        out, err = server.communicate(timeout=30)
    assert f"http_api: POST {base}/api/v1/messages" in out
    return server.returncode, out, err


def test_sigterm_stops_the_server_gracefully_with_exit_code_0(tmp_path: Path, database_url: str) -> None:
    code, _, err = run_server_until(signal.SIGTERM, database_url=database_url, folder=tmp_path)
    assert code == 0, err
    assert "Traceback" not in err
    # The message accepted just before the signal was answered before the process exited.
    database = Database(database_url)
    try:
        with database.transaction() as session:
            assert [item.status for item in outbox.list_items(session)] == ["sent"]
    finally:
        database.dispose()


def test_ctrl_c_stops_the_server_without_a_traceback(tmp_path: Path) -> None:
    code, _, err = run_server_until(signal.SIGINT, database_url=f"sqlite:///{tmp_path / 'tz.db'}", folder=tmp_path)
    assert code == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
