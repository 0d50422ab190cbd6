"""Which conversation a mail belongs to.

A mail joins an existing thread when its ``In-Reply-To``/``References`` name a
Message-ID we sent or received, or (after another system stripped those
headers) its subject carries our ticket tag, e.g. ``[TZ-1042]``. A mail from
an address that is not a participant of that thread never joins it: it opens
a new conversation and is flagged, so a reply is never merged into the wrong
ticket (and a stranger who guessed a Message-ID sees nothing of it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.models import EmailMessageRef, EmailThread
from ticketing.models import Conversation, Ticket

CHANNEL = "email"
MAX_KEY = 255


def storage_key(message_id: str) -> str:
    """A Message-ID as stored (column width 255); longer ones by their digest."""
    if len(message_id) <= MAX_KEY:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()


def ticket_tag_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"\[({re.escape(prefix)}-\d+)\]")


@dataclass(frozen=True)
class ThreadMatch:
    thread_key: str
    new: bool
    # Why a mail that claimed to continue a thread was given its own instead.
    flagged: str | None = None
    ticket_number: str | None = None


def find_thread(
    session: Session, *, message_ids: list[str], subject: str, sender: str, ticket_prefix: str, own_key: str
) -> ThreadMatch:
    """The thread this mail continues, or a new one keyed by ``own_key``."""
    claimed: EmailThread | None = None
    for message_id in message_ids:
        ref = session.get(EmailMessageRef, storage_key(message_id))
        if ref is not None:
            claimed = session.get(EmailThread, ref.thread_key)
            if claimed is not None:
                break
    number = None
    if claimed is None:
        match = ticket_tag_pattern(ticket_prefix).search(subject)
        if match:
            number = match.group(1)
            claimed = _thread_of_ticket(session, number)
    if claimed is None:
        return ThreadMatch(own_key, new=True)
    if sender in set(claimed.participants) | {claimed.requester}:
        return ThreadMatch(claimed.thread_key, new=False, ticket_number=number)
    return ThreadMatch(
        own_key,
        new=True,
        flagged=f"claims to continue thread {claimed.thread_key} but {sender} is not a participant",
    )


def _thread_of_ticket(session: Session, number: str) -> EmailThread | None:
    conversation_key = session.scalar(
        select(Conversation.channel_conversation_id)
        .join(Ticket, Ticket.conversation_id == Conversation.id)
        .where(Ticket.number == number, Conversation.channel == CHANNEL)
    )
    return session.get(EmailThread, conversation_key) if conversation_key else None


def ticket_of_thread(session: Session, thread_key: str) -> str | None:
    return session.scalar(
        select(Ticket.number)
        .join(Conversation, Conversation.ticket_id == Ticket.id)
        .where(Conversation.channel == CHANNEL, Conversation.channel_conversation_id == thread_key)
    )


def remember_thread(
    session: Session, *, thread_key: str, requester: str, subject: str, participants: list[str]
) -> EmailThread:
    """Create the thread or add participants to it (idempotent)."""
    thread = session.get(EmailThread, thread_key)
    if thread is None:
        thread = EmailThread(thread_key=thread_key, requester=requester, subject=subject, participants=[])
        session.add(thread)
    merged = list(dict.fromkeys([*thread.participants, *participants]))
    if merged != thread.participants:
        thread.participants = merged
    return thread


def remember_message_id(
    session: Session,
    *,
    message_id: str,
    thread_key: str,
    direction: str,
    recipient: str | None = None,
    ticket_number: str | None = None,
) -> None:
    key = storage_key(message_id)
    if session.get(EmailMessageRef, key) is None:
        session.add(
            EmailMessageRef(
                message_id=key,
                thread_key=thread_key,
                direction=direction,
                recipient=recipient,
                ticket_number=ticket_number,
            )
        )


def outbound_ref(session: Session, message_ids: list[str]) -> EmailMessageRef | None:
    """The first of ``message_ids`` that is a mail we sent."""
    for message_id in message_ids:
        ref = session.get(EmailMessageRef, storage_key(message_id))
        if ref is not None and ref.direction == "out":
            return ref
    return None
