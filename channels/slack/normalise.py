"""Slack payloads -> what they mean to tierzero. Pure functions, no I/O.

``classify(body, bot)`` turns any request body Slack sends (Events API callback,
block_actions, slash command form) into one of:

- ``UserMessage``: a person wrote to us (DM, @mention, or a thread reply that may be ours);
- ``Edit`` / ``Deletion``: a stored message changed or went away;
- ``ButtonPress``: someone pressed one of our buttons;
- ``SlashCommand``: ``/tierzero ...``;
- ``Ignored``: deliberately not for us, with the reason (for the log).

Ids:
- A message's ``channel_message_id`` is ``team:channel:ts``. Slack delivers one
  message up to twice (``message`` and ``app_mention`` events) and retries each
  event up to 3 times; all of them carry the same ts, so all collapse into one.
  This is a stricter key than (team id, event id), which the same retries share too.
- A conversation is (channel id, thread ts): each thread is its own conversation.
- A person is ``team:user`` (verified ids, never display names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.model import Attachment, ConversationRef, InboundMessage, Participant

CHANNEL = "slack"

# Message subtypes that are a person writing; every other subtype is a system notice.
_USER_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_CHANNEL_LINK = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!([a-z]+)(?:\^[^|>]*)?(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")


@dataclass(frozen=True)
class BotIdentity:
    """Who "we" are in a workspace (from auth.test): used to drop our own messages."""

    user_id: str | None = None  # U... of the bot user
    bot_id: str | None = None  # B...


@dataclass(frozen=True)
class UserMessage:
    message: InboundMessage
    team_id: str
    channel_id: str
    ts: str
    thread_ts: str | None  # the thread's root ts; None for a top-level message
    user_id: str
    # A DM or an @mention is always for us; a plain thread reply only if we are in that thread.
    addressed: bool


@dataclass(frozen=True)
class Edit:
    channel_message_id: str
    text: str


@dataclass(frozen=True)
class Deletion:
    channel_message_id: str


@dataclass(frozen=True)
class ButtonPress:
    team_id: str
    user_id: str
    user_name: str
    channel_id: str
    message_ts: str  # the message that carries the button
    thread_ts: str | None
    action_id: str
    value: str
    label: str
    action_ts: str
    block_id: str


@dataclass(frozen=True)
class SlashCommand:
    team_id: str
    channel_id: str
    user_id: str
    user_name: str
    command: str
    text: str
    trigger_id: str


@dataclass(frozen=True)
class Ignored:
    reason: str


Classified = UserMessage | Edit | Deletion | ButtonPress | SlashCommand | Ignored


def message_key(team_id: str, channel_id: str, ts: str) -> str:
    return f"{team_id}:{channel_id}:{ts}"


def person_id(team_id: str, user_id: str) -> str:
    return f"{team_id}:{user_id}"


def classify(body: Mapping[str, Any], bot: BotIdentity, *, allow_bots: bool = False) -> Classified:
    """What ``body`` (a parsed Slack request body) means to us. Never raises on odd input."""
    if not isinstance(body, Mapping):
        return Ignored("not a JSON object")
    kind = body.get("type")
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, Mapping):
            return Ignored("event_callback without an event")
        team_id = _str(body.get("team_id")) or _str(event.get("team"))
        if not team_id:
            return Ignored("event without a team id")
        return _event(body, event, team_id, bot, allow_bots)
    if isinstance(body.get("command"), str):
        return _slash_command(body)
    if kind == "block_actions":
        return _block_actions(body)
    return Ignored(f"{kind or 'untyped'} payloads are not used")


def plain_text(text: str, bot: BotIdentity | None = None) -> str:
    """Slack's message markup as a person would read it; our own @mention removed."""
    if bot is not None and bot.user_id:
        text = re.sub(rf"<@{re.escape(bot.user_id)}(?:\|[^>]*)?>", "", text)
    text = _MENTION.sub(lambda m: f"@{m.group(1)}", text)
    text = _CHANNEL_LINK.sub(lambda m: f"#{m.group(2) or m.group(1)}", text)
    text = _SPECIAL.sub(lambda m: f"@{m.group(2) or m.group(1)}", text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    # Slack escapes exactly these three (https://docs.slack.dev/messaging/formatting-message-text).
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


# -- events --------------------------------------------------------------------


def _event(
    body: Mapping[str, Any], event: Mapping[str, Any], team_id: str, bot: BotIdentity, allow_bots: bool
) -> Classified:
    event_type = event.get("type")
    if event_type not in ("message", "app_mention"):
        return Ignored(f"{event_type} events are not used")
    channel_id = _str(event.get("channel"))
    if not channel_id:
        return Ignored("message without a channel")
    subtype = event.get("subtype")
    if event_type == "message" and subtype == "message_changed":
        return _edit(event, team_id, channel_id, bot)
    if event_type == "message" and subtype == "message_deleted":
        ts = _str(event.get("deleted_ts")) or _str(_map(event.get("previous_message")).get("ts"))
        return Deletion(message_key(team_id, channel_id, ts)) if ts else Ignored("deletion without a ts")
    from_bot = subtype == "bot_message" or bool(event.get("bot_id"))
    if subtype not in _USER_SUBTYPES and not (subtype == "bot_message" and allow_bots):
        return Ignored(f"message subtype {subtype} is not a person writing")
    if event.get("hidden"):
        return Ignored("hidden message")
    if _is_ours(event, bot):
        return Ignored("our own message")
    if from_bot and not allow_bots:
        return Ignored("a message from another bot")
    # A classic bot integration has no user id, only its bot id.
    user_id = _str(event.get("user")) or (_str(event.get("bot_id")) if from_bot else "")
    ts = _str(event.get("ts"))
    if not user_id or not ts:
        return Ignored("message without a user or ts")
    raw_text = _str(event.get("text"))
    thread_ts = _str(event.get("thread_ts")) or None
    if thread_ts == ts:
        thread_ts = None  # a thread's root is top-level
    is_dm = event.get("channel_type") == "im" or channel_id.startswith("D")
    mentions_us = event_type == "app_mention" or (bot.user_id is not None and f"<@{bot.user_id}" in raw_text)
    if not (is_dm or mentions_us or thread_ts):
        return Ignored("a channel message not addressed to us")
    profile = _map(event.get("user_profile"))
    display = _str(profile.get("display_name")) or _str(profile.get("real_name")) or user_id
    message = InboundMessage(
        channel_message_id=message_key(team_id, channel_id, ts),
        conversation=ConversationRef(CHANNEL, channel_id, thread_ts or ts),
        sender=Participant(CHANNEL, person_id(team_id, user_id), display),
        text=plain_text(raw_text, bot).strip(),
        attachments=_attachments(event.get("files")),
        raw=_without_secrets(body),
        channel_data={"team_id": team_id},
    )
    return UserMessage(
        message=message,
        team_id=team_id,
        channel_id=channel_id,
        ts=ts,
        thread_ts=thread_ts,
        user_id=user_id,
        addressed=is_dm or mentions_us,
    )


def _edit(event: Mapping[str, Any], team_id: str, channel_id: str, bot: BotIdentity) -> Classified:
    edited = _map(event.get("message"))
    before = _map(event.get("previous_message"))
    ts = _str(edited.get("ts")) or _str(before.get("ts"))  # the same message: same ts
    if not ts:
        return Ignored("edit without the message's ts")
    if _is_ours(edited, bot) or edited.get("bot_id"):
        return Ignored("an edit of a bot message")
    text = _str(edited.get("text"))
    if before and text == _str(before.get("text")):
        return Ignored("message_changed without a text change (link preview, reaction...)")
    return Edit(message_key(team_id, channel_id, ts), plain_text(text, bot).strip())


def _is_ours(event: Mapping[str, Any], bot: BotIdentity) -> bool:
    return bool(
        (bot.bot_id and event.get("bot_id") == bot.bot_id) or (bot.user_id and event.get("user") == bot.user_id)
    )


def _attachments(files: Any) -> tuple[Attachment, ...]:
    if not isinstance(files, list):
        return ()
    found = []
    for file in files:
        if not isinstance(file, Mapping):
            continue
        if file.get("mode") in ("tombstone", "hidden_by_limit"):
            continue  # deleted, or beyond the workspace's history limit: nothing to record
        size = file.get("size")
        found.append(
            Attachment(
                name=_str(file.get("name")) or _str(file.get("title")) or _str(file.get("id")) or "file",
                content_type=_str(file.get("mimetype")) or "application/octet-stream",
                size=size if isinstance(size, int) else None,
                url=_str(file.get("url_private_download")) or _str(file.get("url_private")) or None,
            )
        )
    return tuple(found)


# -- interactivity and commands -------------------------------------------------------


def _block_actions(body: Mapping[str, Any]) -> Classified:
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], Mapping):
        return Ignored("block_actions without actions")
    action = actions[0]
    if action.get("type") != "button":
        return Ignored(f"{action.get('type')} elements are not ours")
    user = _map(body.get("user"))
    team_id = _str(_map(body.get("team")).get("id")) or _str(user.get("team_id"))
    container = _map(body.get("container"))
    message = _map(body.get("message"))
    channel_id = _str(container.get("channel_id")) or _str(_map(body.get("channel")).get("id"))
    message_ts = _str(container.get("message_ts")) or _str(message.get("ts"))
    if not (team_id and user.get("id") and channel_id and message_ts):
        return Ignored("a button press outside a message (modal, home tab) is not ours")
    thread_ts = _str(container.get("thread_ts")) or _str(message.get("thread_ts")) or None
    return ButtonPress(
        team_id=team_id,
        user_id=_str(user.get("id")),
        user_name=_str(user.get("name")) or _str(user.get("username")) or _str(user.get("id")),
        channel_id=channel_id,
        message_ts=message_ts,
        thread_ts=thread_ts,
        action_id=_str(action.get("action_id")),
        value=_str(action.get("value")),
        label=_str(_map(action.get("text")).get("text")),
        action_ts=_str(action.get("action_ts")),
        block_id=_str(action.get("block_id")),
    )


def _slash_command(body: Mapping[str, Any]) -> Classified:
    fields = {k: _str(body.get(k)) for k in ("team_id", "channel_id", "user_id", "trigger_id")}
    if not all(fields.values()):
        return Ignored("slash command without team, channel, user or trigger id")
    return SlashCommand(
        team_id=fields["team_id"],
        channel_id=fields["channel_id"],
        user_id=fields["user_id"],
        user_name=_str(body.get("user_name")) or fields["user_id"],
        command=_str(body.get("command")),
        text=_str(body.get("text")).strip(),
        trigger_id=fields["trigger_id"],
    )


# -- helpers -----------------------------------------------------------------------


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _without_secrets(body: Mapping[str, Any]) -> dict[str, Any]:
    """The payload kept for audit, minus the (legacy) verification token."""
    return {k: v for k, v in body.items() if k != "token"}
