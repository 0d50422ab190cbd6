"""Agents in Slack: who counts as one, replies before taking, hand back, cards that were deleted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot import messages as bot_messages
from channels.slack import messages
from channels.slack.desk import AgentDirectory
from channels.slack.webapi import make_client
from tests.channels.slack.conftest import (
    ALICE_DM,
    TRIAGE,
    Slack,
    button_press,
    channel_message,
    dm,
    event_body,
    next_ts,
    running_slack,
)
from tests.channels.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.channels.test_http_api import serving

GROUP_AGENT = "U0GROUP01"


async def escalate(slack: Slack) -> tuple[str, str, str]:
    """A question nobody can answer becomes a ticket; returns (ticket number, requester thread, card ts)."""
    ts = next_ts()
    await slack.post(event_body(dm("please order pizza for the team", ts=ts)))
    [card] = await slack.api.wait_for("chat.postMessage", channel=TRIAGE)
    [ticket] = slack.tickets()
    assert ticket.number is not None
    card_ts = card.result["ts"]
    # The card's thread is known once the desk has recorded where it posted it.
    deadline = time.monotonic() + 10
    while await slack.app.desk.ticket_by_thread("slack", f"{TRIAGE}:{card_ts}") != ticket.number:
        assert time.monotonic() < deadline, "the card's thread was never recorded"
        await asyncio.sleep(0.02)
    return ticket.number, ts, card_ts


async def press(slack: Slack, verb: str, number: str, card_ts: str, user: str) -> None:
    response = await slack.press(
        button_press(value=number, action_id=f"tz_desk_{verb}", channel=TRIAGE, message_ts=card_ts, user=user)
    )
    assert response.status_code == 200


async def test_members_of_the_agent_group_are_agents(tmp_path: Path, database_url: str, fake: FakeSlack) -> None:
    fake.usergroups["S0AGENTS1"] = [GROUP_AGENT]
    async with running_slack(tmp_path, database_url, fake, agents=[], agent_group="S0AGENTS1") as slack:
        number, thread, card_ts = await escalate(slack)
        await press(slack, "take", number, card_ts, user=GROUP_AGENT)
        assert slack.tickets()[0].assignee == f"slack:T0TEAM001:{GROUP_AGENT}"
        await slack.api.wait_for("chat.update", channel=TRIAGE, ts=card_ts)
        # Members are looked up once and cached, not on every press.
        await press(slack, "hand_back", number, card_ts, user=GROUP_AGENT)
        [_, joined, handed_back] = await slack.api.wait_for("chat.postMessage", 3, channel=ALICE_DM, thread_ts=thread)
        assert "has joined the conversation" in joined.args["text"]
        assert handed_back.args["text"] == bot_messages.HANDED_BACK.format(number=number)
        assert len(fake.calls_to("usergroups.users.list", usergroup="S0AGENTS1")) == 1


async def test_a_reply_before_taking_the_ticket_is_not_relayed(slack: Slack) -> None:
    number, thread, card_ts = await escalate(slack)
    reply = channel_message("I'll look into it", channel=TRIAGE, user="U0AGENT01", thread_ts=card_ts)
    assert (await slack.post(event_body(reply))).status_code == 200
    [refusal] = await slack.api.wait_for("chat.postEphemeral", channel=TRIAGE, user="U0AGENT01")
    assert refusal.args["text"].startswith(messages.REPLY_NOT_RELAYED.format(reason="")[:20])
    assert number in refusal.args["text"]
    # Someone who is not an agent writing in the card's thread is told their words stay there.
    chatter = channel_message("any news?", channel=TRIAGE, user="U0NOBODY1", thread_ts=card_ts)
    await slack.post(event_body(chatter))
    [told] = await slack.api.wait_for("chat.postEphemeral", channel=TRIAGE, user="U0NOBODY1")
    assert told.args["text"] == messages.NOT_AN_AGENT
    await slack.runtime.stop()
    assert len(slack.api.calls_to("chat.postMessage", channel=ALICE_DM)) == 1  # only the escalation notice


async def test_a_deleted_card_is_posted_again(tmp_path: Path, database_url: str, fake: FakeSlack) -> None:
    async with running_slack(tmp_path, database_url, fake) as slack:
        number, _, card_ts = await escalate(slack)
        fake.fail("chat.update", error="message_not_found")
        await press(slack, "take", number, card_ts, user="U0AGENT01")
        [_, again] = await fake.wait_for("chat.postMessage", 2, channel=TRIAGE, thread_ts=None)
        assert number in again.args["text"]


async def test_the_agent_directory_keeps_the_last_known_members_when_slack_fails() -> None:
    fake = FakeSlack(usergroups={"S0AGENTS1": [GROUP_AGENT]})
    now = [0.0]
    async with serving(fake.asgi(), lifespan="off") as url:
        client = make_client(token=BOT_TOKEN, base_url=f"{url}/api/", timeout=5)
        directory = AgentDirectory(
            user_ids=["U0AGENT01"], group_id="S0AGENTS1", client=client, refresh_seconds=60, clock=lambda: now[0]
        )
        assert await directory.is_agent("U0AGENT01") and await directory.is_agent(GROUP_AGENT)
        assert not await directory.is_agent("U0NOBODY1")
        now[0] = 61.0
        fake.fail("usergroups.users.list", status=503)
        assert await directory.is_agent(GROUP_AGENT)
        assert len(fake.calls_to("usergroups.users.list")) == 2


async def test_a_reply_that_cannot_be_delivered_is_shown_to_the_agents(slack: Slack) -> None:
    number, thread, card_ts = await escalate(slack)
    await press(slack, "take", number, card_ts, user="U0AGENT01")
    await slack.api.wait_for("chat.postMessage", 2, channel=ALICE_DM, thread_ts=thread)  # "... has joined"
    slack.api.fail("chat.postMessage", error="channel_not_found", channel=ALICE_DM)  # e.g. the DM is gone
    reply = channel_message("Please restart the router.", channel=TRIAGE, user="U0AGENT01", thread_ts=card_ts)
    await slack.post(event_body(reply))
    [failed] = await slack.api.wait_for(
        "chat.postMessage", channel=TRIAGE, thread_ts=card_ts, text=f"{number}: chat.postMessage: channel_not_found"
    )
    assert messages.ENTRY_PREFIX["delivery_failed"] in str(failed.args["blocks"])


async def test_the_requester_sees_the_agents_slack_name_on_a_reply(slack: Slack) -> None:
    number, thread, card_ts = await escalate(slack)
    await press(slack, "take", number, card_ts, user="U0AGENT01")
    await slack.api.wait_for("chat.postMessage", 2, channel=ALICE_DM, thread_ts=thread)  # "... has joined"
    reply = channel_message("Please restart the router.", channel=TRIAGE, user="U0AGENT01", thread_ts=card_ts)
    await slack.post(event_body(reply))
    [relayed] = await slack.api.wait_for(
        "chat.postMessage", channel=ALICE_DM, thread_ts=thread, text="Please restart the router."
    )
    who = relayed.args["blocks"][0]
    assert who["type"] == "context" and who["elements"][0]["text"] == "Ada Agent · IT support"
    # The name was looked up once (users.info is cached).
    assert len(slack.api.calls_to("users.info", user="U0AGENT01")) == 1
