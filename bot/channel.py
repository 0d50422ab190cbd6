"""The contract between the core and channel adapters.

Adapters live in ``channels/`` and depend on this module, never the reverse.
The core finds adapters through the ``tierzero.channels`` entry-point group
(name -> class), so a new channel, even from another package, registers
without touching the core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from starlette.routing import BaseRoute

from bot.model import InboundMessage, OutboundReply

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.conversations import ConversationReader
    from bot.desk import Desk
    from ticketing.db import Database


class Acceptance(StrEnum):
    ACCEPTED = "accepted"  # committed; a reply will follow when one is due
    DUPLICATE = "duplicate"  # seen before; nothing new happens


@dataclass(frozen=True)
class Receipt:
    status: Acceptance
    message_id: int
    conversation_id: int
    # Resolves to how many replies the message caused, once it is handled
    # (for interactive channels that wait before prompting again).
    handled: asyncio.Future[int] | None = field(default=None, compare=False, repr=False)


# What a channel calls for every inbound message. It returns only after the
# message is committed, so the channel may acknowledge it to the platform.
MessageHandler = Callable[[InboundMessage], Awaitable[Receipt]]


class InvalidMessage(Exception):
    """The message cannot be accepted (empty, too long...). ``str()`` is safe to show."""


class MessageTooLong(InvalidMessage):
    pass


class Overloaded(Exception):
    """Too many messages are waiting for an answer: this one was NOT stored; the sender should retry.

    Channels answer it the way their platform retries: HTTP 503 with ``Retry-After``,
    SMTP ``451 4.3.2``. ``str()`` is safe to show.
    """

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after  # seconds, >= 1
        super().__init__(f"too many messages are waiting for an answer; try again in {retry_after} s")


class ChannelDisabled(Exception):
    """Raised by ``from_config`` when the channel cannot run (e.g. credentials absent)."""


class DeliveryError(Exception):
    """A send failed; subclasses say whether and when to retry."""


class TemporaryDeliveryError(DeliveryError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (bad request, conversation gone, forbidden)."""


class DeliveryOutcomeUnknown(DeliveryError):
    """The platform may or may not have the message (e.g. a timeout after sending)."""


@dataclass(frozen=True)
class ChannelContext:
    settings: Settings
    conversations: ConversationReader
    # Agent actions (take, reply, hand back, resolve) for channels that host agents.
    desk: Desk
    # The process's database, for channels with their own records (dead letters, consoles).
    db: Database


class Channel(Protocol):
    """A messaging surface: turns platform events into ``InboundMessage`` and sends replies."""

    name: ClassVar[str]

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> Channel:
        """Validate this channel's section of config.yaml; raise ChannelDisabled to opt out."""
        ...

    def routes(self) -> Sequence[BaseRoute]:
        """HTTP routes to mount on the shared ASGI app (empty for non-HTTP channels)."""
        ...

    def describe(self) -> str:
        """One line for the start-up banner: where this channel listens."""
        ...

    async def start(self, on_message: MessageHandler) -> None: ...

    async def send(self, reply: OutboundReply) -> None:
        """Deliver one reply; raise a ``DeliveryError`` subclass on failure."""
        ...

    async def stop(self) -> None: ...
