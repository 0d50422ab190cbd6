"""Block Kit for what tierzero posts: replies to requesters and ticket cards for agents.

Limits respected here (https://docs.slack.dev/reference/block-kit/blocks): a section's
text is at most 3000 characters, a button's label 75 and its value 2000, a
message at most 50 blocks.
"""

from __future__ import annotations

from typing import Any

from bot import messages as bot_messages
from bot.model import Button, OutboundReply, ReplyKind

SECTION_CHARS = 3000
BUTTON_LABEL_CHARS = 75
BUTTON_VALUE_CHARS = 2000
MAX_BLOCKS = 50
FALLBACK_CHARS = 3000

# action_id prefixes: what a press is for. Requester buttons carry the Action string as value.
REPLY_ACTION = "tz_reply"
DESK_ACTION = "tz_desk"

Block = dict[str, Any]


def escape(text: str) -> str:
    """Plain text safe inside mrkdwn: Slack reads only &, < and > as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label).replace('|', '¦')}>"


def fallback_text(text: str) -> str:
    """The notification / screen-reader text of a message."""
    return text if len(text) <= FALLBACK_CHARS else text[: FALLBACK_CHARS - 1] + "…"


def sections(text: str) -> list[Block]:
    """``text`` as mrkdwn sections, split at paragraph or line ends to fit the 3000-character limit."""
    text = text.strip() or " "
    blocks = []
    while text:
        limit = SECTION_CHARS
        while True:
            cut = len(text) if len(text) <= limit else _cut_point(text, limit)
            part = escape(text[:cut].rstrip())
            if len(part) <= SECTION_CHARS:
                break
            limit = limit * 3 // 4  # escaping lengthened it (many &, <, >)
        text = text[cut:].lstrip()
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": part or " "}})
    return blocks


def reply_blocks(reply: OutboundReply) -> list[Block]:
    text = reply.text
    links = []
    for citation in reply.citations:
        # The sources become links under the answer rather than lines in it.
        line = bot_messages.SOURCE_LINE.format(title=citation.title, link=citation.link)
        text = text.replace(line, "").replace("\n\n\n\n", "\n\n")
        url = citation.url or ""
        links.append(link(url, citation.title) if url.startswith(("http://", "https://")) else escape(citation.title))
    blocks = sections(text)
    if reply.kind == ReplyKind.AGENT and reply.author and reply.author != "bot":
        # The name the agent has where they work (a Teams or web agent has no Slack user to mention).
        name = escape(reply.author_name) if reply.author_name else person(reply.author)
        who = {"type": "mrkdwn", "text": f"{name} · IT support"}
        blocks.insert(0, {"type": "context", "elements": [who]})
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "Source: " + " · ".join(links)}]})
    if reply.buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": "tz_reply_buttons",
                "elements": [
                    _button(b.label, f"{REPLY_ACTION}_{i}", b.action, style=_style(b))
                    for i, b in enumerate(reply.buttons)
                ],
            }
        )
    return _fit(blocks)


def person(key: str | None) -> str:
    """An agent or assignee key ("slack:T1:U1", "teams:<id>", "email:a@b") as mrkdwn: Slack users as @mentions."""
    if not key:
        return "nobody"
    channel, _, who = key.partition(":")
    if channel == "slack" and who:
        return f"<@{who.rpartition(':')[2]}>"
    return escape(who or key)


def desk_button(label: str, verb: str, number: str, *, style: str | None = None) -> Block:
    return _button(label, f"{DESK_ACTION}_{verb}", number, style=style)


def _button(label: str, action_id: str, value: str, *, style: str | None = None) -> Block:
    if len(label) > BUTTON_LABEL_CHARS:
        label = label[: BUTTON_LABEL_CHARS - 1] + "…"
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label or "…", "emoji": True},
        "action_id": action_id,
        "value": value[:BUTTON_VALUE_CHARS],
    }
    if style:
        button["style"] = style
    return button


def _style(button: Button) -> str | None:
    return "primary" if button.action == "solved" else None


def _fit(blocks: list[Block]) -> list[Block]:
    """At most 50 blocks: keep the last ones (sources, buttons) and shorten the text."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return blocks[: MAX_BLOCKS - 3] + [sections("…")[0]] + blocks[-2:]


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit]
    for separator in ("\n\n", "\n", ". ", " "):
        at = window.rfind(separator)
        if at > limit // 2:
            return at + len(separator)
    return limit
