"""Requesters in Slack: mentions and threads, edits and deletions, files, bad input, /tierzero."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot import messages as bot_messages
from channels.slack import SlackChannel, messages
from tests.channels.slack.conftest import (
    ALICE,
    ALICE_DM,
    TRIAGE,
    Slack,
    buttons_of,
    channel_message,
    dm,
    event_body,
    next_ts,
    running_slack,
)
from tests.channels.slack.fake_slack import BOT_ID, BOT_USER, TEAM, FakeSlack
from ticketing.models import Direction, Message

GENERAL = "C0GENERAL"


def inbound(slack: Slack) -> list[Message]:
    with slack.app.db.transaction() as session:
        rows = list(session.scalars(select(Message).where(Message.direction == Direction.INBOUND).order_by(Message.id)))
        session.expunge_all()
        return rows


async def test_a_mention_starts_a_thread_and_replies_in_it_need_no_mention(slack: Slack) -> None:
    root = next_ts()
    await slack.post(event_body(channel_message(f"<@{BOT_USER}> my vpn keeps dropping", channel=GENERAL, ts=root)))
    await slack.api.wait_for("chat.postMessage", channel=GENERAL, thread_ts=root)
    # A reply in that thread, without a mention, is for us: we are part of the thread.
    await slack.post(event_body(channel_message("still drops", channel=GENERAL, thread_ts=root)))
    await slack.api.wait_for("chat.postMessage", 2, channel=GENERAL, thread_ts=root)
    # Chatter elsewhere in the channel, and replies in threads we are not in, are not.
    await slack.post(event_body(channel_message("lunch?", channel=GENERAL)))
    await slack.post(event_body(channel_message("my vpn drops", channel=GENERAL, thread_ts=next_ts())))
    await slack.runtime.stop()
    assert [m.text for m in inbound(slack)] == ["my vpn keeps dropping", "still drops"]
    assert len(slack.api.calls_to("chat.postMessage", channel=GENERAL)) == 2


async def test_our_own_and_other_bots_messages_are_ignored(slack: Slack) -> None:
    await slack.post(event_body(dm("Here is what I found", user=BOT_USER, bot_id=BOT_ID)))
    await slack.post(event_body(dm("Deploy finished", user="U0CIBOT01", bot_id="B0CIBOT01")))
    classic_bot = dm("Build failed", subtype="bot_message", bot_id="B0CIBOT01")
    del classic_bot["user"]  # classic integrations have no user id
    await slack.post(event_body(classic_bot))
    await slack.post(event_body(dm("my vpn drops")))
    await slack.api.wait_for("chat.postMessage", channel=ALICE_DM)
    await slack.runtime.stop()
    assert [m.text for m in inbound(slack)] == ["my vpn drops"]


async def test_edits_and_deletions_update_the_stored_message(slack: Slack) -> None:
    ts = next_ts()
    await slack.post(event_body(dm("my vpn drops", ts=ts)))
    await slack.api.wait_for("chat.postMessage", channel=ALICE_DM, thread_ts=ts)
    edited = {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": ALICE_DM,
        "channel_type": "im",
        "ts": next_ts(),
        "message": {"type": "message", "user": ALICE, "text": "my VPN drops every hour", "ts": ts},
        "previous_message": {"type": "message", "user": ALICE, "text": "my vpn drops", "ts": ts},
    }
    assert (await slack.post(event_body(edited))).status_code == 200
    [message] = inbound(slack)
    assert message.text == "my VPN drops every hour"
    assert message.parts["original_text"] == "my vpn drops"
    deleted = {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": ALICE_DM,
        "channel_type": "im",
        "ts": next_ts(),
        "deleted_ts": ts,
        "previous_message": {"type": "message", "user": ALICE, "text": "my VPN drops every hour", "ts": ts},
    }
    assert (await slack.post(event_body(deleted))).status_code == 200
    [message] = inbound(slack)
    assert "deleted_at" in message.parts
    # Neither caused another answer.
    await slack.runtime.stop()
    assert len(slack.api.calls_to("chat.postMessage", channel=ALICE_DM)) == 1


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # 2 KiB and a bit


def shared_file(slack: Slack, name: str, *, size: int | None = None, file_id: str = "F0SHOT001") -> dict[str, Any]:
    files_url = slack.runtime.channels[0].files.files_url  # type: ignore[attr-defined]
    return {
        "id": file_id,
        "name": name,
        "mimetype": "image/png",
        "size": size if size is not None else len(PNG),
        "url_private": f"{files_url}{file_id}/{name}?private",
        "url_private_download": f"{files_url}{file_id}/{name}",
    }


async def fetched(slack: Slack, count: int = 1) -> list[dict[str, Any]]:
    """The first inbound message's attachments once ``count`` of them have a download outcome recorded."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        messages_in = inbound(slack)
        attachments = list(messages_in[0].attachments) if messages_in else []
        done = [a for a in attachments if "note" in a or str(a.get("url", "")).startswith("file:")]
        if len(done) >= count:
            return attachments
        assert asyncio.get_running_loop().time() < deadline, f"no download outcome recorded: {attachments}"
        await asyncio.sleep(0.02)


