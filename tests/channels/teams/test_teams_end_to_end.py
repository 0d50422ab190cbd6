"""Teams end to end: signed activities into the real ASGI server, answers out to a fake Bot Connector."""

from __future__ import annotations

from typing import Any

import pytest

from bot import messages as core_messages
from bot.config import Settings
from channels.teams import messages
from channels.teams.normalise import ACTION_KEY, DESK_KEY
from tests.channels.teams.conftest import (
    AGENT_AAD,
    AGENT_CHANNEL,
    APP_ID,
    BOT_ID,
    OTHER_TENANT,
    PERSONAL,
    TeamsBot,
    activity,
    channel_activity,
    running_teams,
)
from tests.channels.teams.fakes import ACCESS_TOKEN, FakeBotFramework, Received, SigningKey
from tests.channels.test_http_api import until
from ticketing.models import OutboxStatus


def actions_of(card: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    assert card is not None, "expected an Adaptive Card"
    return [(a["title"], a["data"]) for block in card["body"] if block["type"] == "ActionSet" for a in block["actions"]]


def card_text(card: dict[str, Any] | None) -> str:
    assert card is not None, "expected an Adaptive Card"
    return "\n".join(block.get("text", "") for block in card["body"] if block["type"] == "TextBlock")


def press(fake: FakeBotFramework, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Action.Submit: Teams sends a message activity whose value is the button's data."""
    return activity(fake, value=data, **kwargs)


async def escalate(teams: TeamsBot) -> tuple[str, str]:
    """Alice asks for a person; returns (ticket number, the ticket card's thread in the agent channel)."""
    response = await teams.post(press(teams.fake, {ACTION_KEY: "human", "label": core_messages.BUTTON_HUMAN}))
    assert response.status_code == 202
    [escalation] = await teams.fake.wait_for(1, conversation_id=PERSONAL)
    facts = [b for b in (escalation.card or {})["body"] if b["type"] == "FactSet"]
    number = facts[0]["facts"][0]["value"]
    created = await _wait_for_path(teams.fake, "/v3/conversations")
    assert created.body["channelData"]["channel"]["id"] == AGENT_CHANNEL
    assert created.created is not None
    await until(lambda: teams.thread_of(number) == created.created, "the card's thread to be recorded")
    return number, created.created


async def _wait_for_path(fake: FakeBotFramework, path: str) -> Received:
    await until(lambda: any(r.path == path for r in fake.received), f"a call to {path}")
    return next(r for r in fake.received if r.path == path)


# -- requesters ------------------------------------------------------------------------


async def test_a_personal_chat_question_is_answered_with_an_adaptive_card_sent_proactively(teams: TeamsBot) -> None:
    response = await teams.post(activity(teams.fake, text="My VPN keeps disconnecting"))
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}

    [answer] = await teams.fake.wait_for(1, conversation_id=PERSONAL)
    assert answer.authorization == f"Bearer {ACCESS_TOKEN}"
    assert teams.fake.token_requests[0]["client_id"] == APP_ID
    assert teams.fake.token_requests[0]["scope"] == "https://api.botframework.com/.default"
    assert answer.body["from"]["id"] == BOT_ID
    assert answer.body["recipient"]["aadObjectId"]
    assert "Turn off Wi-Fi power saving." in card_text(answer.card)
    assert "[VPN keeps disconnecting](https://it.example.com/kb/vpn-drops)" in card_text(answer.card)
    assert "Source:" not in card_text(answer.card)  # the sources are links, not the plain-text lines
    assert actions_of(answer.card) == [
        (core_messages.BUTTON_SOLVED, {ACTION_KEY: "solved", "label": core_messages.BUTTON_SOLVED}),
        (core_messages.BUTTON_HUMAN, {ACTION_KEY: "human", "label": core_messages.BUTTON_HUMAN}),
    ]
    # Clients that cannot render cards show the fallback text, options included.
    assert answer.card is not None
    assert "Turn off Wi-Fi power saving." in answer.card["fallbackText"]
    assert core_messages.BUTTON_HUMAN in answer.card["fallbackText"]

    # "That solved it" arrives as a message activity carrying the button's data.
    solved = await teams.post(press(teams.fake, {ACTION_KEY: "solved", "label": core_messages.BUTTON_SOLVED}))
    assert solved.status_code == 202
    replies = await teams.fake.wait_for(2, conversation_id=PERSONAL)
    assert replies[1].text == core_messages.CLOSED


async def test_a_redelivered_activity_is_answered_once(teams: TeamsBot) -> None:
    question = activity(teams.fake, text="my vpn drops all the time")
    first = await teams.post(question)
    again = await teams.post(question)  # Teams redelivers when the first answer was slow
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {"status": "duplicate"}
    items = await teams.outbox_settled(1)
    assert [i.status for i in items] == [OutboxStatus.SENT]
    assert teams.inbound_count() == 1
    assert len(teams.fake.sent(PERSONAL)) == 1


async def test_a_429_from_the_connector_is_retried_after_retry_after(teams: TeamsBot) -> None:
    teams.fake.fail_next(429, headers={"Retry-After": "0"})
    teams.fake.fail_next(502)
    await teams.post(activity(teams.fake, text="my vpn drops"))
    [answer] = await teams.fake.wait_for(1, conversation_id=PERSONAL)
    assert "Turn off Wi-Fi power saving." in card_text(answer.card)
    [item] = await teams.outbox_settled(1)
    assert item.status == OutboxStatus.SENT
    assert item.attempts == 3


async def test_a_send_that_times_out_is_recorded_as_unknown_and_not_repeated(
    settings: Settings, bot_framework: FakeBotFramework, signing_key: SigningKey
) -> None:
    async with running_teams(settings, bot_framework, signing_key, connector_timeout_seconds=1) as teams:
        # A first answer fetches the connector token, so only the Bot Connector call below can time out.
        await teams.post(activity(bot_framework, text="hello"))
        await teams.outbox_settled(1)
        bot_framework.hang_seconds = 3
        await teams.post(activity(bot_framework, text="my vpn drops"))
        first, second = await teams.outbox_settled(2)
        assert first.status == OutboxStatus.SENT
        assert (second.status, second.attempts) == (OutboxStatus.UNKNOWN, 1)


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_permanent_connector_error_is_not_retried(teams: TeamsBot, status: int) -> None:
    teams.fake.fail_next(status, times=3)
    await teams.post(activity(teams.fake, text="my vpn drops"))
    [item] = await teams.outbox_settled(1)
    assert item.status == OutboxStatus.DEAD
    assert item.attempts == 1
    assert str(status) in (item.last_error or "")


async def test_a_channel_mention_is_answered_in_its_reply_chain_and_followed_there(teams: TeamsBot) -> None:
    channel = "19:helpdesk-questions@thread.tacv2"
    thread = f"{channel};messageid=1767000000001"
    mention = channel_activity(teams.fake, thread=thread, channel=channel, mention=True, text="my vpn drops")
    assert (await teams.post(mention)).status_code == 202
    [answer] = await teams.fake.wait_for(1, conversation_id=thread)
    assert "Turn off Wi-Fi power saving." in card_text(answer.card)

    # In the same reply chain, no mention needed; elsewhere in the channel, the bot stays out.
    follow_up = channel_activity(teams.fake, thread=thread, channel=channel, text="talk to a person")
    assert (await teams.post(follow_up)).status_code == 202
    other = channel_activity(teams.fake, thread=f"{channel};messageid=99", channel=channel, text="lunch?")
    unrelated = await teams.post(other)
    assert (unrelated.status_code, unrelated.json()["status"]) == (200, "ignored")
    replies = await teams.fake.wait_for(2, conversation_id=thread)
    assert "TZ-" in (replies[1].card and card_text(replies[1].card) or replies[1].text or "")


async def test_in_a_group_chat_the_bot_answers_only_when_mentioned(teams: TeamsBot) -> None:
    chat = "19:group@thread.v2"
    plain = activity(teams.fake, text="my vpn drops", conversation=chat, conversation_type="groupChat")
    response = await teams.post(plain)
    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    assert teams.inbound_count() == 0

    mention = {
        **plain,
        "id": "1767999999999",
        "text": "<at>tierzero</at> my vpn drops",
        "entities": [{"type": "mention", "text": "<at>tierzero</at>", "mentioned": {"id": BOT_ID, "name": "tierzero"}}],
    }
    assert (await teams.post(mention)).status_code == 202
    [answer] = await teams.fake.wait_for(1, conversation_id=chat)
    assert "Turn off Wi-Fi power saving." in card_text(answer.card)


async def test_the_bot_says_hello_once_per_conversation(teams: TeamsBot) -> None:
    added = activity(
        teams.fake,
        kind="conversationUpdate",
        membersAdded=[{"id": BOT_ID}, {"id": "29:alice", "aadObjectId": AGENT_AAD}],
        activity_id="f:bot-added",
    )
    for body in (added, added, {**added, "id": "f:someone-else-added"}):
        response = await teams.post(body)
        assert response.status_code == 200
    [welcome] = await teams.fake.wait_for(1, conversation_id=PERSONAL)
    assert welcome.text == messages.WELCOME
    await teams.post(activity(teams.fake, text="my vpn drops"))
    replies = await teams.fake.wait_for(2, conversation_id=PERSONAL)
    assert replies[0].text == messages.WELCOME and replies[1].card is not None


async def test_the_hello_is_not_repeated_after_a_restart(
    settings: Settings, bot_framework: FakeBotFramework, signing_key: SigningKey
) -> None:
    added = activity(
        bot_framework,
        kind="conversationUpdate",
        membersAdded=[{"id": BOT_ID}, {"id": "29:alice", "aadObjectId": AGENT_AAD}],
        activity_id="f:bot-added",
    )
    async with running_teams(settings, bot_framework, signing_key) as first:
        assert (await first.post(added)).json() == {"status": "welcomed"}
        [welcome] = await bot_framework.wait_for(1, conversation_id=PERSONAL)
        assert welcome.text == messages.WELCOME
    # A new process with the same database: Teams redelivers the activity, or sends it again.
    async with running_teams(settings, bot_framework, signing_key) as second:
        for body in (added, {**added, "id": "f:added-again"}):
            assert (await second.post(body)).json() == {"status": "already welcomed"}
        await second.post(activity(bot_framework, text="my vpn drops"))
        replies = await bot_framework.wait_for(2, conversation_id=PERSONAL)
        assert replies[0].text == messages.WELCOME and replies[1].card is not None  # answered, not welcomed
        await second.outbox_settled(1)
        assert [r.text for r in bot_framework.sent(PERSONAL)].count(messages.WELCOME) == 1


async def test_edits_and_deletions_are_recorded(teams: TeamsBot) -> None:
    question = activity(teams.fake, text="my vpn drops")
    await teams.post(question)
    await teams.outbox_settled(1)
    edit = {**question, "type": "messageUpdate", "text": "my vpn drops every hour"}
    edit["channelData"] = {**question["channelData"], "eventType": "editMessage"}
    delete = {**question, "type": "messageDelete"}
    delete["channelData"] = {**question["channelData"], "eventType": "softDeleteMessage"}
    assert (await teams.post(edit)).json() == {"status": "edit recorded"}
    assert (await teams.post(delete)).json() == {"status": "deletion recorded"}
    with teams.app.db.transaction() as session:
        from sqlalchemy import select

        from ticketing.models import Message

        stored = session.scalar(select(Message).where(Message.direction == "in"))
        assert stored is not None
        assert stored.text == "my vpn drops every hour"
        assert stored.parts["original_text"] == "my vpn drops"
        assert "deleted_at" in stored.parts
    # An edit is not a new question: still one answer.
    assert len(teams.fake.sent(PERSONAL)) == 1


async def test_reactions_and_other_bots_are_ignored(teams: TeamsBot) -> None:
    reaction = activity(teams.fake, kind="messageReaction", reactionsAdded=[{"type": "like"}], replyToId="1")
    from_bot = activity(teams.fake, text="I am a bot", sender="28:another-bot", aad=None)
    for body in (reaction, from_bot):
        response = await teams.post(body)
        assert (response.status_code, response.json()["status"]) == (200, "ignored")
    assert teams.inbound_count() == 0


async def test_an_adaptive_card_invoke_is_an_action_with_an_invoke_answer(teams: TeamsBot) -> None:
    invoke = activity(
        teams.fake,
        kind="invoke",
        name="adaptiveCard/action",
        value={"action": {"type": "Action.Execute", "verb": "human", "data": {}}, "trigger": "manual"},
    )
    response = await teams.post(invoke)
    assert response.status_code == 200, response.text
    assert response.json().get("statusCode") == 200, response.json()
    [escalation] = await teams.fake.wait_for(1, conversation_id=PERSONAL)
    assert "TZ-" in card_text(escalation.card)


# -- the HTTP contract -------------------------------------------------------------------


async def test_malformed_requests_get_clear_4xx_answers_never_500(teams: TeamsBot) -> None:
    body = activity(teams.fake, text="hello")
    auth = {"Authorization": f"Bearer {teams.token(body)}"}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"content": b"not json at all", "headers": {**auth, "Content-Type": "application/json"}}, 415),
        ({"content": b"<xml/>", "headers": {**auth, "Content-Type": "application/xml"}}, 415),
        ({"content": b'{"text": "hi"}', "headers": auth}, 400),  # no Content-Type
        ({"json": {"text": "hi", "serviceUrl": body["serviceUrl"]}, "headers": auth}, 400),  # no type
        ({"json": [body], "headers": auth}, 400),
        ({"content": b"{" * 100_000 + b"}" * 100_000, "headers": {**auth, "Content-Type": "application/json"}}, 415),
        ({"content": b"x" * 1_000_001, "headers": {**auth, "Content-Type": "application/json"}}, 413),
    ]
    for request, status in cases:
        response = await teams.client.post("/api/messages", **request)
        assert response.status_code == status, (request.get("content", b"")[:40], response.text)
        assert "error" in response.json()
    assert teams.inbound_count() == 0


