"""The far side of the Teams boundary, on a real localhost socket.

``FakeBotFramework`` plays three Microsoft services at once:

- the Bot Framework OpenID metadata and its JWKS (signing keys with endorsements);
- the AAD token endpoint the bot gets its Bot Connector token from;
- the Bot Connector (``/v3/conversations/...``), recording every activity the bot
  sends and answering with scripted failures (429 with Retry-After, 502...) or
  hanging (a timeout after the request went out) when told to.

``SigningKey`` makes Bot Framework-style JWTs with a locally generated RSA key.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from channels.teams.config import BOT_FRAMEWORK_ISSUER

OPENID_PATH = "/v1/.well-known/openidconfiguration"
KEYS_PATH = "/v1/.well-known/keys"
TOKEN_PATH = "/botframework.com/oauth2/v2.0/token"
ACCESS_TOKEN = "fake-connector-access-token"


class SigningKey:
    """An RSA key published in the fake JWKS (or not), that signs Bot Framework-style tokens."""

    def __init__(self, kid: str | None = None, endorsements: tuple[str, ...] = ("msteams", "webchat")) -> None:
        self.kid = kid or f"key-{uuid.uuid4().hex[:8]}"
        self.endorsements = endorsements
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = RSAAlgorithm.to_jwk(self._private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "endorsements": list(self.endorsements)}

    def token(
        self,
        *,
        app_id: str,
        service_url: str,
        issuer: str = BOT_FRAMEWORK_ISSUER,
        expires_in: float = 3600,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": issuer,
            "aud": app_id,
            "serviceurl": service_url,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + int(expires_in),
            **claims,
        }
        return jwt.encode(payload, self._private, algorithm="RS256", headers={"kid": kid or self.kid})


@dataclass
class Received:
    """One call the bot made to the fake Bot Connector."""

    method: str
    path: str
    conversation_id: str | None
    activity_id: str | None
    body: dict[str, Any]
    authorization: str | None
    created: str | None = None  # the thread a create-conversation call made

    @property
    def text(self) -> str | None:
        text = self.body.get("text") or (self.body.get("activity") or {}).get("text")
        return str(text) if text is not None else None

    @property
    def card(self) -> dict[str, Any] | None:
        attachments = self.body.get("attachments") or (self.body.get("activity") or {}).get("attachments") or []
        for attachment in attachments:
            if attachment.get("contentType") == "application/vnd.microsoft.card.adaptive":
                content: dict[str, Any] = attachment["content"]
                return content
        return None


@dataclass
class FakeBotFramework:
    keys: list[SigningKey]
    require_auth: bool = True
    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    metadata_requests: int = 0
    # Scripted answers for the next connector calls: (status, headers); then 200s.
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hang_seconds: float = 0.0  # the next connector call answers only after this long
    # Called with every recorded connector call (the load benchmark times replies with it).
    on_received: Callable[[Received], None] | None = None
    _counter: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def openid_url(self) -> str:
        return self.base_url + OPENID_PATH

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def service_url(self) -> str:
        return self.base_url + "/"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(OPENID_PATH, self._openid),
                Route(KEYS_PATH, self._jwks),
                Route(TOKEN_PATH, self._token, methods=["POST"]),
                Route("/v3/conversations", self._create_conversation, methods=["POST"]),
                Route("/v3/conversations/{conversation_id}/activities", self._activity, methods=["POST"]),
                Route(
                    "/v3/conversations/{conversation_id}/activities/{activity_id}",
                    self._activity,
                    methods=["POST", "PUT"],
                ),
            ]
        )

    def fail_next(self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None) -> None:
        self.failures.extend([(status, dict(headers or {}))] * times)

    def sent(self, conversation_id: str | None = None) -> list[Received]:
        """Messages posted into conversations (not updates), optionally into one conversation."""
        return [
            r
            for r in self.received
            if r.method == "POST" and r.created is None and conversation_id in (None, r.conversation_id)
        ]

    def updates(self) -> list[Received]:
        return [r for r in self.received if r.method == "PUT"]

    async def wait_for(
        self, count: int, *, conversation_id: str | None = None, timeout: float = 10.0
    ) -> list[Received]:
        async def reached() -> None:
            while len(self.sent(conversation_id)) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} activities in {conversation_id or 'any conversation'}, "
                f"got {[r.text or r.card for r in self.sent(conversation_id)]}"
            ) from None
        return self.sent(conversation_id)

    # -- Microsoft login and metadata ------------------------------------------

    async def _openid(self, _: Request) -> Response:
        self.metadata_requests += 1
        return JSONResponse(
            {
                "issuer": BOT_FRAMEWORK_ISSUER,
                "jwks_uri": self.base_url + KEYS_PATH,
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, _: Request) -> Response:
        return JSONResponse({"keys": [key.jwk() for key in self.keys]})

    async def _token(self, request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        self.token_requests.append(form)
        if form.get("grant_type") != "client_credentials" or not form.get("client_secret"):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse({"token_type": "Bearer", "expires_in": 3600, "access_token": ACCESS_TOKEN})

    # -- Bot Connector -----------------------------------------------------------

    async def _scripted(self, request: Request) -> Response | None:
        authorization = request.headers.get("authorization")
        if self.require_auth and authorization != f"Bearer {ACCESS_TOKEN}":
            return JSONResponse({"error": {"code": "Unauthorized"}}, status_code=401)
        if self.hang_seconds:
            hang, self.hang_seconds = self.hang_seconds, 0.0
            await asyncio.sleep(hang)
        if self.failures:
            status, headers = self.failures.pop(0)
            return JSONResponse({"error": {"code": "Scripted", "message": f"status {status}"}}, status, headers)
        return None

    async def _create_conversation(self, request: Request) -> Response:
        body = await request.json()
        if (failed := await self._scripted(request)) is not None:
            return failed
        self._counter += 1
        activity_id = f"{1700000000000 + self._counter}"
        channel = ((body.get("channelData") or {}).get("channel") or {}).get("id", "unknown")
        conversation_id = f"{channel};messageid={activity_id}"
        self._record(request, None, activity_id, body, created=conversation_id)
        return JSONResponse({"id": conversation_id, "activityId": activity_id}, status_code=201)

    async def _activity(self, request: Request) -> Response:
        body = await request.json()
        if (failed := await self._scripted(request)) is not None:
            return failed
        conversation_id = request.path_params["conversation_id"]
        activity_id = request.path_params.get("activity_id")
        self._record(request, conversation_id, activity_id, body)
        if request.method == "PUT":
            return JSONResponse({"id": activity_id})
        self._counter += 1
        return JSONResponse({"id": f"sent-{self._counter}"}, status_code=201)

    def _record(
        self,
        request: Request,
        conversation_id: str | None,
        activity_id: str | None,
        body: dict[str, Any],
        *,
        created: str | None = None,
    ) -> None:
        received = Received(
            request.method,
            request.url.path,
            conversation_id,
            activity_id,
            body,
            request.headers.get("authorization"),
            created,
        )
        self.received.append(received)
        self._changed.set()
        if self.on_received is not None:
            self.on_received(received)
