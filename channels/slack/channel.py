"""The Slack channel: requesters ask in Slack, agents work tickets in a triage channel.

Built on slack-bolt's ``AsyncApp``. Every request Slack sends is handled the same
way, over HTTP (``POST /slack/events`` on the shared server) or Socket Mode:

1. its signature is checked (HTTP) and its workspace must be one we serve;
2. the listener commits what the request means (a message, a button press, an
   agent's action) and only then acknowledges Slack (``process_before_response``),
   within ``ack_timeout_seconds`` (Slack wants an answer within 3 s);
3. answers are never produced inline: the pipeline answers later and the outbox
   calls ``send``. A failure before the commit answers 500, so Slack retries, and
   the retry is deduplicated by the message's id (see ``normalise``). A full inbound
   queue (``Overloaded``) answers an event 503 + Retry-After, so Slack retries it
   too; a button or slash command, which Slack does not retry, gets a "busy" notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.attachments import AttachmentStore
from bot.channel import (
    Acceptance,
    ChannelContext,
    ChannelDisabled,
    DeliveryError,
    InvalidMessage,
    MessageHandler,
    Overloaded,
    PermanentDeliveryError,
    Receipt,
)
from bot.config import expand_env_references, validate_section
from bot.desk import AgentRef, DeskPost, TicketView, TimelineEntry
from bot.model import ConversationRef, InboundMessage, OutboundReply, Participant
from channels.http_common import read_limited
from channels.slack import desk, messages
from channels.slack.blocks import DESK_ACTION, REPLY_ACTION, escape, fallback_text, reply_blocks
from channels.slack.config import SlackSettings
from channels.slack.files import FileFetcher
from channels.slack.normalise import (
    CHANNEL,
    BotIdentity,
    ButtonPress,
    Classified,
    Deletion,
    Edit,
    Ignored,
    SlashCommand,
    UserMessage,
    classify,
    message_key,
    person_id,
)
from channels.slack.webapi import call, make_client
from ticketing.service import TicketError

log = logging.getLogger(__name__)
_bolt_log = logging.getLogger("channels.slack.bolt")

MAX_BODY_BYTES = 1_000_000
NAME_LOOKUP_SECONDS = 1.0
_CREDENTIALS = ("bot_token", "signing_secret", "app_token")
USED_EVENTS = frozenset({"message", "app_mention"})


class SlackChannel:
    name: ClassVar[str] = CHANNEL

    def __init__(self, *, settings: SlackSettings, context: ChannelContext, base_url: str = "") -> None:
        assert settings.bot_token is not None  # SlackSettings refuses to validate without one
        self._settings = settings
        self._context = context
        self._base_url = base_url
        self._served = frozenset(settings.team_ids)
        self.client = make_client(
            token=settings.bot_token.get_secret_value(),
            base_url=settings.api_url,
            timeout=settings.api_timeout_seconds,
        )
        self.files = FileFetcher(
            token=settings.bot_token.get_secret_value(),
            store=AttachmentStore(
                settings.attachments, default_dir=Path(context.settings.data_dir) / "slack" / "attachments"
            ),
            files_url=settings.files_url,
            timeout=settings.api_timeout_seconds,
        )
        self.agents = desk.AgentDirectory(
            user_ids=settings.agents,
            group_id=settings.agent_group,
            client=self.client,
            refresh_seconds=settings.agent_group_refresh_seconds,
        )
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else ""
        self._verifier = SignatureVerifier(secret) if settings.mode == "http" else None
        self.app = self._build_app(secret)
        self._on_message: MessageHandler | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._names: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> SlackChannel:
        expanded = expand_env_references(dict(config or {}))
        if not any(key in expanded for key in _CREDENTIALS):
            raise ChannelDisabled("no bot_token / signing_secret set (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET)")
        # Any credential given: the rest must be complete, or start-up stops with the reason.
        settings = validate_section(SlackSettings, config, key="channels.slack")
        if settings.triage_channel and not (settings.agents or settings.agent_group):
            log.warning("slack: triage_channel is set but no agents or agent_group: nobody can take tickets there")
        server = context.settings.server
        return cls(settings=settings, context=context, base_url=f"http://{server.host}:{server.port}")

    # -- the Channel protocol ---------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        if self._settings.mode != "http":
            return []
        return [Route(self._settings.path, self._http, methods=["POST"])]

    def describe(self) -> str:
        where = (
            f"Events API at POST {self._base_url}{self._settings.path}"
            if self._settings.mode == "http"
            else "Socket Mode"
        )
        desk_part = f"; triage channel {self._settings.triage_channel}" if self.hosts_agents else ""
        return f"{where} (workspaces {', '.join(sorted(self._served))}{desk_part})"

    async def start(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        if self._settings.mode == "socket":
            assert self._settings.app_token is not None
            self._socket = AsyncSocketModeHandler(self.app, self._settings.app_token.get_secret_value())
            # Connecting retries until Slack answers; the server must not wait for that to start.
            self._connecting = asyncio.create_task(self._socket.connect_async(), name="slack-socket-mode")

    async def stop(self) -> None:
        self._on_message = None
        if self._connecting is not None:
            self._connecting.cancel()  # a connection attempt still retrying
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def send(self, reply: OutboundReply) -> None:
        """Post ``reply`` in its thread. Works after ``stop()`` too (the outbox flushes after channels stop)."""
        arguments: dict[str, Any] = {
            "channel": reply.conversation.conversation_id,
            "text": fallback_text(reply.text),
            "blocks": reply_blocks(reply),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if reply.conversation.thread_id:
            arguments["thread_ts"] = reply.conversation.thread_id
        if reply.idempotency_key:
            # Kept on the Slack message, so an "unknown" delivery can be checked by hand.
            arguments["metadata"] = {
                "event_type": "tierzero_reply",
                "event_payload": {"idempotency_key": reply.idempotency_key},
            }
        await call(self.client, "chat.postMessage", **arguments)

    # -- the agent surface --------------------------------------------------------------

    @property
    def hosts_agents(self) -> bool:
        return self._settings.triage_channel is not None

    async def publish_ticket(self, view: TicketView, post: DeskPost | None) -> DeskPost:
        text, blocks = desk.card(view)
        if post is not None:
            try:
                await call(
                    self.client,
                    "chat.update",
                    channel=post.data["channel"],
                    ts=post.data["ts"],
                    text=text,
                    blocks=blocks,
                )
                return post
            except PermanentDeliveryError as exc:
                if "message_not_found" not in str(exc):
                    raise
                log.warning("slack: the card of %s was deleted; posting it again", view.number)
        channel = self._settings.triage_channel
        response = await call(self.client, "chat.postMessage", channel=channel, text=text, blocks=blocks)
        ts = str(response.get("ts") or "")
        channel = str(response.get("channel") or channel)
        return DeskPost(thread_key=f"{channel}:{ts}", data={"channel": channel, "ts": ts})

    async def post_to_ticket(self, post: DeskPost, view: TicketView, entry: TimelineEntry) -> None:
        text, blocks = desk.entry(view, entry)
        await call(
            self.client,
            "chat.postMessage",
            channel=post.data["channel"],
            thread_ts=post.data["ts"],
            text=text,
            blocks=blocks,
            unfurl_links=False,
        )

    # -- HTTP ------------------------------------------------------------------------

    async def _http(self, request: Request) -> Response:
        body = await read_limited(request, MAX_BODY_BYTES)
        if body is None:
            return JSONResponse({"error": f"request body is larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        if not self._signed(request, body):
            return JSONResponse({"error": "invalid request signature"}, status_code=401)
        if self._on_message is None:
            return JSONResponse({"error": messages.NOT_READY}, status_code=503, headers={"Retry-After": "5"})
        try:
            bolt_request = to_async_bolt_request(request, body)
        except ValueError:  # also UnicodeDecodeError and json.JSONDecodeError
            return JSONResponse({"error": "request body is neither JSON nor a form"}, status_code=400)
        return to_starlette_response(await self.app.async_dispatch(bolt_request))

    def _signed(self, request: Request, body: bytes) -> bool:
        """Slack's request signature (v0 HMAC-SHA256 of ts and body, within 5 minutes)."""
        assert self._verifier is not None
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not timestamp.isdigit() or not signature:
            return False  # a missing or non-numeric timestamp is refused, not a crash
        try:
            return self._verifier.is_valid(body, timestamp, signature)
        except (ValueError, UnicodeDecodeError):
            return False

    # -- bolt --------------------------------------------------------------------------

    def _build_app(self, signing_secret: str) -> AsyncApp:
        app = AsyncApp(
            name="tierzero",
            client=self.client,
            signing_secret=signing_secret or None,
            # Commit first, then answer Slack: a crash in between makes Slack retry, never lose.
            process_before_response=True,
            request_verification_enabled=self._settings.mode == "http",
            before_authorize=RequestGate(self._served),
            logger=_bolt_log,
        )
        app.error(self._on_error)
        for event_type in USED_EVENTS:
            app.event(event_type)(self._on_event)
        app.action(re.compile(f"^{REPLY_ACTION}"))(self._on_reply_button)
        app.action(re.compile(f"^{DESK_ACTION}"))(self._on_desk_button)
        app.command(self._settings.command)(self._on_command)
        # Other buttons and commands are acknowledged and ignored (unmatched, bolt would answer 404).
        app.action(re.compile(".*"))(self._ignore)
        app.command(re.compile(".*"))(self._ignore)
        return app

    async def _on_error(self, error: Exception, response: BoltResponse | None) -> BoltResponse | None:
        """Bolt's handler for a failed listener: 503 + Retry-After when overloaded, else 500 (Slack retries)."""
        if isinstance(error, Overloaded) and response is not None:
            # Nothing was stored: Slack retries the event later, and a retry is deduplicated.
            return BoltResponse(status=503, body={"error": str(error)}, headers={"Retry-After": str(error.retry_after)})
        if not isinstance(error, TimeoutError):  # a missed ack deadline is logged once, by _ack_deadline
            _bolt_log.error("Failed to run listener function (error: %s)", error, exc_info=error)
        return None

    async def _ignore(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        log.debug("slack: ignored a %s request", body.get("type") or body.get("command") or "untyped")

    def _identity(self, context: AsyncBoltContext) -> BotIdentity:
        return BotIdentity(user_id=context.bot_user_id, bot_id=context.bot_id)

    def _classify(self, body: Mapping[str, Any], context: AsyncBoltContext) -> Classified:
        return classify(body, self._identity(context), allow_bots=self._settings.allow_bots)

    # -- requesters ----------------------------------------------------------------------

    async def _on_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        async with self._ack_deadline("an event"):
            await self._handle_event(self._classify(body, context))

    async def _handle_event(self, result: Classified) -> None:
        match result:
            case UserMessage():
                await self._user_message(result)
            case Edit(channel_message_id=key, text=text):
                await self._context.conversations.record_edit(channel=CHANNEL, channel_message_id=key, text=text)
            case Deletion(channel_message_id=key):
                await self._context.conversations.record_deletion(channel=CHANNEL, channel_message_id=key)
            case Ignored(reason=reason):
                log.debug("slack: ignored an event: %s", reason)

    async def _user_message(self, found: UserMessage) -> None:
        if found.channel_id == self._settings.triage_channel:
            await self._agent_message(found)
            return
        if not found.addressed and not await self._in_our_thread(found):
            log.debug("slack: ignored a reply in a thread tierzero is not part of")
            return
        name = await self._display_name(found.user_id)
        message = replace(found.message, sender=replace(found.message.sender, display_name=name))
        receipt = await self._accept(
            message, channel_id=found.channel_id, user_id=found.user_id, thread_ts=found.thread_ts or found.ts
        )
        if message.attachments and receipt is not None and receipt.status is Acceptance.ACCEPTED:
            # After the commit and outside the ack: a redelivery is a duplicate and fetches nothing.
            self._in_background(self._fetch_files(message))

    async def _fetch_files(self, message: InboundMessage) -> None:
        """Download a message's shared files; a failure leaves the file's metadata and a note on it."""
        for index, attachment in enumerate(message.attachments):
            result = await self.files.fetch(attachment, key=message.channel_message_id)
            if isinstance(result, str):
                log.warning("slack: file %r of %s not kept: %s", attachment.name, message.channel_message_id, result)
            await self._context.conversations.record_attachment_file(
                channel=CHANNEL,
                channel_message_id=message.channel_message_id,
                index=index,
                path=result if isinstance(result, Path) else None,
                note=f"not kept: {result}" if isinstance(result, str) else None,
            )

    async def _in_our_thread(self, found: UserMessage) -> bool:
        replies = await self._context.conversations.replies(
            channel=CHANNEL, conversation_id=found.channel_id, thread_id=found.thread_ts
        )
        return replies is not None

    async def _accept(
        self, message: InboundMessage, *, channel_id: str, user_id: str, thread_ts: str
    ) -> Receipt | None:
        """Commit ``message`` (this is what lets us acknowledge Slack); None if it was refused."""
        if self._on_message is None:
            raise RuntimeError("the Slack channel is not started")  # -> 500: Slack retries later
        try:
            return await self._on_message(message)
        except InvalidMessage as exc:
            text = messages.INVALID_MESSAGE.format(reason=exc)
            self._in_background(self._ephemeral(channel_id, user_id, text, thread_ts=thread_ts))
            return None

    @contextlib.asynccontextmanager
    async def _ack_deadline(self, what: str) -> AsyncIterator[None]:
        """Everything before the acknowledgement must fit in Slack's 3 s.

        Past the deadline the request fails (500) and Slack retries it; if the commit
        did finish meanwhile, the retry is recognised as a duplicate.
        """
        try:
            async with asyncio.timeout(self._settings.ack_timeout_seconds):
                yield
        except TimeoutError:
            log.warning("slack: %s took longer than the %ss ack deadline", what, self._settings.ack_timeout_seconds)
            raise

    async def _on_reply_button(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        press = self._classify(body, context)
        receipt = None
        if isinstance(press, ButtonPress):
            try:
                async with self._ack_deadline("a button press"):
                    receipt = await self._accept_press(press, body)
            except Overloaded as exc:
                # Slack does not retry a button press: say so instead of failing silently.
                text = messages.BUSY.format(seconds=exc.retry_after)
                thread_ts = press.thread_ts or press.message_ts
                self._in_background(self._ephemeral(press.channel_id, press.user_id, text, thread_ts=thread_ts))
        await ack()
        if isinstance(press, ButtonPress) and receipt is not None and receipt.status is Acceptance.ACCEPTED:
            self._in_background(self._show_pressed(body, press))

    async def _accept_press(self, press: ButtonPress, body: Mapping[str, Any]) -> Receipt | None:
        """A requester's button: a message carrying the button's action, in the thread of the pressed message."""
        thread_ts = press.thread_ts or press.message_ts
        name = await self._display_name(press.user_id, fallback=press.user_name)
        message = InboundMessage(
            # The same button on the same message by the same person counts once (double clicks).
            channel_message_id=f"{message_key(press.team_id, press.channel_id, press.message_ts)}:"
            f"{press.user_id}:{press.value}"[:255],
            conversation=ConversationRef(CHANNEL, press.channel_id, thread_ts),
            sender=Participant(CHANNEL, person_id(press.team_id, press.user_id), name),
            text=press.label or press.value,
            action=press.value,
            raw={k: v for k, v in body.items() if k != "token"},
            channel_data={"team_id": press.team_id},
        )
        return await self._accept(message, channel_id=press.channel_id, user_id=press.user_id, thread_ts=thread_ts)

    async def _show_pressed(self, body: Mapping[str, Any], press: ButtonPress) -> None:
        """Replace the pressed message's buttons with what was chosen, so they are not pressed again."""
        original = body.get("message")
        if not isinstance(original, Mapping) or not isinstance(original.get("blocks"), list):
            return
        blocks = [b for b in original["blocks"] if not (isinstance(b, Mapping) and b.get("type") == "actions")]
        chosen = messages.PRESSED.format(user=f"<@{press.user_id}>", label=escape(press.label or press.value))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": chosen}]})
        await call(
            self.client,
            "chat.update",
            channel=press.channel_id,
            ts=press.message_ts,
            text=str(original.get("text") or chosen),
            blocks=blocks,
        )

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        command = self._classify(body, context)
        if not isinstance(command, SlashCommand):
            await ack()
            return
        async with self._ack_deadline("a slash command"):
            if command.text.lower() in ("", "help"):
                answer = messages.COMMAND_USAGE.format(command=self._settings.command)
            elif command.text.lower() == "tickets":
                answer = await self._open_tickets_text(command)
            else:
                answer = await self._ask_privately(command)
        await ack(text=answer, response_type="ephemeral")

    async def _open_tickets_text(self, command: SlashCommand) -> str:
        views = await self._context.desk.open_tickets_of(CHANNEL, person_id(command.team_id, command.user_id))
        if not views:
            return messages.NO_OPEN_TICKETS
        lines = [
            messages.TICKET_LINE.format(number=v.number, subject=escape(v.subject), status=v.status) for v in views
        ]
        return "\n".join([messages.OPEN_TICKETS, *lines])

    async def _ask_privately(self, command: SlashCommand) -> str:
        """``/tierzero <question>``: the question opens a thread in the asker's DM with the bot."""
        try:
            # Two quick calls before the commit; both must fit in Slack's 3 s with the commit.
            async with asyncio.timeout(self._settings.ack_timeout_seconds / 2):
                opened = await call(self.client, "conversations.open", users=command.user_id)
                dm = str((opened.get("channel") or {}).get("id") or "")
                posted = await call(
                    self.client,
                    "chat.postMessage",
                    channel=dm,
                    text=messages.ASKED_PRIVATELY.format(question=escape(command.text)),
                )
                ts = str(posted.get("ts") or "")
        except (DeliveryError, TimeoutError) as exc:
            log.warning("slack: cannot start a private conversation for %s: %s", command.command, exc)
            return messages.COMMAND_FAILED
        name = await self._display_name(command.user_id, fallback=command.user_name)
        message = InboundMessage(
            channel_message_id=message_key(command.team_id, dm, ts),
            conversation=ConversationRef(CHANNEL, dm, ts),
            sender=Participant(CHANNEL, person_id(command.team_id, command.user_id), name),
            text=command.text,
            raw={"command": command.command, "text": command.text, "team_id": command.team_id},
            channel_data={"team_id": command.team_id},
        )
        try:
            receipt = await self._accept(message, channel_id=dm, user_id=command.user_id, thread_ts=ts)
        except Overloaded as exc:
            return messages.BUSY.format(seconds=exc.retry_after)  # Slack does not retry a command
        return messages.COMMAND_ASKED.format(link=f"<#{dm}>") if receipt is not None else messages.COMMAND_FAILED

    # -- agents --------------------------------------------------------------------------

    async def _agent_message(self, found: UserMessage) -> None:
        """A message in the triage channel: an agent's reply when it is in a ticket's thread."""
        if found.thread_ts is None:
            return  # top-level talk among agents
        number = await self._context.desk.ticket_by_thread(CHANNEL, f"{found.channel_id}:{found.thread_ts}")
        if number is None:
            return
        if not await self.agents.is_agent(found.user_id):
            self._in_background(
                self._ephemeral(found.channel_id, found.user_id, messages.NOT_AN_AGENT, thread_ts=found.thread_ts)
            )
            return
        agent = AgentRef(CHANNEL, person_id(found.team_id, found.user_id), await self._display_name(found.user_id))
        try:
            await self._context.desk.reply(
                number, agent, found.message.text, source_id=found.message.channel_message_id
            )
        except TicketError as exc:
            text = messages.REPLY_NOT_RELAYED.format(reason=exc)
            self._in_background(self._ephemeral(found.channel_id, found.user_id, text, thread_ts=found.thread_ts))

    async def _on_desk_button(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """Take / Resolve / Hand back: the desk commits the change, then Slack is acknowledged."""
        press = self._classify(body, context)
        if isinstance(press, ButtonPress):
            async with self._ack_deadline(f"{press.action_id} on {press.value}"):
                await self._desk_action(press)
        await ack()

    async def _desk_action(self, press: ButtonPress) -> None:
        thread_ts = press.thread_ts or press.message_ts
        if not await self.agents.is_agent(press.user_id):
            self._in_background(self._ephemeral(press.channel_id, press.user_id, messages.NOT_AN_AGENT, thread_ts=None))
            return
        agent = AgentRef(CHANNEL, person_id(press.team_id, press.user_id), await self._display_name(press.user_id))
        actions = {
            desk.TAKE: self._context.desk.take,
            desk.RESOLVE: self._context.desk.resolve,
            desk.HAND_BACK: self._context.desk.hand_back,
        }
        action = actions.get(press.action_id.removeprefix(f"{DESK_ACTION}_"))
        if action is None:
            return
        try:
            await action(press.value, agent)
        except TicketError as exc:
            text = messages.AGENT_ACTION_FAILED.format(reason=exc)
            self._in_background(self._ephemeral(press.channel_id, press.user_id, text, thread_ts=thread_ts))

    # -- helpers ---------------------------------------------------------------------------

    async def _display_name(self, user_id: str, *, fallback: str = "") -> str:
        """The person's Slack name for tickets and cards (users.info, cached); never delays an ack long."""
        if user_id in self._names:
            return self._names[user_id]
        try:
            async with asyncio.timeout(NAME_LOOKUP_SECONDS):
                response = await call(self.client, "users.info", user=user_id)
        except (DeliveryError, TimeoutError) as exc:
            log.debug("slack: no name for %s: %s", user_id, exc)
            return fallback or user_id
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
        self._names[user_id] = str(name or fallback or user_id)[:255]
        return self._names[user_id]

    async def _ephemeral(self, channel_id: str, user_id: str, text: str, *, thread_ts: str | None) -> None:
        arguments: dict[str, Any] = {"channel": channel_id, "user": user_id, "text": text}
        if thread_ts:
            arguments["thread_ts"] = thread_ts
        try:
            await call(self.client, "chat.postEphemeral", **arguments)
        except DeliveryError as exc:
            log.warning("slack: could not show %s a notice: %s", user_id, exc)

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("slack: background call failed: %s", task.exception())


class RequestGate(AsyncMiddleware):
    """Runs before bolt's authorization: only served workspaces, and only the kinds of request we use.

    Modals, shortcuts, option lists and other payloads we never asked for are
    acknowledged here, before bolt prepares listener arguments for them.
    """

    def __init__(self, served: frozenset[str]) -> None:
        self._served = served

    async def async_process(
        self, *, req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        body = req.body
        if body.get("type") == "url_verification":
            return await next()  # the signature already passed; Slack checks our URL before any team is involved
        context = req.context
        if context.team_id not in self._served and context.enterprise_id not in self._served:
            log.warning("slack: ignored a request from workspace %r (not in team_ids)", context.team_id)
            if isinstance(body.get("command"), str):
                return BoltResponse(status=200, body={"response_type": "ephemeral", "text": messages.NOT_SERVED})
            return BoltResponse(status=200, body="")
        if body.get("type") == "event_callback":
            event = body.get("event")
            event_type = event.get("type") if isinstance(event, Mapping) else None
            if event_type not in USED_EVENTS:
                log.debug("slack: acknowledged an unused %s event", event_type)
                return BoltResponse(status=200, body="")
        else:
            # Whether we use it does not depend on who we are (unlike messages, e.g. our own).
            unused = classify(body, BotIdentity())
            if isinstance(unused, Ignored):
                log.debug("slack: acknowledged an unused request: %s", unused.reason)
                return BoltResponse(status=200, body="")
        return await next()
