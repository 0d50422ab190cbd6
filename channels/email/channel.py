"""The email channel: support mail in, threaded replies out.

Inbound, for every mail the SMTP listener takes (``deliver``):
1. parse it; if no text can be had, keep it raw in the dead-letter store;
2. decide whether it may be answered automatically (``loops``) and whether the
   per-sender circuit breaker still allows an answer;
3. find its thread (``threading``), verify the sender (``auth``);
4. commit the raw mail, the thread bookkeeping and - through ``on_message`` -
   the message itself; only then answer ``250``.
A bounce of one of our replies also marks that delivery failed on the ticket.
A verified agent address answering in a ticket's thread relays to the
requester through the desk.

Outbound, ``send`` composes the reply in the thread (Message-ID,
In-Reply-To, References, ticket tag) and hands it to the relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from aiosmtpd.smtp import Envelope, Session
from sqlalchemy import func, select
from starlette.routing import BaseRoute

from bot.attachments import AttachmentStore
from bot.channel import (
    ChannelContext,
    InvalidMessage,
    MessageHandler,
    PermanentDeliveryError,
)
from bot.config import validate_section
from bot.model import ConversationRef, InboundMessage, OutboundReply, Participant, ReplyKind
from channels.email import auth, deadletter, loops, outbound
from channels.email import threading as threads
from channels.email.config import EmailSettings
from channels.email.models import EmailAutoReply, EmailRawMessage
from channels.email.parse import ParsedMail, UnparseableMail, parse_mail
from channels.email.reply_text import visible_reply
from channels.email.smtp_server import SupportMailHandler, start_server
from ticketing import service
from ticketing.clock import utcnow
from ticketing.models import Ticket

log = logging.getLogger(__name__)

ACCEPTED = "250 2.0.0 OK: queued"
MAX_REFERENCES_KEPT = 20
SUPPORT_NAME = "IT Support"  # the From display name of our replies


@dataclass(frozen=True)
class _Decision:
    """Everything decided about one mail before it is committed."""

    key: str
    thread: threads.ThreadMatch
    auto_reply: bool
    why_silent: str
    verified: auth.SenderCheck


class EmailChannel:
    name: ClassVar[str] = "email"

    def __init__(self, *, settings: EmailSettings, context: ChannelContext) -> None:
        self.settings = settings
        self._context = context
        self._db = context.db
        data_dir = Path(context.settings.data_dir) / "email"
        self._attachments = AttachmentStore(settings.attachments, default_dir=data_dir / "attachments")
        self.relay = outbound.Relay(
            settings.relay,
            pickup_dir=settings.relay.pickup_dir or data_dir / "outgoing",
            envelope_sender=settings.support_addresses[0],
        )
        self._on_message: MessageHandler | None = None
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> EmailChannel:
        settings = validate_section(EmailSettings, config, key="channels.email")
        return cls(settings=settings, context=context)

    def routes(self) -> Sequence[BaseRoute]:
        return []

    def describe(self) -> str:
        where = f"{self.settings.host}:{self.port or self.settings.port}"
        tls = ", STARTTLS" if self.settings.tls.cert_file else ""
        return f"SMTP {where} for {', '.join(self.settings.support_addresses)}{tls}; {self.relay.describe()}"

    @property
    def hosts_agents(self) -> bool:
        """An agent surface when a notification address is configured (see ``publish_ticket``)."""
        return self.settings.agent_notify_address is not None

    async def start(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        handler = SupportMailHandler(support_addresses=frozenset(self.settings.support_addresses), deliver=self.deliver)
        self._server, _ = await start_server(self.settings, handler, hostname=self.settings.domain)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("email: listening on %s:%s", self.settings.host, self.port)

    async def stop(self) -> None:
        self._on_message = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # -- inbound -----------------------------------------------------------------

    async def deliver(self, envelope: Envelope, session: Session) -> str:
        """Take one mail; returns the SMTP answer, ``250`` only once it is committed."""
        if self._on_message is None:
            return "451 4.3.2 Not accepting mail right now"
        raw = bytes(envelope.original_content or b"")
        mail_from = envelope.mail_from or ""
        rcpt_tos = [r.lower() for r in envelope.rcpt_tos]
        try:
            mail = parse_mail(raw)
        except UnparseableMail as exc:
            dead_id = await asyncio.to_thread(
                deadletter.store, self._db, raw=raw, mail_from=mail_from, rcpt_tos=rcpt_tos, reason=str(exc)
            )
            log.warning("email: kept unparseable mail as dead letter %s: %s", dead_id, exc)
            return ACCEPTED
        return await self.take(raw, mail, mail_from=mail_from, rcpt_tos=rcpt_tos)

    async def take(self, raw: bytes, mail: ParsedMail, *, mail_from: str, rcpt_tos: list[str]) -> str:
        settings = self.settings
        verdict = loops.classify(
            mail, envelope_from=mail_from, loop_header=settings.loops.header, our_addresses=settings.our_addresses
        )
        if verdict.ours:
            log.error("email: one of our own replies came back (loop header); stored, not answered")
        verified = await asyncio.to_thread(
            auth.verify_sender,
            raw,
            mail,
            trusted_relays=settings.trusted_relays,
            verify_dkim=settings.verify_dkim,
        )
        key = mail.message_id or "sha256:" + hashlib.sha256(mail.from_address.encode() + b"\0" + raw).hexdigest()
        key = threads.storage_key(key)
        if verdict.is_bounce:
            await asyncio.to_thread(self._record_bounce, mail)
        # Never an agent's out-of-office answer: only hand-written mail is relayed to the requester.
        if verdict.auto_reply and mail.from_address in settings.agent_addresses and verified.verified:
            answer = await self._take_from_agent(mail, key)
            if answer is not None:
                return answer
        decision = await asyncio.to_thread(self._decide, raw, mail, key, verdict, verified, mail_from, rcpt_tos)
        message = self._inbound(mail, decision, rcpt_tos)
        assert self._on_message is not None
        try:
            # Overloaded propagates: the listener answers 451 and the sender retries later;
            # what _decide committed is idempotent for that retry.
            await self._on_message(message)
        except InvalidMessage as exc:
            # Committed raw already; refusing now would make the sender retry forever.
            await asyncio.to_thread(
                deadletter.store, self._db, raw=raw, mail_from=mail_from, rcpt_tos=rcpt_tos, reason=str(exc)
            )
        return ACCEPTED

    def _decide(
        self,
        raw: bytes,
        mail: ParsedMail,
        key: str,
        verdict: loops.LoopVerdict,
        verified: auth.SenderCheck,
        mail_from: str,
        rcpt_tos: list[str],
    ) -> _Decision:
        """Thread, breaker and raw copy, committed together (idempotent for a retried delivery)."""
        sender = mail.from_address or mail_from.lower()
        with self._db.transaction() as session:
            thread = threads.find_thread(
                session,
                message_ids=[*mail.in_reply_to, *reversed(mail.references)],
                subject=mail.subject,
                sender=sender,
                ticket_prefix=self._context.settings.tickets.number_prefix,
                own_key=key,
            )
            participants = [a for a in [sender, *mail.to, *mail.cc] if a and a not in self.settings.our_addresses]
            threads.remember_thread(
                session, thread_key=thread.thread_key, requester=sender, subject=mail.subject, participants=participants
            )
            threads.remember_message_id(session, message_id=key, thread_key=thread.thread_key, direction="in")
            if session.get(EmailRawMessage, key) is None:
                session.add(EmailRawMessage(message_key=key, mail_from=mail_from[:320], rcpt_tos=rcpt_tos, raw=raw))
            auto_reply, why = verdict.auto_reply, verdict.reason
            if auto_reply and not self._breaker_allows(session, sender=sender, key=key):
                auto_reply = False
                why = "per-sender auto-reply limit reached"
                log.warning("email: circuit breaker open for a sender; storing without answering")
            return _Decision(key, thread, auto_reply, why, verified)

    def _breaker_allows(self, session: Any, *, sender: str, key: str) -> bool:
        if session.get(EmailAutoReply, key) is not None:
            return True  # a redelivery of a mail that was already granted its answer
        since = utcnow() - timedelta(minutes=self.settings.loops.window_minutes)
        granted = session.scalar(
            select(func.count())
            .select_from(EmailAutoReply)
            .where(EmailAutoReply.sender == sender, EmailAutoReply.at >= since)
        )
        if (granted or 0) >= self.settings.loops.max_auto_replies:
            return False
        session.add(EmailAutoReply(message_key=key, sender=sender))
        return True

    def _inbound(self, mail: ParsedMail, decision: _Decision, rcpt_tos: list[str]) -> InboundMessage:
        thread_key = decision.thread.thread_key
        text = visible_reply(mail.text) or mail.text.strip()
        if decision.thread.new and mail.subject and mail.subject.lower() not in text.lower():
            text = f"{mail.subject}\n\n{text}".strip()
        stored, notes = self._attachments.keep(mail.attachments, key=decision.key)
        if notes:
            text = f"{text}\n\n" + "\n".join(notes)
        limit = self._context.settings.pipeline.max_message_chars
        if len(text) > limit:
            text = text[: limit - 40].rstrip() + "\n[message shortened]"
        sender = mail.from_address
        support_address = next((r for r in rcpt_tos if r in self.settings.support_addresses), None)
        channel_data: dict[str, Any] = {
            "last_message_id": mail.message_id,
            "references": [*mail.references, *([mail.message_id] if mail.message_id else [])][-MAX_REFERENCES_KEPT:],
        }
        if decision.thread.new:
            channel_data.update(
                requester=sender,
                requester_name=mail.from_name,
                subject=mail.subject,
                support_address=support_address or self.settings.support_addresses[0],
            )
        raw_summary: dict[str, Any] = {
            "message_id": mail.message_id,
            "from": sender,
            "to": list(mail.to),
            "cc": list(mail.cc),
            "subject": mail.subject,
            "sender_verified": decision.verified.verified,
            "verification": decision.verified.how,
        }
        if decision.why_silent:
            raw_summary["not_answered_because"] = decision.why_silent
        if decision.thread.flagged:
            raw_summary["flagged"] = decision.thread.flagged
            channel_data["flagged"] = decision.thread.flagged
            log.warning("email: mail claiming an existing thread from a non-participant opened a new one")
        return InboundMessage(
            channel_message_id=decision.key,
            conversation=ConversationRef(self.name, thread_key),
            sender=Participant(self.name, sender, mail.from_name, sender),
            text=text,
            attachments=tuple(stored),
            raw=raw_summary,
            channel_data=channel_data,
            auto_reply=decision.auto_reply,
        )

    def _record_bounce(self, mail: ParsedMail) -> None:
        """A bounce of one of our replies: the delivery failed, say so on the ticket."""
        with self._db.transaction() as session:
            ref = threads.outbound_ref(session, list(loops.bounced_message_ids(mail)))
            if ref is None:
                return
            number = ref.ticket_number or threads.ticket_of_thread(session, ref.thread_key)
            ticket = session.scalar(select(Ticket).where(Ticket.number == number)) if number else None
            if ticket is None:
                log.warning("email: a reply of ours bounced (no ticket to record it on)")
                return
            service.add_event(
                session,
                ticket=ticket,
                actor="tierzero",
                channel=self.name,
                kind="delivery_failed",
                detail={"message_id": ref.message_id, "error": f"bounced: {loops.bounce_reason(mail)}"},
            )

    async def _take_from_agent(self, mail: ParsedMail, key: str) -> str | None:
        """A verified agent answering in a ticket's thread: relay to the requester. None: not a ticket reply."""
        from bot.desk import AgentRef
        from ticketing.service import TicketError

        number = await asyncio.to_thread(self._ticket_for_agent_mail, mail)
        if number is None:
            return None
        text = visible_reply(mail.text)
        agent = AgentRef(self.name, mail.from_address, mail.from_name)
        desk = self._context.desk
        try:
            view = await desk.view(number)
            if view is not None and view.assignee is None:
                await desk.take(number, agent)  # answering an unowned ticket by mail takes it
            await desk.reply(number, agent, text, key)
        except TicketError as exc:
            log.warning("email: agent reply to %s refused: %s", number, exc)
            await asyncio.to_thread(
                deadletter.store,
                self._db,
                raw=mail.message.as_bytes(),
                mail_from=mail.from_address,
                rcpt_tos=[],
                reason=f"agent reply to {number} refused: {exc}",
            )
        return ACCEPTED

    def _ticket_for_agent_mail(self, mail: ParsedMail) -> str | None:
        with self._db.transaction() as session:
            ref = threads.outbound_ref(session, [*mail.in_reply_to, *mail.references])
            if ref is not None:
                return ref.ticket_number or threads.ticket_of_thread(session, ref.thread_key)
            match = threads.ticket_tag_pattern(self._context.settings.tickets.number_prefix).search(mail.subject)
            return match.group(1) if match else None

    # -- outbound ----------------------------------------------------------------

    async def send(self, reply: OutboundReply) -> None:
        data = dict(reply.channel_data or {})
        recipient = str(data.get("requester") or "")
        if not recipient:
            raise PermanentDeliveryError("no requester address stored for this conversation")
        if recipient in self.settings.our_addresses or loops.is_no_reply_address(recipient):
            raise PermanentDeliveryError("refusing to mail one of our own or a no-reply address")
        mail = await asyncio.to_thread(self._prepare, reply, data, recipient)
        await asyncio.to_thread(self.relay.send, mail)

    def _prepare(self, reply: OutboundReply, data: dict[str, Any], recipient: str) -> outbound.OutgoingMail:
        """Compose the mail and remember its Message-ID before sending: an answer to it (or its
        bounce) may arrive before send() returns."""
        with self._db.transaction() as session:
            thread_key = reply.conversation.conversation_id
            ticket_number = reply.ticket_number or threads.ticket_of_thread(session, thread_key)
            mail = self._compose(reply, data, recipient, ticket_number)
            threads.remember_message_id(
                session,
                message_id=mail.message_id,
                thread_key=thread_key,
                direction="out",
                recipient=mail.recipient,
                ticket_number=ticket_number,
            )
            return mail

    def _compose(
        self, reply: OutboundReply, data: dict[str, Any], recipient: str, ticket_number: str | None
    ) -> outbound.OutgoingMail:
        settings = self.settings
        prefix = self._context.settings.tickets.number_prefix
        key = reply.idempotency_key or hashlib.sha256(reply.text.encode()).hexdigest()[:24]
        return outbound.compose(
            text=reply.text,
            links=[(c.title, c.link) for c in reply.citations],
            options=[b.label for b in reply.buttons],
            sender=str(data.get("support_address") or settings.support_addresses[0]),
            sender_name=_sender_name(reply),
            recipient=recipient,
            subject=outbound.reply_subject(
                str(data.get("subject") or ""), ticket_number=ticket_number, ticket_prefix=prefix
            ),
            message_id=outbound.message_id_for(key, settings.domain),
            in_reply_to=data.get("last_message_id"),
            references=[str(r) for r in data.get("references") or []],
            loop_header=settings.loops.header,
            loop_value=settings.domain,
        )

    # -- agent surface -----------------------------------------------------------

    async def publish_ticket(self, view: Any, post: Any) -> Any:
        """Mail a notification for a new ticket to the agent address; later changes are not re-mailed
        (a mail cannot be edited in place), the timeline entries are (``post_to_ticket``)."""
        from bot.desk import DeskPost

        if post is not None:
            return post
        lines = [
            f"Ticket {view.number}: {view.subject}",
            f"Status: {view.status}   Priority: {view.priority}   Group: {view.group or '-'}",
            f"Requester: {view.requester_name or view.requester_id} ({view.requester_channel})",
            "",
            view.summary,
            "",
            "Reply to this mail from your agent address to answer the requester.",
        ]
        message_id = await self._notify_agents(view, "\n".join(lines), key=f"desk-{view.number}", parent=None)
        return DeskPost(thread_key=f"desk:{view.number}", data={"message_id": message_id})

    async def post_to_ticket(self, post: Any, view: Any, entry: Any) -> None:
        text = f"{entry.author} ({entry.kind.replace('_', ' ')}, {entry.channel}):\n\n{entry.text}"
        parent = post.data.get("message_id")
        await self._notify_agents(view, text, key=f"desk-{view.number}-{entry.id}", parent=parent)

    async def _notify_agents(self, view: Any, text: str, *, key: str, parent: str | None) -> str:
        recipient = self.settings.agent_notify_address
        assert recipient is not None
        settings = self.settings
        mail = outbound.compose(
            text=text,
            links=[],
            options=[],
            sender=settings.support_addresses[0],
            sender_name=f"{SUPPORT_NAME} desk",
            recipient=recipient,
            subject=outbound.reply_subject(
                view.subject, ticket_number=view.number, ticket_prefix=self._context.settings.tickets.number_prefix
            ).removeprefix("Re: "),
            message_id=outbound.message_id_for(key, settings.domain),
            in_reply_to=parent,
            references=[parent] if parent else [],
            loop_header=settings.loops.header,
            loop_value=settings.domain,
        )
        await asyncio.to_thread(self._remember_desk_mail, mail, view.number)
        await asyncio.to_thread(self.relay.send, mail)
        return mail.message_id

    def _remember_desk_mail(self, mail: outbound.OutgoingMail, number: str) -> None:
        with self._db.transaction() as session:
            threads.remember_message_id(
                session,
                message_id=mail.message_id,
                thread_key=f"desk:{number}",
                direction="out",
                recipient=mail.recipient,
                ticket_number=number,
            )


def _sender_name(reply: OutboundReply) -> str:
    """The From display name: "Dana Kim via IT Support" on an agent's reply (the address stays ours)."""
    if reply.kind != ReplyKind.AGENT:
        return SUPPORT_NAME
    name = reply.author_name or reply.author.rpartition(":")[2]
    name = " ".join(name.split())  # one line: a header value
    return f"{name} via {SUPPORT_NAME}" if name else SUPPORT_NAME
