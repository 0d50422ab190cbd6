"""The agent side of Teams: ticket cards in a configured channel, and what agents do there.

Each open ticket is a card posted as a new thread in the agent channel (team id +
channel id); the thread's conversation id ("19:...;messageid=<card id>") is the
desk's ``thread_key``. The card is updated in place when the ticket changes.
In the thread, configured agents (AAD object ids) press Take / Resolve / Hand back,
and their messages go to the requester through ``Desk.reply``; anyone else is
told they are not an agent and nothing is relayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from bot.desk import AgentRef, Desk, DeskPost, TicketView, TimelineEntry
from channels.teams import cards, messages
from channels.teams.config import AgentChannelSettings
from channels.teams.connector import BotConnector
from channels.teams.normalise import CHANNEL, DESK_KEY, TeamsMessage
from ticketing.service import TicketError

log = logging.getLogger(__name__)

# Sends a short text into a thread, in the background: (conversation reference, text).
Notify = Callable[[Mapping[str, Any], str], None]

_ACTIONS = {"take": "take", "resolve": "resolve", "hand_back": "hand back"}


class TeamsAgentDesk:
    def __init__(
        self,
        *,
        settings: AgentChannelSettings,
        tenant_id: str | None,
        connector: BotConnector,
        desk: Desk,
        notify: Notify,
    ) -> None:
        self._settings = settings
        self._tenant_id = tenant_id
        self._connector = connector
        self._desk = desk
        self._notify = notify
        self._agents = {agent.lower() for agent in settings.agents}

    def is_agent_channel(self, message: TeamsMessage) -> bool:
        return (
            message.conversation_type == "channel"
            and message.channel_id == self._settings.channel_id
            and message.team_id in (None, self._settings.team_id)
        )

    def agent_of(self, message: TeamsMessage) -> AgentRef | None:
        """The sender as an agent, if their AAD object id is configured (never from a display name)."""
        aad = message.aad_object_id
        if aad is None or aad.lower() not in self._agents:
            return None
        return AgentRef(CHANNEL, aad, message.sender_name)

    async def handle(self, message: TeamsMessage) -> str | None:
        """Act on a message in the agent channel; returns what to tell the sender (None: nothing)."""
        agent = self.agent_of(message)
        if message.value is not None and isinstance(message.value.get(DESK_KEY), str):
            feedback = await self._button(message, agent)
        else:
            feedback = await self._thread_reply(message, agent)
        if feedback and not message.is_invoke:
            self._notify(message.reference, feedback)
        return feedback

    async def _button(self, message: TeamsMessage, agent: AgentRef | None) -> str | None:
        assert message.value is not None
        operation = str(message.value.get(DESK_KEY))
        number = message.value.get("ticket")
        if operation not in _ACTIONS or not isinstance(number, str):
            log.info("teams: ignoring an unknown desk button %r", operation)
            return None
        if agent is None:
            return messages.NOT_AN_AGENT.format(name=message.sender_name or "there")
        try:
            if operation == "take":
                await self._desk.take(number, agent)
                return messages.TOOK.format(agent=agent.name, number=number)
            if operation == "resolve":
                await self._desk.resolve(number, agent)
                return messages.RESOLVED.format(agent=agent.name, number=number)
            await self._desk.hand_back(number, agent)
            return messages.HANDED_BACK.format(agent=agent.name, number=number)
        except TicketError as exc:
            return messages.ACTION_FAILED.format(action=_ACTIONS[operation], number=number, reason=exc)

    async def _thread_reply(self, message: TeamsMessage, agent: AgentRef | None) -> str | None:
        number = await self._desk.ticket_by_thread(CHANNEL, message.conversation_id)
        if number is None:
            return None  # talk in the agent channel outside ticket threads is not for the bot
        if agent is None:
            return messages.NOT_AN_AGENT.format(name=message.sender_name or "there")
        try:
            await self._desk.reply(number, agent, message.text, message.message_key)
        except TicketError as exc:
            return messages.ACTION_FAILED.format(action="send", number=number, reason=exc)
        return None

    async def publish(self, view: TicketView, post: DeskPost | None) -> DeskPost:
        activity = cards.ticket_activity(view)
        if post is None:
            conversation_id, activity_id = await self._connector.create_channel_thread(
                service_url=self._settings.service_url,
                channel_id=self._settings.channel_id,
                tenant_id=self._tenant_id,
                activity=activity,
            )
            data = {
                "service_url": self._settings.service_url,
                "conversation_id": conversation_id,
                "activity_id": activity_id,
            }
            return DeskPost(thread_key=conversation_id, data=data)
        await self._connector.update(
            service_url=str(post.data.get("service_url") or self._settings.service_url),
            conversation_id=str(post.data.get("conversation_id") or post.thread_key),
            activity_id=str(post.data["activity_id"]),
            activity=activity,
        )
        return post

    async def mirror(self, post: DeskPost, entry: TimelineEntry) -> None:
        await self._connector.post(
            service_url=str(post.data.get("service_url") or self._settings.service_url),
            conversation_id=str(post.data.get("conversation_id") or post.thread_key),
            activity=cards.text_activity(cards.timeline_text(entry)),
        )
