"""Every recorded Slack payload in the shared eval set is normalised or deliberately ignored, never an exception.

Two walks: the pure ``classify`` over every payload, and every payload signed and
dispatched through the channel's real bolt app (with a recording message handler),
which must answer Slack 200 without an error logged.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_bolt.async_app import AsyncBoltRequest

from bot.app import TierZero
from bot.channel import Acceptance, InvalidMessage, Receipt
from bot.model import InboundMessage
from channels.slack import SlackChannel
from channels.slack.normalise import (
    BotIdentity,
    ButtonPress,
    Deletion,
    Edit,
    Ignored,
    SlashCommand,
    UserMessage,
    classify,
)
from tests.channels.slack.conftest import slack_config
from tests.channels.slack.fake_slack import FakeSlack, signed_headers
from tests.channels.test_http_api import serving
from tests.conftest import EVAL_DIR, make_settings
from tests.fixtures.fakes import it_retriever

SLACK_DIR = EVAL_DIR / "channels" / "slack"
REPLAY_DIR = EVAL_DIR / "channels" / "replay"
INTERACTIVE = {
    "block_actions", "block_suggestion", "dialog_cancellation", "dialog_submission", "dialog_suggestion",
    "interactive_message", "message_action", "shortcut", "view_closed", "view_submission", "workflow_step_edit",
}  # fmt: skip

pytestmark = pytest.mark.skipif(not SLACK_DIR.is_dir(), reason=f"shared eval data not found at {SLACK_DIR}")


def recorded_payloads() -> Iterator[tuple[str, Any]]:
    """(name, body) for every payload: a parsed JSON value, or a raw form-encoded string."""
    for path in sorted(SLACK_DIR.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        name = str(path.relative_to(EVAL_DIR))
        if isinstance(data, dict) and "raw_body" in data:
            yield name, data["raw_body"]
        elif isinstance(data, dict) and "payload" in data and "repo" in data:
            payloads = data["payload"] if isinstance(data["payload"], list) else [data["payload"]]
            for index, payload in enumerate(payloads):
                yield f"{name}[{index}]", payload
        else:
            yield name, data  # Web API responses, views, RTM events: not request bodies at all
    for path in sorted(REPLAY_DIR.rglob("*.json")):
        if not (path.name.startswith("slack") or path.parent.name.startswith("slack")):
            continue
        for key, payload in json.loads(path.read_text(encoding="utf-8")).items():
            if isinstance(payload, dict):
                yield f"{path.relative_to(EVAL_DIR)}:{key}", payload


def request_body(payload: Any) -> tuple[str, str]:
    """(raw body, content type) as Slack would POST it."""
    if isinstance(payload, str):
        return payload, "application/x-www-form-urlencoded"
    if isinstance(payload, dict) and "envelope_id" in payload:  # a Socket Mode envelope: its payload is the request
        payload = payload.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("command"), str):
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in payload.items()}
        return urllib.parse.urlencode(fields), "application/x-www-form-urlencoded"
    if isinstance(payload, dict) and payload.get("type") in INTERACTIVE:
        return urllib.parse.urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
    return json.dumps(payload), "application/json"


def parsed(payload: Any) -> Any:
    raw, content_type = request_body(payload)
    return AsyncBoltRequest(body=raw, headers={"content-type": content_type}).body


ALL = list(recorded_payloads())
BOT = BotIdentity(user_id="U00FAKEBOT01", bot_id="B00FAKEBOT1")


def test_there_are_payloads_to_walk() -> None:
    assert len(ALL) > 150
    assert any("replay/dm/slack.json" in name for name, _ in ALL)


@pytest.mark.parametrize(("name", "payload"), ALL, ids=[n for n, _ in ALL])
def test_every_payload_is_classified_without_an_exception(name: str, payload: Any) -> None:
    result = classify(parsed(payload), BOT)
    assert isinstance(result, UserMessage | Edit | Deletion | ButtonPress | SlashCommand | Ignored)
    if isinstance(result, UserMessage):
        message = result.message
        assert message.channel_message_id == f"{result.team_id}:{result.channel_id}:{result.ts}"
        assert message.conversation.thread_id == (result.thread_ts or result.ts)
        assert message.sender.platform_id == f"{result.team_id}:{result.user_id}"
        assert "token" not in (message.raw or {})
        assert "<@U00FAKEBOT01" not in message.text  # our own mention is removed


def test_the_walk_finds_each_kind_of_payload() -> None:
    kinds = Counter(type(classify(parsed(p), BOT)).__name__ for _, p in ALL)
    assert {"UserMessage", "Edit", "Deletion", "ButtonPress", "SlashCommand", "Ignored"} <= set(kinds), kinds


def _replay(path: str, key: str) -> Any:
    return json.loads((REPLAY_DIR / path).read_text(encoding="utf-8"))[key]


def _bolt(stem: str) -> Any:
    path = sorted(SLACK_DIR.glob(f"bolt_python_test_payloads/{stem}__*.json"))[0]
    payload = json.loads(path.read_text(encoding="utf-8"))
    return payload.get("payload", payload.get("raw_body"))


def test_recorded_dm_mention_and_thread_reply_are_normalised() -> None:
    mention = classify(_replay("dm/slack.json", "mention"), BOT)
    assert isinstance(mention, UserMessage) and mention.addressed
    assert mention.message.text == "Hey"
    assert mention.message.conversation.conversation_id == "C00FAKECHAN1"
    in_thread = classify(_replay("dm/slack.json", "dmRequest"), BOT)
    # A thread reply without a mention: ours only if we are in that thread (the channel asks the database).
    assert isinstance(in_thread, UserMessage) and not in_thread.addressed
    assert in_thread.message.conversation.thread_id == "1767376988.871629"
    direct = classify(_replay("dm/slack.json", "dmMessage"), BOT)
    assert isinstance(direct, UserMessage) and direct.addressed
    assert (direct.message.text, direct.message.conversation.conversation_id) == ("Hey!", "D0A5319PS02")


def test_recorded_edits_deletions_files_and_bots() -> None:
    identity = BotIdentity(user_id="W23456789", bot_id="B12345678")
    edit = classify(_bolt("test_message_changed__event_payload"), identity)
    assert edit == Edit("T111:C111:1665102338.901939", "updated message")
    deletion = classify(_bolt("test_message_deleted__event_payload"), identity)
    assert isinstance(deletion, Deletion)
    in_channel = _bolt("test_message_file_share__event_payload")
    assert classify(in_channel, identity) == Ignored("a channel message not addressed to us")
    as_dm = {**in_channel, "event": {**in_channel["event"], "channel_type": "im"}}
    shared = classify(as_dm, identity)
    assert isinstance(shared, UserMessage) and shared.message.attachments
    assert all(a.name and a.content_type for a in shared.message.attachments)
    bot_message = classify(_bolt("test_message_bot__bot_message_event_payload"), identity)
    assert isinstance(bot_message, Ignored)
    assert isinstance(
        classify(_bolt("test_message_bot__bot_message_event_payload"), identity, allow_bots=True), Ignored | UserMessage
    )


def test_recorded_button_press_and_slash_command() -> None:
    press = classify(_replay("actions-reactions/slack.json", "action"), BOT)
    assert isinstance(press, ButtonPress)
    assert (press.channel_id, press.thread_ts, press.action_id) == ("C00FAKECHAN1", "1767326125.870439", "info")
    command = classify(_replay("slash-commands/slack.json", "slashCommandWithArgs"), BOT)
    assert isinstance(command, SlashCommand) and command.text == "some arguments here"
    assert isinstance(classify(parsed(_bolt("test_slash_command__slash_command_body")), BOT), SlashCommand)


# -- the same payloads through the real bolt app -------------------------------------------------------


def _teams(payloads: list[tuple[str, Any]]) -> list[str]:
    """Every team and enterprise id in the payloads, so none is turned away before the listeners run."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("team_id", "enterprise_id", "team", "id") and isinstance(item, str) and item[:1] in "TE":
                    found.add(item)
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    for _, payload in payloads:
        visit(parsed(payload))
    return sorted(t for t in found if t.isalnum() and t.isupper() and 3 <= len(t) <= 31)


