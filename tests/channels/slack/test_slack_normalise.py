"""Slack markup to plain text, and which messages are ours (pure functions)."""

from __future__ import annotations

import pytest

from channels.slack.normalise import BotIdentity, Ignored, UserMessage, classify, plain_text

BOT = BotIdentity(user_id="U0BOT0001", bot_id="B0BOT0001")


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("<@U0BOT0001> my vpn drops", "my vpn drops"),
        ("<@U0BOT0001|tierzero> help", "help"),
        ("ask <@U0BOB0001> about it", "ask @U0BOB0001 about it"),
        ("see <#C0GENERAL|general>", "see #general"),
        ("<!here> printer down", "@here printer down"),
        ("open <https://it.example.com/vpn|the VPN page>", "open the VPN page (https://it.example.com/vpn)"),
        ("<https://it.example.com>", "https://it.example.com"),
        ("a &lt;b&gt; &amp;amp; c", "a <b> &amp; c"),
        ("", ""),
    ],
)
def test_plain_text(markup: str, text: str) -> None:
    assert plain_text(markup, BOT) == text


def event(**fields: object) -> dict[str, object]:
    base = {"type": "message", "user": "U0ALICE01", "text": "hi", "ts": "1.1", "channel": "C0GENERAL"}
    return {"type": "event_callback", "team_id": "T0TEAM001", "event_id": "Ev1", "event": base | fields}


def test_which_messages_are_for_us() -> None:
    assert isinstance(classify(event(channel="D0ALICE01", channel_type="im"), BOT), UserMessage)
    assert isinstance(classify(event(text="<@U0BOT0001> hi"), BOT), UserMessage)
    in_thread = classify(event(thread_ts="1.0"), BOT)
    assert isinstance(in_thread, UserMessage) and not in_thread.addressed
    assert classify(event(), BOT) == Ignored("a channel message not addressed to us")
    assert classify(event(subtype="channel_join"), BOT) == Ignored(
        "message subtype channel_join is not a person writing"
    )
    assert classify(event(user="U0BOT0001", channel_type="im"), BOT) == Ignored("our own message")
    assert classify(event(bot_id="B0OTHER01", channel_type="im"), BOT) == Ignored("a message from another bot")
    allowed = classify(event(bot_id="B0OTHER01", channel_type="im"), BOT, allow_bots=True)
    assert isinstance(allowed, UserMessage)
    assert classify({"type": "event_callback", "event": "nonsense"}, BOT) == Ignored("event_callback without an event")
    assert classify([], BOT) == Ignored("not a JSON object")  # type: ignore[arg-type]


def test_a_threads_root_is_its_own_conversation_and_replies_join_it() -> None:
    root = classify(event(channel_type="im", channel="D1", ts="5.5", thread_ts="5.5"), BOT)
    reply = classify(event(channel_type="im", channel="D1", ts="6.6", thread_ts="5.5"), BOT)
    assert isinstance(root, UserMessage) and isinstance(reply, UserMessage)
    assert root.thread_ts is None and root.message.conversation.thread_id == "5.5"
    assert reply.message.conversation == root.message.conversation
    assert reply.message.channel_message_id == "T0TEAM001:D1:6.6"
