"""Outgoing calls to the Bot Connector service, through botbuilder, with delivery errors the outbox understands.

- 408, 412, 429, 500, 502, 503, 504 (Teams asks bots to retry 412, 429, 502, 504): ``TemporaryDeliveryError``
  carrying ``Retry-After``; 401/403/404 and other 4xx: ``PermanentDeliveryError``.
- The connection failed before anything was sent: temporary. A timeout or a dropped
  connection after the request went out: ``DeliveryOutcomeUnknown`` (never resent blindly).

msrest, under botframework-connector, retries POSTs itself (3 times, with sleeps in
a worker thread, also after read timeouts): that would repeat messages and hide
429s from the outbox, so its retries are turned off here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import requests
from botbuilder.core import BotFrameworkAdapter, BotFrameworkAdapterSettings, TurnContext
from botbuilder.schema import Activity, ChannelAccount, ConversationParameters, ConversationReference
from botframework.connector.aio import ConnectorClient
from botframework.connector.auth import AppCredentials, AuthenticationConstants, ClaimsIdentity
from msrest.exceptions import ClientRequestError, DeserializationError, HttpOperationError, SerializationError
from urllib3.exceptions import NewConnectionError

from bot.channel import DeliveryError, DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError
from channels.teams.auth import ConnectorToken, retry_after_seconds

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 412, 429, 500, 502, 503, 504})
T = TypeVar("T")


class _Adapter(BotFrameworkAdapter):  # type: ignore[misc]
    """botbuilder's adapter with connector clients that do not retry on their own and time out sooner."""

    def __init__(self, settings: BotFrameworkAdapterSettings, *, timeout_seconds: float) -> None:
        super().__init__(settings)
        self._timeout_seconds = timeout_seconds

    def _get_or_create_connector_client(self, service_url: str, credentials: AppCredentials) -> ConnectorClient:
        client = super()._get_or_create_connector_client(service_url, credentials)
        client.config.retry_policy.retries = 0
        client.config.connection.timeout = self._timeout_seconds
        return client

    async def close_connector_clients(self) -> None:
        clients = list(self._connector_client_cache.values())
        self._connector_client_cache.clear()
        for client in clients:
            await client.__aexit__(None, None, None)  # closes its requests session


