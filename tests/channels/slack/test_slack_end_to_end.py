"""The whole support loop in Slack, end to end: Slack's requests signed and POSTed to the real
ASGI server under uvicorn; tierzero's Web API calls answered by the fake Slack on another socket."""

from __future__ import annotations

from pathlib import Path

from bot import messages as bot_messages
from bot.model import Action
from channels.slack import messages
from channels.slack.manifest import METHOD_SCOPES
from tests.channels.slack.conftest import (
    AGENT,
    ALICE,
    ALICE_DM,
    TRIAGE,
    Slack,
    button_press,
    buttons_of,
    channel_message,
    dm,
    event_body,
    next_ts,
    running_slack,
)
from tests.channels.slack.fake_slack import BOT_USER, Call, FakeSlack


async def ask(slack: Slack, text: str, *, ts: str | None = None) -> tuple[str, Call]:
    """A DM question; returns its thread ts and tierzero's answer (the chat.postMessage call)."""
    ts = ts or next_ts()
    response = await slack.post(event_body(dm(text, ts=ts)))
    assert response.status_code == 200, response.text
    [answer] = await slack.api.wait_for("chat.postMessage", channel=ALICE_DM, thread_ts=ts)
    return ts, answer


async def desk_press(slack: Slack, verb: str, number: str, card_ts: str, *, user: str = AGENT) -> None:
    response = await slack.press(
        button_press(value=number, action_id=f"tz_desk_{verb}", channel=TRIAGE, message_ts=card_ts, user=user)
    )
    assert response.status_code == 200, response.text


async def test_a_dm_question_gets_a_block_kit_answer_in_its_thread(slack: Slack) -> None:
    ts, posted = await ask(slack, "my VPN keeps disconnecting")
    answer = posted.args
    text = "\n".join(b["text"]["text"] for b in answer["blocks"] if b["type"] == "section")
    assert "Turn off Wi-Fi power saving." in text
    assert "Source:" not in text  # the citation is a link under the answer instead
    [context] = [b for b in answer["blocks"] if b["type"] == "context"]
    assert "<https://it.example.com/kb/vpn-drops|VPN keeps disconnecting>" in context["elements"][0]["text"]
    assert [(b["text"]["text"], b["value"]) for b in buttons_of(answer)] == [
        (bot_messages.BUTTON_SOLVED, Action.SOLVED),
        (bot_messages.BUTTON_HUMAN, Action.HUMAN),
    ]
    assert answer["unfurl_links"] is False
    assert answer["metadata"]["event_payload"]["idempotency_key"].startswith("tierzero-")
    # Every call carried the bot token; the requester is known by name from users.info.
    assert {c.authorization for c in slack.api.calls} == {"Bearer xoxb-test-token-1234"}
    assert slack.api.calls_to("users.info", user=ALICE)


async def test_that_solved_it_closes_the_conversation(slack: Slack) -> None:
    ts, answer = await ask(slack, "vpn drops all the time")
    [solved, _] = buttons_of(answer.args)
    answer_ts = answer.result["ts"]
    pressed = await slack.press(
        button_press(
            value=solved["value"],
            action_id=solved["action_id"],
            channel=ALICE_DM,
            message_ts=answer_ts,
            thread_ts=ts,
            label=solved["text"]["text"],
            blocks=answer.args["blocks"],
        )
    )
    assert pressed.status_code == 200
    [_, closing] = await slack.api.wait_for("chat.postMessage", 2, channel=ALICE_DM, thread_ts=ts)
    assert closing.args["text"] in (bot_messages.OFFER_CLOSE, bot_messages.CLOSED)
    # The pressed message lost its buttons, so it cannot be pressed again.
    [update] = await slack.api.wait_for("chat.update", channel=ALICE_DM, ts=answer_ts)
    assert not buttons_of(update.args)
    assert "That solved it" in update.args["blocks"][-1]["elements"][0]["text"]


async def test_retried_event_and_the_mention_twin_give_one_reply(slack: Slack) -> None:
    channel = "C0GENERAL"
    ts = next_ts()
    text = f"<@{BOT_USER}> my vpn drops every hour"
    message_event = event_body(channel_message(text, channel=channel, ts=ts), event_id="Ev0RETRY1")
    mention_event = event_body(
        {"type": "app_mention", "user": ALICE, "text": text, "ts": ts, "channel": channel, "event_ts": ts},
        event_id="Ev0MENTION",
    )
    first = await slack.post(message_event)
    retries = [await slack.post(message_event, retry=n) for n in (1, 2, 3)]
    twin = await slack.post(mention_event)
    assert [r.status_code for r in [first, *retries, twin]] == [200] * 5
    await slack.api.wait_for("chat.postMessage", channel=channel, thread_ts=ts)
    await slack.runtime.stop()  # let everything accepted be answered, then count
    assert len(slack.api.calls_to("chat.postMessage", channel=channel)) == 1


async def test_signatures_are_checked_before_anything_else(slack: Slack) -> None:
    body = event_body(dm("my vpn drops"))
    stale = await slack.post(body, timestamp="1000000000")
    forged = await slack.post(body, secret="not-the-signing-secret")
    nonnumeric = await slack.post(body, timestamp="soon")
    missing = await slack.client.post("/slack/events", json=body)
    challenge = {
        "type": "url_verification",
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
    }
    unsigned_challenge = await slack.client.post("/slack/events", json=challenge)
    signed_challenge = await slack.post(challenge)
    assert [r.status_code for r in (stale, forged, nonnumeric, missing, unsigned_challenge)] == [401] * 5
    assert signed_challenge.status_code == 200
    assert signed_challenge.json() == {"challenge": challenge["challenge"]}
    assert not slack.api.calls_to("chat.postMessage")


