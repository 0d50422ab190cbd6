"""A fake Slack Web API on localhost: records every call, answers like Slack, fails on request.

Point ``AsyncWebClient(base_url=f"{url}/api/")`` (channels.slack ``api_url``) at it.
Failures are queued per method with ``fail(...)``: the next calls to that method get
them, in order, before it answers normally again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TEAM = "T0TEAM001"
BOT_USER = "U0BOT0001"
BOT_ID = "B0BOT0001"
BOT_TOKEN = "xoxb-test-token-1234"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APP_TOKEN = "xapp-1-test-app-token"
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    authorization: str
    at: float
    result: dict[str, Any] = field(default_factory=dict)  # what the fake answered (ok calls only)


@dataclass
class FakeSlack:
    users: dict[str, str] = field(default_factory=dict)  # user id -> real name
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[Response]] = field(default_factory=dict)
    # Seconds to wait before answering, per method (to provoke client timeouts).
    delays: dict[str, float] = field(default_factory=dict)
    socket_mode_url: str = ""  # what apps.connections.open hands out
    # Shared files served at /files/<name> (url_private_download), to the bot token only.
    files: dict[str, bytes] = field(default_factory=dict)
    # Serve files chunked, without Content-Length (as a misbehaving proxy might).
    hide_file_length: bool = False
    downloads: list[Call] = field(default_factory=list)
    # Called with every answered API call (the load benchmark times replies with it).
    on_call: Callable[[Call], None] | None = None
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # -- test controls -----------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str = "",
        retry_after: float | None = None,
        times: int = 1,
        channel: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls to ``method`` (in ``channel``, if given) with a failure
        (429 + Retry-After, 5xx, or ok=false with ``error``)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        body = {"ok": False, "error": error or ("ratelimited" if status == 429 else "internal_error")}
        key = f"{method}@{channel}" if channel else method
        for _ in range(times):
            self.failures.setdefault(key, []).append(JSONResponse(body, status_code=status, headers=headers))

    def calls_to(self, method: str, **match: Any) -> list[Call]:
        return [c for c in self.calls if c.method == method and all(c.args.get(k) == v for k, v in match.items())]

    async def wait_for(self, method: str, count: int = 1, timeout: float = WAIT_SECONDS, **match: Any) -> list[Call]:
        """Wait until ``method`` was called ``count`` times with arguments ``match``; return those calls."""
        deadline = time.monotonic() + timeout
        while len(found := self.calls_to(method, **match)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(c.method, c.args.get("channel"), c.args.get("text")) for c in self.calls]
                raise AssertionError(f"expected {count} {method} calls matching {match}; calls so far: {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except TimeoutError:
                pass
        return found

    # -- the API ---------------------------------------------------------------------------

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["POST", "GET"]),
                Route("/files/{name:path}", self._file, methods=["GET"]),
            ]
        )

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        authorization = request.headers.get("authorization", "")
        self.downloads.append(Call(name, {}, authorization, time.monotonic()))
        if authorization != f"Bearer {BOT_TOKEN}":
            # Slack answers a request without a valid token with its sign-in page, not an error status.
            return Response("<html>Sign in to Slack</html>", media_type="text/html")
        if name not in self.files:
            return Response("not found", status_code=404, media_type="text/plain")
        data = self.files[name]
        if self.hide_file_length:

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(data), 1024):
                    yield data[start : start + 1024]

            return StreamingResponse(chunks(), media_type="application/octet-stream")
        return Response(data, media_type="application/octet-stream")

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        args = await _arguments(request)
        call = Call(method, args, request.headers.get("authorization", ""), time.monotonic())
        self.calls.append(call)
        self._changed.set()
        if method in self.delays:
            await asyncio.sleep(self.delays[method])
        token = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        queued = self.failures.get(f"{method}@{args.get('channel')}") or self.failures.get(method)
        if queued:
            return queued.pop(0)
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"}, status_code=404)
        call.result.update(handler(args))
        if self.on_call is not None:
            self.on_call(call)
        return JSONResponse({"ok": True, **call.result})

    def _next_ts(self) -> str:
        return f"1700000{next(self._ts):03d}.000100"

    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://acme.slack.com/", "team": "Acme", "user": "tierzero", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": BOT_ID}  # fmt: skip

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = self._next_ts()
        message = {"type": "message", "bot_id": BOT_ID, "user": BOT_USER, "ts": ts, "text": args.get("text", "")}
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        return {"channel": args.get("channel"), "ts": ts, "message": message}

    def _apps_connections_open(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.socket_mode_url}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text", "")}

    def _chat_postEphemeral(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"message_ts": self._next_ts()}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": {"id": "D" + str(args.get("users", "")).lstrip("U")}}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user", ""))
        name = self.users.get(user, user)
        return {"user": {"id": user, "name": name.lower(), "real_name": name, "profile": {"real_name": name}}}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"users": self.usergroups.get(str(args.get("usergroup")), [])}


async def _arguments(request: Request) -> dict[str, Any]:
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        return dict(json.loads(body or b"{}"))
    form = dict(urllib.parse.parse_qsl(body.decode()))
    return {**dict(request.query_params), **form}


# -- signing requests as Slack does -------------------------------------------------------------


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: str | None = None) -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/json",
    }


def form_headers(body: str, **kwargs: Any) -> dict[str, str]:
    return {**signed_headers(body, **kwargs), "Content-Type": "application/x-www-form-urlencoded"}


# -- Socket Mode ----------------------------------------------------------------------------------


@dataclass
class FakeSocketMode:
    """Slack's Socket Mode end: a websocket (aiohttp, real loopback socket) that pushes envelopes
    and collects the app's acknowledgements. The Web API fake hands out its URL (apps.connections.open)."""

    url: str = ""
    acks: list[dict[str, Any]] = field(default_factory=list)
    _sockets: list[Any] = field(default_factory=list)
    _runner: Any = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/link", self._connect)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/link"

    async def stop(self) -> None:
        for socket in self._sockets:
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _connect(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": 1, "debug_info": {}})
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                self.acks.append(json.loads(message.data))
        return socket

    async def connected(self, timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not self._sockets:
            assert time.monotonic() < deadline, "the app never connected"
            await asyncio.sleep(0.02)

    async def push(self, envelope_type: str, payload: dict[str, Any], envelope_id: str) -> dict[str, Any]:
        """Send one envelope; return the app's acknowledgement of it."""
        await self._sockets[-1].send_json(
            {"envelope_id": envelope_id, "type": envelope_type, "payload": payload, "accepts_response_payload": True}
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while not (acks := [a for a in self.acks if a.get("envelope_id") == envelope_id]):
            assert time.monotonic() < deadline, f"envelope {envelope_id} was never acknowledged"
            await asyncio.sleep(0.02)
        return acks[0]
