"""The self-service portal for requesters: chat with the bot, search the KB, follow tickets, rate.

The chat box is the "web chat" channel: messages go through the same pipeline
as every other channel (``on_message``), replies are read back from the
database and pushed to the page with server-sent events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.channel import Acceptance, InvalidMessage, Overloaded
from bot.model import ConversationRef, InboundMessage, Participant
from channels.web import queries, texts
from channels.web.actions import InvalidInput, NotFound
from channels.web.front import MAX_FORM_BYTES, SignInRequired, WebFront, json_error, not_signed_in_page, redirect
from channels.web.identity import SESSION_COOKIE, Identity, is_email, principal_for, send_sign_in_link
from ticketing.access import AccessDenied, Principal, Role, can_view
from ticketing.models import Requester
from ticketing.service import TicketError

CHANNEL = "web"
MAX_CLIENT_ID = 100
MAX_IDENTITY_CHARS = 254
_SLUG = re.compile(r"[^a-z0-9]+")


def routes(front: WebFront) -> Sequence[BaseRoute]:
    portal = Portal(front)
    return [
        Route("/", signed_in(portal.home), methods=["GET"]),
        Route("/signin", portal.sign_in_page, methods=["GET"]),
        Route("/signin", portal.sign_in, methods=["POST"]),
        Route("/signin/link", portal.sign_in_link, methods=["GET"]),
        Route("/signout", portal.sign_out, methods=["POST"]),
        Route("/portal/messages", portal.post_message, methods=["POST"]),
        Route("/portal/messages", portal.get_messages, methods=["GET"]),
        Route("/portal/stream", portal.stream, methods=["GET"]),
        Route("/kb", signed_in(portal.kb_search), methods=["GET"]),
        Route("/kb/{article_id}", signed_in(portal.kb_article), methods=["GET"]),
        Route("/tickets", signed_in(portal.my_tickets), methods=["GET"]),
        Route("/tickets/{number}", signed_in(portal.my_ticket), methods=["GET"]),
        Route("/tickets/{number}/rating", signed_in(portal.rate), methods=["POST"]),
        Route("/tickets/{number}/solved", signed_in(portal.solved), methods=["POST"]),
    ]


def signed_in(page: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A page only signed-in people see: anyone else gets the sign-in page."""

    async def guarded(request: Request) -> Response:
        try:
            return await page(request)
        except SignInRequired:
            return not_signed_in_page(request)

    return guarded


def message_id_for(identity: str, client_id: str) -> str:
    """Stable per (person, browser-generated id): a resubmitted message is deduplicated, not answered twice."""
    return hashlib.sha256(f"{identity}\n{client_id}".encode()).hexdigest()


