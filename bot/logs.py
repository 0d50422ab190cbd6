"""Logging set-up: quiet third-party chatter, never log secrets or forged lines."""

from __future__ import annotations

import logging
import re

# Libraries that log routine progress at INFO/DEBUG; their warnings still show.
CHATTY_LOGGERS = ("alembic", "bm25s", "sentence_transformers", "transformers", "httpx", "httpcore", "uvicorn.access")

_SECRETS = re.compile(
    r"(?i)(authorization:\s*(?:bearer\s+|basic\s+)?|bearer\s+|(?:password|passwd|token|secret|api[_-]?key)\s*[=:]\s*)[^\s,;'\"]+"
)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


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


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
