"""The ``tierzero`` command line: tickets, outbox and configuration, on both databases."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from bot.app import TierZero
from bot.cli import main
from bot.config import load_settings
from bot.model import ConversationRef, InboundMessage, Participant, ReplyKind
from tests.conftest import REPO_ROOT
from tests.fixtures.fakes import RecordingChannel, it_retriever

SECRET = "tok-3f9a-do-not-print"


def write_config(folder: Path, database_url: str | None = None, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "data_dir": str(folder / "data"),
        "kb": {"path": str(REPO_ROOT / "kb"), "auto_index": False},
        "channels": {},
        **sections,
    }
    if database_url:
        config["database"] = {"url": database_url}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def tierzero(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def succeeded(result: Result) -> str:
    """What a successful command printed on stdout."""
    assert result.exit_code == 0, result.output
    assert result.exception is None
    return result.stdout


def one_line_error(result: Result) -> str:
    """The message of a clean failure: exit code 1, a single "Error: ..." line, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: ")
    return line.removeprefix("Error: ")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # Commands configure the root logger for a terminal (CliRunner's, closed afterwards).
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    return write_config(tmp_path, database_url)


async def open_ticket(config: Path, text: str = "can you order pizza for the team") -> None:
    """A requester's question the bot cannot answer: it opens TZ-1001 through the pipeline."""
    app = TierZero(load_settings(config), retriever=it_retriever())
    channel = RecordingChannel()
    try:
        async with app.runtime([channel]) as runtime:
            receipt = await runtime.pipeline.accept(
                InboundMessage(
                    channel_message_id="m1",
                    conversation=ConversationRef("test", "c1"),
                    sender=Participant("test", "U1", display_name="Alice"),
                    text=text,
                )
            )
            await asyncio.wait_for(receipt.handled, 10)
            [reply] = await channel.wait_for(1)
            assert reply.kind == ReplyKind.ESCALATION and reply.ticket_number == "TZ-1001"
    finally:
        app.db.dispose()


# -- tickets ---------------------------------------------------------------------------------


def test_tickets_list_on_an_empty_database(config: Path) -> None:
    assert succeeded(tierzero(config, "tickets", "list")) == "no tickets\n"


async def test_a_ticket_opened_by_the_bot_is_listed_and_shown(config: Path) -> None:
    await open_ticket(config)

    [row] = succeeded(tierzero(config, "tickets", "list")).splitlines()
    assert row.split()[:4] == ["TZ-1001", "new", "normal", "-"]
    assert row.endswith("can you order pizza for the team")

    shown = succeeded(tierzero(config, "tickets", "show", "tz-1001"))
    assert shown.startswith("TZ-1001: can you order pizza for the team\n")
    assert "status: new" in shown
    assert "requester: Alice (test)" in shown
    assert "- can you order pizza for the team" in shown  # the description: what the requester wrote
    [event] = shown.split("history:\n")[1].splitlines()
    assert event.split()[2:] == ["opened", "bot", "via", "test"]


async def test_agents_work_a_ticket_and_steps_out_of_order_are_refused(config: Path) -> None:
    await open_ticket(config)

    def act(*args: str) -> Result:
        return tierzero(config, "tickets", *args)

    assert one_line_error(act("reply", "TZ-1001", "Hello!", "--agent", "bob")) == (
        "take TZ-1001 before replying (assignee: nobody)"
    )
    assert succeeded(act("take", "TZ-1001", "--agent", "bob")) == (
        "TZ-1001: status open, conversation owner agent, assignee bob\n"
    )
    assert one_line_error(act("take", "TZ-1001", "--agent", "carol")) == "TZ-1001 is already taken by bob"
    assert one_line_error(act("reply", "TZ-1001", "   ", "--agent", "bob")) == "the reply is empty"
    assert succeeded(act("reply", "TZ-1001", "Pizza is on its way.", "--agent", "bob")).startswith(
        "TZ-1001: status open"
    )
    assert succeeded(act("handback", "TZ-1001", "--agent", "bob")) == (
        "TZ-1001: status open, conversation owner bot, assignee -\n"
    )
    assert succeeded(act("resolve", "TZ-1001", "--agent", "bob")) == (
        "TZ-1001: status resolved, conversation owner closed, assignee -\n"
    )
    assert one_line_error(act("resolve", "TZ-1001", "--agent", "bob")) == "TZ-1001 is resolved"
    assert one_line_error(act("take", "TZ-1001", "--agent", "bob")) == "TZ-1001 is resolved"

    history = succeeded(act("show", "TZ-1001")).split("history:\n")[1].splitlines()
    assert [(line.split()[2], line.split()[3]) for line in history] == [
        ("opened", "bot"),
        ("taken", "bob"),
        ("agent_reply", "bob"),
        ("handed_back", "bob"),
        ("resolved", "bob"),
    ]
    assert all(line.endswith("via cli") for line in history[1:])


