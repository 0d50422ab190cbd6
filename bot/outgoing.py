"""Writing a reply: an outbound message row plus its outbox row, in the caller's transaction."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from bot.logs import current_request_id
from bot.model import ConversationRef, OutboundReply
from ticketing import outbox
from ticketing.conversations import record_outbound_message
from ticketing.models import Conversation, OutboxItem


def conversation_ref(conversation: Conversation) -> ConversationRef:
    return ConversationRef(
        channel=conversation.channel,
        conversation_id=conversation.channel_conversation_id,
        thread_id=conversation.thread_id or None,
    )


def queue_reply(
    session: Session,
    *,
    conversation: Conversation,
    reply: OutboundReply,
    author_kind: str = "bot",
    author_id: str = "tierzero",
) -> OutboxItem:
    parts = {
        "kind": str(reply.kind),
        "citations": [c.__dict__ for c in reply.citations],
        "buttons": [b.__dict__ for b in reply.buttons],
        "ticket_number": reply.ticket_number,
    }
    if reply.author_name:
        parts["author_name"] = reply.author_name  # what every surface shows as the reply's author
    message = record_outbound_message(
        session,
        conversation=conversation,
        author_kind=author_kind,
        author_id=author_id,
        text=reply.text,
        parts=parts,
    )
    # The key is derived from the stored message, so every retry of this reply carries it.
    reply = replace(
        reply,
        idempotency_key=f"tierzero-{message.id}",
        author=author_id,
        channel_data=dict(conversation.channel_data or {}),
    )
    payload = reply.to_payload()
    if request_id := current_request_id():
        payload["request_id"] = request_id  # the outbox logs its delivery under the same id
    return outbox.enqueue(session, conversation=conversation, message=message, payload=payload)