async def test_a_workspace_not_in_team_ids_is_not_served(slack: Slack) -> None:
    response = await slack.post(event_body(dm("my vpn drops"), team="T0OTHER01"))
    assert response.status_code == 200
    served = await slack.post(event_body(dm("vpn drops again")))
    assert served.status_code == 200
    await slack.api.wait_for("chat.postMessage")
    await slack.runtime.stop()
    assert len(slack.api.calls_to("chat.postMessage")) == 1


async def test_429_is_retried_after_retry_after_without_blocking_others(
    tmp_path: Path, database_url: str, fake: FakeSlack
) -> None:
    fake.fail("chat.postMessage", status=429, retry_after=2)
    async with running_slack(tmp_path, database_url, fake) as slack:
        first_ts = next_ts()
        await slack.post(event_body(dm("my vpn drops", ts=first_ts)))
        [refused] = await fake.wait_for("chat.postMessage", thread_ts=first_ts)
        other = next_ts()
        await slack.post(event_body(dm("vpn is slow", ts=other, user="U0BOB0001", channel="D0BOB0001")))
        [other_answer] = await fake.wait_for("chat.postMessage", channel="D0BOB0001", thread_ts=other)
        first, retried = await fake.wait_for("chat.postMessage", 2, thread_ts=first_ts)
    assert retried.at - first.at >= 1.99, "Retry-After: 2 was not honoured"
    assert other_answer.at < retried.at, "the 429 of one conversation held up another"
    assert first.args["blocks"] == retried.args["blocks"]


async def test_escalation_takeover_reply_and_resolution(slack: Slack) -> None:
    ts, answer = await ask(slack, "my vpn keeps disconnecting")
    human = buttons_of(answer.args)[1]
    await slack.press(
        button_press(
            value=human["value"],
            action_id=human["action_id"],
            channel=ALICE_DM,
            message_ts=answer.result["ts"],
            thread_ts=ts,
            label=human["text"]["text"],
        )
    )

    # The requester learns the ticket number and the first-response time in the thread...
    [_, escalation] = await slack.api.wait_for("chat.postMessage", 2, channel=ALICE_DM, thread_ts=ts)
    [ticket] = slack.tickets()
    assert ticket.number is not None and ticket.number in escalation.args["text"]
    assert "Expected first response by" in escalation.args["text"]
    # ...and the agents see one card in the triage channel, with Take and Resolve.
    [card] = await slack.api.wait_for("chat.postMessage", channel=TRIAGE)
    assert ticket.number in card.args["blocks"][0]["text"]["text"]
    assert "Alice Example" in str(card.args["blocks"][1])
    actions = {b["action_id"]: b for b in buttons_of(card.args)}
    assert set(actions) == {"tz_desk_take", "tz_desk_resolve"}
    card_ts = card.result["ts"]

    # Someone who is not an agent cannot take it.
    await slack.press(
        button_press(
            value=ticket.number, action_id="tz_desk_take", channel=TRIAGE, message_ts=card_ts, user="U0NOBODY1"
        )
    )
    [refusal] = await slack.api.wait_for("chat.postEphemeral", user="U0NOBODY1")
    assert refusal.args["text"] == messages.NOT_AN_AGENT
    assert slack.tickets()[0].assignee is None

    # The agent takes it: the requester is told, and the card is updated in place.
    await slack.press(
        button_press(value=ticket.number, action_id="tz_desk_take", channel=TRIAGE, message_ts=card_ts, user=AGENT)
    )
    joined = await slack.api.wait_for("chat.postMessage", 3, channel=ALICE_DM, thread_ts=ts)
    assert "Ada Agent" in joined[-1].args["text"]
    [update] = await slack.api.wait_for("chat.update", channel=TRIAGE, ts=card_ts)
    assert f"<@{AGENT}>" in str(update.args["blocks"])
    assert {b["action_id"] for b in buttons_of(update.args)} == {"tz_desk_resolve", "tz_desk_hand_back"}

    # The agent's reply in the card's thread reaches the requester's thread.
    reply_ts = next_ts()
    reply = channel_message(
        "Hi Alice, please restart the VPN client.", channel=TRIAGE, ts=reply_ts, user=AGENT, thread_ts=card_ts
    )
    await slack.post(event_body(reply))
    relayed = await slack.api.wait_for("chat.postMessage", 4, channel=ALICE_DM, thread_ts=ts)
    assert "please restart the VPN client" in relayed[-1].args["text"]

    # The requester's answer is mirrored into the card's thread; the bot stays silent.
    await slack.post(event_body(dm("Restarted, it works now", thread_ts=ts)))
    [mirrored] = await slack.api.wait_for(
        "chat.postMessage", channel=TRIAGE, thread_ts=card_ts, text=f"{ticket.number}: Restarted, it works now"
    )
    assert "Requester" in mirrored.args["blocks"][0]["elements"][0]["text"]

    # Resolve: the requester is asked for a rating with five buttons.
    await slack.press(
        button_press(value=ticket.number, action_id="tz_desk_resolve", channel=TRIAGE, message_ts=card_ts, user=AGENT)
    )
    after = await slack.api.wait_for("chat.postMessage", 6, channel=ALICE_DM, thread_ts=ts)
    rating = after[-1].args
    assert [b["value"] for b in buttons_of(rating)] == [f"rate:{n}" for n in range(1, 6)]
    await slack.runtime.stop()
    # The bot said nothing of its own while the agent owned the conversation.
    assert len(slack.api.calls_to("chat.postMessage", channel=ALICE_DM)) == 6
    assert slack.tickets()[0].status == "resolved"
    # Every method we called needs only the scopes in the manifest.
    assert {c.method for c in slack.api.calls} <= set(METHOD_SCOPES)
