"""The HTTP API channel: integrations post messages and fetch (or receive) replies.

POST /api/v1/messages                        -> 202 once the message is committed
                                                (503 + Retry-After, not stored, while the inbound queue is full)
GET  /api/v1/conversations/{id}/replies      -> replies so far (``?after=<reply id>``)

Replies are also pushed to ``webhook_url`` when one is configured, with an
``Idempotency-Key`` header that stays the same across retries.
"""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.channel import (
    Acceptance,
    ChannelContext,
    ChannelDisabled,
    DeliveryOutcomeUnknown,
    InvalidMessage,
    MessageHandler,
    MessageTooLong,
    Overloaded,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from bot.config import StrictModel, validate_section
from bot.conversations import ConversationReader
from bot.model import ConversationRef, InboundMessage, OutboundReply, Participant
from channels.http_common import is_loopback, read_limited, storable

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MIN_TOKEN_CHARS = 16
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HttpApiSettings(StrictModel):
    # Bearer token callers must send. Without one the API is served only on a
    # loopback address (local development), never on a public interface.
    auth_token: SecretStr | None = None
    webhook_url: str | None = None
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("auth_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty or short token would let anyone in; refuse to start instead.
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (use a long random token)")
        return token


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requester_id: str = Field(min_length=1, max_length=255)
    text: str = ""
    # The caller's idempotency key: a retried POST with the same id is answered once.
    message_id: str | None = Field(default=None, min_length=1, max_length=200)
    conversation_id: str | None = Field(default=None, min_length=1, max_length=255)
    display_name: str = Field(default="", max_length=255)
    email: str | None = Field(default=None, max_length=320)
    action: str | None = Field(default=None, max_length=300)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: object) -> object:
        return storable(value)


class HttpApiChannel:
    name: ClassVar[str] = "http_api"

    def __init__(self, *, settings: HttpApiSettings, conversations: ConversationReader, base_url: str) -> None:
        self._settings = settings
        self._conversations = conversations
        self._base_url = base_url
        self._on_message: MessageHandler | None = None
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> HttpApiChannel:
        settings = validate_section(HttpApiSettings, config, key="channels.http_api")
        server = context.settings.server
        if settings.auth_token is None and not is_loopback(server.host):
            raise ChannelDisabled(f"no auth_token set and the server listens on {server.host}, not loopback")
        if settings.auth_token is None:
            log.warning("http_api: no auth_token configured; accepting unauthenticated requests on loopback")
        return cls(
            settings=settings, conversations=context.conversations, base_url=f"http://{server.host}:{server.port}"
        )

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/messages", self._post_message, methods=["POST"]),
            Route("/api/v1/conversations/{conversation_id}/replies", self._get_replies, methods=["GET"]),
        ]

    def describe(self) -> str:
        auth = "bearer token" if self._settings.auth_token else "no auth (loopback only)"
        push = f", replies pushed to {self._settings.webhook_url}" if self._settings.webhook_url else ""
        return f"POST {self._base_url}/api/v1/messages ({auth}{push})"

    async def start(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        self._client = httpx.AsyncClient(timeout=self._settings.webhook_timeout_seconds)

    async def stop(self) -> None:
        self._on_message = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- inbound ---------------------------------------------------------------

    async def _post_message(self, request: Request) -> Response:
        if (denied := self._check_auth(request)) is not None:
            return denied
        if self._on_message is None:
            return _error(503, "not accepting messages right now", headers={"Retry-After": "5"})
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(400, "request body is not valid UTF-8")
        except json.JSONDecodeError as exc:
            return _error(400, f"request body is not valid JSON: {exc.msg} at position {exc.pos}")
        except RecursionError:
            return _error(400, "request body is not valid JSON: nested too deeply")
        try:
            incoming = MessageIn.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(400, f"{field}: {first['msg']}")
        message = to_inbound(incoming)
        try:
            receipt = await self._on_message(message)
        except InvalidMessage as exc:
            return _error(413 if isinstance(exc, MessageTooLong) else 400, str(exc))
        except Overloaded as exc:
            # Not stored: the caller retries later with the same message_id (it is deduplicated).
            return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
        status = 202 if receipt.status is Acceptance.ACCEPTED else 200
        return JSONResponse(
            {
                "status": str(receipt.status),
                "message_id": message.channel_message_id,
                "conversation_id": message.conversation.conversation_id,
                "replies_url": f"/api/v1/conversations/{message.conversation.conversation_id}/replies",
            },
            status_code=status,
        )

    async def _get_replies(self, request: Request) -> Response:
        if (denied := self._check_auth(request)) is not None:
            return denied
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return _error(400, "after must be a reply id (an integer)")
        conversation_id = request.path_params["conversation_id"]
        replies = await self._conversations.replies(channel=self.name, conversation_id=conversation_id, after_id=after)
        if replies is None:
            return _error(404, f"no conversation {conversation_id}")
        return JSONResponse(
            {
                "conversation_id": conversation_id,
                "replies": [
                    {
                        "id": r.id,
                        "text": r.text,
                        "kind": r.kind,
                        "author": r.author,
                        "citations": r.parts.get("citations", []),
                        "buttons": r.parts.get("buttons", []),
                        "ticket_number": r.parts.get("ticket_number"),
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in replies
                ],
            }
        )

    def _check_auth(self, request: Request) -> Response | None:
        token = self._settings.auth_token
        if token is None:
            return None
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return None

    # -- outbound --------------------------------------------------------------

    async def send(self, reply: OutboundReply) -> None:
        """Replies are stored and fetchable already; push them only if a webhook is set."""
        if not self._settings.webhook_url:
            return
        # After stop() a one-off client: the runtime flushes the outbox after stopping channels.
        shared = self._client
        client = shared or httpx.AsyncClient(timeout=self._settings.webhook_timeout_seconds)
        try:
            response = await client.post(
                self._settings.webhook_url,
                json=reply.to_payload(),
                headers={"Idempotency-Key": reply.idempotency_key},
            )
        except httpx.TimeoutException as exc:
            raise DeliveryOutcomeUnknown(f"webhook timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TemporaryDeliveryError(f"webhook unreachable: {type(exc).__name__}") from exc
        finally:
            if client is not shared:
                await client.aclose()
        if response.status_code in RETRYABLE_STATUS:
            raise TemporaryDeliveryError(f"webhook answered {response.status_code}", retry_after=_retry_after(response))
        if response.status_code >= 400:
            raise PermanentDeliveryError(f"webhook answered {response.status_code}")


def to_inbound(incoming: MessageIn) -> InboundMessage:
    conversation_id = incoming.conversation_id or incoming.requester_id
    return InboundMessage(
        channel_message_id=incoming.message_id or uuid.uuid4().hex,
        conversation=ConversationRef(HttpApiChannel.name, conversation_id),
        sender=Participant(HttpApiChannel.name, incoming.requester_id, incoming.display_name, incoming.email),
        text=incoming.text,
        action=incoming.action,
        raw=incoming.model_dump(),
    )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))
