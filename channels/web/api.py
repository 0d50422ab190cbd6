"""The REST API under /api/v1 (tickets, conversations, KB search, metrics) and its OpenAPI document.

Authentication: ``Authorization: Bearer <token>`` with a token from
``tierzero tokens create``, or the browser session (changes then need the
``X-CSRF-Token`` header). No credentials: 401; not allowed: 403; a bad field:
422 naming it. Request bodies are validated by the same pydantic models the
OpenAPI document is generated from.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.desk import TicketView
from channels.http_common import storable
from channels.web import queries
from channels.web.actions import InvalidInput, NotFound, TicketUpdate
from channels.web.front import WebFront, json_error
from ticketing.access import AccessDenied, Principal, require_agent, require_view
from ticketing.clock import utcnow
from ticketing.models import Conversation, Priority, Requester, TicketStatus
from ticketing.service import TicketError

MAX_BODY_BYTES = 100_000
M = TypeVar("M", bound=BaseModel)
_DURATION = re.compile(r"^(\d{1,4})([dhw])$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _storable(cls, value: object) -> object:
        return storable(value)


class TicketPatch(_Body):
    """Fields an agent may change; omitted fields stay as they are."""

    priority: Priority | None = None
    category: str | None = Field(default=None, min_length=1, max_length=64)
    group: str | None = Field(default=None, min_length=1, max_length=64)
    tier: int | None = Field(default=None, ge=1, le=4)


class ReplyIn(_Body):
    text: str = Field(min_length=1, max_length=20_000, pattern=r"\S")
    # Your id for this reply: sending the same source_id twice delivers it once.
    source_id: str | None = Field(default=None, min_length=1, max_length=100)


class NoteIn(_Body):
    text: str = Field(min_length=1, max_length=20_000, pattern=r"\S")


class ResolveIn(_Body):
    resolution: str = Field(default="", max_length=2000)


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
    "required": ["error"],
}
TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "number": {"type": "string"},
        "subject": {"type": "string"},
        "status": {"type": "string", "enum": [str(s) for s in TicketStatus]},
        "priority": {"type": "string", "enum": [str(p) for p in Priority]},
        "category": {"type": ["string", "null"]},
        "group": {"type": ["string", "null"]},
        "tier": {"type": "integer"},
        "assignee": {"type": ["string", "null"]},
        "owner": {"type": "string"},
        "requester": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "first_response_due": {"type": ["string", "null"]},
        "resolution_due": {"type": ["string", "null"]},
        "sla_state": {"type": "string"},
        "csat_score": {"type": ["integer", "null"]},
        "version": {"type": "integer"},
    },
    "required": ["number", "status", "priority", "sla_state"],
}


def ticket_json(view: TicketView) -> dict[str, Any]:
    return {
        "number": view.number,
        "subject": view.subject,
        "status": view.status,
        "priority": view.priority,
        "category": view.category,
        "group": view.group,
        "tier": view.tier,
        "assignee": view.assignee,
        "owner": view.owner,
        "requester": {"name": view.requester_name, "channel": view.requester_channel, "id": view.requester_id},
        "created_at": view.created_at.isoformat(),
        "first_response_due": view.first_response_due.isoformat() if view.first_response_due else None,
        "resolution_due": view.resolution_due.isoformat() if view.resolution_due else None,
        "sla_state": view.sla_state,
        "csat_score": view.csat_score,
        "version": view.version,
    }


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


Handler = Callable[[Request, Principal], Awaitable[Response]]


def routes(front: WebFront) -> Sequence[BaseRoute]:
    api = RestApi(front)
    guard = api.guard
    return [
        Route("/api/v1/openapi.json", api.openapi, methods=["GET"]),
        Route("/api/v1/tickets", guard(api.list_tickets), methods=["GET"]),
        Route("/api/v1/tickets/{number}", guard(api.get_ticket), methods=["GET"]),
        Route("/api/v1/tickets/{number}", guard(api.update_ticket), methods=["PATCH"]),
        Route("/api/v1/tickets/{number}/reply", guard(api.reply), methods=["POST"]),
        Route("/api/v1/tickets/{number}/notes", guard(api.note), methods=["POST"]),
        Route("/api/v1/tickets/{number}/take", guard(api.take), methods=["POST"]),
        Route("/api/v1/tickets/{number}/hand-back", guard(api.hand_back), methods=["POST"]),
        Route("/api/v1/tickets/{number}/pending", guard(api.wait_for_requester), methods=["POST"]),
        Route("/api/v1/tickets/{number}/resolve", guard(api.resolve), methods=["POST"]),
        Route("/api/v1/conversations", guard(api.list_conversations), methods=["GET"]),
        Route("/api/v1/conversations/{conversation_id:int}", guard(api.get_conversation), methods=["GET"]),
        Route("/api/v1/kb/search", guard(api.kb_search), methods=["GET"]),
        Route("/api/v1/metrics", guard(api.metrics), methods=["GET"]),
    ]


class RestApi:
    def __init__(self, front: WebFront) -> None:
        self.front = front

    def guard(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """One error boundary per endpoint: 401 / 403 / 404 / 409 / 422, never a stack trace."""

        async def endpoint(request: Request) -> Response:
            principal = await asyncio.to_thread(self.front.api_principal, request)
            if principal is None:
                return json_error(
                    401,
                    "sign in, or send Authorization: Bearer <token> (tierzero tokens create)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            try:
                return await handler(request, principal)
            except ApiError as exc:
                return json_error(exc.status, str(exc), field=exc.field)
            except AccessDenied as exc:
                return json_error(403, str(exc))
            except NotFound as exc:
                return json_error(404, str(exc))
            except InvalidInput as exc:
                return json_error(422, str(exc), field=exc.field)
            except TicketError as exc:
                return json_error(409, str(exc))

        return endpoint

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    # -- tickets ----------------------------------------------------------------------------

    async def list_tickets(self, request: Request, principal: Principal) -> Response:
        params = request.query_params
        queue = params.get("queue") or None
        if queue is not None and queue not in queries.QUEUES:
            raise ApiError(422, f"queue: one of {', '.join(queries.QUEUES)}", field="queue")
        if queue is not None and not principal.is_agent:
            raise AccessDenied("queues are for agents; requesters see their own tickets without one")
        statuses = params.getlist("status")
        for status in statuses:
            if status not in {str(s) for s in TicketStatus}:
                raise ApiError(422, f"status: one of {', '.join(str(s) for s in TicketStatus)}", field="status")
        priority = params.get("priority") or None
        if priority is not None and priority not in {str(p) for p in Priority}:
            raise ApiError(422, f"priority: one of {', '.join(str(p) for p in Priority)}", field="priority")
        limit = _int_param(params.get("limit"), "limit", default=50, low=1, high=200)
        offset = _int_param(params.get("offset"), "offset", default=0, low=0, high=1_000_000)
        search = _text_param(params.get("q"), "q", 200)
        group = _text_param(params.get("group"), "group", 64)
        assignee = _text_param(params.get("assignee"), "assignee", 255)

        def load() -> list[dict[str, Any]]:
            with self.front.db.transaction() as session:
                views = queries.list_ticket_views(
                    session,
                    principal,
                    policy=self.front.desk.sla_policy,
                    queue=queue,
                    statuses=statuses,
                    priority=priority,
                    group=group,
                    assignee=assignee,
                    search=search,
                    limit=limit,
                    offset=offset,
                )
                return [ticket_json(v) for v in views]

        tickets = await asyncio.to_thread(load)
        return JSONResponse({"tickets": tickets, "limit": limit, "offset": offset})

    async def get_ticket(self, request: Request, principal: Principal) -> Response:
        number = request.path_params["number"]

        def load() -> dict[str, Any]:
            with self.front.db.transaction() as session:
                ticket = queries.find_ticket(session, number)
                if ticket is None:
                    raise NotFound(f"no ticket {number}")
                requester = session.get(Requester, ticket.requester_id)
                assert requester is not None
                require_view(principal, ticket, requester=requester)
                body = ticket_json(self.front.desk.ticket_view(session, ticket))
                # Requesters never see internal notes or the audit trail.
                body["timeline"] = [
                    {
                        "kind": item.kind,
                        "author": item.author,
                        "text": item.text,
                        "at": item.at.isoformat(),
                        "channel": item.channel,
                        "internal": item.internal,
                    }
                    for item in queries.timeline(session, ticket, include_internal=principal.is_agent)
                ]
                return body

        return JSONResponse(await asyncio.to_thread(load))

    async def update_ticket(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        patch = await _body(request, TicketPatch)
        update = TicketUpdate(
            priority=str(patch.priority) if patch.priority else None,
            category=patch.category,
            group=patch.group,
            tier=patch.tier,
        )
        number = request.path_params["number"]
        changes = await self.front.actions.update(principal, number, update)
        return await self._ticket_response(number, extra={"changed": sorted(changes)})

    async def reply(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        body = await _body(request, ReplyIn)
        number = request.path_params["number"]
        source_id = f"api-{body.source_id or uuid.uuid4().hex}"
        delivered = await self.front.actions.reply(principal, number, body.text, source_id=source_id)
        return await self._ticket_response(number, status=202 if delivered else 200, extra={"duplicate": not delivered})

    async def note(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        body = await _body(request, NoteIn)
        number = request.path_params["number"]
        await self.front.actions.note(principal, number, body.text)
        return await self._ticket_response(number, status=201)

    async def take(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        number = request.path_params["number"]
        await self.front.actions.take(principal, number)
        return await self._ticket_response(number)

    async def hand_back(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        number = request.path_params["number"]
        await self.front.actions.hand_back(principal, number)
        return await self._ticket_response(number)

    async def wait_for_requester(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        number = request.path_params["number"]
        await self.front.actions.wait_for_requester(principal, number)
        return await self._ticket_response(number)

    async def resolve(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        body = await _body(request, ResolveIn, allow_empty=True)
        number = request.path_params["number"]
        await self.front.actions.resolve(principal, number, body.resolution)
        return await self._ticket_response(number)

    async def _ticket_response(
        self, number: str, *, status: int = 200, extra: dict[str, Any] | None = None
    ) -> Response:
        def load() -> dict[str, Any]:
            with self.front.db.transaction() as session:
                ticket = queries.find_ticket(session, number)
                if ticket is None:
                    raise NotFound(f"no ticket {number}")
                return ticket_json(self.front.desk.ticket_view(session, ticket))

        self.front.live.notify()
        return JSONResponse({**(await asyncio.to_thread(load)), **(extra or {})}, status_code=status)

    # -- conversations ----------------------------------------------------------------------

    async def list_conversations(self, request: Request, principal: Principal) -> Response:
        limit = _int_param(request.query_params.get("limit"), "limit", default=50, low=1, high=200)
        offset = _int_param(request.query_params.get("offset"), "offset", default=0, low=0, high=1_000_000)

        def load() -> list[dict[str, Any]]:
            with self.front.db.transaction() as session:
                rows = queries.conversations_for(session, principal, limit=limit, offset=offset)
                return [_conversation_json(c, r) for c, r in rows]

        return JSONResponse({"conversations": await asyncio.to_thread(load), "limit": limit, "offset": offset})

    async def get_conversation(self, request: Request, principal: Principal) -> Response:
        conversation_id = request.path_params["conversation_id"]

        def load() -> dict[str, Any]:
            with self.front.db.transaction() as session:
                conversation = session.get(Conversation, conversation_id) if 0 < conversation_id < 2**62 else None
                if conversation is None:
                    raise NotFound(f"no conversation {conversation_id}")
                if not queries.can_see_conversation(session, principal, conversation):
                    raise AccessDenied(f"you may not see conversation {conversation_id}")
                requester = session.get(Requester, conversation.requester_id)
                assert requester is not None
                body = _conversation_json(conversation, requester)
                names = self.front.agent_names()
                messages = queries.chat_messages(session, conversation=conversation, agent_names=names)
                body["messages"] = [m.as_json() for m in messages]
                return body

        return JSONResponse(await asyncio.to_thread(load))

    # -- knowledge base and metrics ---------------------------------------------------------

    async def kb_search(self, request: Request, principal: Principal) -> Response:
        query = _text_param(request.query_params.get("q"), "q", 500)
        if not query:
            raise ApiError(422, "q: the search text is required", field="q")
        limit = _int_param(request.query_params.get("limit"), "limit", default=10, low=1, high=50)
        hits = await asyncio.to_thread(self.front.catalog.search, query, limit=limit)
        return JSONResponse(
            {
                "query": query,
                "articles": [
                    {
                        "id": h.article_id,
                        "title": h.title,
                        "snippet": h.snippet,
                        "score": round(h.score, 4),
                        "url": f"/kb/{h.article_id}",
                    }
                    for h in hits
                ],
            }
        )

    async def metrics(self, request: Request, principal: Principal) -> Response:
        require_agent(principal)
        now = utcnow()
        since = _since_param(request.query_params.get("since"), now)
        from channels.web.dashboard import load_metrics

        result = await asyncio.to_thread(load_metrics, self.front, since=since, until=now, now=now)
        if result is None:
            raise ApiError(503, "metrics are not available in this build")
        return JSONResponse(json.loads(json.dumps(result, default=_json_default)))


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def _conversation_json(conversation: Conversation, requester: Requester) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "channel": conversation.channel,
        "owner": conversation.owner,
        "requester": {"name": requester.display_name, "channel": requester.channel, "id": requester.platform_id},
        "ticket_id": conversation.ticket_id,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
    }


async def _body(request: Request, model: type[M], *, allow_empty: bool = False) -> M:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip() and allow_empty:
        return model()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "body: not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise ApiError(422, "body: expected a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, f"{field}: {first['msg']}", field=field) from None


def _int_param(value: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise ApiError(422, f"{name}: a whole number from {low} to {high}", field=name)
    return int(value)


def _text_param(value: str | None, name: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > limit or "\x00" in value:
        raise ApiError(422, f"{name}: at most {limit} characters, no NUL", field=name)
    return value or None


def _since_param(value: str | None, now: datetime) -> datetime:
    """``30d``, ``12h``, ``4w`` or an ISO date; default 30 days."""
    if not value:
        return now - timedelta(days=30)
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - {"d": timedelta(days=amount), "h": timedelta(hours=amount), "w": timedelta(weeks=amount)}[unit]
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(422, "since: a duration such as 30d, 12h, 4w, or an ISO date", field="since") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed > now or parsed.year < 2000:
        raise ApiError(422, "since: must be in the past (after 2000)", field="since")
    return parsed


# -- the OpenAPI document ----------------------------------------------------------------------


def _responses(*codes: int, ok: dict[str, Any] | None = None, ok_code: int = 200) -> dict[str, Any]:
    descriptions = {
        401: "No or invalid credentials",
        403: "Not allowed for this role or ticket",
        404: "No such ticket or conversation",
        409: "Not possible in the ticket's state",
        413: "Request body too large",
        422: "Invalid input; `field` names the field",
        503: "Not available right now",
    }
    responses: dict[str, Any] = {
        str(ok_code): {"description": "OK", "content": {"application/json": {"schema": ok or {"type": "object"}}}}
    }
    for code in codes:
        responses[str(code)] = {
            "description": descriptions[code],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def _json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }


def openapi_document() -> dict[str, Any]:
    number = {"name": "number", "in": "path", "required": True, "schema": {"type": "string"}, "example": "TZ-1001"}
    ticket_ref = {"$ref": "#/components/schemas/Ticket"}
    changes = (401, 403, 404, 409, 413, 422)
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, "Ticket": TICKET_SCHEMA}
    for model in (TicketPatch, ReplyIn, NoteIn, ResolveIn):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema

    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tierzero service desk API",
            "version": "1",
            "description": "Tickets, conversations, knowledge-base search and metrics. "
            "Authenticate with `Authorization: Bearer <token>` (create one with `tierzero tokens create`).",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/tickets": {
                "get": {
                    "summary": "List tickets you may see (agents: your queues; requesters: your own)",
                    "parameters": [
                        query("queue", {"type": "string", "enum": list(queries.QUEUES)}, "An agent queue"),
                        query("status", {"type": "string", "enum": [str(s) for s in TicketStatus]}, "Repeatable"),
                        query("priority", {"type": "string", "enum": [str(p) for p in Priority]}, "Only this priority"),
                        query("group", {"type": "string", "maxLength": 64}, "Only this group"),
                        query("assignee", {"type": "string", "maxLength": 255}, "Only this assignee"),
                        query("q", {"type": "string", "maxLength": 200}, "Text in the subject or number"),
                        query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size (50)"),
                        query("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, "Skip this many"),
                    ],
                    "responses": _responses(401, 403, 422),
                }
            },
            "/api/v1/tickets/{number}": {
                "get": {
                    "summary": "One ticket with its timeline (internal notes only for agents)",
                    "parameters": [number],
                    "responses": _responses(401, 403, 404, ok=ticket_ref),
                },
                "patch": {
                    "summary": "Change priority, category, group or tier (audited)",
                    "parameters": [number],
                    "requestBody": _json_body(TicketPatch),
                    "responses": _responses(*changes, ok=ticket_ref),
                },
            },
            "/api/v1/tickets/{number}/reply": {
                "post": {
                    "summary": "Reply to the requester on their channel (take the ticket first)",
                    "parameters": [number],
                    "requestBody": _json_body(ReplyIn),
                    "responses": {
                        **_responses(*changes, ok=ticket_ref, ok_code=202),
                        "200": {"description": "Duplicate source_id: nothing sent"},
                    },
                }
            },
            "/api/v1/tickets/{number}/notes": {
                "post": {
                    "summary": "Add an internal note (never shown to the requester)",
                    "parameters": [number],
                    "requestBody": _json_body(NoteIn),
                    "responses": _responses(*changes, ok=ticket_ref, ok_code=201),
                }
            },
            "/api/v1/tickets/{number}/take": {
                "post": {
                    "summary": "Take the ticket (taking it from another agent needs the take-over right)",
                    "parameters": [number],
                    "responses": _responses(401, 403, 404, 409, ok=ticket_ref),
                }
            },
            "/api/v1/tickets/{number}/hand-back": {
                "post": {
                    "summary": "Hand the conversation back to the bot (the ticket stays open)",
                    "parameters": [number],
                    "responses": _responses(401, 403, 404, 409, ok=ticket_ref),
                }
            },
            "/api/v1/tickets/{number}/pending": {
                "post": {
                    "summary": "Waiting on the requester: pending, the SLA clock stopped until they answer",
                    "parameters": [number],
                    "responses": _responses(401, 403, 404, 409, ok=ticket_ref),
                }
            },
            "/api/v1/tickets/{number}/resolve": {
                "post": {
                    "summary": "Resolve the ticket; the requester is asked for a rating",
                    "parameters": [number],
                    "requestBody": _json_body(ResolveIn, required=False),
                    "responses": _responses(*changes, ok=ticket_ref),
                }
            },
            "/api/v1/conversations": {
                "get": {
                    "summary": "Conversations you may see",
                    "parameters": [
                        query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size (50)"),
                        query("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, "Skip this many"),
                    ],
                    "responses": _responses(401, 422),
                }
            },
            "/api/v1/conversations/{conversation_id}": {
                "get": {
                    "summary": "One conversation with its messages",
                    "parameters": [
                        {
                            "name": "conversation_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31},
                        }
                    ],
                    "responses": _responses(401, 403, 404),
                }
            },
            "/api/v1/kb/search": {
                "get": {
                    "summary": "Search knowledge-base articles (keywords)",
                    "parameters": [
                        {
                            "name": "q",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 500},
                        },
                        query("limit", {"type": "integer", "minimum": 1, "maximum": 50}, "How many (10)"),
                    ],
                    "responses": _responses(401, 422),
                }
            },
            "/api/v1/metrics": {
                "get": {
                    "summary": "Service-desk metrics for a period (agents and admins)",
                    "parameters": [query("since", {"type": "string", "example": "30d"}, "30d, 12h, 4w or an ISO date")],
                    "responses": _responses(401, 403, 422, 503),
                }
            },
        },
    }