async def test_only_configured_tenants_are_served(teams: TeamsBot) -> None:
    response = await teams.post(activity(teams.fake, text="my vpn drops", tenant=OTHER_TENANT))
    assert response.status_code == 403
    assert teams.inbound_count() == 0


async def test_a_too_long_message_is_refused_and_the_person_told(teams: TeamsBot) -> None:
    response = await teams.post(activity(teams.fake, text="vpn " * 10_000))
    assert (response.status_code, response.json()["status"]) == (200, "refused")
    [notice] = await teams.fake.wait_for(1, conversation_id=PERSONAL)
    assert notice.text is not None and "limit" in notice.text


# -- agents ------------------------------------------------------------------------------


async def test_escalation_posts_a_ticket_card_that_an_agent_takes_and_answers_from(teams: TeamsBot) -> None:
    number, thread = await escalate(teams)
    created = await _wait_for_path(teams.fake, "/v3/conversations")
    card = created.card
    assert card_text(card).startswith(f"{number}: ")
    assert [title for title, _ in actions_of(card)] == [messages.TAKE, messages.RESOLVE]

    take = channel_activity(
        teams.fake,
        thread=thread,
        channel=AGENT_CHANNEL,
        sender="29:agent",
        aad=AGENT_AAD,
        sender_name="Ada Agent",
        value={DESK_KEY: "take", "ticket": number},
    )
    assert (await teams.post(take)).status_code == 200
    [took] = await teams.fake.wait_for(1, conversation_id=thread)
    assert took.text == messages.TOOK.format(agent="Ada Agent", number=number)
    joined = await teams.fake.wait_for(2, conversation_id=PERSONAL)
    assert "Ada Agent" in (joined[1].text or "")
    assert teams.ticket(number).assignee == f"teams:{AGENT_AAD}"

    # The card is updated in place: same activity, now showing the assignee and "Hand back".
    await until(lambda: teams.fake.updates(), "the card to be updated")
    updated = teams.fake.updates()[-1]
    assert updated.activity_id == thread.split("messageid=")[1]
    assert messages.HAND_BACK in [title for title, _ in actions_of(updated.card)]

    reply = channel_activity(
        teams.fake,
        thread=thread,
        channel=AGENT_CHANNEL,
        sender="29:agent",
        aad=AGENT_AAD,
        sender_name="Ada Agent",
        text="Please restart the VPN",
    )
    assert (await teams.post(reply)).status_code == 200
    assert (await teams.post(reply)).status_code == 200  # redelivered: relayed once
    delivered = await teams.fake.wait_for(3, conversation_id=PERSONAL)
    assert delivered[2].text == messages.AGENT_HEADER.format(name="Ada Agent") + "\n\nPlease restart the VPN"

    # The requester's answer is mirrored into the ticket's thread for the agent.
    await teams.post(activity(teams.fake, text="done, it works now"))
    mirrored = await teams.fake.wait_for(2, conversation_id=thread)
    assert "done, it works now" in (mirrored[1].text or "")
    await teams.outbox_settled(3)
    assert len(teams.fake.sent(PERSONAL)) == 3  # the bot stays silent while the agent owns it


