"""Adaptive Cards for replies and ticket cards, with a plain-text fallback.

Buttons are ``Action.Submit``: Teams delivers a press as a ``message`` activity
whose ``value`` is the button's data (recognised by ``ACTION_KEY`` / ``DESK_KEY``).
Clients that cannot render cards show ``fallbackText``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from botbuilder.schema import Activity, ActivityTypes
from botbuilder.schema import Attachment as CardAttachment

from bot import messages as core_messages
from bot.desk import TicketView, TimelineEntry
from bot.model import Button, OutboundReply, ReplyKind
from channels.teams import messages
from channels.teams.normalise import ACTION_KEY, DESK_KEY

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"
MAX_ACTIONS_PER_SET = 5  # Teams renders at most 6 actions in a row; keep rows readable
SUMMARY_CHARS = 120
TICKET_CLOSED = ("resolved", "closed")


def reply_activity(reply: OutboundReply) -> Activity:
    """The message for one reply: a card when it has buttons, sources or a ticket, else plain text."""
    escalation = reply.kind == ReplyKind.ESCALATION and reply.ticket_number is not None
    if not (reply.buttons or reply.citations or escalation):
        header = agent_header(reply)
        text = f"{header}\n\n{reply.text}" if header else reply.text
        return Activity(type=ActivityTypes.message, text=text, text_format="plain")
    card = reply_card(reply)
    return _card_message(card, summary=_first_line(reply.text))


def reply_card(reply: OutboundReply) -> dict[str, Any]:
    body: list[dict[str, Any]] = [_text_block(_without_source_lines(reply))]
    header = agent_header(reply)
    if header:
        body.insert(0, _text_block(header, weight="Bolder"))
    if reply.kind == ReplyKind.ESCALATION and reply.ticket_number:
        body.append({"type": "FactSet", "facts": [{"title": messages.TICKET, "value": reply.ticket_number}]})
    if reply.citations:
        links = [f"- [{_escape_link_text(c.title)}]({c.url})" if c.url else f"- {c.title}" for c in reply.citations]
        body.append(_text_block(messages.SOURCES, weight="Bolder", spacing="Medium"))
        body.append(_text_block("\n".join(links)))
    body.extend(_action_sets([_submit(b.label, {ACTION_KEY: b.action, "label": b.label}) for b in reply.buttons]))
    return _card(body, fallback=_fallback_text(reply.text, reply.buttons))


def agent_header(reply: OutboundReply) -> str | None:
    """ "Dana Kim (IT support):" above an agent's reply; None for the bot's own replies."""
    if reply.kind != ReplyKind.AGENT:
        return None
    # Without a name, the last part of the agent key ("slack:T1:U1" -> "U1", "email:a@b" -> "a@b").
    name = reply.author_name or reply.author.rpartition(":")[2] or reply.author
    return messages.AGENT_HEADER.format(name=name)


def ticket_card(view: TicketView) -> dict[str, Any]:
    """The card agents see for one ticket; re-rendered and updated in place when the ticket changes."""
    facts = [
        (messages.FACT_REQUESTER, f"{view.requester_name} ({view.requester_channel})"),
        (messages.FACT_STATUS, view.status),
        (messages.FACT_PRIORITY, view.priority),
        (messages.FACT_CATEGORY, view.category or ""),
        (messages.FACT_GROUP, view.group or ""),
        (messages.FACT_ASSIGNEE, view.assignee or messages.UNASSIGNED),
        (messages.FACT_SLA, messages.SLA_STATES.get(view.sla_state, view.sla_state)),
        (messages.FACT_FIRST_RESPONSE_DUE, _when(view.first_response_due)),
        (messages.FACT_RESOLUTION_DUE, _when(view.resolution_due)),
        (messages.FACT_CSAT, f"{view.csat_score}/5" if view.csat_score else ""),
    ]
    body: list[dict[str, Any]] = [
        _text_block(f"{view.number}: {view.subject}", weight="Bolder", size="Medium"),
        {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts if v]},
    ]
    if view.summary:
        body.append(_text_block(messages.CONVERSATION_SO_FAR, weight="Bolder", spacing="Medium"))
        body.append(_text_block(view.summary, is_subtle=True))
    actions = []
    if view.status not in TICKET_CLOSED:
        if view.owner != "agent" or not view.assignee:
            actions.append(_submit(messages.TAKE, {DESK_KEY: "take", "ticket": view.number}))
        if view.owner == "agent":
            actions.append(_submit(messages.HAND_BACK, {DESK_KEY: "hand_back", "ticket": view.number}))
        actions.append(_submit(messages.RESOLVE, {DESK_KEY: "resolve", "ticket": view.number}))
    body.extend(_action_sets(actions))
    fallback = f"{view.number}: {view.subject} ({view.status}, {view.priority})\n{view.summary}"
    return _card(body, fallback=fallback)


def ticket_activity(view: TicketView) -> Activity:
    return _card_message(ticket_card(view), summary=f"{view.number}: {view.subject}"[:SUMMARY_CHARS])


def timeline_text(entry: TimelineEntry) -> str:
    template = messages.TIMELINE.get(entry.kind, messages.TIMELINE_OTHER)
    return template.format(author=entry.author, text=entry.text)


def text_activity(text: str) -> Activity:
    return Activity(type=ActivityTypes.message, text=text, text_format="plain")


def _card_message(card: dict[str, Any], *, summary: str) -> Activity:
    return Activity(
        type=ActivityTypes.message,
        summary=summary,
        attachments=[CardAttachment(content_type=ADAPTIVE_CARD, content=card)],
    )


def _card(body: list[dict[str, Any]], *, fallback: str) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
        "fallbackText": fallback,
        "msteams": {"width": "Full"},
    }


def _text_block(text: str, **style: Any) -> dict[str, Any]:
    block = {"type": "TextBlock", "text": text, "wrap": True}
    block.update({_camel(k): v for k, v in style.items()})
    return block


def _submit(title: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Action.Submit", "title": title, "data": data}


def _action_sets(actions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"type": "ActionSet", "actions": list(actions[i : i + MAX_ACTIONS_PER_SET])}
        for i in range(0, len(actions), MAX_ACTIONS_PER_SET)
    ]


def _without_source_lines(reply: OutboundReply) -> str:
    """The reply text minus its "Source: ..." lines: the card lists the sources as links instead."""
    sources = {core_messages.SOURCE_LINE.format(title=c.title, link=c.link) for c in reply.citations}
    kept = [line for line in reply.text.split("\n") if line.strip() not in sources]
    text = "\n".join(kept)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def _fallback_text(text: str, buttons: Sequence[Button]) -> str:
    if not buttons:
        return text
    return f"{text}\n\n" + messages.OPTIONS.format(options=" | ".join(b.label for b in buttons))


def _first_line(text: str) -> str:
    line = next((line for line in text.split("\n") if line.strip()), "")
    return line[:SUMMARY_CHARS]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _escape_link_text(text: str) -> str:
    return text.replace("[", "(").replace("]", ")")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