@pytest.mark.parametrize("command", ["show", "take", "reply", "handback", "resolve"])
def test_an_unknown_ticket_is_a_clear_error(config: Path, command: str) -> None:
    args = [
        "tickets",
        command,
        "TZ-9999",
        *(["Hi"] if command == "reply" else []),
        *([] if command == "show" else ["--agent", "bob"]),
    ]
    assert one_line_error(tierzero(config, *args)) == "no ticket TZ-9999"


# -- outbox -------------------------------------------------------------------------------------


async def test_outbox_list_counts_and_lists_replies(config: Path) -> None:
    assert succeeded(tierzero(config, "outbox", "list")) == "outbox is empty\n"
    await open_ticket(config)
    # The agent's greeting is queued; no server runs to deliver it.
    succeeded(tierzero(config, "tickets", "take", "TZ-1001", "--agent", "bob"))

    summary, *items = succeeded(tierzero(config, "outbox", "list")).splitlines()
    assert summary == "pending: 1  sent: 1"
    assert [item.split()[1:4] for item in items] == [
        ["pending", "test", "attempts=0"],
        ["sent", "test", "attempts=1"],
    ]
    only_sent = succeeded(tierzero(config, "outbox", "list", "--status", "sent")).splitlines()[1:]
    assert [item.split()[1] for item in only_sent] == ["sent"]


# -- configuration and start-up errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("servr:\n  port: 80\n", "config.yaml: unknown key 'servr'"),
        ("tickets:\n  number_prefix: tz\n", "config.yaml: tickets.number_prefix: String should match pattern"),
        ("server:\n  port: [80\n", "config.yaml (line 3): not valid YAML"),
    ],
)
@pytest.mark.parametrize("command", [["tickets", "list"], ["outbox", "list"], ["check-config"]])
def test_a_bad_config_file_is_a_one_line_error_naming_the_key(
    tmp_path: Path, text: str, message: str, command: list[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    error = one_line_error(tierzero(path, *command))
    assert error.startswith(f"{tmp_path}/{message}")


def test_a_missing_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    error = one_line_error(tierzero(tmp_path / "nope.yaml", "tickets", "list"))
    assert error == f"{tmp_path}/nope.yaml: file not found"


@pytest.mark.parametrize(
    "command",
    [
        ["tickets", "list"],
        ["tickets", "show", "TZ-1001"],
        ["outbox", "list"],
        ["tickets", "take", "TZ-1001", "--agent", "bob"],
    ],
)
def test_an_unreachable_database_is_a_one_line_error(tmp_path: Path, command: list[str]) -> None:
    config = write_config(tmp_path, f"postgresql+psycopg://tz:{SECRET}@127.0.0.1:1/tierzero")
    error = one_line_error(tierzero(config, *command))
    assert error.startswith("cannot reach the database at postgresql+psycopg://tz:***@127.0.0.1:1/tierzero: ")
    assert SECRET not in error


def test_check_config_prints_the_settings_with_secrets_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERZERO_API_TOKEN", SECRET)
    monkeypatch.setenv("TIERZERO_DATABASE_URL", f"postgresql+psycopg://tz:{SECRET}@db.example:5432/tz")
    webhook = f"https://hooks.example.com/services/{SECRET}?sig={SECRET}"
    config = write_config(
        tmp_path, channels={"http_api": {"auth_token": "${TIERZERO_API_TOKEN}", "webhook_url": webhook}}
    )
    output = succeeded(tierzero(config, "check-config"))
    assert SECRET not in output
    shown = json.loads(output)
    assert shown["channels"]["http_api"]["auth_token"] == "***"
    assert shown["channels"]["http_api"]["webhook_url"] == "https://hooks.example.com/***"
    assert shown["database"]["url"] == "postgresql+psycopg://tz:***@db.example:5432/tz"
    assert shown["data_dir"] == str(tmp_path / "data")


@pytest.mark.parametrize(
    ("channels", "message"),
    [
        (
            {"slak": {}},
            "config: channels.slak: unknown channel 'slak'; "
            "known channels: email, http_api, slack, teams, terminal, web",
        ),
        ({"http_api": {"auth_tokn": "x"}}, "config: channels.http_api: unknown key 'auth_tokn'"),
    ],
)
def test_check_config_validates_the_channel_sections(tmp_path: Path, channels: dict[str, Any], message: str) -> None:
    # `tierzero run` would refuse these; check-config must not call them valid.
    assert one_line_error(tierzero(write_config(tmp_path, channels=channels), "check-config")) == message
