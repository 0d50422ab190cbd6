"""Teams activities (JSON as received) to normalised events: pure functions, never an exception.

Every activity becomes exactly one of:

- ``TeamsMessage``: a person wrote to the bot or pressed one of our card buttons;
- ``MessageEdited`` / ``MessageDeleted``: a person changed or removed a message;
- ``BotAdded``: the bot joined a conversation (it then says hello once);
- ``Ignored``: deliberately not handled, with the reason (reactions, other bots,
  team and channel housekeeping, other apps' cards, unsupported invokes...).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.schema import Activity
from msrest.exceptions import DeserializationError

from bot.model import Attachment, ConversationRef, InboundMessage, Participant

CHANNEL = "teams"
MAX_ID_CHARS = 255  # the database's limit for conversation and message ids
# What our cards put in Action.Submit data, so a press is recognised as ours.
ACTION_KEY = "tierzero_action"
DESK_KEY = "tierzero_desk"
ADAPTIVE_CARD_INVOKE = "adaptiveCard/action"
# The stored record of the bot joining a conversation (a Teams activity id never contains "|").
BOT_ADDED_KEY = "tierzero-added"
BOT_ADDED_TEXT = "(added tierzero to the conversation)"
FILE_DOWNLOAD_INFO = "application/vnd.microsoft.teams.file.download.info"

_ADDRESSING = ("type", "id", "channelId", "serviceUrl", "locale", "from", "recipient", "conversation")
_AT_TAG = re.compile(r"<at>(.*?)</at>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"[ \t\u00a0\u200b]+")


@dataclass(frozen=True)
class TeamsMessage:
    activity_id: str
    conversation_id: str
    conversation_type: str  # personal | groupChat | channel
    tenant_id: str | None
    team_id: str | None
    channel_id: str | None  # the Teams channel, for channel conversations
    sender_id: str  # "29:..." (per-bot user id)
    aad_object_id: str | None  # the person's Microsoft Entra (AAD) object id
    sender_name: str
    text: str  # mention markup removed
    mentions_bot: bool
    service_url: str
    # botbuilder's ConversationReference as JSON: where the proactive answer goes.
    reference: Mapping[str, Any]
    # The pressed button's data (Action.Submit "value", or Action.Execute "data") when ours.
    value: Mapping[str, Any] | None = None
    is_invoke: bool = False
    attachments: tuple[Attachment, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def platform_id(self) -> str:
        """The verified id tickets are kept under: the AAD object id when Teams gives one."""
        return self.aad_object_id or self.sender_id

    @property
    def message_key(self) -> str:
        return message_key(self.conversation_id, self.activity_id)


@dataclass(frozen=True)
class MessageEdited:
    conversation_id: str
    activity_id: str
    text: str

    @property
    def message_key(self) -> str:
        return message_key(self.conversation_id, self.activity_id)


@dataclass(frozen=True)
class MessageDeleted:
    conversation_id: str
    activity_id: str

    @property
    def message_key(self) -> str:
        return message_key(self.conversation_id, self.activity_id)


@dataclass(frozen=True)
class BotAdded:
    conversation_id: str
    conversation_type: str
    tenant_id: str | None
    reference: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_inbound(self) -> InboundMessage:
        """The install as a silent message (never answered): committing it is what remembers the welcome.

        Its key is the conversation alone, so the welcome goes out once per conversation,
        whatever Teams redelivers or resends, across restarts and replicas.
        """
        sender = _mapping(self.raw.get("from"))
        platform_id = _text(sender.get("aadObjectId")) or _text(sender.get("id")) or "unknown"
        return InboundMessage(
            channel_message_id=storable_id(f"{self.conversation_id}|{BOT_ADDED_KEY}"),
            conversation=ConversationRef(CHANNEL, storable_id(self.conversation_id)),
            sender=Participant(CHANNEL, platform_id, _text(sender.get("name"))),
            text=BOT_ADDED_TEXT,
            raw=dict(self.raw),
            channel_data={"reference": dict(self.reference), "tenant_id": self.tenant_id},
            auto_reply=False,
        )


@dataclass(frozen=True)
class Ignored:
    reason: str


TeamsEvent = TeamsMessage | MessageEdited | MessageDeleted | BotAdded | Ignored


def normalise(payload: Any) -> TeamsEvent:
    """Classify one activity; anything unexpected is ``Ignored`` with a reason, never raised."""
    if not isinstance(payload, Mapping):
        return Ignored("not an activity (the JSON is not an object)")
    kind = _text(payload.get("type"))
    if not kind:
        return Ignored("not an activity (no type)")
    conversation = _mapping(payload.get("conversation"))
    conversation_id = _text(conversation.get("id"))
    if not conversation_id:
        return Ignored(f"{kind} activity without a conversation id")
    sender = _mapping(payload.get("from"))
    recipient = _mapping(payload.get("recipient"))
    sender_id = _text(sender.get("id"))
    activity_id = _text(payload.get("id"))
    if kind == "message":
        return _message(payload, conversation_id, activity_id)
    if kind == "invoke":
        name = _text(payload.get("name"))
        if name != ADAPTIVE_CARD_INVOKE:
            return Ignored(f"invoke {name or '(unnamed)'} is not used by tierzero")
        return _message(payload, conversation_id, activity_id)
    if kind == "messageUpdate":
        event = _text(_mapping(payload.get("channelData")).get("eventType"))
        if event != "editMessage" or not activity_id:
            return Ignored(f"message update {event or '(no event type)'} needs no action")
        if _is_bot(sender_id, recipient):
            return Ignored("edit of a bot's message")
        return MessageEdited(conversation_id, activity_id, strip_mentions(payload))
    if kind == "messageDelete":
        event = _text(_mapping(payload.get("channelData")).get("eventType"))
        if event != "softDeleteMessage" or not activity_id:
            return Ignored(f"message delete {event or '(no event type)'} needs no action")
        return MessageDeleted(conversation_id, activity_id)
    if kind == "conversationUpdate":
        return _conversation_update(payload, conversation_id)
    if kind == "messageReaction":
        return Ignored("reactions are not used by tierzero")
    if kind == "installationUpdate":
        return Ignored("installation update (the conversationUpdate sent with it carries the welcome)")
    return Ignored(f"{kind} activities are not used by tierzero")


def _message(payload: Mapping[str, Any], conversation_id: str, activity_id: str) -> TeamsEvent:
    sender = _mapping(payload.get("from"))
    recipient = _mapping(payload.get("recipient"))
    sender_id = _text(sender.get("id"))
    if not sender_id:
        return Ignored("message without a sender")
    if _is_bot(sender_id, recipient):
        return Ignored("sent by a bot (ours or another)")
    if not activity_id:
        return Ignored("message without an id (cannot be deduplicated)")
    is_invoke = _text(payload.get("type")) == "invoke"
    value = _button_data(payload.get("value"), is_invoke=is_invoke)
    if payload.get("value") is not None and value is None:
        return Ignored("a button press on a card tierzero did not send")
    text = strip_mentions(payload)
    attachments = _attachments(payload.get("attachments"))
    if not text and value is None and not attachments:
        return Ignored("message without text, files or a button press")
    reference = conversation_reference(payload)
    if reference is None:
        return Ignored("message whose addressing fields (from, recipient, conversation) are malformed")
    conversation = _mapping(payload.get("conversation"))
    channel_data = _mapping(payload.get("channelData"))
    channel_id = _text(_mapping(channel_data.get("channel")).get("id")) or _text(channel_data.get("teamsChannelId"))
    return TeamsMessage(
        activity_id=activity_id,
        conversation_id=conversation_id,
        conversation_type=_conversation_type(conversation, channel_id),
        tenant_id=tenant_of(payload),
        team_id=_text(_mapping(channel_data.get("team")).get("id")) or _text(channel_data.get("teamsTeamId")) or None,
        channel_id=channel_id or None,
        sender_id=sender_id,
        aad_object_id=_text(sender.get("aadObjectId")) or None,
        sender_name=_text(sender.get("name")),
        text=text,
        mentions_bot=_mentions(payload, _text(recipient.get("id"))),
        service_url=_text(payload.get("serviceUrl")),
        reference=reference,
        value=value,
        is_invoke=is_invoke,
        attachments=attachments,
        raw=payload,
    )


def _conversation_update(payload: Mapping[str, Any], conversation_id: str) -> TeamsEvent:
    recipient_id = _text(_mapping(payload.get("recipient")).get("id"))
    added = [_text(_mapping(m).get("id")) for m in _list(payload.get("membersAdded"))]
    conversation = _mapping(payload.get("conversation"))
    conversation_type = _conversation_type(conversation, None)
    # In a personal chat (only the user and the bot) anyone added means the chat began.
    if (recipient_id and recipient_id in added) or (added and conversation_type == "personal"):
        reference = conversation_reference(payload)
        if reference is None:
            return Ignored("conversation update whose addressing fields are malformed")
        return BotAdded(conversation_id, conversation_type, tenant_of(payload), reference, raw=payload)
    event = _text(_mapping(payload.get("channelData")).get("eventType"))
    if added:
        return Ignored("members added to a team or chat the bot is already in (welcomed when the bot joined)")
    return Ignored(f"conversation update {event or '(members removed or renamed)'} needs no action")


def strip_mentions(payload: Mapping[str, Any]) -> str:
    """The message text without the bot's @mention; other people's mentions keep their name."""
    text = _text(payload.get("text"))
    recipient = _mapping(payload.get("recipient"))
    bot_id = _text(recipient.get("id"))
    for entity in _list(payload.get("entities")):
        entity = _mapping(entity)
        if entity.get("type") != "mention":
            continue
        mentioned = _mapping(entity.get("mentioned"))
        if not bot_id or _text(mentioned.get("id")) != bot_id:
            continue
        markup = _text(entity.get("text")) or f"<at>{_text(mentioned.get('name'))}</at>"
        text = text.replace(markup, " ")
    text = _AT_TAG.sub(lambda m: m.group(1), text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip()


def tenant_of(payload: Mapping[str, Any]) -> str | None:
    tenant = _text(_mapping(_mapping(payload.get("channelData")).get("tenant")).get("id"))
    return tenant or _text(_mapping(payload.get("conversation")).get("tenantId")) or None


def message_key(conversation_id: str, activity_id: str) -> str:
    """The deduplication key of a Teams message: (conversation id, activity id)."""
    return storable_id(f"{conversation_id}|{activity_id}")


def storable_id(value: str) -> str:
    """``value``, or a digest of it when it is longer than the database column."""
    if len(value) <= MAX_ID_CHARS:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()


def conversation_reference(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """botbuilder's ConversationReference for replying later, as JSON; None if it cannot be read."""
    addressing = {key: payload[key] for key in _ADDRESSING if key in payload}
    try:
        activity = Activity.deserialize(addressing)
        serialised: dict[str, Any] = TurnContext.get_conversation_reference(activity).serialize()
    except (DeserializationError, ValueError, TypeError, AttributeError):
        return None
    return serialised


