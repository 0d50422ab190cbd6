"""The transactional outbox: replies are rows first, deliveries second.

A worker claims due rows with a lease, sends them, then records the outcome.
A claim whose lease ran out means the process died mid-send: the reply may or
may not have reached the platform, so it is marked UNKNOWN and never resent
blindly (``retry_unknown`` lets an operator decide).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, aliased

from ticketing.clock import utcnow
from ticketing.models import Conversation, Message, OutboxItem, OutboxStatus


def enqueue(session: Session, *, conversation: Conversation, message: Message, payload: dict[str, Any]) -> OutboxItem:
    item = OutboxItem(
        conversation_id=conversation.id,
        message_id=message.id,
        channel=conversation.channel,
        payload=payload,
        status=OutboxStatus.PENDING,
        next_attempt_at=utcnow(),
    )
    session.add(item)
    session.flush()
    return item


def claim_due(
    session: Session, *, channels: list[str], now: datetime, lease: timedelta, limit: int = 20
) -> list[OutboxItem]:
    """Claim up to ``limit`` due items, at most one per conversation, oldest first.

    Only a conversation's oldest undelivered item is eligible, so replies arrive
    in order even when an earlier one is waiting for a retry. SKIP LOCKED keeps
    replicas off each other's rows on PostgreSQL.
    """
    earlier = aliased(OutboxItem)
    has_earlier_undelivered = (
        select(earlier.id)
        .where(
            earlier.conversation_id == OutboxItem.conversation_id,
            earlier.id < OutboxItem.id,
            earlier.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING]),
        )
        .exists()
    )
    query = (
        select(OutboxItem)
        .where(
            OutboxItem.status == OutboxStatus.PENDING,
            OutboxItem.next_attempt_at <= now,
            OutboxItem.channel.in_(channels),
            ~has_earlier_undelivered,
        )
        .order_by(OutboxItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    items = list(session.scalars(query))
    for item in items:
        item.status = OutboxStatus.SENDING
        item.lease_until = now + lease
        item.attempts += 1
    return items


def mark_sent(session: Session, *, item_id: int) -> None:
    session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(status=OutboxStatus.SENT, sent_at=utcnow(), lease_until=None, last_error=None)
    )


def mark_sent_many(session: Session, *, item_ids: list[int]) -> None:
    """``mark_sent`` for the items of a busy round in one statement.

    A Core UPDATE: the ORM's bulk-update bookkeeping cost more than the statement itself.
    """
    table = cast(Table, OutboxItem.__table__)
    session.execute(
        update(table)
        .where(table.c.id.in_(item_ids))
        .values(status=OutboxStatus.SENT, sent_at=utcnow(), lease_until=None, last_error=None)
    )


def schedule_retry(session: Session, *, item_id: int, at: datetime, error: str) -> None:
    session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(status=OutboxStatus.PENDING, next_attempt_at=at, lease_until=None, last_error=error)
    )


def mark_dead(session: Session, *, item_id: int, error: str) -> None:
    session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(status=OutboxStatus.DEAD, lease_until=None, last_error=error)
    )


def mark_unknown(session: Session, *, item_id: int, error: str) -> None:
    session.execute(
        update(OutboxItem)
        .where(OutboxItem.id == item_id)
        .values(status=OutboxStatus.UNKNOWN, lease_until=None, last_error=error)
    )


def expire_stale_claims(session: Session, *, now: datetime) -> int:
    """Claims whose worker died mid-send: their outcome is unknown."""
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(OutboxItem)
        .where(OutboxItem.status == OutboxStatus.SENDING, OutboxItem.lease_until < now)
        .values(
            status=OutboxStatus.UNKNOWN,
            lease_until=None,
            last_error="the sender stopped before recording the outcome",
        )
    )
    return result.rowcount or 0


def retry_unknown(session: Session, *, item_ids: list[int] | None = None) -> int:
    """Operator decision: send UNKNOWN (or DEAD) items again."""
    query = update(OutboxItem).where(OutboxItem.status.in_([OutboxStatus.UNKNOWN, OutboxStatus.DEAD]))
    if item_ids:
        query = query.where(OutboxItem.id.in_(item_ids))
    values = query.values(status=OutboxStatus.PENDING, next_attempt_at=utcnow(), attempts=0)
    result: CursorResult[Any] = session.execute(values)  # type: ignore[assignment]
    return result.rowcount or 0


def list_items(session: Session, *, statuses: list[str] | None = None, limit: int = 50) -> list[OutboxItem]:
    query = select(OutboxItem).order_by(OutboxItem.id.desc()).limit(limit)
    if statuses:
        query = query.where(OutboxItem.status.in_(statuses))
    return list(session.scalars(query))


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status))
    return {status: count for status, count in rows}
