"""Calling the Slack Web API and turning its failures into the core's delivery errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.channel import DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError

# Slack's "try again later" error codes (HTTP 200 with ok=false); any other code is permanent:
# invalid_auth, channel_not_found, not_in_channel, is_archived, msg_too_long, invalid_blocks...
TEMPORARY_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def make_client(*, token: str, base_url: str, timeout: float) -> AsyncWebClient:
    # No retry handlers: the outbox retries with backoff, and a blind resend of a post
    # after a dropped connection could show the requester the same answer twice.
    return AsyncWebClient(token=token, base_url=base_url, timeout=int(max(1, timeout)), retry_handlers=[])


async def call(client: AsyncWebClient, method: str, **arguments: Any) -> AsyncSlackResponse:
    """Web API ``method`` (e.g. "chat.postMessage"); raises a ``DeliveryError`` subclass on failure.

    Goes through the SDK's method of that name, which knows how Slack wants it sent
    (JSON for chat.postMessage, a form for conversations.open, GET for users.info...).
    """
    send = getattr(client, method.replace(".", "_"))
    try:
        response: AsyncSlackResponse = await send(**arguments)
        return response
    except SlackApiError as exc:
        raise _api_error(method, exc) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        # The request may have reached Slack: do not post again blindly.
        raise DeliveryOutcomeUnknown(f"{method}: no answer from Slack in time") from exc
    except aiohttp.ClientConnectorError as exc:
        raise TemporaryDeliveryError(f"{method}: cannot connect to Slack ({type(exc).__name__})") from exc
    except aiohttp.ClientError as exc:
        raise DeliveryOutcomeUnknown(f"{method}: connection lost ({type(exc).__name__})") from exc


def _api_error(method: str, exc: SlackApiError) -> Exception:
    response = exc.response
    status = getattr(response, "status_code", 0) or 0
    data = response.data if isinstance(getattr(response, "data", None), Mapping) else {}
    code = str(data.get("error") or f"HTTP {status}")
    message = f"{method}: {code}"
    if status == 429 or code in ("ratelimited", "rate_limited"):
        return TemporaryDeliveryError(message, retry_after=retry_after(getattr(response, "headers", {})) or 1.0)
    if status >= 500 or code in TEMPORARY_ERRORS:
        return TemporaryDeliveryError(message, retry_after=retry_after(getattr(response, "headers", {})))
    return PermanentDeliveryError(message)


def retry_after(headers: Mapping[str, Any] | None) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list) and value else value
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None
