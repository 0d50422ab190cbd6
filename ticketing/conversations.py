"""Requesters, conversations and messages: the normalised record of every channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ticketing.clock import utcnow
from ticketing.models import Conversation, Direction, Message, Owner, Requester


def get_or_create_requester(
    session: Session,
    *,
    channel: str,
    platform_id: str,
    display_name: str = "",
    email: str | None = None,
) -> Requester:
    requester = session.scalar(
        select(Requester).where(Requester.channel == channel, Requester.platform_id == platform_id)
    )
    if requester is None:
        requester = _insert_or_reload(
            session,
            Requester(channel=channel, platform_id=platform_id, display_name=display_name, email=email),
            lambda: session.scalar(
                select(Requester).where(Requester.channel == channel, Requester.platform_id == platform_id)
            ),
        )
    # Keep the latest profile details the platform told us.
    if display_name and requester.display_name != display_name:
        requester.display_name = display_name
    if email and requester.email != email:
        requester.email = email
    return requester


def get_or_create_conversation(
    session: Session,
    *,
    channel: str,
    channel_conversation_id: str,
    thread_id: str | None,
    requester: Requester,
) -> Conversation:
    thread = thread_id or ""

    def find() -> Conversation | None:
        return session.scalar(
            select(Conversation).where(
                Conversation.channel == channel,
                Conversation.channel_conversation_id == channel_conversation_id,
                Conversation.thread_id == thread,
            )
        )

    conversation = find()
    if conversation is None:
        conversation = _insert_or_reload(
            session,
            Conversation(
                channel=channel,
                channel_conversation_id=channel_conversation_id,
                thread_id=thread,
                requester_id=requester.id,
                owner=Owner.BOT,
                agent_state={},
            ),
            find,
        )
    return conversation


def find_inbound_message(session: Session, *, channel: str, channel_message_id: str) -> Message | None:
    return session.scalar(
        select(Message).where(
            Message.channel == channel,
            Message.direction == Direction.INBOUND,
            Message.channel_message_id == channel_message_id,
        )
    )


def record_inbound_message(
    session: Session,
    *,
    conversation: Conversation,
    channel: str,
    channel_message_id: str,
    author_id: str,
    text: str,
    attachments: list[dict[str, Any]],
    raw: dict[str, Any] | None,
    received_at: datetime,
    author_kind: str = "requester",
    processed: bool = False,
) -> Message | None:
    """Store an inbound message; None when (channel, channel_message_id) was seen before."""
    if find_inbound_message(session, channel=channel, channel_message_id=channel_message_id):
        return None
    message = Message(
        conversation_id=conversation.id,
        direction=Direction.INBOUND,
        channel=channel,
        channel_message_id=channel_message_id,
        author_kind=author_kind,
        author_id=author_id,
        text=text,
        attachments=attachments,
        raw=raw,
        received_at=received_at,
        processed_at=utcnow() if processed else None,
    )
    try:
        # A savepoint, so losing a race with a concurrent redelivery only undoes this insert.
        with session.begin_nested():
            session.add(message)
    except IntegrityError:
        return None
    return message


def record_outbound_message(
    session: Session,
    *,
    conversation: Conversation,
    author_kind: str,
    author_id: str,
    text: str,
    parts: dict[str, Any],
) -> Message:
    message = Message(
        conversation_id=conversation.id,
        direction=Direction.OUTBOUND,
        channel=conversation.channel,
        author_kind=author_kind,
        author_id=author_id,
        text=text,
        parts=parts,
        attachments=[],
        received_at=utcnow(),
        processed_at=utcnow(),
    )
    session.add(message)
    session.flush()
    return message


def unprocessed_inbound_message_ids(session: Session, *, channels: list[str]) -> list[int]:
    """Messages accepted but never answered: what a restart must finish."""
    return list(
        session.scalars(
            select(Message.id)
            .where(
                Message.direction == Direction.INBOUND,
                Message.processed_at.is_(None),
                Message.channel.in_(channels),
            )
            .order_by(Message.id)
        )
    )


def conversation_messages(session: Session, *, conversation_id: int, after_id: int = 0) -> list[Message]:
    return list(
        session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.id > after_id)
            .order_by(Message.id)
        )
    )


def _insert_or_reload(session: Session, row: Any, reload: Any) -> Any:
    """Insert ``row``; if a concurrent transaction inserted the same key first, load theirs."""
    try:
        with session.begin_nested():
            session.add(row)
        return row
    except IntegrityError:
        existing = reload()
        if existing is None:
            raise
        return existing
