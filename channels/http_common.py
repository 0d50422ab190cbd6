"""Small HTTP helpers shared by the channels served on the ASGI server."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` (never buffered whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            return None
    return bytes(body)


def is_loopback(host: str) -> bool:
    """True for a server address only this machine can reach (demo and unauthenticated modes need it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def storable(value: object) -> object:
    """A pydantic field validator for request bodies: JSON can carry NUL and lone surrogates
    ("\\u0000", "\\ud800"), which no database stores; refuse them with a clear error."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode (lone surrogate)") from None
    return value
