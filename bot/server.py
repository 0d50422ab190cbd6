"""The one ASGI application that serves all HTTP traffic, and its start-up banner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from bot import telemetry
from bot.app import Runtime, TierZero
from bot.logs import REQUEST_ID_HEADER, REQUEST_ID_SCOPE_KEY, RequestIdMiddleware, log_context
from bot.registry import ChannelSet, build_channels
from ticketing.db import DatabaseUnavailableError

log = logging.getLogger(__name__)


def create_app(runtime: Runtime) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        problems = []
        if not runtime.running:
            problems.append("not started")
        try:
            await asyncio.to_thread(runtime.app.db.check_connection)
        except DatabaseUnavailableError as exc:
            problems.append(str(exc))
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "channels": [c.name for c in runtime.channels]})

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Runs outside RequestIdMiddleware (Starlette's outermost layer): restore the request's id.
        request_id = request.scope.get(REQUEST_ID_SCOPE_KEY)
        with log_context(request_id=request_id):
            log.error("unhandled error in a request: %s", type(exc).__name__, exc_info=exc)
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        return JSONResponse({"error": "internal error; the request was logged"}, status_code=500, headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    metrics = telemetry.RuntimeCollector(db=runtime.app.db, queue_length=lambda: runtime.pipeline.queue_length)
    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        telemetry.metrics_route(metrics, token=runtime.app.settings.server.metrics_token),
    ]
    for channel in runtime.channels:
        routes.extend(channel.routes())
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


def prepare(app: TierZero) -> tuple[Runtime, ChannelSet]:
    channels = build_channels(app.channel_context())
    return app.runtime(channels.enabled), channels


def banner(app: TierZero, channels: ChannelSet) -> str:
    server = app.settings.server
    metrics = "bearer token" if server.metrics_token else "loopback only"
    lines = [
        f"tierzero listening on http://{server.host}:{server.port}  (health: /healthz, /readyz; "
        f"metrics: /metrics, {metrics})"
    ]
    lines += [f"  {c.name}: {c.describe()}" for c in channels.enabled]
    lines += [f"  {name}: disabled ({why})" for name, why in channels.disabled.items()]
    return "\n".join(lines)


class _Server(uvicorn.Server):
    """uvicorn, but a SIGTERM/SIGINT that was handled by a graceful stop ends the process with 0.

    uvicorn re-raises the captured signal once it has shut down, so the process
    would die by SIGTERM, or end with a KeyboardInterrupt traceback on Ctrl-C.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def serve(app: TierZero) -> None:
    runtime, channels = prepare(app)
    asgi = create_app(runtime)
    server = app.settings.server
    config = uvicorn.Config(
        asgi,
        host=server.host,
        port=server.port,
        lifespan="on",
        log_level=app.settings.log_level.lower(),
        access_log=False,
        # uvicorn's lines go through the handler configure_logging set up (format, redaction, JSON).
        log_config=None,
        # Open streams (the portal's live updates) must not hold a shutdown for long.
        timeout_graceful_shutdown=10,
    )
    print(banner(app, channels), flush=True)
    _Server(config).run()
