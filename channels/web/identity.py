"""Who is making a request: sign-in modes, session cookies and the principal behind them.

The identity check is pluggable: ``demo`` (anyone picks a name; loopback only),
``proxy`` (a trusted reverse proxy asserts the user in a header) and
``email_link`` (a signed, short-lived link proves control of an address). Either
way the result is an ``Identity``; ``principal_for`` then decides the role from
config, so removing an agent from config takes effect at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import smtplib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.requests import Request

from channels.web.settings import AgentAccount, WebSettings
from ticketing.access import Principal, Role

log = logging.getLogger(__name__)

SESSION_COOKIE = "tierzero_session"
DEMO_AGENT = AgentAccount(id="agent@demo.local", name="Demo Agent", role="admin", take_over=True)
_EMAIL = re.compile(r"^[^@\s<>\"']{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,}$")


@dataclass(frozen=True)
class Identity:
    id: str
    name: str = ""
    email: str | None = None
    via: str = "demo"


def is_email(value: str) -> bool:
    return bool(_EMAIL.match(value))


class Sessions:
    """Signed session cookies and e-mail sign-in tokens (itsdangerous)."""

    def __init__(self, secret: str, *, max_age_seconds: int, link_max_age_seconds: int) -> None:
        self._cookies = URLSafeTimedSerializer(secret, salt="tierzero-session")
        self._links = URLSafeTimedSerializer(secret, salt="tierzero-email-link")
        self.max_age = max_age_seconds
        self._link_max_age = link_max_age_seconds

    def cookie_value(self, identity: Identity) -> str:
        return self._cookies.dumps(
            {"id": identity.id, "name": identity.name, "email": identity.email, "via": identity.via}
        )

    def identity_from_cookie(self, value: str | None) -> Identity | None:
        if not value:
            return None
        try:
            data = self._cookies.loads(value, max_age=self.max_age)
        except (BadSignature, SignatureExpired):
            return None
        return _identity(data)

    def link_token(self, email: str) -> str:
        return self._links.dumps({"email": email})

    def email_from_link(self, token: str) -> str | None:
        """The address a link was sent to; None when forged, damaged or expired."""
        try:
            data = self._links.loads(token, max_age=self._link_max_age)
        except (BadSignature, SignatureExpired):
            return None
        email = data.get("email") if isinstance(data, dict) else None
        return email if isinstance(email, str) and is_email(email) else None

    def csrf_token(self, identity: Identity) -> str:
        """Bound to the session, so a form from another site cannot post as the user."""
        return self._cookies.dumps({"csrf": identity.id})

    def check_csrf(self, identity: Identity, token: str | None) -> bool:
        if not token:
            return False
        try:
            data = self._cookies.loads(token, max_age=self.max_age)
        except (BadSignature, SignatureExpired):
            return False
        return isinstance(data, dict) and data.get("csrf") == identity.id


def _identity(data: Any) -> Identity | None:
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
        return None
    email = data.get("email")
    return Identity(
        id=data["id"],
        name=str(data.get("name") or ""),
        email=email if isinstance(email, str) else None,
        via=str(data.get("via") or "demo"),
    )


class IdentityCheck:
    """Finds the identity of a request according to the configured sign-in mode."""

    def __init__(self, settings: WebSettings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in settings.proxy.trusted_proxies]

    @property
    def mode(self) -> str:
        return self.settings.sign_in

    def from_request(self, request: Request) -> Identity | None:
        if self.mode == "proxy":
            return self._from_proxy(request)
        return self.sessions.identity_from_cookie(request.cookies.get(SESSION_COOKIE))

    def from_trusted_proxy(self, request: Request) -> bool:
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    def _from_proxy(self, request: Request) -> Identity | None:
        # The header means nothing unless it came through our proxy: anyone can send it.
        if not self.from_trusted_proxy(request):
            return None
        user = request.headers.get(self.settings.proxy.header, "").strip()
        if not user or len(user) > 254:  # it becomes a conversation id (255 characters at most)
            return None
        name_header = self.settings.proxy.name_header
        name = request.headers.get(name_header, "").strip()[:255] if name_header else ""
        return Identity(id=user, name=name, email=user if is_email(user) else None, via="proxy")

    def agents(self) -> tuple[AgentAccount, ...]:
        if self.settings.agents:
            return self.settings.agents
        # The demo needs someone to work the console; real modes list their agents.
        return (DEMO_AGENT,) if self.mode == "demo" else ()

    def agent_account(self, identity_or_name: str) -> AgentAccount | None:
        wanted = identity_or_name.casefold()
        for agent in self.agents():
            if wanted in (agent.id.casefold(), (agent.name or agent.id).casefold()):
                return agent
        return None


def principal_for(
    identity: Identity, check: IdentityCheck, *, group_members: Mapping[str, frozenset[str]] | None = None
) -> Principal:
    """The role comes from config (agents list), never from anything the user sent."""
    account = check.agent_account(identity.id)
    if account is None or account.id.casefold() != identity.id.casefold():
        return Principal(
            identity=identity.id, display_name=identity.name or identity.id, role=Role.REQUESTER, email=identity.email
        )
    return agent_principal(account, group_members=group_members)


def agent_principal(account: AgentAccount, *, group_members: Mapping[str, frozenset[str]] | None = None) -> Principal:
    keys = {f"web:{account.id}".casefold(), account.id.casefold()}
    groups = set(account.groups)
    for group, members in (group_members or {}).items():
        if keys & {m.casefold() for m in members}:
            groups.add(group)
    return Principal(
        identity=account.id,
        display_name=account.name or account.id,
        role=Role(account.role),
        groups=frozenset(groups),
        can_take_over=account.take_over,
        email=account.id if is_email(account.id) else None,
        # The desk records assignees as "<channel>:<platform id>" (bot.desk.AgentRef.key).
        agent_key=f"web:{account.id}",
    )


def random_secret() -> str:
    return secrets.token_urlsafe(48)


async def send_sign_in_link(settings: WebSettings, *, email: str, link: str) -> bool:
    """Mail the link through the configured relay; without one, print it on the server's console
    (local trials). Never into the log: logs are shipped and kept, and the link signs someone in."""
    relay = settings.email_link
    if not relay.smtp_host:
        log.warning("web: no email_link.smtp_host configured; the sign-in link is printed on the console")
        print(f"web sign-in link for {email}: {link}", file=sys.stderr, flush=True)
        return False
    message = EmailMessage()
    message["From"] = relay.sender
    message["To"] = email
    message["Subject"] = "Your tierzero sign-in link"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"Open this link to sign in to the IT portal:\n\n{link}\n\n"
        f"It works for {relay.link_valid_minutes} minutes. If you did not ask for it, ignore this e-mail.\n"
    )

    def deliver() -> None:
        with smtplib.SMTP(relay.smtp_host or "", relay.smtp_port, timeout=15) as smtp:
            if relay.smtp_starttls:
                smtp.starttls()
            if relay.smtp_username and relay.smtp_password:
                smtp.login(relay.smtp_username, relay.smtp_password.get_secret_value())
            smtp.send_message(message)

    await asyncio.to_thread(deliver)
    return True
