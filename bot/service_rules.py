"""The service rules the conversation pipeline applies to tickets, in the caller's transaction.

- a new ticket gets its category, priority and group (``ticketing.routing``),
  its SLA due times in business hours (``ticketing.sla``) and, for a catalog
  request, its approval step (``ticketing.approvals``);
- a requester's message on a ticket pending on them restarts the SLA clock, and
  one shortly after resolution reopens the ticket (``ticketing.csat``);
- a rating may carry a comment.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from bot.outgoing import conversation_ref, queue_reply
from bot.replies import notice
from bot.service_desk_config import ServiceDeskSettings
from kb_index import KnowledgeBaseError, load_articles
from ticketing import approvals, csat, service, sla
from ticketing.approvals import Decision, Identity
from ticketing.db import Database
from ticketing.models import Conversation, Requester, Ticket, TicketEvent, TicketStatus
from ticketing.routing import Embed, LabelledText, Router, Routing, label_articles, ticket_text
from ticketing.service import TicketError, add_event, get_ticket
from ticketing.service_desk_models import Approval

log = logging.getLogger(__name__)

# What approvers and requesters are told (plain text; every channel renders it).
APPROVAL_NEEDED = (
    "Approval needed: {title} for {requester} ({number}: {subject}). "
    'Reply "approve {number}" or "reject {number} <reason>".'
)
APPROVAL_RECORDED = "Thanks, {number} is approved; the request goes ahead."
REJECTION_RECORDED = "Thanks, {number} is rejected; the requester is told."
REQUEST_APPROVED = "Your request {number} was approved{comment}; we are on it."
REQUEST_REJECTED = "Your request {number} was not approved{comment}, so it is closed."


def for_runtime(
    settings: ServiceDeskSettings, *, retriever: object, kb_path: Path, db: Database | None = None
) -> ServiceRules:
    """The rules a server runs with: embedding neighbours (past tickets, KB articles labelled by the
    keyword rules) when the knowledge index exposes its ``embedder``; keyword, channel and exact-text
    correction rules otherwise. With ``db``, past tickets are embedded in the background right away,
    so the first routing (inside a write transaction) does not wait for it."""
    encode = getattr(getattr(retriever, "embedder", None), "encode", None)
    if not callable(encode):
        return ServiceRules(settings)
    try:
        loaded, _skipped = load_articles(kb_path)
    except KnowledgeBaseError:
        loaded = []
    articles = label_articles(
        [(a.title, " ".join(a.tags) + "\n" + a.body[:1000]) for a in loaded], settings.routing.rules()
    )
    rules = ServiceRules(settings, embed=encode, articles=articles)
    if db is not None:
        threading.Thread(target=rules.warm_up, args=(db,), name="routing-warm-up", daemon=True).start()
    return rules


class ServiceRules:
    def __init__(
        self, settings: ServiceDeskSettings, *, embed: Embed | None = None, articles: Sequence[LabelledText] = ()
    ) -> None:
        self.settings = settings
        self.policy = settings.sla_policy
        self.router = Router(rules=settings.routing.rules(), embed=embed, articles=articles)
        self.catalog = settings.catalog_items()
        self.directory = settings.approval_directory()

    def prepare(self, *, subject: str, description: str) -> None:
        """Work for ``ticket_opened`` that needs no database (embedding the text), done before its transaction."""
        self.router.prepare(ticket_text(service.ticket_subject(subject), description))

    def ticket_opened(
        self,
        session: Session,
        *,
        ticket: Ticket,
        conversation: Conversation,
        requested_priority: str | None = None,
    ) -> Routing:
        """Route the new ticket, set its business-hours due times and open its approval step if it is a request."""
        text = ticket_text(ticket.subject, ticket.description)
        routing = self.router.route(
            session, text=text, channel=conversation.channel, requested_priority=requested_priority
        )
        ticket.category, ticket.priority, ticket.group = routing.category, routing.priority, routing.group
        sla.recompute_due_times(session, ticket=ticket, policy=self.policy)
        # Part of opening, so it goes on the "opened" event of the audit trail rather than one of its own.
        routed = {
            **routing.as_detail(),
            "first_response_due": _iso(ticket.first_response_due),
            "resolution_due": _iso(ticket.resolution_due),
        }
        opened = session.scalar(
            select(TicketEvent).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "opened").limit(1)
        )
        if opened is not None:
            opened.detail = {**(opened.detail or {}), "routing": routed}
        else:
            add_event(
                session, ticket=ticket, actor="routing", channel=conversation.channel, kind="routed", detail=routed
            )
        item = approvals.match_catalog_item(text, self.catalog)
        if item is not None:
            approval = approvals.request_approval(
                session, ticket=ticket, item=item, directory=self.directory, channel=conversation.channel
            )
            if approval is not None:
                self._ask_approvers(session, ticket=ticket, approval=approval, title=item.title)
        return routing

    def _ask_approvers(self, session: Session, *, ticket: Ticket, approval: Approval, title: str) -> None:
        """Ask each approver in their latest conversation with tierzero (on whatever channel that was)."""
        keys = (
            {approval.approver}
            if approval.approver_kind == "person"
            else self.directory.groups.get(approval.approver, frozenset())
        )
        requester = session.get(Requester, ticket.requester_id)
        text = APPROVAL_NEEDED.format(
            title=title,
            requester=(requester.display_name or requester.platform_id) if requester else "a requester",
            number=ticket.number,
            subject=ticket.subject,
        )
        for conversation in _latest_conversations(session, keys):
            queue_reply(
                session,
                conversation=conversation,
                reply=notice(conversation_ref(conversation), text, ticket_number=ticket.number),
            )

    def decide_from_message(
        self, session: Session, *, conversation: Conversation, decision: Decision, now: datetime
    ) -> str:
        """An approver's "approve/reject TZ-..." from any channel; returns the answer for them, tells the requester."""
        ticket = get_ticket(session, number=decision.number)
        approver = session.get(Requester, conversation.requester_id)
        if ticket is None or approver is None:
            return f"There is no ticket {decision.number}."
        try:
            self.decide_approval(
                session, ticket=ticket, requester=approver, approve=decision.approve, comment=decision.comment, now=now
            )
        except TicketError as exc:
            return str(exc)
        requester_conversation = session.get(Conversation, ticket.conversation_id)
        if requester_conversation is not None:
            template = REQUEST_APPROVED if decision.approve else REQUEST_REJECTED
            text = template.format(number=ticket.number, comment=f" ({decision.comment})" if decision.comment else "")
            queue_reply(
                session,
                conversation=requester_conversation,
                reply=notice(conversation_ref(requester_conversation), text, ticket_number=ticket.number),
            )
        return (APPROVAL_RECORDED if decision.approve else REJECTION_RECORDED).format(number=ticket.number)

    def warm_up(self, db: Database) -> None:
        try:
            with db.transaction() as session:
                cached = self.router.warm_up(session)
            log.info("routing: %s labelled texts embedded", cached)
        except Exception:  # routing still works; it embeds on first use instead
            log.exception("routing warm-up failed")

    def correct(
        self, session: Session, *, ticket: Ticket, field_name: str, value: str, actor: str, channel: str
    ) -> None:
        """An agent sets category, priority or group; stored as a correction that later predictions use."""
        before = getattr(ticket, field_name)
        if before == value:
            return
        self.router.record_correction(
            session, ticket=ticket, field_name=field_name, predicted=before, corrected=value, actor=actor
        )
        setattr(ticket, field_name, value)
        if field_name == "priority":
            sla.recompute_due_times(session, ticket=ticket, policy=self.policy)
        add_event(
            session,
            ticket=ticket,
            actor=actor,
            channel=channel,
            kind=f"{field_name}_changed",
            detail={"from": before, "to": value},
        )

    def requester_wrote(self, session: Session, *, ticket: Ticket, actor: str, channel: str, now: datetime) -> None:
        """A requester's message on an open ticket: one pending on them is back with the desk, its clock running."""
        if ticket.status == TicketStatus.PENDING:
            ticket.status = TicketStatus.OPEN
            paused = sla.resume(session, ticket=ticket, now=now, policy=self.policy)
            add_event(
                session,
                ticket=ticket,
                actor=actor,
                channel=channel,
                kind="sla_resumed",
                detail={"paused_seconds": paused},
            )

    def set_pending(self, session: Session, *, ticket: Ticket, actor: str, channel: str, now: datetime) -> None:
        """Waiting on the requester: the SLA clock stops until they answer."""
        service.set_pending(session, ticket=ticket, actor=actor, channel=channel, now=now)

    def reopens(self, ticket: Ticket | None, *, now: datetime) -> bool:
        return csat.reopens(ticket, now=now, window=timedelta(days=self.settings.csat.reopen_window_days))

    def sla_state(self, session: Session, ticket: Ticket, *, now: datetime) -> str:
        return sla.ticket_sla_state(session, ticket=ticket, now=now, policy=self.policy)

    def decide_approval(
        self, session: Session, *, ticket: Ticket, requester: Requester, approve: bool, comment: str, now: datetime
    ) -> Approval:
        return approvals.decide(
            session,
            ticket=ticket,
            who=Identity.of(requester),
            approve=approve,
            directory=self.directory,
            items=self.catalog,
            now=now,
            comment=comment,
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _latest_conversations(session: Session, keys: set[str] | frozenset[str]) -> list[Conversation]:
    """Each identity's most recent conversation ("channel:platform_id" or e-mail, any case)."""
    found = []
    for key in sorted(keys):
        channel, _, platform_id = key.partition(":")
        who = or_(
            func.lower(Requester.email) == key,
            (func.lower(Requester.channel) == channel) & (func.lower(Requester.platform_id) == platform_id),
        )
        conversation = session.scalar(
            select(Conversation)
            .join(Requester, Requester.id == Conversation.requester_id)
            .where(who)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
            .limit(1)
        )
        if conversation is not None:
            found.append(conversation)
    return found
