"""The platforms' side of the load benchmark, on real loopback sockets in the benchmark process.

- the fake Slack Web API (``tests.channels.slack.fake_slack.FakeSlack``): ``chat.postMessage``
  calls are the bot's Slack replies;
- the fake Bot Framework (``tests.channels.teams.fakes.FakeBotFramework``): OpenID metadata,
  JWKS with a locally generated key, the token endpoint and the Bot Connector, whose
  ``POST .../activities`` calls are the bot's Teams replies;
- an SMTP sink (aiosmtpd) the server relays its email replies to.

Every reply is handed to ``on_reply(key, text)`` the moment it arrives, where ``key``
names the conversation it went to (see ``load_traffic`` for how keys are made), so the
driver can time it and spot duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.channels.slack.fake_slack import Call, FakeSlack
from tests.channels.teams.fakes import FakeBotFramework, Received, SigningKey

ReplySink = Callable[[str, str], None]  # (conversation key, reply text)
START_TIMEOUT_SECONDS = 10.0


def slack_key(channel_id: str) -> str:
    return f"slack:{channel_id}"


def teams_key(conversation_id: str) -> str:
    return f"teams:{conversation_id}"


def email_key(address: str) -> str:
    return f"email:{address.strip().lower()}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _FakeServer(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C and SIGTERM belong to the benchmark, which stops the fakes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port of this event loop; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, ws="none", backlog=2048)
    server = _FakeServer(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("a fake platform server did not start")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, START_TIMEOUT_SECONDS)
        listener.close()


class SinkHandler:
    """aiosmtpd handler: every mail the server relays is a reply to the address it is sent to."""

    def __init__(self, on_reply: ReplySink) -> None:
        self._on_reply = on_reply
        self.mails = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.mails += 1
        message = email.message_from_bytes(bytes(envelope.original_content or b""), policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        text = f"{message.get('Subject', '')}\n{body.get_content() if body is not None else ''}"  # type: ignore[attr-defined]
        for recipient in envelope.rcpt_tos:
            self._on_reply(email_key(recipient), text)
        return "250 2.0.0 OK"


@dataclass
class Peers:
    """The running fakes and where the server reaches them."""

    slack: FakeSlack
    slack_url: str
    bot_framework: FakeBotFramework
    signing_key: SigningKey
    smtp_port: int

    def forget_calls(self) -> None:
        """Drop what the fakes recorded (the driver keeps its own account): keeps a long run's memory flat."""
        self.slack.calls.clear()
        self.bot_framework.received.clear()
        self.bot_framework.token_requests.clear()


@contextlib.asynccontextmanager
async def running_peers(on_reply: ReplySink) -> AsyncIterator[Peers]:
    def slack_call(call: Call) -> None:
        if call.method == "chat.postMessage":
            on_reply(slack_key(str(call.args.get("channel", ""))), str(call.args.get("text", "")))

    def connector_call(received: Received) -> None:
        # Posts into a conversation are replies; PUTs are card updates, creates are agent-channel threads.
        if received.method == "POST" and received.created is None and received.conversation_id:
            text = received.text or json.dumps(received.card or {})
            on_reply(teams_key(received.conversation_id), text)

    slack = FakeSlack(on_call=slack_call)
    key = SigningKey(kid="bench-key-1")
    bot_framework = FakeBotFramework(keys=[key], on_received=connector_call)
    loop = asyncio.get_running_loop()
    handler = SinkHandler(on_reply)
    sink = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench.localhost", ident="bench-sink"), host="127.0.0.1", port=0
    )
    try:
        async with serve_asgi(slack.asgi()) as slack_url, serve_asgi(bot_framework.app()) as connector_url:
            bot_framework.base_url = connector_url
            yield Peers(slack, slack_url, bot_framework, key, int(sink.sockets[0].getsockname()[1]))
    finally:
        sink.close()
        await sink.wait_closed()