async def test_file_shares_are_downloaded_with_the_bot_token_and_stored(slack: Slack) -> None:
    slack.api.files["F0SHOT001/error.png"] = PNG
    files = [shared_file(slack, "error.png"), {"id": "F0GONE001", "mode": "tombstone"}]
    await slack.post(event_body(dm("vpn error, screenshot attached", subtype="file_share", files=files)))
    await slack.api.wait_for("chat.postMessage", channel=ALICE_DM)
    [attachment] = await fetched(slack)
    assert attachment["name"] == "error.png" and attachment["size"] == len(PNG)
    assert attachment["source_url"] == files[0]["url_private_download"]
    stored = Path(attachment["url"].removeprefix("file://"))
    assert stored.read_bytes() == PNG
    assert [d.authorization for d in slack.api.downloads] == ["Bearer xoxb-test-token-1234"]
    [message] = inbound(slack)
    assert message.author_id == f"{TEAM}:{ALICE}"
    assert "token" not in (message.raw or {})


async def test_files_over_the_size_limit_are_refused_but_listed(tmp_path: Path, database_url: str) -> None:
    fake = FakeSlack(files={"F0BIG0001/big.png": PNG, "F0BIG0002/big.png": PNG})
    async with running_slack(tmp_path, database_url, fake, attachments={"max_bytes": 1024}) as slack:
        # Slack's metadata says small; the server's Content-Length tells the truth.
        first = shared_file(slack, "big.png", size=100, file_id="F0BIG0001")
        await slack.post(event_body(dm("logs", subtype="file_share", files=[first])))
        [attachment] = await fetched(slack)
        assert attachment["note"] == "not kept: larger than 1 KiB"
        assert attachment["url"] == first["url_private_download"]  # the metadata is kept
        # No Content-Length at all: the bytes are counted while they arrive.
        fake.hide_file_length = True
        second = shared_file(slack, "big.png", size=100, file_id="F0BIG0002")
        thread = next_ts()
        await slack.post(event_body(dm("more logs", ts=thread, subtype="file_share", files=[second])))
        deadline = asyncio.get_running_loop().time() + 10
        while "note" not in (inbound(slack)[-1].attachments or [{}])[0]:
            assert asyncio.get_running_loop().time() < deadline, "no outcome for the chunked download"
            await asyncio.sleep(0.02)
        assert inbound(slack)[-1].attachments[0]["note"] == "not kept: larger than 1 KiB"
        assert len(fake.downloads) == 2
        assert not list(tmp_path.rglob("*big.png"))


async def test_a_failed_download_keeps_the_message_and_the_files_metadata(slack: Slack) -> None:
    missing = shared_file(slack, "gone.png", file_id="F0MISSING")
    elsewhere = shared_file(slack, "x.png") | {"url_private_download": "https://attacker.example/x.png"}
    await slack.post(event_body(dm("see attached", subtype="file_share", files=[missing, elsewhere])))
    await slack.api.wait_for("chat.postMessage", channel=ALICE_DM)  # answered as usual
    first, second = await fetched(slack, 2)
    assert first["note"] == "not kept: download failed (HTTP 404)" and first["name"] == "gone.png"
    # The bot token is sent to Slack's file host only.
    assert second["note"] == "not kept: no Slack download address"
    assert [d.method for d in slack.api.downloads] == ["F0MISSING/gone.png"]


async def test_an_empty_mention_gets_a_private_explanation_not_an_error(slack: Slack) -> None:
    ts = next_ts()
    response = await slack.post(event_body(channel_message(f"<@{BOT_USER}>", channel=GENERAL, ts=ts)))
    assert response.status_code == 200
    [notice] = await slack.api.wait_for("chat.postEphemeral", channel=GENERAL, user=ALICE)
    assert notice.args["text"] == messages.INVALID_MESSAGE.format(reason=bot_messages.EMPTY_MESSAGE)
    assert notice.args["thread_ts"] == ts
    assert inbound(slack) == []


async def test_a_failed_commit_answers_500_so_slack_retries_and_the_retry_is_answered(slack: Slack) -> None:
    [channel] = slack.runtime.channels
    assert isinstance(channel, SlackChannel)
    accept = channel._on_message
    assert accept is not None

    async def database_down(message: Any) -> Any:
        raise ConnectionError("database unavailable")

    channel._on_message = database_down
    body = event_body(dm("my vpn drops"))
    failed = await slack.post(body)
    assert failed.status_code == 500
    assert "database" not in failed.text
    channel._on_message = accept
    retried = await slack.post(body, retry=1)
    assert retried.status_code == 200
    await slack.api.wait_for("chat.postMessage", channel=ALICE_DM)
    await slack.runtime.stop()
    assert len(slack.api.calls_to("chat.postMessage", channel=ALICE_DM)) == 1