class Portal:
    def __init__(self, front: WebFront) -> None:
        self.front = front

    # -- sign-in ---------------------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        front = self.front
        if front.identity.mode == "proxy":
            identity = front.request_identity(request)
            if identity is not None:
                return redirect(_safe_next(request.query_params.get("next")))
            return front.error_page(request, 401, texts.SIGN_IN_PROXY_ONLY)
        return front.render(
            request,
            "signin.html",
            agents=front.identity.agents() if front.identity.mode == "demo" else (),
            next=_safe_next(request.query_params.get("next")),
        )

    async def sign_in(self, request: Request) -> Response:
        front = self.front
        if front.identity.mode == "proxy":
            return front.error_page(request, 401, texts.SIGN_IN_PROXY_ONLY)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            return front.error_page(request, 413, "form too large")
        form = await request.form(max_files=0, max_fields=20)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        next_path = _safe_next(values.get("next"))
        if front.identity.mode == "demo":
            identity = _demo_identity(front, values)
            if identity is None:
                return redirect("/signin", error="Enter your name or e-mail address.", next=next_path)
            return self._signed_in(identity, next_path)
        # email_link: always answer the same way, so the form cannot probe who has an account.
        email = values.get("email", "").strip()
        if not is_email(email) or len(email) > MAX_IDENTITY_CHARS:
            return redirect("/signin", error=texts.SIGN_IN_BAD_EMAIL)
        allowed = front.settings.email_link.allowed_domains
        if allowed and email.rsplit("@", 1)[1].casefold() not in {d.casefold() for d in allowed}:
            return redirect("/signin", error=texts.SIGN_IN_DOMAIN_REFUSED)
        base = front.settings.email_link.public_url or front.base_url
        link = f"{base.rstrip('/')}/signin/link?token={front.sessions.link_token(email)}"
        mailed = await send_sign_in_link(front.settings, email=email, link=link)
        minutes = front.settings.email_link.link_valid_minutes
        return redirect(
            "/signin", notice=texts.SIGN_IN_LINK_SENT.format(minutes=minutes) if mailed else texts.SIGN_IN_LINK_LOGGED
        )

    async def sign_in_link(self, request: Request) -> Response:
        front = self.front
        if front.identity.mode != "email_link":
            return front.error_page(request, 404, "sign-in links are not used here")
        email = front.sessions.email_from_link(request.query_params.get("token", "")[:2000])
        if email is None:
            return front.error_page(request, 401, texts.SIGN_IN_LINK_INVALID)
        return self._signed_in(Identity(id=email.casefold(), name="", email=email.casefold(), via="email_link"), "/")

    def _signed_in(self, identity: Identity, next_path: str) -> Response:
        front = self.front
        principal = principal_for(identity, front.identity, group_members=front.group_members())
        target = next_path if next_path != "/" else ("/console" if principal.is_agent else "/")
        response = redirect(target)
        response.set_cookie(
            SESSION_COOKIE,
            front.sessions.cookie_value(identity),
            max_age=front.sessions.max_age,
            httponly=True,
            samesite="lax",
            secure=front.base_url.startswith("https://"),
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        response = redirect("/signin")
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- home and chat -------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)

        def load() -> tuple[list[queries.ChatMessage], list[object]]:
            with front.db.transaction() as session:
                conversation = queries.portal_conversation(session, conversation_id=identity.id)
                messages = (
                    queries.chat_messages(session, conversation=conversation, agent_names=front.agent_names())
                    if conversation
                    else []
                )
                tickets = queries.list_ticket_views(
                    session,
                    _as_requester(principal),
                    statuses=("new", "open", "pending"),
                    limit=10,
                    policy=front.desk.sla_policy,
                )
                return messages, list(tickets)

        messages, tickets = await asyncio.to_thread(load)
        return front.render(
            request, "portal.html", identity=identity, principal=principal, messages=messages, tickets=tickets
        )

    async def post_message(self, request: Request) -> Response:
        front = self.front
        identity = front.request_identity(request)
        is_json = request.headers.get("content-type", "").startswith("application/json")
        if identity is None:
            return json_error(401, texts.SIGN_IN_REQUIRED) if is_json else not_signed_in_page(request)
        if is_json:
            if not front.sessions.check_csrf(identity, request.headers.get("x-csrf-token")):
                return json_error(403, texts.CSRF_FAILED)
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                return json_error(413, "message too large")
            try:
                data = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                return json_error(422, "body: not valid JSON", field="body")
            if not isinstance(data, dict):
                return json_error(422, "body: expected a JSON object", field="body")
        else:
            data = dict(await front.form(request, identity))
        text, action, client_id = data.get("text", ""), data.get("action") or None, data.get("client_id", "")
        for name, value in (("text", text), ("action", action or ""), ("client_id", client_id)):
            if not isinstance(value, str):
                return json_error(422, f"{name}: must be a string", field=name)
        if not client_id or len(client_id) > MAX_CLIENT_ID:
            return json_error(422, f"client_id: 1 to {MAX_CLIENT_ID} characters", field="client_id")
        if action is not None and len(action) > 300:
            return json_error(422, "action: at most 300 characters", field="action")
        if front.on_message is None:
            message = texts.CHAT_UNAVAILABLE
            return json_error(503, message, headers={"Retry-After": "5"}) if is_json else redirect("/", error=message)
        inbound = InboundMessage(
            channel_message_id=message_id_for(identity.id, client_id),
            conversation=ConversationRef(CHANNEL, identity.id),
            sender=Participant(CHANNEL, identity.id, identity.name, identity.email),
            text=text,
            action=action,
            raw={"text": text, "action": action, "client_id": client_id, "signed_in_via": identity.via},
        )
        try:
            receipt = await front.on_message(inbound)
        except InvalidMessage as exc:
            return json_error(422, f"text: {exc}", field="text") if is_json else redirect("/", error=str(exc))
        except Overloaded as exc:
            # Not stored. The page's script retries with the same client_id (deduplicated); without
            # script, "back" keeps the typed text for a second try.
            retry = {"Retry-After": str(exc.retry_after)}
            if is_json:
                return json_error(503, texts.CHAT_BUSY, headers=retry)
            page = front.error_page(request, 503, texts.CHAT_BUSY, identity=identity)
            page.headers.update(retry)
            return page
        if not is_json:
            return redirect("/")
        return JSONResponse(
            {"status": str(receipt.status), "message_id": receipt.message_id},
            status_code=202 if receipt.status is Acceptance.ACCEPTED else 200,
        )

    async def get_messages(self, request: Request) -> Response:
        identity = self.front.request_identity(request)
        if identity is None:
            return json_error(401, texts.SIGN_IN_REQUIRED)
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return json_error(422, "after: must be a message id (an integer)", field="after")
        messages = await asyncio.to_thread(self._messages_after, identity, after)
        return JSONResponse({"messages": [m.as_json() for m in messages]})

    def _messages_after(self, identity: Identity, after: int) -> list[queries.ChatMessage]:
        with self.front.db.transaction() as session:
            conversation = queries.portal_conversation(session, conversation_id=identity.id)
            return (
                queries.chat_messages(
                    session, conversation=conversation, after_id=after, agent_names=self.front.agent_names()
                )
                if conversation
                else []
            )

    async def stream(self, request: Request) -> Response:
        """New chat messages as server-sent events (resumes after ``Last-Event-ID`` / ``?after=``)."""
        identity = self.front.request_identity(request)
        if identity is None:
            return json_error(401, texts.SIGN_IN_REQUIRED)
        raw_after = request.headers.get("last-event-id") or request.query_params.get("after", "0")
        after = int(raw_after) if raw_after.isdigit() else 0
        seen = {"after": after}

        async def marker() -> int:
            messages = await asyncio.to_thread(self._messages_after, identity, seen["after"])
            return messages[-1].id if messages else seen["after"]

        async def payload(_: object) -> dict[str, object] | None:
            messages = await asyncio.to_thread(self._messages_after, identity, seen["after"])
            if not messages:
                return None
            seen["after"] = messages[-1].id
            return {"messages": [m.as_json() for m in messages]}

        return self.front.live_stream(request, marker, payload)

    # -- knowledge base ------------------------------------------------------------------

    async def kb_search(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)
        query = request.query_params.get("q", "").strip()[:500]
        hits = await asyncio.to_thread(front.catalog.search if query else lambda q: front.catalog.all(), query)
        return front.render(request, "kb.html", identity=identity, principal=principal, query=query, hits=hits)

    async def kb_article(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)
        article_id = request.path_params["article_id"]
        article = await asyncio.to_thread(front.catalog.get, article_id)
        if article is None:
            return front.error_page(
                request, 404, texts.NO_SUCH_ARTICLE.format(article_id=article_id), identity=identity
            )
        html = front.catalog.render(article)
        return front.render(
            request, "article.html", identity=identity, principal=principal, article=article, body_html=html
        )

    # -- my tickets ------------------------------------------------------------------------

    async def my_tickets(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)

        def load() -> list[object]:
            with front.db.transaction() as session:
                return list(
                    queries.list_ticket_views(
                        session, _as_requester(principal), limit=100, policy=front.desk.sla_policy
                    )
                )

        tickets = await asyncio.to_thread(load)
        return front.render(request, "my_tickets.html", identity=identity, principal=principal, tickets=tickets)

    async def my_ticket(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)
        number = request.path_params["number"]
        requester_view = _as_requester(principal)

        def load() -> tuple[object, list[queries.ChatMessage], str | None] | None:

            with front.db.transaction() as session:
                ticket = queries.find_ticket(session, number)
                if ticket is None:
                    return None
                requester = session.get(Requester, ticket.requester_id)
                # The portal shows only one's own tickets, even to agents (they have the console).
                if requester is None or not can_view(requester_view, ticket, requester=requester):
                    return None
                return (
                    front.desk.ticket_view(session, ticket),
                    queries.ticket_messages(session, ticket, agent_names=front.agent_names()),
                    ticket.csat_comment,
                )

        loaded = await asyncio.to_thread(load)
        if loaded is None:
            return front.error_page(request, 404, texts.NO_SUCH_TICKET.format(number=number), identity=identity)
        view, messages, csat_comment = loaded
        return front.render(
            request,
            "my_ticket.html",
            identity=identity,
            principal=principal,
            ticket=view,
            messages=messages,
            csat_comment=csat_comment,
        )

    async def rate(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)
        number = request.path_params["number"]
        form = await front.form(request, identity)
        path = f"/tickets/{number}"
        score_text = form.get("score", "")
        if not score_text.isdigit():
            return redirect(path, error="Choose a rating from 1 to 5.")
        try:
            await front.actions.rate(_as_requester(principal), number, int(score_text), form.get("comment"))
        except (AccessDenied, NotFound):
            return front.error_page(request, 404, texts.NO_SUCH_TICKET.format(number=number), identity=identity)
        except (TicketError, InvalidInput) as exc:
            return redirect(path, error=str(exc))
        return redirect(path, notice=texts.RATED.format(number=number))

    async def solved(self, request: Request) -> Response:
        front = self.front
        identity, principal = front.page_principal(request)
        number = request.path_params["number"]
        await front.form(request, identity)
        try:
            await front.actions.requester_resolve(_as_requester(principal), number)
        except (AccessDenied, NotFound):
            return front.error_page(request, 404, texts.NO_SUCH_TICKET.format(number=number), identity=identity)
        except TicketError as exc:
            return redirect(f"/tickets/{number}", error=str(exc))
        front.live.notify()
        return redirect(f"/tickets/{number}", notice=texts.SOLVED.format(number=number))


def _as_requester(principal: Principal) -> Principal:
    """The portal acts for the person as a requester, whatever other roles they have."""
    return Principal(
        identity=principal.identity, display_name=principal.display_name, role=Role.REQUESTER, email=principal.email
    )


def _demo_identity(front: WebFront, values: dict[str, str]) -> Identity | None:
    agent_id = values.get("agent", "").strip()
    if agent_id:
        account = front.identity.agent_account(agent_id)
        if account is None:
            return None
        return Identity(
            id=account.id, name=account.name, email=account.id if is_email(account.id) else None, via="demo"
        )
    name = " ".join(values.get("name", "").split())[:100]
    if not name:
        return None
    if is_email(name):
        return Identity(id=name.casefold(), name=name.split("@")[0], email=name.casefold(), via="demo")
    slug = _SLUG.sub(".", name.casefold()).strip(".") or "user"
    return Identity(id=f"{slug}@demo.local", name=name, email=None, via="demo")


def _safe_next(value: str | None) -> str:
    """Only local paths: an open redirect would let a phishing link borrow our sign-in page."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 500:
        return "/"
    return value
