"""The web front's shared state and helpers: who is asking, rendering, errors, live updates."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.templating import Jinja2Templates

from bot.channel import MessageHandler
from bot.config import Settings
from bot.desk import Desk
from channels.web import texts
from channels.web.actions import WebActions
from channels.web.identity import Identity, IdentityCheck, Sessions, agent_principal, principal_for
from channels.web.kb import ArticleCatalog
from channels.web.settings import WebSettings
from ticketing.access import Principal, Role, find_api_token
from ticketing.db import Database
from ticketing.routing import Router

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
# A live stream ends after this long and the page reconnects from where it was. uvicorn's
# graceful shutdown waits for open responses without telling the app, so this bounds how
# long an open page can delay a Ctrl-C (measured: ~22 s with 20 s streams).
STREAM_SECONDS = 5.0
MAX_FORM_BYTES = 100_000
# Pages load only their own scripts and styles (no inline code), so a strict policy costs nothing
# and stops injected markup from running or the pages from being framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class LiveUpdates:
    """Wakes the live views when something may have changed (a reply was sent, an agent acted)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> None:
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        self.closed = True
        self.notify()


class SignInRequired(Exception):
    pass


class WebFront:
    def __init__(
        self,
        *,
        settings: WebSettings,
        app_settings: Settings,
        db: Database,
        desk: Desk,
        sessions: Sessions,
        base_url: str,
    ) -> None:
        self.settings = settings
        self.app_settings = app_settings
        self.db = db
        self.desk = desk
        self.sessions = sessions
        self.identity = IdentityCheck(settings, sessions)
        self.catalog = ArticleCatalog(Path(app_settings.kb.path))
        self.live = LiveUpdates()
        self.actions = WebActions(db=db, desk=desk, router=Router(rules=app_settings.service_desk.routing.rules()))
        self.on_message: MessageHandler | None = None
        self.base_url = base_url
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )
        env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"
        env.globals["texts"] = texts
        self.templates = Jinja2Templates(env=env)

    # -- who is asking --------------------------------------------------------------

    def group_members(self) -> dict[str, frozenset[str]]:
        desk = getattr(self.app_settings, "service_desk", None)
        groups = getattr(desk, "groups", None) or {}
        return {name: frozenset(getattr(group, "members", ())) for name, group in groups.items()}

    def agent_names(self) -> dict[str, str]:
        """Assignee keys of web agents -> the names requesters see on their replies."""
        return {f"web:{a.id}": a.name or a.id for a in self.identity.agents()}

    def request_identity(self, request: Request) -> Identity | None:
        return self.identity.from_request(request)

    def page_principal(self, request: Request) -> tuple[Identity, Principal]:
        identity = self.request_identity(request)
        if identity is None:
            raise SignInRequired()
        return identity, principal_for(identity, self.identity, group_members=self.group_members())

    def api_principal(self, request: Request) -> Principal | None:
        """A bearer token, else the browser session (with its CSRF header on changes)."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return self._token_principal(token.strip())
        identity = self.request_identity(request)
        if identity is None:
            return None
        if request.method not in ("GET", "HEAD") and not self.sessions.check_csrf(
            identity, request.headers.get("x-csrf-token")
        ):
            return None
        return principal_for(identity, self.identity, group_members=self.group_members())

    def _token_principal(self, token: str) -> Principal | None:
        with self.db.transaction() as session:
            row = find_api_token(session, token)
            if row is None:
                return None
            agent, role = row.agent, Role(row.role)
        account = self.identity.agent_account(agent)
        if account is not None:
            principal = agent_principal(account, group_members=self.group_members())
            # The token's role caps what it can do, whatever the account may do in the browser.
            return Principal(
                identity=principal.identity,
                display_name=principal.display_name,
                role=Role.ADMIN if role is Role.ADMIN and principal.is_admin else Role.AGENT,
                groups=principal.groups,
                can_take_over=principal.can_take_over,
                email=principal.email,
                agent_key=principal.agent_key,
            )
        groups = {
            g for g, members in self.group_members().items() if agent.casefold() in {m.casefold() for m in members}
        }
        return Principal(
            identity=agent, display_name=agent, role=role, groups=frozenset(groups), agent_key=f"web:{agent}"
        )

    # -- responses ---------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        *,
        identity: Identity | None = None,
        principal: Principal | None = None,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("notice", request.query_params.get("notice", "")[:300])
        context.setdefault("error", request.query_params.get("error", "")[:300])
        response: HTMLResponse = self.templates.TemplateResponse(
            request,
            template,
            {
                "principal": principal,
                "identity": identity,
                "csrf": self.sessions.csrf_token(identity) if identity else "",
                "mode": self.identity.mode,
                "demo": self.identity.mode == "demo",
                **context,
            },
            status_code=status_code,
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    def error_page(
        self, request: Request, status_code: int, message: str, *, identity: Identity | None = None
    ) -> HTMLResponse:
        principal = None
        if identity is not None:
            principal = principal_for(identity, self.identity, group_members=self.group_members())
        return self.render(
            request,
            "error.html",
            identity=identity,
            principal=principal,
            status_code=status_code,
            message=message,
            code=status_code,
        )

    async def form(self, request: Request, identity: Identity) -> Mapping[str, str]:
        """A posted form whose CSRF token matches the session; otherwise 403."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        form = await request.form(max_files=0, max_fields=50)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self.sessions.check_csrf(identity, values.get("csrf")):
            raise HTTPException(403, texts.CSRF_FAILED)
        return values

    def live_stream(
        self,
        request: Request,
        marker: Callable[[], Awaitable[Any]],
        payload: Callable[[Any], Awaitable[dict[str, Any] | None]],
    ) -> StreamingResponse:
        """Server-sent events: ``payload(marker)`` is sent whenever ``marker()`` changes (None: nothing to send)."""

        async def events() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STREAM_SECONDS
            yield "retry: 1000\n\n"
            last: Any = None
            while not self.live.closed and loop.time() < deadline:
                current = await marker()
                if current != last:
                    data = await payload(current)
                    last = current
                    if data is not None:
                        yield f"event: update\ndata: {json.dumps(data, default=str)}\n\n"
                else:
                    yield ": keep-alive\n\n"
                await self.live.wait(self.settings.poll_seconds)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def redirect(path: str, **params: str) -> RedirectResponse:
    from urllib.parse import urlencode

    query = urlencode({k: v[:300] for k, v in params.items() if v})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303)


def json_error(
    status: int, message: str, *, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def not_signed_in_page(request: Request) -> Response:
    return redirect("/signin", next=request.url.path)
