"""The Microsoft Teams channel: POST /api/messages on the shared server, answers sent proactively.

A request is authenticated (Bot Framework JWT), its tenant checked, its activity
normalised and committed, and answered at once (202): Teams redelivers after about
15 s, and an answer can take longer than that. The answer goes out later through
the outbox as a proactive message to the ConversationReference stored with the
conversation (``InboundMessage.channel_data`` -> ``OutboundReply.channel_data``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.channel import (
    Acceptance,
    ChannelContext,
    ChannelDisabled,
    DeliveryError,
    InvalidMessage,
    MessageHandler,
    Overloaded,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from bot.config import ConfigError, validate_section
from bot.desk import DeskPost, TicketView, TimelineEntry
from bot.model import OutboundReply
from channels.http_common import is_loopback, read_limited
from channels.teams import cards, messages
from channels.teams.auth import (
    BotFrameworkTokenValidator,
    ConnectorToken,
    KeysUnavailable,
    OpenIdKeys,
    TokenRejected,
)
from channels.teams.config import BOT_FRAMEWORK_ISSUER, BOT_FRAMEWORK_SCOPE, TeamsSettings
from channels.teams.connector import BotConnector
from channels.teams.desk import TeamsAgentDesk
from channels.teams.normalise import (
    ACTION_KEY,
    CHANNEL,
    BotAdded,
    Ignored,
    MessageDeleted,
    MessageEdited,
    TeamsEvent,
    TeamsMessage,
    normalise,
    storable_id,
    tenant_of,
    to_inbound,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
MAX_ACTION_CHARS = 300
BACKGROUND_ATTEMPTS = 3
INVOKE_MESSAGE = "application/vnd.microsoft.activity.message"


class TeamsChannel:
    name: ClassVar[str] = CHANNEL

    def __init__(self, *, settings: TeamsSettings, context: ChannelContext) -> None:
        self._settings = settings
        self._context = context
        self._on_message: MessageHandler | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Built here, not in start(): the desk sync may publish ticket cards before channels start.
        timeout = settings.connector_timeout_seconds
        self._validator: BotFrameworkTokenValidator | None = None
        token = None
        if settings.app_id is not None:
            assert settings.app_password is not None  # enforced by TeamsSettings
            keys = OpenIdKeys(settings.openid_metadata_url, timeout=timeout)
            self._validator = BotFrameworkTokenValidator(app_id=settings.app_id, keys=keys, issuer=BOT_FRAMEWORK_ISSUER)
            token = ConnectorToken(
                app_id=settings.app_id,
                password=settings.app_password,
                token_url=settings.token_url,
                scope=BOT_FRAMEWORK_SCOPE,
                timeout=timeout,
            )
        self._connector = BotConnector(app_id=settings.app_id, token=token, timeout_seconds=timeout)
        self._agent_desk: TeamsAgentDesk | None = None
        if settings.agent_channel is not None:
            self._agent_desk = TeamsAgentDesk(
                settings=settings.agent_channel,
                tenant_id=settings.tenants[0] if settings.tenants else None,
                connector=self._connector,
                desk=context.desk,
                notify=self._notify,
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> TeamsChannel:
        settings: TeamsSettings = validate_section(TeamsSettings, config, key="channels.teams")
        if not settings.authenticated and not settings.local_development:
            raise ChannelDisabled(
                "no app_id (set TEAMS_APP_ID and TEAMS_APP_PASSWORD, or local_development: true for the Emulator)"
            )
        if settings.local_development:
            host = context.settings.server.host
            if not is_loopback(host):
                raise ConfigError(
                    f"config: channels.teams.local_development accepts unauthenticated requests, so it needs "
                    f"server.host on loopback (127.0.0.1), not {host}"
                )
            log.warning(
                "teams: LOCAL DEVELOPMENT MODE: /api/messages accepts requests WITHOUT authentication and "
                "replies are sent unsigned. Use only with the Bot Framework Emulator on this machine."
            )
        return cls(settings=settings, context=context)

    # -- Channel ---------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        return [Route("/api/messages", self._receive, methods=["POST"])]

    def describe(self) -> str:
        server = self._context.settings.server
        where = f"POST http://{server.host}:{server.port}/api/messages"
        if not self._settings.authenticated:
            return f"{where} (LOCAL DEVELOPMENT: no authentication)"
        agents = self._settings.agent_channel
        desk = f", ticket cards in channel {agents.channel_id}" if agents else ""
        return f"{where} (Bot Framework app {self._settings.app_id}, tenants {', '.join(self._settings.tenants)}{desk})"

    async def start(self, on_message: MessageHandler) -> None:
        self._on_message = on_message

    async def stop(self) -> None:
        self._on_message = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        # Replies the runtime flushes after this still go out, each on a connection closed after it.
        await self._connector.close()

    async def send(self, reply: OutboundReply) -> None:
        reference = (reply.channel_data or {}).get("reference")
        if not isinstance(reference, Mapping):
            raise PermanentDeliveryError("no Teams conversation reference stored for this conversation")
        await self._connector.send(reference, cards.reply_activity(reply))

    # -- AgentSurface ----------------------------------------------------------

    @property
    def hosts_agents(self) -> bool:
        return self._settings.agent_channel is not None

    async def publish_ticket(self, view: TicketView, post: DeskPost | None) -> DeskPost:
        return await self._require_agent_desk().publish(view, post)

    async def post_to_ticket(self, post: DeskPost, view: TicketView, entry: TimelineEntry) -> None:
        await self._require_agent_desk().mirror(post, entry)

    # -- inbound ---------------------------------------------------------------

    async def _receive(self, request: Request) -> Response:
        if self._on_message is None:
            return _error(503, "not accepting activities right now", headers={"Retry-After": "5"})
        authorization = request.headers.get("authorization")
        if self._validator is not None and not authorization:
            return _unauthorized("no Authorization header")
        content_type = request.headers.get("content-type", "")
        if not content_type.strip():
            return _error(400, "Content-Type header missing; send the activity as application/json")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            return _error(415, f"Content-Type {media_type!r} is not supported; send application/json")
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return _error(415, "request body is not JSON")
        if not isinstance(payload, dict):
            return _error(400, "an activity is a JSON object")
        if not isinstance(payload.get("type"), str) or not payload["type"]:
            return _error(400, "activity has no type")
        if self._validator is not None:
            try:
                await self._validator.validate(
                    authorization,
                    channel_id=_str(payload.get("channelId")),
                    service_url=_str(payload.get("serviceUrl")),
                )
            except TokenRejected as exc:
                return _unauthorized(str(exc))
            except KeysUnavailable as exc:
                log.error("teams: cannot check tokens: %s", exc)
                return _error(503, "cannot verify the token right now", headers={"Retry-After": "10"})
        tenant = tenant_of(payload)
        if self._settings.tenants and tenant not in self._settings.tenants:
            log.warning("teams: refused an activity from tenant %r (not in channels.teams.tenants)", tenant)
            return _error(403, "this tenant is not served by this bot")
        try:
            return await self._handle(normalise(payload))
        except InvalidMessage as exc:
            return _error(400, str(exc))
        except Overloaded as exc:
            # Not stored: Teams redelivers the activity later (and a redelivery is deduplicated).
            return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})
        except Exception:
            # The activity was not committed: let Teams redeliver it rather than lose it.
            log.exception("teams: failed to handle a %s activity", payload.get("type"))
            return _error(503, "could not store the activity; try again", headers={"Retry-After": "5"})

    async def _handle(self, event: TeamsEvent) -> Response:
        conversations = self._context.conversations
        match event:
            case Ignored(reason=reason):
                log.debug("teams: ignored an activity: %s", reason)
                return JSONResponse({"status": "ignored", "reason": reason})
            case MessageEdited():
                await conversations.record_edit(channel=CHANNEL, channel_message_id=event.message_key, text=event.text)
                return JSONResponse({"status": "edit recorded"})
            case MessageDeleted():
                await conversations.record_deletion(channel=CHANNEL, channel_message_id=event.message_key)
                return JSONResponse({"status": "deletion recorded"})
            case BotAdded():
                return await self._welcome(event)
            case TeamsMessage():
                if self._agent_desk is not None and self._agent_desk.is_agent_channel(event):
                    feedback = await self._agent_desk.handle(event)
                    return _invoke_answer(feedback) if event.is_invoke else JSONResponse({"status": "handled"})
                return await self._requester_message(event)
        raise AssertionError(f"unhandled Teams event {event!r}")

    async def _requester_message(self, message: TeamsMessage) -> Response:
        action, label = _action_of(message)
        if message.value is not None and action is None:
            return JSONResponse({"status": "ignored", "reason": "not a requester action"})
        if message.conversation_type != "personal" and not message.mentions_bot and action is None:
            # In channels and group chats the bot answers when mentioned, and follows the
            # reply chains it is already part of (Teams delivers those with RSC permission).
            known = await self._context.conversations.replies(
                channel=CHANNEL, conversation_id=storable_id(message.conversation_id)
            )
            if known is None:
                return JSONResponse({"status": "ignored", "reason": "not addressed to the bot"})
        assert self._on_message is not None
        try:
            receipt = await self._on_message(to_inbound(message, action=action, label=label))
        except InvalidMessage as exc:
            # Tell the person in Teams (no stack trace); the HTTP answer is for Teams, not them.
            self._notify(message.reference, str(exc))
            return JSONResponse({"status": "refused", "reason": str(exc)})
        if message.is_invoke:
            return _invoke_answer(None)
        accepted = receipt.status is Acceptance.ACCEPTED
        return JSONResponse({"status": str(receipt.status)}, status_code=202 if accepted else 200)

    # -- background sends (welcome, feedback to agents) ------------------------

    async def _welcome(self, event: BotAdded) -> Response:
        """Say hello the first time the bot is added to a conversation (remembered in the database)."""
        assert self._on_message is not None
        receipt = await self._on_message(event.to_inbound())  # a failure answers 500: Teams retries
        if receipt.status is not Acceptance.ACCEPTED:
            return JSONResponse({"status": "already welcomed"})
        self._notify(event.reference, messages.WELCOME)
        return JSONResponse({"status": "welcomed"})

    def _notify(self, reference: Mapping[str, Any], text: str) -> None:
        """Send a short text outside the outbox: nothing depends on it, so a failure is only logged."""
        self._spawn(self._send_with_retries(reference, text))

    async def _send_with_retries(self, reference: Mapping[str, Any], text: str) -> None:
        for attempt in range(1, BACKGROUND_ATTEMPTS + 1):
            try:
                await self._connector.send(reference, cards.text_activity(text))
                return
            except TemporaryDeliveryError as exc:
                if attempt == BACKGROUND_ATTEMPTS:
                    log.warning("teams: gave up sending a notice: %s", exc)
                    return
                await asyncio.sleep(min(30.0, exc.retry_after if exc.retry_after is not None else 2.0**attempt))
            except DeliveryError as exc:
                log.warning("teams: could not send a notice: %s", exc)
                return

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _require_agent_desk(self) -> TeamsAgentDesk:
        if self._agent_desk is None:
            raise PermanentDeliveryError("no agent_channel configured for Teams")
        return self._agent_desk


def _action_of(message: TeamsMessage) -> tuple[str | None, str]:
    """The requester's button action (solved, human, rate:4...) and its label."""
    if message.value is None:
        return None, ""
    action = message.value.get(ACTION_KEY)
    if not isinstance(action, str) or not action or len(action) > MAX_ACTION_CHARS:
        return None, ""
    label = message.value.get("label")
    return action, label if isinstance(label, str) and label else action


def _invoke_answer(text: str | None) -> Response:
    # Teams shows an invoke's "message" answer to the person who pressed the button only.
    return JSONResponse({"statusCode": 200, "type": INVOKE_MESSAGE, "value": text or messages.DONE})


def _unauthorized(reason: str) -> Response:
    log.warning("teams: refused a request: %s", reason)
    return _error(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


def _error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