async def test_people_who_are_not_configured_agents_are_refused(teams: TeamsBot) -> None:
    number, thread = await escalate(teams)
    for body in (
        channel_activity(
            teams.fake,
            thread=thread,
            channel=AGENT_CHANNEL,
            sender="29:mallory",
            aad="12345678-0000-0000-0000-000000000000",
            sender_name="Mallory",
            value={DESK_KEY: "take", "ticket": number},
        ),
        channel_activity(
            teams.fake,
            thread=thread,
            channel=AGENT_CHANNEL,
            sender="29:mallory",
            aad=None,
            sender_name="Mallory",
            text="hi",
        ),
    ):
        assert (await teams.post(body)).status_code == 200
    refusals = await teams.fake.wait_for(2, conversation_id=thread)
    assert all(r.text == messages.NOT_AN_AGENT.format(name="Mallory") for r in refusals)
    assert teams.ticket(number).assignee is None
    assert len(teams.fake.sent(PERSONAL)) == 1  # only the escalation notice reached the requester


async def test_resolving_asks_the_requester_for_a_rating_with_card_buttons(teams: TeamsBot) -> None:
    number, thread = await escalate(teams)
    agent: dict[str, Any] = {
        "thread": thread,
        "channel": AGENT_CHANNEL,
        "sender": "29:agent",
        "aad": AGENT_AAD,
        "sender_name": "Ada",
    }
    await teams.post(channel_activity(teams.fake, value={DESK_KEY: "take", "ticket": number}, **agent))
    await teams.post(channel_activity(teams.fake, value={DESK_KEY: "resolve", "ticket": number}, **agent))
    await until(lambda: any(r.card and "rate:5" in str(r.card) for r in teams.fake.sent(PERSONAL)), "a rating card")
    rating = next(r for r in teams.fake.sent(PERSONAL) if r.card and "rate:5" in str(r.card))
    assert [data[ACTION_KEY] for _, data in actions_of(rating.card)] == [f"rate:{n}" for n in range(1, 6)]
    await teams.post(press(teams.fake, {ACTION_KEY: "rate:5", "label": "5"}))
    await until(lambda: teams.ticket(number).csat_score == 5, "the rating to be stored")


# -- configuration ---------------------------------------------------------------------


async def test_local_development_mode_needs_no_tokens_and_sends_unsigned(
    settings: Settings, bot_framework: FakeBotFramework, signing_key: SigningKey
) -> None:
    bot_framework.require_auth = False
    async with running_teams(
        settings, bot_framework, signing_key, app_id=None, app_password=None, local_development=True, tenants=[]
    ) as teams:
        assert "LOCAL DEVELOPMENT" in teams.channel.describe()
        response = await teams.client.post("/api/messages", json=activity(bot_framework, text="my vpn drops"))
        assert response.status_code == 202
        [answer] = await bot_framework.wait_for(1, conversation_id=PERSONAL)
        assert answer.authorization is None
        assert bot_framework.token_requests == []