@pytest.fixture
async def channel(tmp_path: Path, database_url: str) -> AsyncIterator[SlackChannel]:
    fake = FakeSlack()
    async with serving(fake.asgi(), lifespan="off") as api_url:
        config = slack_config(f"{api_url}/api/", team_ids=_teams(ALL))
        settings = make_settings(tmp_path, database_url, channels={"slack": config})
        app = TierZero(settings, retriever=it_retriever())
        app.db.migrate()
        channel = SlackChannel.from_config(config, context=app.channel_context())
        try:
            yield channel
        finally:
            await channel.stop()
            app.db.dispose()


async def test_every_payload_dispatched_through_bolt_is_acknowledged(
    channel: SlackChannel, caplog: pytest.LogCaptureFixture
) -> None:
    accepted: list[InboundMessage] = []

    async def record(message: InboundMessage) -> Receipt:
        if not message.text.strip() and not message.action and not message.attachments:
            raise InvalidMessage("empty")
        accepted.append(message)
        return Receipt(Acceptance.ACCEPTED, len(accepted), 1)

    await channel.start(record)
    statuses: dict[str, int] = {}
    with caplog.at_level(logging.WARNING):
        for name, payload in ALL:
            raw, content_type = request_body(payload)
            headers = signed_headers(raw) | {"Content-Type": content_type}
            request = AsyncBoltRequest(body=raw, headers={k.lower(): v for k, v in headers.items()})
            statuses[name] = (await channel.app.async_dispatch(request)).status
    failures = {name: status for name, status in statuses.items() if status != 200}
    assert not failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert accepted, "no recorded payload reached the pipeline"
    print(json.dumps({"payloads": len(statuses), "accepted": len(accepted), "statuses": Counter(statuses.values())}))
