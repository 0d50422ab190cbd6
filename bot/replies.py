"""Turning agent decisions and ticket changes into ``OutboundReply`` values."""

from __future__ import annotations

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

_ANSWER_BUTTONS = (
    Button(messages.BUTTON_SOLVED, Action.SOLVED),
    Button(messages.BUTTON_HUMAN, Action.HUMAN),
)


def reply_for_decision(
    decision: Decision, *, conversation: ConversationRef, ticket_number: str | None = None
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
            why = messages.ESCALATION_REASONS.get(reason, "")
            text = f"{why} {messages.ESCALATED.format(number=ticket_number)}".strip()
            return OutboundReply(conversation, text, ReplyKind.ESCALATION, ticket_number=ticket_number)
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


def notice(conversation: ConversationRef, text: str, *, ticket_number: str | None = None) -> OutboundReply:
    return OutboundReply(conversation, text, ReplyKind.NOTICE, ticket_number=ticket_number)
