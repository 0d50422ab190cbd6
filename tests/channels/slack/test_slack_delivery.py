"""Sending to Slack: how Web API failures become the outbox's delivery errors (against the fake, over a socket)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.channel import DeliveryOutcomeUnknown, PermanentDeliveryError, TemporaryDeliveryError
from bot.model import Button, Citation, ConversationRef, OutboundReply, ReplyKind
from channels.slack.blocks import SECTION_CHARS, escape, reply_blocks, sections
from channels.slack.webapi import call, make_client
from tests.channels.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.channels.test_http_api import serving


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack()


@pytest.fixture
async def api_url(fake: FakeSlack) -> AsyncIterator[str]:
    async with serving(fake.asgi(), lifespan="off") as url:
        yield f"{url}/api/"


async def post(api_url: str, *, token: str = BOT_TOKEN, timeout: float = 5) -> Any:
    client = make_client(token=token, base_url=api_url, timeout=timeout)
    return await call(client, "chat.postMessage", channel="D0ALICE01", text="hello")


async def test_a_post_returns_slacks_answer(api_url: str, fake: FakeSlack) -> None:
    response = await post(api_url)
    assert response["ok"] is True and response["ts"]
    [sent] = fake.calls_to("chat.postMessage")
    assert sent.args == {"channel": "D0ALICE01", "text": "hello"}


async def test_429_is_temporary_with_slacks_retry_after(api_url: str, fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(TemporaryDeliveryError) as raised:
        await post(api_url)
    assert raised.value.retry_after == 7.0
    assert "ratelimited" in str(raised.value)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_temporary(api_url: str, fake: FakeSlack, status: int) -> None:
    fake.fail("chat.postMessage", status=status)
    with pytest.raises(TemporaryDeliveryError):
        await post(api_url)


@pytest.mark.parametrize(
    "error", ["channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "msg_too_long"]
)
async def test_refusals_are_permanent(api_url: str, fake: FakeSlack, error: str) -> None:
    fake.fail("chat.postMessage", error=error)
    with pytest.raises(PermanentDeliveryError, match=error):
        await post(api_url)


async def test_a_wrong_token_is_permanent(api_url: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid_auth"):
        await post(api_url, token="xoxb-revoked")


async def test_a_timeout_after_sending_is_an_unknown_outcome(api_url: str, fake: FakeSlack) -> None:
    fake.delays["chat.postMessage"] = 2.5
    with pytest.raises(DeliveryOutcomeUnknown):
        await post(api_url, timeout=1)
    assert len(fake.calls_to("chat.postMessage")) == 1  # sent once, never resent by the client itself


async def test_slack_unreachable_is_temporary() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(TemporaryDeliveryError, match="cannot connect"):
        await post(f"http://127.0.0.1:{port}/api/")


# -- Block Kit ------------------------------------------------------------------------------------


def test_text_is_escaped_and_split_into_sections_slack_accepts() -> None:
    long = ("Step one & two <not a tag>. " * 400).strip()
    blocks = sections(long)
    assert len(blocks) > 1
    assert all(len(b["text"]["text"]) <= SECTION_CHARS for b in blocks)
    assert "<not a tag>" not in blocks[0]["text"]["text"] and "&lt;not a tag&gt;" in blocks[0]["text"]["text"]
    assert escape("a & b") == "a &amp; b"


def test_answer_blocks_have_sources_as_links_and_buttons_within_limits() -> None:
    reply = OutboundReply(
        ConversationRef("slack", "D1", "1.2"),
        "Here's what our knowledge base says:\n\nTurn it off.\n\nSource: VPN (https://kb/vpn)\n\nDid that solve it?",
        ReplyKind.ANSWER,
        citations=(Citation("VPN", "vpn", url="https://kb/vpn"),),
        buttons=(Button("That solved it", "solved"), Button("x" * 100, "choose:" + "a" * 3000)),
    )
    blocks = reply_blocks(reply)
    assert [b["type"] for b in blocks] == ["section", "context", "actions"]
    assert "Source:" not in blocks[0]["text"]["text"]
    assert blocks[1]["elements"][0]["text"] == "Source: <https://kb/vpn|VPN>"
    solved, long = blocks[2]["elements"]
    assert solved["style"] == "primary" and solved["value"] == "solved"
    assert len(long["text"]["text"]) <= 75 and len(long["value"]) <= 2000
    assert solved["action_id"] != long["action_id"]


def test_agent_replies_say_who_wrote_them() -> None:
    reply = OutboundReply(
        ConversationRef("slack", "D1", "1.2"), "Restart it.", ReplyKind.AGENT, author="slack:T1:U0ADA"
    )
    who, text = reply_blocks(reply)
    assert who["elements"][0]["text"] == "<@U0ADA> · IT support"
    assert text["text"]["text"] == "Restart it."
    by_email = OutboundReply(
        ConversationRef("slack", "D1", "1.2"), "Hi", ReplyKind.AGENT, author="email:ada@example.com"
    )
    assert reply_blocks(by_email)[0]["elements"][0]["text"] == "ada@example.com · IT support"
    named = OutboundReply(
        ConversationRef("slack", "D1", "1.2"), "Hi", ReplyKind.AGENT, author="teams:aad-1", author_name="Ada <Lovelace>"
    )
    assert reply_blocks(named)[0]["elements"][0]["text"] == "Ada &lt;Lovelace&gt; · IT support"


def test_the_agents_name_survives_the_outbox_payload() -> None:
    reply = OutboundReply(
        ConversationRef("slack", "D1", "1.2"), "Hi", ReplyKind.AGENT, author="teams:aad-1", author_name="Dana Kim"
    )
    assert OutboundReply.from_payload(reply.to_payload()) == reply
    older = reply.to_payload()
    del older["author_name"]  # queued by a version without names
    assert OutboundReply.from_payload(older).author_name == ""
