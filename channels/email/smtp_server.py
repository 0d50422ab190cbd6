"""The SMTP listener: aiosmtpd's protocol on the server's own event loop.

SMTP answers at the edge, as the reliability guide asks:
- RCPT to an address that is not a support address: ``550 5.1.1``;
- more than ``max_message_bytes``: ``552`` (aiosmtpd, from SIZE and from the data);
- ``250`` only after the mail is committed; any internal error ``451 4.3.0``
  (never aiosmtpd's default ``500`` with the exception text);
- a full inbound queue (``Overloaded``): ``451 4.3.2``, nothing stored; the sender retries;
- at most ``max_sessions`` sessions at once: more are greeted with ``421 4.3.2``;
- STARTTLS when a certificate is configured, AUTH when users are configured.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bot.channel import Overloaded
from channels.email.config import EmailSettings

log = logging.getLogger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
SYSTEM_BUSY = "451 4.3.2 System busy, try again later"
UNKNOWN_RECIPIENT = "550 5.1.1 No such recipient here"
TOO_MANY_SESSIONS = "421 4.3.2 Too many connections, try again later"

# Takes the envelope, returns the SMTP answer ("250 ..."), only after committing.
DeliverMail = Callable[[Envelope, Session], Awaitable[str]]


class SupportMailHandler:
    """aiosmtpd handler hooks; the work happens in ``deliver``."""

    def __init__(self, *, support_addresses: frozenset[str], deliver: DeliverMail) -> None:
        self._support_addresses = support_addresses
        self._deliver = deliver

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.strip().lower() not in self._support_addresses:
            return UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        try:
            return await self._deliver(envelope, session)
        except Overloaded:
            return SYSTEM_BUSY  # the pipeline logs overload (rate-limited); the sender's MTA retries
        except Exception:
            log.exception("email: could not take a message; answered 451")
            return TEMPORARY_FAILURE

    async def handle_exception(self, error: Exception) -> str:
        log.error("email: SMTP session error: %s", type(error).__name__)
        return TEMPORARY_FAILURE


class SessionLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


class BoundedSMTP(SMTP):
    """aiosmtpd's SMTP with a cap on concurrent sessions."""

    def __init__(self, handler: Any, *, sessions: SessionLimit, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions

    async def _handle_client(self) -> None:
        if self._sessions.active >= self._sessions.limit:
            await self.push(TOO_MANY_SESSIONS)
            if self.transport is not None:
                self.transport.close()
            return
        self._sessions.active += 1
        try:
            await super()._handle_client()
        finally:
            self._sessions.active -= 1


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def make_authenticator(settings: EmailSettings) -> Callable[..., AuthResult] | None:
    users = {login: password.get_secret_value() for login, password in settings.auth.users.items()}
    if not users:
        return None

    import hmac

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        expected = users.get(login, "")
        given = data.password.decode("utf-8", "replace")
        ok = bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
        return AuthResult(success=ok, handled=False)

    return authenticate


async def start_server(
    settings: EmailSettings, handler: SupportMailHandler, *, hostname: str
) -> tuple[asyncio.Server, SessionLimit]:
    loop = asyncio.get_running_loop()
    sessions = SessionLimit(settings.max_sessions)
    context = tls_context(settings)
    authenticator = make_authenticator(settings)

    def protocol() -> BoundedSMTP:
        return BoundedSMTP(
            handler,
            sessions=sessions,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=hostname,
            ident="tierzero",
            tls_context=context,
            require_starttls=settings.tls.require,
            timeout=settings.session_timeout_seconds,
            authenticator=authenticator,
            auth_required=settings.auth.require,
            # Without TLS configured, AUTH over plain text is allowed only when no certificate exists
            # (local development); with a certificate, credentials travel only after STARTTLS.
            auth_require_tls=context is not None,
            loop=loop,
        )

    server = await loop.create_server(protocol, host=settings.host, port=settings.port)
    return server, sessions
