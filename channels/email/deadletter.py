"""Mail we accepted but could not turn into a conversation, kept raw: nothing is dropped.

``tierzero deadletter list`` shows them; ``tierzero deadletter replay ID``
submits the raw mail again to the running email listener, so it goes through
exactly the same path as live mail (after a fix has been deployed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from channels.email.models import EmailDeadLetter
from ticketing.clock import utcnow
from ticketing.db import Database


@dataclass(frozen=True)
class DeadLetterSummary:
    id: int
    received_at: datetime
    mail_from: str
    rcpt_tos: list[str]
    reason: str
    status: str
    size: int


def store(db: Database, *, raw: bytes, mail_from: str, rcpt_tos: list[str], reason: str) -> int:
    with db.transaction() as session:
        row = EmailDeadLetter(mail_from=mail_from[:320], rcpt_tos=list(rcpt_tos), reason=reason[:2000], raw=raw)
        session.add(row)
        session.flush()
        return row.id


def list_dead_letters(db: Database, *, status: str | None = None, limit: int = 50) -> list[DeadLetterSummary]:
    with db.transaction() as session:
        query = select(EmailDeadLetter).order_by(EmailDeadLetter.id.desc()).limit(limit)
        if status:
            query = query.where(EmailDeadLetter.status == status)
        return [
            DeadLetterSummary(r.id, r.received_at, r.mail_from, list(r.rcpt_tos), r.reason, r.status, len(r.raw))
            for r in session.scalars(query)
        ]


def load(db: Database, dead_letter_id: int) -> tuple[bytes, str, list[str]] | None:
    with db.transaction() as session:
        row = session.get(EmailDeadLetter, dead_letter_id)
        return None if row is None else (row.raw, row.mail_from, list(row.rcpt_tos))


def mark(db: Database, dead_letter_id: int, *, status: str) -> None:
    with db.transaction() as session:
        row = session.get(EmailDeadLetter, dead_letter_id)
        if row is not None:
            row.status = status
            row.replayed_at = utcnow()
