"""The terminal channel driven through the real runtime, with scripted stdin and captured stdout."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import TextIO

from sqlalchemy import select

from bot import messages
from bot.app import TierZero
from bot.config import Settings
from channels.terminal import PROMPT, TerminalChannel
from tests.fixtures.fakes import it_retriever
from ticketing.models import Conversation, Direction, Message, Owner

VPN_SOURCE = "Source: VPN keeps disconnecting (https://it.example.com/kb/vpn-drops)"
ANSWER_BUTTONS = f"[1] {messages.BUTTON_SOLVED}   [2] {messages.BUTTON_HUMAN}"


@dataclass
class Transcript:
    output: str
    inbound: list[Message]  # what reached the pipeline, oldest first
    conversation: Conversation | None


async def chat(settings: Settings, stdin: str | TextIO) -> Transcript:
    """Run a whole terminal session over ``stdin`` and return what it printed and stored."""
    stdout = io.StringIO()
    channel = TerminalChannel(
        user="alice", stdin=io.StringIO(stdin) if isinstance(stdin, str) else stdin, stdout=stdout
    )
    app = TierZero(settings, retriever=it_retriever())
    try:
        async with app.runtime([channel]):
            await asyncio.wait_for(channel.finished(), 20)
        with app.db.transaction() as session:
            inbound = session.scalars(
                select(Message).where(Message.direction == Direction.INBOUND).order_by(Message.id)
            ).all()
            conversation = session.scalars(select(Conversation)).one_or_none()
        return Transcript(stdout.getvalue(), list(inbound), conversation)
    finally:
        app.db.dispose()


async def test_greeting(settings: Settings) -> None:
    transcript = await chat(settings, "hello\n")
    assert transcript.output.startswith("Type your IT question. /quit to leave.\n" + PROMPT)
    assert f"tierzero> {messages.GREETING}" in transcript.output
    assert transcript.output.endswith(PROMPT + "bye\n")


async def test_answer_prints_its_citation_and_numbered_buttons(settings: Settings) -> None:
    transcript = await chat(settings, "my vpn keeps disconnecting\n")
    output = transcript.output
    assert "Turn off Wi-Fi power saving." in output
    assert VPN_SOURCE in output
    assert f"     {ANSWER_BUTTONS}\n" in output
    # The next prompt comes only after the answer was printed.
    assert output.index(ANSWER_BUTTONS) < output.rindex(PROMPT)


async def test_typing_a_number_presses_that_button(settings: Settings) -> None:
    transcript = await chat(settings, "my vpn keeps disconnecting\n1\n")
    assert f"tierzero> {messages.CLOSED}" in transcript.output
    pressed = transcript.inbound[-1]
    assert pressed.text == messages.BUTTON_SOLVED
    assert pressed.parts == {"action": "solved"}
    assert transcript.conversation is not None
    assert transcript.conversation.owner == Owner.CLOSED
    assert transcript.conversation.resolved_by == "bot"


async def test_a_number_without_buttons_is_just_text(settings: Settings) -> None:
    transcript = await chat(settings, "hello\n1\n")
    assert [m.text for m in transcript.inbound] == ["hello", "1"]
    assert all(m.parts is None or "action" not in m.parts for m in transcript.inbound)


async def test_quit_ends_the_chat_and_ignores_what_follows(settings: Settings) -> None:
    transcript = await chat(settings, "hello\n  /quit  \nmy vpn keeps disconnecting\n")
    assert [m.text for m in transcript.inbound] == ["hello"]
    assert "Turn off Wi-Fi" not in transcript.output
    assert transcript.output.endswith("bye\n")


async def test_blank_lines_are_ignored(settings: Settings) -> None:
    transcript = await chat(settings, "\n   \n\t\nhello\n \n")
    assert [m.text for m in transcript.inbound] == ["hello"]
    assert transcript.output.count("tierzero>") == 1
    assert messages.EMPTY_MESSAGE not in transcript.output


async def test_an_overlong_line_prints_the_limit_and_the_chat_continues(settings: Settings) -> None:
    transcript = await chat(settings, "x" * 25_000 + "\nhello\n")
    assert "tierzero> Your message is 25000 characters long; the limit is 20000. Please shorten it.\n" in (
        transcript.output
    )
    assert f"tierzero> {messages.GREETING}" in transcript.output
    assert [m.text for m in transcript.inbound] == ["hello"]


async def test_invalid_utf8_on_stdin_does_not_crash_the_chat(settings: Settings) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"my vpn \xff\xfe keeps dropping \xc3\x28\nhello\n"), encoding="utf-8")
    transcript = await chat(settings, stdin)
    assert [m.text for m in transcript.inbound] == ["my vpn \ufffd\ufffd keeps dropping \ufffd(", "hello"]
    assert VPN_SOURCE in transcript.output
    assert f"tierzero> {messages.GREETING}" in transcript.output
    assert transcript.output.endswith("bye\n")


async def test_nul_bytes_on_stdin_do_not_crash_the_chat(settings: Settings) -> None:
    # Valid UTF-8, but no database stores NUL (PostgreSQL refuses it): it reads as U+FFFD.
    stdin = io.TextIOWrapper(io.BytesIO(b"my vpn\x00 keeps dropping\nhello\n"), encoding="utf-8")
    transcript = await chat(settings, stdin)
    assert [m.text for m in transcript.inbound] == ["my vpn\ufffd keeps dropping", "hello"]
    assert VPN_SOURCE in transcript.output
    assert transcript.output.endswith("bye\n")
