"""Logging set-up: quiet third-party chatter, never log secrets or forged lines, tag lines with a request id.

Two formats (config ``log_format``): ``text`` for a terminal, ``json`` (one object per line) for a log
shipper. Either way every line carries the request id of the work it belongs to, when there is one:
an HTTP request's id (``X-Request-ID``), ``msg-<id>`` while the pipeline handles a stored message, and
the same id while the outbox delivers the reply it caused. The id travels in a context variable, so
it follows the work into ``asyncio`` tasks and ``asyncio.to_thread`` calls without being passed around.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["text", "json"]

# Libraries that log routine progress at INFO/DEBUG; their warnings still show.
CHATTY_LOGGERS = ("alembic", "bm25s", "sentence_transformers", "transformers", "httpx", "httpcore", "uvicorn.access")

_SECRETS = re.compile(
    r"(?i)(authorization:\s*(?:bearer\s+|basic\s+)?|bearer\s+|(?:password|passwd|token|secret|api[_-]?key)\s*[=:]\s*)[^\s,;'\"]+"
)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")

# Fields every line logged for a piece of work carries (request_id, channel, message_id): ids and
# channel names only, never message text. Each block gets a new mapping; this one is never changed.
_context: ContextVar[Mapping[str, object]] = ContextVar("tierzero_log_context", default=MappingProxyType({}))

# An incoming X-Request-ID is reused only when it looks like an id (a proxy's, a UUID, a trace id):
# anything else could smuggle text into every log line of the request.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+/@-]{0,127}")


def redact(text: str) -> str:
    """Hide tokens, passwords and mail addresses; fold CR/LF so input cannot forge log lines."""
    text = _SECRETS.sub(r"\1***", text)
    text = _EMAIL.sub(r"\1***@\2", text)
    return text.replace("\r", "\\r").replace("\n", "\\n")


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info is None:
            record.msg, record.args = redact(message), None
        else:  # keep tracebacks readable; still redact the message itself
            record.msg, record.args = _SECRETS.sub(r"\1***", _EMAIL.sub(r"\1***@\2", message)), None
        return True


# -- request ids -------------------------------------------------------------------------


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Tag every line logged inside the block (and in tasks/threads started from it) with ``fields``."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_request_id() -> str | None:
    value = _context.get().get("request_id")
    return str(value) if value is not None else None


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """``value`` when it can safely be reused as a request id, else None."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def message_request_id(message_id: int) -> str:
    """The request id of the work on one stored inbound message: the same on every replica and after restarts."""
    return f"msg-{message_id}"


class ContextFilter(logging.Filter):
    """Copies the current log context (request id, channel, message id) onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):  # an explicit ``extra=`` wins
                setattr(record, name, value)
        return True


# -- formats -------------------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request id]``: the id only when the line belongs to one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id else line


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, and the context fields."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        # uvicorn adds ``color_message`` (the message again, with terminal colour codes): left out.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )


def build_handler(log_format: LogFormat = "text", stream: TextIO | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    root = logging.getLogger()
    root.handlers[:] = [build_handler(log_format)]
    root.setLevel(level)
    if level != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


# -- HTTP ----------------------------------------------------------------------------------

REQUEST_ID_HEADER = "X-Request-ID"
# Where the middleware leaves the id for handlers that run outside it (the 500 handler).
REQUEST_ID_SCOPE_KEY = "tierzero.request_id"


class RequestIdMiddleware:
    """Gives every HTTP request an id: the caller's ``X-Request-ID`` when sane, else a new one.

    Lines logged while the request is handled carry it, and the response echoes it, so a
    platform's or a proxy's record of a request can be matched with ours.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = sane_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)) or new_request_id()
        scope[REQUEST_ID_SCOPE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):
            await self._app(scope, receive, send_with_id)
