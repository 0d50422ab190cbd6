"""The normalised conversation model every channel converts to and from.

Values are frozen dataclasses. ``raw`` keeps the channel's payload for audit;
core code never reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ticketing.clock import utcnow


@dataclass(frozen=True)
class Participant:
    channel: str
    # Only a platform-verified id (Slack team+user, AAD object id, verified email...).
    platform_id: str
    display_name: str = ""
    email: str | None = None


@dataclass(frozen=True)
class ConversationRef:
    channel: str
    conversation_id: str
    thread_id: str | None = None


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str = "application/octet-stream"
    size: int | None = None
    url: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    # Unique per channel; the deduplication key for redeliveries.
    channel_message_id: str
    conversation: ConversationRef
    sender: Participant
    text: str
    attachments: tuple[Attachment, ...] = ()
    # A pressed button's action (see ``Action``); the text is then its label.
    action: str | None = None
    received_at: datetime = field(default_factory=utcnow)
    raw: Mapping[str, Any] | None = None
    # Merged into the conversation's stored channel data (see OutboundReply.channel_data).
    channel_data: Mapping[str, Any] | None = None
    # False: store and record the message, but never answer it automatically
    # (auto-replies, bounces, mailing lists: loop prevention).
    auto_reply: bool = True


class Action(StrEnum):
    """What a reply's buttons do when pressed."""

    SOLVED = "solved"
    NOT_SOLVED = "not_solved"
    HUMAN = "human"
    CLOSE = "close"
    CHOOSE = "choose"  # followed by ":<article id>"
    RATE = "rate"  # followed by ":<1-5>", the satisfaction rating after a resolution


@dataclass(frozen=True)
class Button:
    label: str
    action: str


@dataclass(frozen=True)
class Citation:
    title: str
    article_id: str
    url: str | None = None
    source_path: str | None = None

    @property
    def link(self) -> str:
        return self.url or self.source_path or self.article_id


class ReplyKind(StrEnum):
    ANSWER = "answer"
    CLARIFY = "clarify"
    ESCALATION = "escalation"
    AGENT = "agent"  # written by a human agent
    NOTICE = "notice"  # greetings, confirmations, status
    CSAT = "csat"  # "how did we do?" with rating buttons


@dataclass(frozen=True)
class OutboundReply:
    conversation: ConversationRef
    text: str
    kind: ReplyKind = ReplyKind.NOTICE
    citations: tuple[Citation, ...] = ()
    buttons: tuple[Button, ...] = ()
    ticket_number: str | None = None
    author: str = "bot"
    # The name requesters see on an agent's reply ("Dana Kim"); empty for the bot.
    author_name: str = ""
    # Stable across delivery attempts, so a receiver can drop a resend.
    idempotency_key: str = ""
    # The conversation's stored channel data (what the channel kept to reply later).
    channel_data: Mapping[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["kind"] = str(self.kind)
        payload["channel_data"] = dict(self.channel_data) if self.channel_data is not None else None
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OutboundReply:
        return cls(
            conversation=ConversationRef(**payload["conversation"]),
            text=payload["text"],
            kind=ReplyKind(payload.get("kind", ReplyKind.NOTICE)),
            citations=tuple(Citation(**c) for c in payload.get("citations", ())),
            buttons=tuple(Button(**b) for b in payload.get("buttons", ())),
            ticket_number=payload.get("ticket_number"),
            author=payload.get("author", "bot"),
            author_name=payload.get("author_name", ""),
            idempotency_key=payload.get("idempotency_key", ""),
            channel_data=payload.get("channel_data"),
        )
