"""Turning agent decisions and ticket changes into ``OutboundReply`` values."""

from __future__ import annotations

from datetime import UTC, datetime

from bot import messages
from bot.agent import (
    Answer,
    AskForQuestion,
    Clarify,
    Close,
    Decision,
    Escalate,
    Greet,
    KeepOpen,
    OfferClose,
)
from bot.model import Action, Button, ConversationRef, OutboundReply, ReplyKind
from ticketing.models import Ticket

_ANSWER_BUTTONS = (
    Button(messages.BUTTON_SOLVED, Action.SOLVED),
    Button(messages.BUTTON_HUMAN, Action.HUMAN),
)


def reply_for_decision(
    decision: Decision, *, conversation: ConversationRef, ticket: Ticket | None = None
) -> OutboundReply:
    match decision:
        case Answer(text=passage, citations=citations, retry=retry):
            intro = messages.ANSWER_RETRY_INTRO if retry else messages.ANSWER_INTRO
            sources = "\n".join(messages.SOURCE_LINE.format(title=c.title, link=c.link) for c in citations)
            text = f"{intro}\n\n{passage}\n\n{sources}\n\n{messages.ANSWER_FOOTER}"
            return OutboundReply(conversation, text, ReplyKind.ANSWER, citations=citations, buttons=_ANSWER_BUTTONS)
        case Clarify(options=options):
            lines = [messages.CLARIFY_QUESTION] + [f"{i}. {o.title}" for i, o in enumerate(options, 1)]
            buttons = tuple(Button(o.title, f"{Action.CHOOSE}:{o.article_id}") for o in options)
            buttons += (Button(messages.CLARIFY_NONE_OF_THESE, Action.HUMAN),)
            return OutboundReply(conversation, "\n".join(lines), ReplyKind.CLARIFY, buttons=buttons)
        case Escalate(reason=reason):
            assert ticket is not None, "an escalation always opens a ticket"
            why = messages.ESCALATION_REASONS.get(reason, "")
            text = f"{why} {messages.ESCALATED.format(number=ticket.number)}".strip()
            if ticket.first_response_due is not None:
                text += " " + messages.FIRST_RESPONSE_DUE.format(due=format_due(ticket.first_response_due))
            return OutboundReply(conversation, text, ReplyKind.ESCALATION, ticket_number=ticket.number)
        case Greet():
            return OutboundReply(conversation, messages.GREETING)
        case AskForQuestion():
            return OutboundReply(conversation, messages.ASK_FOR_QUESTION)
        case OfferClose():
            buttons = (
                Button(messages.BUTTON_CLOSE, Action.CLOSE),
                Button(messages.BUTTON_KEEP_OPEN, Action.NOT_SOLVED),
            )
            return OutboundReply(conversation, messages.OFFER_CLOSE, buttons=buttons)
        case KeepOpen():
            return OutboundReply(conversation, messages.KEEP_OPEN)
        case Close():
            return OutboundReply(conversation, messages.CLOSED)
    raise TypeError(f"unknown decision {decision!r}")


def csat_request(conversation: ConversationRef, *, ticket_number: str) -> OutboundReply:
    """Ask for a 1-5 rating after a resolution; the buttons carry ``rate:<n>``."""
    buttons = tuple(Button(str(n), f"{Action.RATE}:{n}") for n in range(1, 6))
    text = messages.CSAT_REQUEST.format(number=ticket_number)
    return OutboundReply(conversation, text, ReplyKind.CSAT, buttons=buttons, ticket_number=ticket_number)


def format_due(due: datetime) -> str:
    """A due time requesters read at a glance, in UTC (e.g. "Fri 4 Dec 14:30 UTC")."""
    due = due.astimezone(UTC)
    return f"{due:%a} {due.day} {due:%b %H:%M} UTC"


def notice(conversation: ConversationRef, text: str, *, ticket_number: str | None = None) -> OutboundReply:
    return OutboundReply(conversation, text, ReplyKind.NOTICE, ticket_number=ticket_number)
