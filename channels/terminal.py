"""A conversation with the bot in this terminal (``tierzero chat``).

Buttons print as numbered choices; typing the number presses the button.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TextIO

from starlette.routing import BaseRoute

from bot.channel import ChannelContext, ChannelDisabled, InvalidMessage, MessageHandler, Overloaded, Receipt
from bot.model import Button, ConversationRef, InboundMessage, OutboundReply, Participant

PROMPT = "you> "
# How long to wait for the bot before prompting again (the first answer loads the model).
REPLY_WAIT_SECONDS = 120.0


class TerminalChannel:
    name: ClassVar[str] = "terminal"

    def __init__(self, *, user: str, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self._user = user
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._conversation = ConversationRef(self.name, f"{user}:{uuid.uuid4().hex[:12]}")
        self._buttons: tuple[Button, ...] = ()
        self._replies = asyncio.Queue[OutboundReply]()
        self._task: asyncio.Task[None] | None = None
        if hasattr(self._stdin, "reconfigure"):
            # Invalid UTF-8 typed or piped in becomes U+FFFD instead of crashing the chat.
            self._stdin.reconfigure(errors="replace")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> TerminalChannel:
        raise ChannelDisabled("the terminal channel runs only in `tierzero chat`")

    def routes(self) -> Sequence[BaseRoute]:
        return ()

    def describe(self) -> str:
        return "this terminal"

    async def start(self, on_message: MessageHandler) -> None:
        self._task = asyncio.create_task(self._loop(on_message), name="terminal-chat")

    async def finished(self) -> None:
        """Wait until the user leaves (EOF, /quit or Ctrl-C)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def send(self, reply: OutboundReply) -> None:
        self._print_reply(reply)
        self._replies.put_nowait(reply)

    async def _loop(self, on_message: MessageHandler) -> None:
        self._write("Type your IT question. /quit to leave.\n")
        number = 0
        while True:
            line = await asyncio.to_thread(self._read_line)
            if line is None or line.strip() in {"/quit", "/exit"}:
                self._write("bye\n")
                return
            if not line.strip():
                continue
            number += 1
            message = self._to_inbound(line.strip(), number)
            try:
                receipt = await on_message(message)
            except (InvalidMessage, Overloaded) as exc:
                self._write(f"tierzero> {exc}\n")
                continue
            await self._wait_for_replies(receipt)

    async def _wait_for_replies(self, receipt: Receipt) -> None:
        """Prompt again only once the replies this message caused have been printed."""
        if receipt.handled is None:
            return
        try:
            expected = await asyncio.wait_for(receipt.handled, REPLY_WAIT_SECONDS)
        except TimeoutError:
            self._write("tierzero> (still working on it; the answer will appear here)\n")
            return
        for _ in range(expected):
            try:
                await asyncio.wait_for(self._replies.get(), REPLY_WAIT_SECONDS)
            except TimeoutError:
                return

    def _to_inbound(self, text: str, number: int) -> InboundMessage:
        action = None
        if text.isdigit() and 1 <= int(text) <= len(self._buttons):
            button = self._buttons[int(text) - 1]
            text, action = button.label, button.action
        return InboundMessage(
            channel_message_id=f"{self._conversation.conversation_id}:{number}",
            conversation=self._conversation,
            sender=Participant(self.name, self._user, display_name=self._user),
            text=text,
            action=action,
        )

    def _print_reply(self, reply: OutboundReply) -> None:
        who = "tierzero" if reply.author in ("bot", "tierzero") else reply.author
        self._write(f"\n{who}> {reply.text}\n")
        self._buttons = reply.buttons
        if reply.buttons:
            choices = "   ".join(f"[{i}] {b.label}" for i, b in enumerate(reply.buttons, 1))
            self._write(f"     {choices}\n")
        self._write("\n")

    def _read_line(self) -> str | None:
        self._write(PROMPT)
        try:
            line = self._stdin.readline()
        except KeyboardInterrupt:
            return None
        # NUL is valid UTF-8 but no database stores it (PostgreSQL refuses it): treat it as undecodable.
        return line.replace("\x00", "\ufffd") if line else None

    def _write(self, text: str) -> None:
        self._stdout.write(text)
        self._stdout.flush()
