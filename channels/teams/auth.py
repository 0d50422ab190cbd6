"""Bot Framework authentication, both ways.

Inbound: every request to /api/messages carries a JWT signed by the Bot Framework.
It is accepted only if it is issued by the Bot Framework, addressed to our app id,
unexpired (5 minutes of clock skew allowed), signed by a key from the published
OpenID metadata whose endorsements include the activity's channel, and its
``serviceurl`` claim equals the activity's ``serviceUrl`` (the same checks as
botframework-connector's ``ChannelValidation``). We do them here with PyJWT
because the connector's ``JwtTokenExtractor`` fetches the keys with blocking
``requests`` calls on the event loop and keeps them in a process-wide cache.

Outbound: calls to the Bot Connector carry an OAuth client-credentials token
for our app. ``ConnectorToken`` plugs into botbuilder's ``AppCredentials`` (what
the connector client signs requests with) but is refreshed asynchronously
before each send, so a token fetch never blocks the event loop either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from botframework.connector.auth import AppCredentials
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

from bot.channel import PermanentDeliveryError, TemporaryDeliveryError

log = logging.getLogger(__name__)

CLOCK_SKEW_SECONDS = 5 * 60
ALLOWED_ALGORITHMS = ("RS256",)
KEYS_MAX_AGE_SECONDS = 24 * 3600
# An unknown key id triggers a refresh (keys roll over), at most this often.
UNKNOWN_KEY_REFRESH_GAP_SECONDS = 5 * 60
TOKEN_EARLY_REFRESH_SECONDS = 5 * 60
SERVICE_URL_CLAIM = "serviceurl"


class TokenRejected(Exception):
    """The request's token is missing or invalid (answer 401). ``str()`` is safe to log."""


class KeysUnavailable(Exception):
    """The OpenID metadata or its keys could not be fetched (answer 503: not the caller's fault)."""


@dataclass(frozen=True)
class SigningKey:
    key: Any  # an RSA public key
    endorsements: frozenset[str]


class OpenIdKeys:
    """The signing keys named by an OpenID metadata document, cached and refreshed."""

    def __init__(self, metadata_url: str, *, timeout: float = 10.0, clock: Any = time.monotonic) -> None:
        self._metadata_url = metadata_url
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, key_id: str) -> SigningKey | None:
        if self._fetched_at is None or self._clock() - self._fetched_at > KEYS_MAX_AGE_SECONDS:
            await self._refresh()
        key = self._keys.get(key_id)
        if key is None and self._clock() - (self._fetched_at or 0.0) > UNKNOWN_KEY_REFRESH_GAP_SECONDS:
            await self._refresh()
            key = self._keys.get(key_id)
        return key

    async def _refresh(self) -> None:
        observed = self._fetched_at
        async with self._lock:
            if self._fetched_at != observed:
                return  # another request refreshed while this one waited
            try:
                # A client per refresh (daily): nothing to keep open between them.
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    metadata = await _get_json(client, self._metadata_url)
                    jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
                    if not isinstance(jwks_uri, str):
                        raise KeysUnavailable(f"{self._metadata_url} names no jwks_uri")
                    document = await _get_json(client, jwks_uri)
            except KeysUnavailable:
                if self._keys:  # keep serving with the keys we have; try again later
                    log.warning("teams: could not refresh the Bot Framework signing keys; using the cached ones")
                    self._fetched_at = self._clock()
                    return
                raise
            self._keys = _parse_keys(document)
            self._fetched_at = self._clock()
            log.info("teams: loaded %s Bot Framework signing keys", len(self._keys))


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    try:
        response = await client.get(url)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        raise KeysUnavailable(f"cannot fetch {url}: {type(exc).__name__}") from exc


def _parse_keys(document: Any) -> dict[str, SigningKey]:
    keys: dict[str, SigningKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
            continue
        try:
            public_key = RSAAlgorithm.from_jwk(json.dumps(entry))
        except (jwt.InvalidKeyError, ValueError, KeyError):
            log.warning("teams: skipping an unreadable signing key %r", entry.get("kid"))
            continue
        endorsements = entry.get("endorsements") or []
        keys[entry["kid"]] = SigningKey(public_key, frozenset(str(e) for e in endorsements))
    return keys


class BotFrameworkTokenValidator:
    def __init__(self, *, app_id: str, keys: OpenIdKeys, issuer: str) -> None:
        self._app_id = app_id
        self._keys = keys
        self._issuer = issuer

    async def validate(self, authorization: str | None, *, channel_id: str, service_url: str) -> Mapping[str, Any]:
        """The token's claims; raises TokenRejected (401) or KeysUnavailable (503)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            raise TokenRejected("no Bearer token in the Authorization header")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}") from None
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise TokenRejected(f"token signed with {header.get('alg')!r}, not RS256")
        key_id = header.get("kid")
        if not isinstance(key_id, str):
            raise TokenRejected("token names no signing key (kid)")
        key = await self._keys.get(key_id)
        if key is None:
            raise TokenRejected(f"token signed by an unknown key {key_id!r}")
        if not channel_id or channel_id not in key.endorsements:
            raise TokenRejected(f"signing key {key_id!r} is not endorsed for channel {channel_id!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self._app_id,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid token: {exc}") from None
        if claims.get(SERVICE_URL_CLAIM) != service_url:
            raise TokenRejected("the token's serviceurl claim does not match the activity's serviceUrl")
        return claims


class ConnectorToken(AppCredentials):  # type: ignore[misc]
    """Our app's access token for the Bot Connector (OAuth 2.0 client credentials)."""

    def __init__(self, *, app_id: str, password: SecretStr, token_url: str, scope: str, timeout: float = 10.0) -> None:
        super().__init__(app_id=app_id, oauth_scope=scope.removesuffix("/.default"))
        self._password = password
        self._token_url = token_url
        self._scope = scope
        self._timeout = timeout
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def refresh_if_needed(self) -> None:
        """Fetch a new token when there is none or it expires soon; raises DeliveryError."""
        if self._token and time.monotonic() < self._expires_at - TOKEN_EARLY_REFRESH_SECONDS:
            return
        async with self._lock:
            if self._token and time.monotonic() < self._expires_at - TOKEN_EARLY_REFRESH_SECONDS:
                return
            self._token, lifetime = await self._fetch()
            self._expires_at = time.monotonic() + lifetime

    async def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.microsoft_app_id,
            "client_secret": self._password.get_secret_value(),
            "scope": self._scope,
        }
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:  # hourly: no pool to keep
                response = await client.post(self._token_url, data=form)
        except httpx.HTTPError as exc:
            raise TemporaryDeliveryError(f"token endpoint unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TemporaryDeliveryError(
                f"token endpoint answered {response.status_code}", retry_after=retry_after_seconds(response.headers)
            )
        try:
            body = response.json()
        except json.JSONDecodeError:
            body = {}
        if response.status_code != 200 or not isinstance(body.get("access_token"), str):
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise PermanentDeliveryError(
                f"token endpoint refused the app id/password ({response.status_code} {error}); check app_id, "
                "app_password and token_url in channels.teams"
            )
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return body["access_token"], lifetime

    def get_access_token(self, force_refresh: bool = False) -> str:
        # Called synchronously by msrest while signing a request; the token was fetched beforehand.
        if not self._token:
            raise PermissionError("no Bot Connector token yet; refresh_if_needed() was not awaited")
        return self._token


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds (delta form; an HTTP date is rare here and ignored)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
