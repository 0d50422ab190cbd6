"""The agent console: queues, the ticket page with its whole timeline, and the agent's actions.

Pages are server-rendered; a small script swaps in fresh fragments when the
server-sent event stream says something changed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.desk import TicketView
from channels.web import queries, texts
from channels.web.actions import InvalidInput, NotFound, TicketUpdate
from channels.web.front import SignInRequired, WebFront, json_error, not_signed_in_page, redirect
from channels.web.identity import Identity
from ticketing.access import AccessDenied, Principal, require_view
from ticketing.models import Priority, Requester
from ticketing.service import TicketError


def routes(front: WebFront) -> Sequence[BaseRoute]:
    console = Console(front)
    return [
        Route("/console", console.queue_page, methods=["GET"]),
        Route("/console/queue", console.queue_fragment, methods=["GET"]),
        Route("/console/stream", console.desk_stream, methods=["GET"]),
        Route("/console/tickets/{number}", console.ticket_page, methods=["GET"]),
        Route("/console/tickets/{number}/timeline", console.timeline_fragment, methods=["GET"]),
        Route("/console/tickets/{number}/stream", console.ticket_stream, methods=["GET"]),
        Route("/console/tickets/{number}/{action}", console.act, methods=["POST"]),
    ]


class Console:
    def __init__(self, front: WebFront) -> None:
        self.front = front

    def _agent(self, request: Request) -> tuple[Identity, Principal]:
        identity, principal = self.front.page_principal(request)
        if not principal.is_agent:
            raise AccessDenied(texts.NOT_AN_AGENT)
        return identity, principal

    async def _guarded(self, request: Request, page: Callable[[Identity, Principal], Awaitable[Response]]) -> Response:
        try:
            identity, principal = self._agent(request)
        except SignInRequired:
            return not_signed_in_page(request)
        except AccessDenied as exc:
            return self.front.error_page(request, 403, str(exc), identity=self.front.request_identity(request))
        try:
            return await page(identity, principal)
        except NotFound as exc:
            return self.front.error_page(request, 404, str(exc), identity=identity)
        except AccessDenied as exc:
            return self.front.error_page(request, 403, str(exc), identity=identity)

    # -- queues ------------------------------------------------------------------------------

    def _queue(self, principal: Principal, queue: str) -> tuple[list[TicketView], dict[str, int]]:
        with self.front.db.transaction() as session:
            tickets = queries.list_ticket_views(
                session, principal, queue=queue, limit=200, policy=self.front.desk.sla_policy
            )
            return tickets, queries.queue_counts(session, principal, policy=self.front.desk.sla_policy)

    def _queue_name(self, request: Request) -> str:
        queue = request.query_params.get("queue", "all")
        return queue if queue in queries.QUEUES else "all"

    async def queue_page(self, request: Request) -> Response:
        return await self._queue_view(request, "console_queue.html")

    async def queue_fragment(self, request: Request) -> Response:
        """The queue table alone, for the page's live refresh."""
        return await self._queue_view(request, "_queue_table.html")

    async def _queue_view(self, request: Request, template: str) -> Response:
        async def page(identity: Identity, principal: Principal) -> Response:
            queue = self._queue_name(request)
            tickets, counts = await asyncio.to_thread(self._queue, principal, queue)
            return self.front.render(
                request,
                template,
                identity=identity,
                principal=principal,
                queue=queue,
                tickets=tickets,
                counts=counts,
            )

        return await self._guarded(request, page)

    async def desk_stream(self, request: Request) -> Response:
        try:
            self._agent(request)
        except (SignInRequired, AccessDenied):
            return json_error(401, texts.SIGN_IN_REQUIRED)

        async def marker() -> object:
            return await asyncio.to_thread(self._desk_marker)

        return self.front.live_stream(request, marker, _marker_event)

    def _desk_marker(self) -> tuple[int, int]:
        with self.front.db.transaction() as session:
            return queries.desk_marker(session)

    # -- one ticket ---------------------------------------------------------------------------

    def _ticket(self, principal: Principal, number: str) -> tuple[TicketView, list[queries.TimelineItem]]:
        with self.front.db.transaction() as session:
            ticket = queries.find_ticket(session, number)
            if ticket is None:
                raise NotFound(texts.NO_SUCH_TICKET.format(number=number))
            requester = session.get(Requester, ticket.requester_id)
            assert requester is not None
            require_view(principal, ticket, requester=requester)
            return self.front.desk.ticket_view(session, ticket), queries.timeline(
                session, ticket, include_internal=True
            )

    async def ticket_page(self, request: Request) -> Response:
        number = request.path_params["number"]

        async def page(identity: Identity, principal: Principal) -> Response:
            view, items = await asyncio.to_thread(self._ticket, principal, number)
            return self.front.render(
                request,
                "console_ticket.html",
                identity=identity,
                principal=principal,
                ticket=view,
                timeline=items,
                priorities=[str(p) for p in Priority],
                source_id=uuid.uuid4().hex,
                holds=view.assignee == principal.assignee_key,
            )

        return await self._guarded(request, page)

    async def timeline_fragment(self, request: Request) -> Response:
        number = request.path_params["number"]

        async def page(identity: Identity, principal: Principal) -> Response:
            view, items = await asyncio.to_thread(self._ticket, principal, number)
            return self.front.render(
                request, "_timeline.html", identity=identity, principal=principal, ticket=view, timeline=items
            )

        return await self._guarded(request, page)

    async def ticket_stream(self, request: Request) -> Response:
        number = request.path_params["number"]
        try:
            _, principal = self._agent(request)
            await asyncio.to_thread(self._ticket, principal, number)
        except (SignInRequired, AccessDenied):
            return json_error(401, texts.SIGN_IN_REQUIRED)
        except NotFound as exc:
            return json_error(404, str(exc))

        async def marker() -> object:
            return await asyncio.to_thread(self._ticket_marker, number)

        return self.front.live_stream(request, marker, _marker_event)

    def _ticket_marker(self, number: str) -> tuple[int, int]:
        with self.front.db.transaction() as session:
            ticket = queries.find_ticket(session, number)
            return queries.last_change_marker(session, ticket) if ticket is not None else (0, 0)

    # -- actions ------------------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        number = request.path_params["number"]
        action = request.path_params["action"]
        path = f"/console/tickets/{number}"
        try:
            identity, principal = self._agent(request)
        except SignInRequired:
            return not_signed_in_page(request)
        except AccessDenied as exc:
            return self.front.error_page(request, 403, str(exc), identity=self.front.request_identity(request))
        form = await self.front.form(request, identity)
        actions = self.front.actions
        try:
            if action == "take":
                await actions.take(principal, number)
                notice = texts.TAKEN.format(number=number)
            elif action == "reply":
                source_id = form.get("source_id") or uuid.uuid4().hex
                await actions.reply(principal, number, form.get("text", ""), source_id=f"web-{source_id[:100]}")
                notice = texts.REPLIED.format(number=number)
            elif action == "handback":
                await actions.hand_back(principal, number)
                notice = texts.HANDED_BACK.format(number=number)
            elif action == "pending":
                await actions.wait_for_requester(principal, number)
                notice = texts.PENDING.format(number=number)
            elif action == "resolve":
                await actions.resolve(principal, number, form.get("resolution", "")[:2000])
                notice = texts.RESOLVED.format(number=number)
            elif action == "note":
                await actions.note(principal, number, form.get("text", ""))
                notice = texts.NOTE_ADDED.format(number=number)
            elif action == "update":
                changes = await actions.update(principal, number, _update_from_form(form))
                notice = (
                    texts.UPDATED.format(number=number, fields=", ".join(changes)) if changes else texts.NOTHING_CHANGED
                )
            else:
                return self.front.error_page(request, 404, f"unknown action {action}", identity=identity)
        except NotFound as exc:
            return self.front.error_page(request, 404, str(exc), identity=identity)
        except AccessDenied as exc:
            return redirect(path, error=str(exc))
        except (TicketError, InvalidInput) as exc:
            return redirect(path, error=str(exc))
        self.front.live.notify()
        return redirect(path, notice=notice)


async def _marker_event(marker: object) -> dict[str, object]:
    """The page compares the marker with the last one it saw and refetches its fragment when it moved."""
    return {"marker": marker}


def _update_from_form(form: dict[str, str] | object) -> TicketUpdate:
    assert hasattr(form, "get")
    tier_text = (form.get("tier") or "").strip()
    if tier_text and not tier_text.isdigit():
        raise InvalidInput("tier", "must be 1, 2, 3 or 4")

    def text(name: str) -> str | None:
        value = (form.get(name) or "").strip()
        return value or None

    return TicketUpdate(
        priority=text("priority"),
        category=text("category"),
        group=text("group"),
        tier=int(tier_text) if tier_text else None,
    )