def to_inbound(message: TeamsMessage, *, action: str | None = None, label: str = "") -> InboundMessage:
    """The core's message; ``channel_data`` keeps the ConversationReference for the proactive answer."""
    return InboundMessage(
        channel_message_id=message.message_key,
        conversation=ConversationRef(CHANNEL, storable_id(message.conversation_id)),
        sender=Participant(CHANNEL, message.platform_id, message.sender_name),
        text=message.text or label,
        attachments=message.attachments,
        action=action,
        raw=dict(message.raw),
        channel_data={"reference": dict(message.reference), "tenant_id": message.tenant_id},
    )


def _button_data(value: Any, *, is_invoke: bool) -> Mapping[str, Any] | None:
    """Our card's button data from Action.Submit's ``value`` or Action.Execute's ``value.action``."""
    if not isinstance(value, Mapping):
        return None
    if is_invoke:
        action = _mapping(value.get("action"))
        data = dict(_mapping(action.get("data")))
        verb = _text(action.get("verb"))
        if verb and ACTION_KEY not in data and DESK_KEY not in data:
            data[ACTION_KEY] = verb
        value = data
    if isinstance(value.get(ACTION_KEY), str) or isinstance(value.get(DESK_KEY), str):
        return value
    return None


def _attachments(value: Any) -> tuple[Attachment, ...]:
    found = []
    for item in _list(value):
        item = _mapping(item)
        content_type = _text(item.get("contentType"))
        content = _mapping(item.get("content"))
        if content_type == FILE_DOWNLOAD_INFO:
            url = _text(content.get("downloadUrl"))
            file_type = _text(content.get("fileType"))
            found.append(Attachment(_text(item.get("name")) or "file", f"file/{file_type or 'unknown'}", url=url))
        elif _text(item.get("contentUrl")) and not content_type.startswith("text/html"):
            name = _text(item.get("name")) or content_type.replace("/", ".")
            found.append(
                Attachment(name, content_type or "application/octet-stream", url=_text(item.get("contentUrl")))
            )
        # text/html is the message itself as HTML; cards are ours or other apps'.
    return tuple(found)


def _conversation_type(conversation: Mapping[str, Any], channel_id: str | None) -> str:
    declared = _text(conversation.get("conversationType"))
    if declared in ("personal", "groupChat", "channel"):
        return declared
    # Only a channel's reply chain has a ";messageid=" suffix (older payloads name no type).
    if channel_id or ";messageid=" in _text(conversation.get("id")):
        return "channel"
    return "groupChat" if conversation.get("isGroup") is True else "personal"


def _mentions(payload: Mapping[str, Any], bot_id: str) -> bool:
    return bool(bot_id) and any(
        _mapping(e).get("type") == "mention" and _text(_mapping(_mapping(e).get("mentioned")).get("id")) == bot_id
        for e in _list(payload.get("entities"))
    )


def _is_bot(sender_id: str, recipient: Mapping[str, Any]) -> bool:
    # "28:" ids are bots; our own id is the recipient's.
    return sender_id.startswith("28:") or sender_id == _text(recipient.get("id"))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
