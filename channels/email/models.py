"""The email channel's own tables (migration 0003_email).

Kept on the core metadata so one ``Database.migrate()`` creates them; only
this package reads or writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ticketing.clock import utcnow
from ticketing.models import Base


class EmailThread(Base):
    """One mail thread = one conversation; its key is the first Message-ID we saw of it."""

    __tablename__ = "email_thread"

    thread_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    requester: Mapped[str] = mapped_column(String(320))
    # Addresses that took part (From/To/Cc of its messages): only they may add to the thread.
    participants: Mapped[list[Any]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailMessageRef(Base):
    """Message-ID -> thread, for every mail we received or sent (threading and bounces)."""

    __tablename__ = "email_message_ref"

    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    thread_key: Mapped[str] = mapped_column(String(255), index=True)
    direction: Mapped[str] = mapped_column(String(3))  # in | out
    # Outbound: the address it went to and the outbox key it came from.
    recipient: Mapped[str | None] = mapped_column(String(320))
    ticket_number: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailRawMessage(Base):
    """The mail exactly as received, committed before we answer 250."""

    __tablename__ = "email_raw_message"

    message_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    rcpt_tos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailDeadLetter(Base):
    """Mail that could not be turned into a conversation; kept raw for ``tierzero deadletter replay``."""

    __tablename__ = "email_dead_letter"

    id: Mapped[int] = mapped_column(primary_key=True)
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    rcpt_tos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="new")  # new | replayed | failed
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column()


class EmailAutoReply(Base):
    """One automatic answer granted to a sender (the circuit breaker counts these)."""

    __tablename__ = "email_auto_reply"

    message_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    sender: Mapped[str] = mapped_column(String(320), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
