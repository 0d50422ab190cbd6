"""Configuring the Slack channel: off without credentials, refusing to start half-configured, the manifest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bot.app import TierZero
from bot.config import ConfigError
from bot.registry import build_channels
from bot.server import banner, prepare
from channels.slack import SlackChannel
from channels.slack.cli import slack as slack_command
from channels.slack.manifest import EVENT_SCOPES, MANIFEST_PATH, build_manifest, render
from tests.channels.slack.conftest import dm, event_body
from tests.channels.slack.fake_slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, TEAM, FakeSlack, FakeSocketMode
from tests.channels.test_http_api import serving
from tests.conftest import REPO_ROOT, make_settings
from tests.fixtures.fakes import it_retriever

FROM_ENV = {
    "bot_token": "${SLACK_BOT_TOKEN}",
    "signing_secret": "${SLACK_SIGNING_SECRET}",
    "team_ids": [TEAM],
}


def build(tmp_path: Path, section: dict[str, Any]) -> tuple[TierZero, Any]:
    app = TierZero(make_settings(tmp_path, channels={"slack": section}), retriever=it_retriever())
    return app, build_channels(app.channel_context())


def test_without_credentials_the_channel_is_reported_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    app, channels = build(tmp_path, FROM_ENV)
    try:
        assert channels.enabled == [] and "SLACK_BOT_TOKEN" in channels.disabled["slack"]
        assert "slack: disabled (no bot_token" in banner(app, channels)
    finally:
        app.db.dispose()


def test_with_credentials_from_the_environment_it_is_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    app, channels = build(tmp_path, {**FROM_ENV, "triage_channel": "C0TRIAGE1"})
    try:
        [channel] = channels.enabled
        assert isinstance(channel, SlackChannel) and channel.hosts_agents
        text = banner(app, channels)
        assert "slack: Events API at POST http://127.0.0.1:8080/slack/events" in text
        assert "triage channel C0TRIAGE1" in text
        assert BOT_TOKEN not in text and SIGNING_SECRET not in text
        assert [route.path for route in channel.routes()] == ["/slack/events"]  # type: ignore[attr-defined]
    finally:
        app.db.dispose()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"bot_token": BOT_TOKEN, "team_ids": [TEAM]}, "signing_secret is empty"),
        ({"bot_token": BOT_TOKEN, "signing_secret": "", "team_ids": [TEAM]}, "signing_secret is empty"),
        ({"bot_token": "  ", "signing_secret": SIGNING_SECRET, "team_ids": [TEAM]}, "bot_token is empty"),
        ({"signing_secret": SIGNING_SECRET, "team_ids": [TEAM]}, "bot_token is empty"),
        ({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET}, "team_ids is empty"),
        ({"bot_token": BOT_TOKEN, "mode": "socket", "team_ids": [TEAM]}, "app_token is empty"),
        ({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "team_ids": ["acme"]}, "not Slack ids: acme"),
    ],
)
def test_half_configured_slack_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: dict[str, Any], problem: str
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    app = TierZero(make_settings(tmp_path, channels={"slack": section}), retriever=it_retriever())
    try:
        with pytest.raises(ConfigError, match=problem) as refused:
            prepare(app)
        assert "config: channels.slack" in str(refused.value)
        assert BOT_TOKEN not in str(refused.value) and SIGNING_SECRET not in str(refused.value)
    finally:
        app.db.dispose()


def test_socket_mode_serves_no_http_route(tmp_path: Path) -> None:
    section = {"mode": "socket", "bot_token": BOT_TOKEN, "app_token": "xapp-1-test", "team_ids": [TEAM]}
    app, channels = build(tmp_path, section)
    try:
        [channel] = channels.enabled
        assert channel.routes() == []
        assert channel.describe().startswith("Socket Mode")
        assert not channel.hosts_agents  # type: ignore[attr-defined]
    finally:
        app.db.dispose()


def test_the_shipped_config_yaml_enables_slack_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"))["channels"]["slack"]
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_TEAM_IDS",
        "SLACK_TRIAGE_CHANNEL",
        "SLACK_AGENT_IDS",
    ):
        monkeypatch.delenv(name, raising=False)
    app, channels = build(tmp_path, section)
    app.db.dispose()
    assert "slack" in channels.disabled
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("SLACK_TEAM_IDS", f"{TEAM}, T0SECOND1")
    monkeypatch.setenv("SLACK_TRIAGE_CHANNEL", "C0TRIAGE1")
    monkeypatch.setenv("SLACK_AGENT_IDS", "U0AGENT01,U0AGENT02")
    app, channels = build(tmp_path, section)
    app.db.dispose()
    [channel] = channels.enabled
    assert "workspaces T0SECOND1, T0TEAM001; triage channel C0TRIAGE1" in channel.describe()


# -- the app manifest ----------------------------------------------------------------------------------


def test_the_committed_manifest_is_what_the_code_generates() -> None:
    assert MANIFEST_PATH.read_text(encoding="utf-8") == render(build_manifest())
    result = CliRunner().invoke(slack_command, ["manifest", "--check"])
    assert result.exit_code == 0, result.output


def test_manifest_for_a_real_url_and_for_socket_mode() -> None:
    result = CliRunner().invoke(slack_command, ["manifest", "--url", "https://help.acme.example"])
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.output)
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["request_url"] == "https://help.acme.example/slack/events"
    assert settings["interactivity"]["request_url"] == "https://help.acme.example/slack/events"
    assert manifest["features"]["slash_commands"][0]["url"] == "https://help.acme.example/slack/events"
    assert sorted(settings["event_subscriptions"]["bot_events"]) == sorted(EVENT_SCOPES)
    assert "chat:write" in manifest["oauth_config"]["scopes"]["bot"]

    socket = yaml.safe_load(CliRunner().invoke(slack_command, ["manifest", "--socket-mode"]).output)
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in socket["settings"]["event_subscriptions"]

    plain_http = CliRunner().invoke(slack_command, ["manifest", "--url", "http://insecure.example"])
    assert plain_http.exit_code != 0 and "https" in plain_http.output


def test_a_stale_manifest_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "manifest.yaml"
    stale.write_text("old: true\n")
    monkeypatch.setattr("channels.slack.cli.MANIFEST_PATH", stale)
    result = CliRunner().invoke(slack_command, ["manifest", "--check"])
    assert result.exit_code == 1 and "out of date" in result.output


async def test_socket_mode_receives_events_and_acknowledges_after_the_commit(tmp_path: Path, database_url: str) -> None:
    fake = FakeSlack(users={"U0ALICE01": "Alice"})
    socket_mode = FakeSocketMode()
    await socket_mode.start()
    fake.socket_mode_url = socket_mode.url
    try:
        async with serving(fake.asgi(), lifespan="off") as api_url:
            section = {
                "mode": "socket",
                "bot_token": BOT_TOKEN,
                "app_token": APP_TOKEN,
                "team_ids": [TEAM],
                "api_url": f"{api_url}/api/",
            }
            settings = make_settings(tmp_path, database_url, channels={"slack": section})
            app = TierZero(settings, retriever=it_retriever())
            runtime, _ = prepare(app)
            try:
                async with runtime:
                    await socket_mode.connected()
                    body = event_body(dm("my vpn drops", ts="1712000000.000100"))
                    ack = await socket_mode.push("events_api", body, "env-1")
                    assert ack == {"envelope_id": "env-1"}
                    [answer] = await fake.wait_for("chat.postMessage", thread_ts="1712000000.000100")
                    assert "Turn off Wi-Fi power saving." in str(answer.args["blocks"])
                    # The same envelope again (Slack redelivers unacknowledged ones): no second answer.
                    await socket_mode.push("events_api", body, "env-2")
                assert len(fake.calls_to("chat.postMessage")) == 1
                assert fake.calls_to("apps.connections.open")
            finally:
                app.db.dispose()
    finally:
        await socket_mode.stop()


async def test_socket_mode_with_slack_refusing_the_app_token_does_not_block_start_or_stop(
    tmp_path: Path, database_url: str
) -> None:
    fake = FakeSlack()
    async with serving(fake.asgi(), lifespan="off") as api_url:
        section = {
            "mode": "socket",
            "bot_token": BOT_TOKEN,
            "app_token": "xapp-1-revoked",
            "team_ids": [TEAM],
            "api_url": f"{api_url}/api/",
        }
        app = TierZero(make_settings(tmp_path, database_url, channels={"slack": section}), retriever=it_retriever())
        runtime, _ = prepare(app)
        try:
            async with asyncio.timeout(10):
                async with runtime:
                    await fake.wait_for("apps.connections.open")
                    assert runtime.running
        finally:
            app.db.dispose()
