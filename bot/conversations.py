"""Conversations as channels see them: reply polling, and edits and deletions on the platform."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ticketing.clock import utcnow
from ticketing.conversations import conversation_messages, find_inbound_message
from ticketing.db import Database
from ticketing.models import Conversation, Direction


@dataclass(frozen=True)
class StoredReply:
    id: int
    text: str
    kind: str
    author: str
    parts: dict[str, Any]
    created_at: datetime


class ConversationReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def replies(
        self, *, channel: str, conversation_id: str, thread_id: str | None = None, after_id: int = 0
    ) -> list[StoredReply] | None:
        """Replies to a conversation after ``after_id``; None if there is no such conversation."""
        return await asyncio.to_thread(self._replies, channel, conversation_id, thread_id or "", after_id)

    def _replies(self, channel: str, conversation_id: str, thread_id: str, after_id: int) -> list[StoredReply] | None:
        with self._db.transaction() as session:
            conversation = session.scalar(
                select(Conversation).where(
                    Conversation.channel == channel,
                    Conversation.channel_conversation_id == conversation_id,
                    Conversation.thread_id == thread_id,
                )
            )
            if conversation is None:
                return None
            return [
                StoredReply(
                    id=m.id,
                    text=m.text,
                    kind=m.parts.get("kind", "notice"),
                    author=m.author_id or m.author_kind,
                    parts=m.parts,
                    created_at=m.received_at,
                )
                for m in conversation_messages(session, conversation_id=conversation.id, after_id=after_id)
                if m.direction == Direction.OUTBOUND
            ]

    async def record_edit(self, *, channel: str, channel_message_id: str, text: str) -> bool:
        """The requester edited a message on the platform: keep the new text and the first one.

        Returns False when the message is unknown (e.g. sent before tierzero was installed).
        An edit does not cause a new answer; the requester asks again for that.
        """
        return await asyncio.to_thread(self._update, channel, channel_message_id, text, False)

    async def record_deletion(self, *, channel: str, channel_message_id: str) -> bool:
        """The requester deleted a message on the platform: mark it, keep it for the audit trail."""
        return await asyncio.to_thread(self._update, channel, channel_message_id, None, True)

    async def record_attachment_file(
        self, *, channel: str, channel_message_id: str, index: int, path: Path | None = None, note: str | None = None
    ) -> bool:
        """A file listed on a message was fetched after the message was accepted (e.g. a Slack file share).

        ``path``: where it is stored now (its ``url`` becomes the file: URI; the platform's
        address is kept as ``source_url``); ``note``: why it is not kept. False when the
        message or the attachment is unknown.
        """
        return await asyncio.to_thread(self._record_file, channel, channel_message_id, index, path, note)

    def _record_file(
        self, channel: str, channel_message_id: str, index: int, path: Path | None, note: str | None
    ) -> bool:
        with self._db.transaction() as session:
            message = find_inbound_message(session, channel=channel, channel_message_id=channel_message_id)
            if message is None or not 0 <= index < len(message.attachments or []):
                return False
            attachments = [dict(a) for a in message.attachments]
            if path is not None:
                attachments[index].setdefault("source_url", attachments[index].get("url"))
                attachments[index]["url"] = path.as_uri()
            if note is not None:
                attachments[index]["note"] = note
            message.attachments = attachments  # a new list: the JSON column sees the change
            return True

    def _update(self, channel: str, channel_message_id: str, text: str | None, deleted: bool) -> bool:
        with self._db.transaction() as session:
            message = find_inbound_message(session, channel=channel, channel_message_id=channel_message_id)
            if message is None:
                return False
            parts = dict(message.parts or {})
            if text is not None and text != message.text:
                parts.setdefault("original_text", message.text)
                parts["edited_at"] = utcnow().isoformat()
                message.text = text
            if deleted:
                parts["deleted_at"] = utcnow().isoformat()
            message.parts = parts
            return True