# -- /tierzero ------------------------------------------------------------------------------------


def command(text: str, *, team: str = TEAM, user: str = ALICE) -> dict[str, str]:
    return {
        "token": "legacy",
        "team_id": team,
        "team_domain": "acme",
        "channel_id": GENERAL,
        "channel_name": "general",
        "user_id": user,
        "user_name": "alice",
        "command": "/tierzero",
        "text": text,
        "api_app_id": "A0APP0001",
        "response_url": "https://hooks.slack.com/commands/T/1/x",
        "trigger_id": f"{next_ts()}.trigger",
    }


async def test_tierzero_without_a_question_explains_itself_privately(slack: Slack) -> None:
    response = await slack.post_form(command(""))
    assert response.status_code == 200
    assert response.json() == {
        "response_type": "ephemeral",
        "text": messages.COMMAND_USAGE.format(command="/tierzero"),
    }


async def test_tierzero_question_is_answered_in_a_private_thread(slack: Slack) -> None:
    response = await slack.post_form(command("my vpn keeps disconnecting"))
    assert response.status_code == 200
    assert response.json()["response_type"] == "ephemeral"
    [opened] = slack.api.calls_to("conversations.open")
    assert opened.args["users"] == ALICE
    dm_channel = opened.result["channel"]["id"]
    [asked, answer] = await slack.api.wait_for("chat.postMessage", 2, channel=dm_channel)
    assert asked.args["text"] == messages.ASKED_PRIVATELY.format(question="my vpn keeps disconnecting")
    assert answer.args["thread_ts"] == asked.result["ts"]
    assert "Turn off Wi-Fi power saving." in json.dumps(answer.args["blocks"])


async def test_tierzero_tickets_lists_the_requesters_open_tickets(slack: Slack) -> None:
    none = await slack.post_form(command("tickets"))
    assert none.json() == {"response_type": "ephemeral", "text": messages.NO_OPEN_TICKETS}
    await slack.post(event_body(dm("please order pizza for the team")))  # nothing in the KB: escalated
    await slack.api.wait_for("chat.postMessage", channel=TRIAGE)
    [ticket] = slack.tickets()
    listed = await slack.post_form(command("tickets"))
    assert listed.json()["response_type"] == "ephemeral"
    assert f"*{ticket.number}*" in listed.json()["text"]
    someone_else = await slack.post_form(command("tickets", user="U0BOB0001"))
    assert someone_else.json()["text"] == messages.NO_OPEN_TICKETS


async def test_tierzero_from_a_workspace_we_do_not_serve(slack: Slack) -> None:
    response = await slack.post_form(command("my vpn drops", team="T0OTHER01"))
    assert response.json() == {"response_type": "ephemeral", "text": messages.NOT_SERVED}
    assert not slack.api.calls_to("conversations.open")


async def test_tierzero_when_slack_cannot_open_the_dm(tmp_path: Path, database_url: str, fake: FakeSlack) -> None:
    fake.fail("conversations.open", error="user_disabled")
    async with running_slack(tmp_path, database_url, fake) as slack:
        response = await slack.post_form(command("my vpn drops"))
        assert response.json() == {"response_type": "ephemeral", "text": messages.COMMAND_FAILED}
        assert inbound(slack) == []


async def test_a_commit_slower_than_the_ack_deadline_fails_and_the_retry_is_a_duplicate(
    tmp_path: Path, database_url: str, fake: FakeSlack
) -> None:
    async with running_slack(tmp_path, database_url, fake, ack_timeout_seconds=0.5) as slack:
        [channel] = slack.runtime.channels
        assert isinstance(channel, SlackChannel)
        accept = channel._on_message
        assert accept is not None
        committed = asyncio.Event()

        async def slow(message: Any) -> Any:
            # The commit runs to its end even when the deadline passes meanwhile...
            receipt = await asyncio.shield(accept(message))
            committed.set()
            await asyncio.sleep(5)  # ...but the ack would come too late (e.g. a stalled machine)
            return receipt

        channel._on_message = slow
        body = event_body(dm("my vpn drops"))
        late = await slack.post(body)
        assert late.status_code == 500
        await asyncio.wait_for(committed.wait(), 10)
        channel._on_message = accept
        assert (await slack.post(body, retry=1)).status_code == 200
        await fake.wait_for("chat.postMessage", channel=ALICE_DM)
    assert len(fake.calls_to("chat.postMessage", channel=ALICE_DM)) == 1


async def test_clarifying_questions_offer_their_options_as_buttons(slack: Slack) -> None:
    ts = next_ts()
    await slack.post(event_body(dm("how do I add a printer", ts=ts)))
    [question] = await slack.api.wait_for("chat.postMessage", channel=ALICE_DM, thread_ts=ts)
    values = [b["value"] for b in buttons_of(question.args)]
    assert values == ["choose:printer-add", "choose:printer-stuck", "human"]
