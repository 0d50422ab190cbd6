"""SQLAlchemy 2.x models for conversations, messages, tickets and the outbox.

Enumerated columns are stored as short strings (not database enums) so that a
new value is a code change, not a schema migration on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ticketing.clock import utcnow

# Stable constraint names, so Alembic migrations behave the same on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases.

    SQLite has no timezone support and hands back naive values; without this,
    comparing them with aware "now" values raises at run time.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use ticketing.clock.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Owner(StrEnum):
    """Who answers the next message of a conversation."""

    BOT = "bot"  # the tier-0 agent answers
    QUEUE = "queue"  # escalated; waiting for a human to take it
    AGENT = "agent"  # a human owns it; the bot stays silent
    CLOSED = "closed"


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Direction(StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker; lease_until says until when
    SENT = "sent"
    UNKNOWN = "unknown"  # the send may or may not have happened; never resent blindly
    DEAD = "dead"  # gave up after the last attempt or a permanent error


class Requester(Base):
    __tablename__ = "requester"
    __table_args__ = (UniqueConstraint("channel", "platform_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    platform_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversation"
    __table_args__ = (UniqueConstraint("channel", "channel_conversation_id", "thread_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    channel_conversation_id: Mapped[str] = mapped_column(String(255))
    # "" rather than NULL for "no thread": NULLs never collide in a unique constraint.
    thread_id: Mapped[str] = mapped_column(String(255), default="")
    requester_id: Mapped[int] = mapped_column(ForeignKey("requester.id"))
    owner: Mapped[str] = mapped_column(String(16), default=Owner.BOT)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id", use_alter=True))
    # The tier-0 agent's memory between turns (unhelpful turns, pending options...).
    agent_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # What the channel needs to reply later (a Teams ConversationReference, email
    # Message-IDs...), merged from every inbound message; only the channel reads it.
    channel_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Who closed the last round of this conversation: "bot" is a tier-0 deflection.
    resolved_by: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    requester: Mapped[Requester] = relationship()
    ticket: Mapped[Ticket | None] = relationship(foreign_keys=[ticket_id])


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        # The deduplication key: a redelivered inbound message collides here.
        UniqueConstraint("channel", "direction", "channel_message_id"),
        Index("ix_message_unprocessed", "direction", "processed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id"), index=True)
    direction: Mapped[str] = mapped_column(String(3))
    channel: Mapped[str] = mapped_column(String(32))
    channel_message_id: Mapped[str | None] = mapped_column(String(255))
    author_kind: Mapped[str] = mapped_column(String(16))  # requester | bot | agent
    author_id: Mapped[str] = mapped_column(String(255), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    parts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # citations, buttons...
    attachments: Mapped[list[Any]] = mapped_column(default=list)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the channel payload, for audit only
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set in the same commit as the reply it caused; NULL means "still to answer"
    # (a crash between accept and answer is recovered from this).
    processed_at: Mapped[datetime | None] = mapped_column()


class Ticket(Base):
    __tablename__ = "ticket"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("requester.id"), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=TicketStatus.NEW, index=True)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL)
    category: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[int] = mapped_column(Integer, default=1)
    assignee: Mapped[str | None] = mapped_column(String(255))
    group: Mapped[str | None] = mapped_column("group_name", String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    first_response_at: Mapped[datetime | None] = mapped_column()
    resolved_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    first_response_due: Mapped[datetime | None] = mapped_column()
    resolution_due: Mapped[datetime | None] = mapped_column()
    csat_score: Mapped[int | None] = mapped_column(Integer)
    csat_comment: Mapped[str | None] = mapped_column(Text)
    csat_at: Mapped[datetime | None] = mapped_column()
    # Bumped with every audited change, so agent surfaces know their card is stale.
    version: Mapped[int] = mapped_column(Integer, default=1)

    requester: Mapped[Requester] = relationship()
    events: Mapped[list[TicketEvent]] = relationship(back_populates="ticket", order_by="TicketEvent.id")


class TicketEvent(Base):
    """The audit trail: who changed what, when, from which channel."""

    __tablename__ = "ticket_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    ticket: Mapped[Ticket] = relationship(back_populates="events")


class OutboxItem(Base):
    """A reply waiting to be delivered; written in the same commit as its cause."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversation.id"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("message.id"))
    channel: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column()


class DeskPost(Base):
    """A ticket's card on one agent surface (a Slack triage message, a Teams card...).

    The watermarks make mirroring durable: the desk sync brings each card up to
    ``ticket.version`` and posts timeline events after ``mirrored_event_id``.
    """

    __tablename__ = "desk_post"
    __table_args__ = (
        UniqueConstraint("ticket_id", "surface"),
        UniqueConstraint("surface", "thread_key"),
        Index("ix_desk_post_due", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))
    surface: Mapped[str] = mapped_column(String(32))
    # Where agents reply on that surface; NULL until the card is first posted.
    thread_key: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    published_version: Mapped[int] = mapped_column(Integer, default=0)
    mirrored_event_id: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