class BotConnector:
    """Sends, posts and updates activities; raises only ``DeliveryError`` subclasses."""

    def __init__(self, *, app_id: str | None, token: ConnectorToken | None, timeout_seconds: float) -> None:
        # No app id: local development against the Bot Framework Emulator, which takes unsigned calls.
        self._app_id = app_id
        self._token = token
        settings = BotFrameworkAdapterSettings(app_id or "", app_credentials=token)
        self._adapter = _Adapter(settings, timeout_seconds=timeout_seconds)
        self._closed = False
        self._in_flight = 0

    async def close(self) -> None:
        """Close pooled connections; later calls still work, each closing its connection after it."""
        self._closed = True
        await self._adapter.close_connector_clients()

    async def send(self, reference: Mapping[str, Any], activity: Activity) -> str:
        """Proactively send ``activity`` into the conversation of a stored ConversationReference."""
        try:
            conversation = ConversationReference.deserialize(dict(reference))
        except (DeserializationError, ValueError, TypeError) as exc:
            raise PermanentDeliveryError(f"stored conversation reference is unreadable: {exc}") from exc
        if not conversation.service_url or not conversation.conversation or not conversation.conversation.id:
            raise PermanentDeliveryError("stored conversation reference has no serviceUrl or conversation id")
        sent: list[str] = []

        async def deliver(turn: TurnContext) -> None:
            response = await turn.send_activity(activity)
            sent.append(getattr(response, "id", "") or "")

        await self._call(lambda: self._continue(conversation, deliver))
        return sent[0] if sent else ""

    async def create_channel_thread(
        self, *, service_url: str, channel_id: str, tenant_id: str | None, activity: Activity
    ) -> tuple[str, str]:
        """Post ``activity`` as a new thread in a Teams channel; returns (thread conversation id, activity id)."""
        parameters = ConversationParameters(
            is_group=True,
            bot=ChannelAccount(id=f"28:{self._app_id}") if self._app_id else None,
            channel_data={"channel": {"id": channel_id}, **({"tenant": {"id": tenant_id}} if tenant_id else {})},
            tenant_id=tenant_id,
            activity=activity,
        )

        async def create() -> tuple[str, str]:
            client = await self._client(service_url)
            created = await client.conversations.create_conversation(parameters)
            activity_id = created.activity_id or ""
            conversation_id = created.id or f"{channel_id};messageid={activity_id}"
            return conversation_id, activity_id

        return await self._call(create)

    async def post(self, *, service_url: str, conversation_id: str, activity: Activity) -> str:
        async def post() -> str:
            client = await self._client(service_url)
            response = await client.conversations.send_to_conversation(conversation_id, activity)
            return getattr(response, "id", "") or ""

        return await self._call(post)

    async def update(self, *, service_url: str, conversation_id: str, activity_id: str, activity: Activity) -> None:
        activity.id = activity_id

        async def update() -> None:
            client = await self._client(service_url)
            await client.conversations.update_activity(conversation_id, activity_id, activity)

        await self._call(update)

    async def _continue(
        self, reference: ConversationReference, logic: Callable[[TurnContext], Awaitable[None]]
    ) -> None:
        if self._app_id:
            await self._adapter.continue_conversation(reference, logic, bot_id=self._app_id)
        else:
            # An identity without an audience: botbuilder then signs nothing (Emulator only).
            await self._adapter.continue_conversation(reference, logic, claims_identity=ClaimsIdentity({}, True))

    async def _client(self, service_url: str) -> ConnectorClient:
        identity = ClaimsIdentity(
            {AuthenticationConstants.AUDIENCE_CLAIM: self._app_id} if self._app_id else {}, is_authenticated=True
        )
        return await self._adapter.create_connector_client(service_url, identity)

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self._token is not None:
            await self._token.refresh_if_needed()
        self._in_flight += 1
        try:
            return await self._mapped(operation)
        finally:
            self._in_flight -= 1
            if self._closed and self._in_flight == 0:
                await self._adapter.close_connector_clients()

    async def _mapped(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except DeliveryError:
            raise
        except HttpOperationError as exc:
            raise status_error(exc) from exc
        except ClientRequestError as exc:
            raise transport_error(exc) from exc
        except (TypeError, ValueError, SerializationError) as exc:
            # botbuilder refuses an activity it cannot address (no serviceUrl, no conversation id).
            raise PermanentDeliveryError(f"cannot address the activity: {exc}") from exc


def status_error(exc: HttpOperationError) -> DeliveryError:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return DeliveryOutcomeUnknown(f"Bot Connector error without a status: {exc}")
    if status in RETRYABLE_STATUS:
        headers = getattr(response, "headers", None) or {}
        return TemporaryDeliveryError(f"Bot Connector answered {status}", retry_after=retry_after_seconds(headers))
    return PermanentDeliveryError(f"Bot Connector answered {status}")


def transport_error(exc: ClientRequestError) -> DeliveryError:
    # msrest raises ClientRequestError while handling the requests exception: that is the context.
    cause = exc.__context__ or exc.__cause__
    if _never_sent(cause):
        return TemporaryDeliveryError(f"Bot Connector unreachable: {type(cause).__name__}")
    return DeliveryOutcomeUnknown(f"no answer from the Bot Connector after sending: {type(cause).__name__}")


def _never_sent(cause: BaseException | None) -> bool:
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.ConnectionError) and cause.args:
        reason = getattr(cause.args[0], "reason", cause.args[0])
        return isinstance(reason, NewConnectionError)
    return False
