"""The pure parts of the Teams channel: normalising, cards, settings, the app package."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import SecretStr

from bot import messages as core_messages
from bot.channel import ChannelContext, ChannelDisabled, PermanentDeliveryError, TemporaryDeliveryError
from bot.config import ConfigError
from bot.desk import TicketView, TimelineEntry
from bot.model import Button, Citation, ConversationRef, OutboundReply, ReplyKind
from channels.teams import TeamsChannel, cards
from channels.teams.auth import ConnectorToken
from channels.teams.cli import teams as teams_command
from channels.teams.connector import BotConnector
from channels.teams.normalise import (
    ACTION_KEY,
    BotAdded,
    Ignored,
    MessageDeleted,
    MessageEdited,
    TeamsMessage,
    message_key,
    normalise,
    storable_id,
)
from tests.channels.teams.conftest import APP_ID, APP_PASSWORD, BOT_ID, TENANT
from tests.channels.teams.fakes import FakeBotFramework
from tests.conftest import make_settings

BASE: dict[str, Any] = {
    "type": "message",
    "id": "1767000000001",
    "channelId": "msteams",
    "serviceUrl": "https://smba.trafficmanager.net/amer/",
    "from": {"id": "29:alice", "name": "Alice", "aadObjectId": "00000000-1111-2222-3333-444444444444"},
    "recipient": {"id": BOT_ID, "name": "tierzero"},
    "conversation": {"id": "a:chat", "conversationType": "personal", "tenantId": TENANT},
    "channelData": {"tenant": {"id": TENANT}},
}


def message(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


# -- normalise ---------------------------------------------------------------------------


def test_the_bots_mention_is_removed_and_other_mentions_keep_their_name() -> None:
    event = normalise(
        message(
            text="<at>tierzero</at>\u00a0<at>Bob</at> and I cannot print",
            entities=[
                {"type": "mention", "text": "<at>tierzero</at>", "mentioned": {"id": BOT_ID, "name": "tierzero"}},
                {"type": "mention", "text": "<at>Bob</at>", "mentioned": {"id": "29:bob", "name": "Bob"}},
            ],
        )
    )
    assert isinstance(event, TeamsMessage)
    assert event.text == "Bob and I cannot print"
    assert event.mentions_bot


def test_a_mention_entity_without_text_is_found_by_name() -> None:
    event = normalise(
        message(
            text="<at>tierzero</at> Hey",
            entities=[{"type": "mention", "mentioned": {"id": BOT_ID, "name": "tierzero"}}],
        )
    )
    assert isinstance(event, TeamsMessage) and event.text == "Hey"


def test_the_sender_is_known_by_aad_object_id_and_the_message_by_conversation_and_activity() -> None:
    event = normalise(message(text="hello"))
    assert isinstance(event, TeamsMessage)
    assert event.platform_id == "00000000-1111-2222-3333-444444444444"
    assert event.message_key == "a:chat|1767000000001"
    assert event.reference["serviceUrl"] == BASE["serviceUrl"]
    assert event.reference["conversation"]["id"] == "a:chat"


def test_long_ids_are_stored_as_digests() -> None:
    long_conversation = "a:" + "x" * 300
    assert len(message_key(long_conversation, "1")) <= 255
    assert message_key(long_conversation, "1") != message_key(long_conversation, "2")
    assert storable_id("short") == "short"


def test_our_button_presses_are_actions_and_other_apps_cards_are_ignored() -> None:
    ours = normalise(message(value={ACTION_KEY: "solved", "label": "That solved it"}))
    theirs = normalise(message(value={"actionId": "info"}))
    assert isinstance(ours, TeamsMessage) and ours.value == {ACTION_KEY: "solved", "label": "That solved it"}
    assert isinstance(theirs, Ignored)


def test_edits_and_soft_deletes_are_classified_with_the_message_key() -> None:
    edited = normalise(message(type="messageUpdate", text="new", channelData={"eventType": "editMessage"}))
    deleted = normalise(message(type="messageDelete", channelData={"eventType": "softDeleteMessage"}))
    undeleted = normalise(message(type="messageUpdate", channelData={"eventType": "undeleteMessage"}))
    assert edited == MessageEdited("a:chat", "1767000000001", "new")
    assert deleted == MessageDeleted("a:chat", "1767000000001")
    assert isinstance(undeleted, Ignored)


def test_files_become_attachments_and_the_html_copy_of_the_text_does_not() -> None:
    event = normalise(
        message(
            text="see attached",
            attachments=[
                {"contentType": "text/html", "content": "<p>see attached</p>"},
                {
                    "contentType": "application/vnd.microsoft.teams.file.download.info",
                    "name": "error.png",
                    "content": {"downloadUrl": "https://files.example/error.png", "fileType": "png"},
                },
            ],
        )
    )
    assert isinstance(event, TeamsMessage)
    assert [(a.name, a.url) for a in event.attachments] == [("error.png", "https://files.example/error.png")]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "message",
        {"type": 5},
        {"type": "message"},
        {"type": "message", "conversation": {"id": "a:x"}},
        {"type": "message", "conversation": {"id": "a:x"}, "from": {"id": ["x"]}, "id": "1"},
        {"type": "message", "conversation": "x", "from": None, "recipient": 3, "entities": "x", "text": 5},
        {**BASE, "text": "hi", "from": {"id": "29:a", "name": {"nested": True}}},
        {
            **BASE,
            "text": "hi",
            "conversation": {"id": "a:chat", "isGroup": "yes"},
            "entities": [None, 1, {"type": "mention"}],
        },
        {**BASE, "type": "conversationUpdate", "membersAdded": [None, "x", {"id": 5}]},
        {**BASE, "type": "invoke", "name": "adaptiveCard/action", "value": {"action": "x"}},
    ],
)
def test_odd_payloads_never_raise(payload: Any) -> None:
    event = normalise(payload)
    assert isinstance(event, TeamsMessage | Ignored | BotAdded | MessageEdited | MessageDeleted)


def test_a_personal_chat_member_added_is_a_welcome_and_a_team_member_added_is_not() -> None:
    personal = normalise(message(type="conversationUpdate", membersAdded=[{"id": "29:alice"}]))
    team = normalise(
        message(
            type="conversationUpdate",
            conversation={"id": "19:general@thread.tacv2", "conversationType": "channel"},
            membersAdded=[{"id": "29:newcomer"}],
        )
    )
    assert isinstance(personal, BotAdded)
    assert isinstance(team, Ignored)


# -- cards -------------------------------------------------------------------------------


def test_an_answer_card_lists_sources_as_links_and_buttons_as_submit_actions() -> None:
    citation = Citation("VPN keeps disconnecting", "vpn-drops", url="https://kb.example/vpn")
    text = "Here's what our knowledge base says:\n\nTurn it off.\n\n" + core_messages.SOURCE_LINE.format(
        title=citation.title, link=citation.link
    )
    reply = OutboundReply(
        ConversationRef("teams", "a:chat"),
        text,
        ReplyKind.ANSWER,
        citations=(citation,),
        buttons=(Button("That solved it", "solved"),),
    )
    activity = cards.reply_activity(reply)
    [attachment] = activity.attachments
    card = attachment.content
    assert attachment.content_type == cards.ADAPTIVE_CARD
    blocks = [b.get("text", "") for b in card["body"] if b["type"] == "TextBlock"]
    assert blocks[0] == "Here's what our knowledge base says:\n\nTurn it off."
    assert "- [VPN keeps disconnecting](https://kb.example/vpn)" in blocks
    [action_set] = [b for b in card["body"] if b["type"] == "ActionSet"]
    assert action_set["actions"] == [
        {"type": "Action.Submit", "title": "That solved it", "data": {ACTION_KEY: "solved", "label": "That solved it"}}
    ]
    assert card["fallbackText"].startswith(text)
    assert activity.summary == "Here's what our knowledge base says:"


def test_a_plain_notice_is_plain_text() -> None:
    activity = cards.reply_activity(OutboundReply(ConversationRef("teams", "a:chat"), "Glad that helped!"))
    assert (activity.text, activity.text_format, activity.attachments) == ("Glad that helped!", "plain", None)


def test_an_agents_reply_says_who_wrote_it() -> None:
    ref = ConversationRef("teams", "a:chat")
    plain = cards.reply_activity(
        OutboundReply(ref, "Restart it.", ReplyKind.AGENT, author="slack:T1:U1", author_name="Dana Kim")
    )
    assert plain.text == "Dana Kim (IT support):\n\nRestart it."
    unnamed = cards.reply_activity(OutboundReply(ref, "Hi", ReplyKind.AGENT, author="email:ada@example.com"))
    assert unnamed.text == "ada@example.com (IT support):\n\nHi"
    card = cards.reply_card(
        OutboundReply(ref, "Which?", ReplyKind.AGENT, buttons=(Button("A", "choose:a"),), author_name="Dana Kim")
    )
    assert card["body"][0] == {"type": "TextBlock", "text": "Dana Kim (IT support):", "wrap": True, "weight": "Bolder"}
    assert cards.agent_header(OutboundReply(ref, "Glad that helped!")) is None


def test_many_buttons_are_split_into_rows() -> None:
    buttons = tuple(Button(str(n), f"choose:{n}") for n in range(8))
    card = cards.reply_card(
        OutboundReply(ConversationRef("teams", "a"), "Which one?", ReplyKind.CLARIFY, buttons=buttons)
    )
    rows = [b["actions"] for b in card["body"] if b["type"] == "ActionSet"]
    assert [len(r) for r in rows] == [5, 3]


def view(**changes: Any) -> TicketView:
    values: dict[str, Any] = {
        "number": "TZ-1001",
        "subject": "VPN drops",
        "status": "open",
        "priority": "high",
        "category": "network",
        "group": None,
        "tier": 1,
        "assignee": None,
        "owner": "queue",
        "requester_name": "Alice",
        "requester_channel": "teams",
        "requester_id": "aad-1",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "first_response_due": datetime(2026, 1, 1, 9, 30, tzinfo=UTC),
        "resolution_due": None,
        "sla_state": "at_risk",
        "summary": "Requester: my vpn drops",
    }
    values.update(changes)
    return TicketView(**values)


def test_the_ticket_card_offers_what_can_be_done_next() -> None:
    def titles(card: dict[str, Any]) -> list[str]:
        return [a["title"] for b in card["body"] if b["type"] == "ActionSet" for a in b["actions"]]

    queued = cards.ticket_card(view())
    taken = cards.ticket_card(view(owner="agent", assignee="teams:aad-agent", status="open"))
    resolved = cards.ticket_card(view(status="resolved", owner="bot"))
    assert titles(queued) == ["Take", "Resolve"]
    assert titles(taken) == ["Hand back to bot", "Resolve"]
    assert titles(resolved) == []
    facts = {f["title"]: f["value"] for b in queued["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["SLA"] == "at risk"
    assert facts["First response due"] == "2026-01-01 09:30 UTC"


def test_timeline_entries_read_as_sentences() -> None:
    entry = TimelineEntry(7, "requester_message", "Alice", "still broken", datetime(2026, 1, 1, tzinfo=UTC), "teams")
    assert cards.timeline_text(entry) == "Alice (requester): still broken"


# -- settings ----------------------------------------------------------------------------


def context(tmp_path: Path) -> ChannelContext:
    from bot.app import TierZero

    app = TierZero(make_settings(tmp_path))
    return app.channel_context()


def test_without_an_app_id_the_channel_is_disabled(tmp_path: Path) -> None:
    with pytest.raises(ChannelDisabled, match="TEAMS_APP_ID"):
        TeamsChannel.from_config({}, context=context(tmp_path))


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"app_id": APP_ID, "tenants": [TENANT]}, "app_password"),
        ({"app_id": APP_ID, "app_password": "", "tenants": [TENANT]}, "too short"),
        ({"app_id": APP_ID, "app_password": APP_PASSWORD}, "tenants"),
        ({"app_id": "my-bot", "app_password": APP_PASSWORD, "tenants": [TENANT]}, "GUID"),
        (
            {"app_id": APP_ID, "app_password": APP_PASSWORD, "tenants": [TENANT], "local_development": True},
            "local_development",
        ),
        ({"app_id": APP_ID, "app_password": APP_PASSWORD, "tenants": [TENANT], "colour": "blue"}, "unknown key"),
    ],
)
def test_a_bad_section_refuses_to_start_naming_the_problem(
    tmp_path: Path, section: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        TeamsChannel.from_config(section, context=context(tmp_path))
    assert APP_PASSWORD not in str(raised.value)


def test_tenants_may_be_one_comma_separated_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAMS_TENANT_IDS", f"{TENANT}, 99999999-8888-7777-6666-555555555555")
    section = {"app_id": APP_ID, "app_password": APP_PASSWORD, "tenants": "${TEAMS_TENANT_IDS}"}
    channel = TeamsChannel.from_config(section, context=context(tmp_path))
    assert f"tenants {TENANT}, 99999999-8888-7777-6666-555555555555" in channel.describe()
    assert not channel.hosts_agents


def test_local_development_starts_with_a_loud_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    channel = TeamsChannel.from_config({"local_development": True}, context=context(tmp_path))
    assert "LOCAL DEVELOPMENT" in channel.describe()
    assert any("WITHOUT authentication" in r.message and r.levelname == "WARNING" for r in caplog.records)


def test_the_shipped_config_file_has_a_teams_section_that_is_off_without_credentials(tmp_path: Path) -> None:
    from tests.conftest import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    section = raw["channels"]["teams"]
    with pytest.raises(ChannelDisabled):
        TeamsChannel.from_config(section, context=context(tmp_path))


# -- the app package -----------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    # The image data decompresses to one filter byte + 4 bytes per pixel per row.
    idat_length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_length])
    assert len(raw) == height * (1 + 4 * width)
    return width, height


def test_the_manifest_command_writes_an_uploadable_package(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"channels": {"teams": {"app_id": APP_ID, "manifest": {"short_name": "IT Help"}}}})
    )
    out = tmp_path / "pkg" / "teams.zip"
    result = CliRunner().invoke(teams_command, ["manifest", "--out", str(out)], env={"TIERZERO_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    with zipfile.ZipFile(out) as package:
        assert sorted(package.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(package.read("manifest.json"))
        assert png_size(package.read("color.png")) == (192, 192)
        assert png_size(package.read("outline.png")) == (32, 32)
    assert manifest["id"] == APP_ID
    assert manifest["bots"][0]["botId"] == APP_ID
    assert manifest["bots"][0]["scopes"] == ["personal", "team", "groupChat"]
    assert manifest["name"]["short"] == "IT Help"
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}


def test_the_manifest_command_needs_an_app_id(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("channels:\n  teams:\n    app_id: ${UNSET_TEAMS_APP_ID_FOR_TEST}\n")
    result = CliRunner().invoke(teams_command, ["manifest"], env={"TIERZERO_CONFIG": str(config)})
    assert result.exit_code == 1
    assert "TEAMS_APP_ID" in result.output


def test_local_development_is_refused_on_a_public_interface(tmp_path: Path) -> None:
    from bot.app import TierZero

    app = TierZero(make_settings(tmp_path, server={"host": "0.0.0.0"}))
    with pytest.raises(ConfigError, match="loopback"):
        TeamsChannel.from_config({"local_development": True}, context=app.channel_context())


# -- delivery errors -----------------------------------------------------------------------


async def test_a_connector_that_cannot_be_reached_is_a_temporary_error() -> None:
    connector = BotConnector(app_id=None, token=None, timeout_seconds=2)
    with pytest.raises(TemporaryDeliveryError, match="unreachable"):
        await connector.post(
            service_url="http://127.0.0.1:9/", conversation_id="a:chat", activity=cards.text_activity("x")
        )
    await connector.close()


async def test_a_rejected_app_password_is_a_permanent_error(bot_framework: FakeBotFramework) -> None:
    token = ConnectorToken(
        app_id=APP_ID,
        password=SecretStr(""),
        token_url=bot_framework.token_url,
        scope="https://api.botframework.com/.default",
    )
    with pytest.raises(PermanentDeliveryError, match="app_password"):
        await token.refresh_if_needed()


async def test_a_reference_without_an_address_is_a_permanent_error() -> None:
    connector = BotConnector(app_id=None, token=None, timeout_seconds=2)
    with pytest.raises(PermanentDeliveryError):
        await connector.send({"conversation": {"id": "a:chat"}}, cards.text_activity("x"))
