"""Who may see and change which ticket: roles, permissions and agent API tokens.

Three roles: a requester sees only their own tickets; an agent works the queues
of their groups (and unrouted tickets), takes only unowned tickets unless they
hold the separate take-over permission; an admin may do everything. Channels
decide *who* someone is; this module decides *what* they may do.

API tokens are stored only as a SHA-256 digest: the plain token is shown once,
at creation. A digest is enough (no slow hash needed) because the tokens are
long random strings, not passwords a person chose.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ticketing.clock import utcnow
from ticketing.models import Base, Requester, Ticket

TOKEN_PREFIX = "tzk_"


class Role(StrEnum):
    REQUESTER = "requester"
    AGENT = "agent"
    ADMIN = "admin"


class AccessDenied(Exception):
    """The principal may not do this; ``str()`` is safe to show."""


@dataclass(frozen=True)
class Principal:
    """A signed-in person (or an API token acting for an agent)."""

    # A verified identity: an e-mail address, a proxy-asserted user name, an agent name.
    identity: str
    display_name: str
    role: Role
    groups: frozenset[str] = field(default_factory=frozenset)
    can_take_over: bool = False
    email: str | None = None
    # How this agent is recorded as a ticket's assignee (the desk's "channel:platform id").
    agent_key: str = ""

    @property
    def is_agent(self) -> bool:
        return self.role in (Role.AGENT, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def assignee_key(self) -> str:
        return self.agent_key or self.identity


def owns_ticket(principal: Principal, ticket: Ticket, *, requester: Requester, web_channel: str = "web") -> bool:
    """The ticket was opened by this person: from the web portal, or anywhere with their verified e-mail."""
    if requester.channel == web_channel and requester.platform_id == principal.identity:
        return True
    email = (principal.email or "").casefold()
    return bool(email) and (requester.email or "").casefold() == email


def in_agent_scope(principal: Principal, ticket: Ticket) -> bool:
    """Agents work their groups' tickets, unrouted tickets and the tickets they hold."""
    if principal.is_admin:
        return True
    if not principal.is_agent:
        return False
    return ticket.group is None or ticket.group in principal.groups or is_assignee(principal, ticket)


def is_assignee(principal: Principal, ticket: Ticket) -> bool:
    return bool(ticket.assignee) and ticket.assignee == principal.assignee_key


def can_view(principal: Principal, ticket: Ticket, *, requester: Requester) -> bool:
    return in_agent_scope(principal, ticket) or owns_ticket(principal, ticket, requester=requester)


def require_agent(principal: Principal) -> None:
    if not principal.is_agent:
        raise AccessDenied("this needs an agent or admin account")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise AccessDenied("this needs an admin account")


def require_view(principal: Principal, ticket: Ticket, *, requester: Requester) -> None:
    if not can_view(principal, ticket, requester=requester):
        raise AccessDenied(f"you may not see {ticket.number}")


def require_work(principal: Principal, ticket: Ticket) -> None:
    """Change fields, add notes, resolve: any agent whose queues hold the ticket."""
    require_agent(principal)
    if not in_agent_scope(principal, ticket):
        raise AccessDenied(f"{ticket.number} is in the {ticket.group} queue, which is not one of your groups")


def require_take(principal: Principal, ticket: Ticket) -> None:
    """Taking an unowned ticket is part of working a queue; taking one from a colleague is a separate right."""
    require_work(principal, ticket)
    if ticket.assignee and not is_assignee(principal, ticket) and not (principal.can_take_over or principal.is_admin):
        raise AccessDenied(f"{ticket.number} is held by {ticket.assignee}; taking it over needs the take-over right")


def require_reply(principal: Principal, ticket: Ticket) -> None:
    """Only the agent holding a ticket speaks to its requester (take it first)."""
    require_work(principal, ticket)
    if not is_assignee(principal, ticket):
        holder = ticket.assignee or "nobody"
        raise AccessDenied(f"take {ticket.number} before replying (it is held by {holder})")


# -- API tokens ------------------------------------------------------------------


class ApiToken(Base):
    """An agent's or admin's API token; only its digest is stored."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so an admin can tell tokens apart without the secret.
    hint: Mapped[str] = mapped_column(String(16))
    agent: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    uses: Mapped[int] = mapped_column(Integer, default=0)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(session: Session, *, agent: str, role: Role) -> tuple[ApiToken, str]:
    """A new token for ``agent``; returns the row and the plain token (shown once, never stored)."""
    if role is Role.REQUESTER:
        raise AccessDenied("API tokens are for agents and admins")
    agent = agent.strip()
    if not agent:
        raise AccessDenied("an API token needs the agent's name")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(token_sha256=token_digest(plain), hint=plain[:10], agent=agent, role=str(role), created_at=utcnow())
    session.add(row)
    session.flush()
    return row, plain


def find_api_token(session: Session, token: str) -> ApiToken | None:
    """The live token matching ``token`` (revoked ones never match); marks it used."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == token_digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = utcnow()
    row.uses = (row.uses or 0) + 1
    return row


def list_api_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_api_token(session: Session, *, token_id: int) -> ApiToken | None:
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
