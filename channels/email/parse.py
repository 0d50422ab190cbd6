"""Raw RFC 5322 bytes -> the parts of a mail the channel needs. Pure functions, no I/O.

Parsed with ``email.policy.default`` (RFC 2047/2231 decoding, structured
address headers). Mail in the wild is hostile or broken - wrong or unknown
charsets, missing boundaries, endless nesting, headers that fail to parse -
so every access that can raise is guarded: a header that cannot be read is
empty, a body in an unknown charset is decoded leniently. ``parse_mail``
raises ``UnparseableMail`` only when no text at all can be had; the caller
then keeps the raw mail in the dead-letter store.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr

import html2text

from bot.attachments import safe_filename

MAX_PARTS = 500  # a "mail bomb" of nested parts stops being walked here
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


class UnparseableMail(Exception):
    """No text can be extracted; ``str()`` says why (safe to log, no content)."""


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    from_address: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: str | None
    subject: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str
    html: str | None
    attachments: tuple[ParsedAttachment, ...]
    content_type: str
    # Header name (lower case) -> values, for loop detection and authentication.
    headers: dict[str, tuple[str, ...]]
    defects: tuple[str, ...]
    message: Message = field(repr=False, compare=False)

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower(), ())
        return values[0] if values else ""


def parse_mail(raw: bytes) -> ParsedMail:
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        raise UnparseableMail(f"the MIME structure cannot be read ({type(exc).__name__})") from exc
    headers = _headers(message)
    parts = _walk(message)
    text, html = _body(parts)
    attachments = tuple(_attachments(parts))
    subject = " ".join(headers.get("subject", ("",))[0].split())
    if not text.strip() and not attachments and not subject:
        raise UnparseableMail("no text body, subject or attachment found")
    from_name, from_address = _first_address(headers.get("from", ()))
    return ParsedMail(
        message_id=_first_message_id(headers.get("message-id", ())),
        from_address=from_address,
        from_name=from_name,
        to=_addresses(headers.get("to", ())),
        cc=_addresses(headers.get("cc", ())),
        reply_to=_first_address(headers.get("reply-to", ()))[1] or None,
        subject=subject,
        in_reply_to=message_ids(" ".join(headers.get("in-reply-to", ()))),
        references=message_ids(" ".join(headers.get("references", ()))),
        text=text,
        html=html,
        attachments=attachments,
        content_type=_safe(lambda: message.get_content_type(), "text/plain"),
        headers=headers,
        defects=tuple(type(d).__name__ for d in message.defects),
        message=message,
    )


def message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, in order, de-duplicated."""
    seen: dict[str, None] = {}
    for found in _MESSAGE_ID.findall(value or ""):
        seen.setdefault(found.strip(), None)
    return tuple(seen)


def _first_message_id(values: tuple[str, ...]) -> str | None:
    for value in values:
        ids = message_ids(value)
        if ids:
            return ids[0]
        if value.strip() and " " not in value.strip():
            return value.strip().strip("<>")
    return None


def _headers(message: Message) -> dict[str, tuple[str, ...]]:
    """Every header, decoded; one that cannot be decoded is kept as its raw text."""
    headers: dict[str, list[str]] = {}
    for name in _safe(lambda: list(message.keys()), []):
        values = _safe(lambda n=name: message.get_all(n) or [], [])  # type: ignore[misc]
        for value in values:
            headers.setdefault(name.lower(), []).append(_header_text(value))
    return {name: tuple(values) for name, values in headers.items()}


def _header_text(value: object) -> str:
    try:
        text = str(value)
    except Exception:
        text = ""
    # Unencoded 8-bit header bytes arrive as surrogates: show them as replacement characters.
    return text.encode("utf-8", "replace").decode("utf-8").replace("\r", " ").replace("\n", " ").strip()


def _first_address(values: tuple[str, ...]) -> tuple[str, str]:
    for value in values:
        name, address = _strict(parseaddr, value)
        if "@" in address:
            return name, address.lower()
    return "", ""


def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    found = _strict(getaddresses, list(values))
    return tuple(dict.fromkeys(address.lower() for _, address in found if "@" in address))


def _strict(function, value):  # type: ignore[no-untyped-def]
    """Strict address parsing (CVE-2023-27043) where this Python has it."""
    try:
        return function(value, strict=True)
    except TypeError:  # Python < 3.11.10 / 3.12.5: no ``strict`` argument yet
        return function(value)


def _walk(message: Message) -> list[Message]:
    parts: list[Message] = []
    try:
        for part in message.walk():
            parts.append(part)
            if len(parts) >= MAX_PARTS:
                break
    except Exception:  # a broken structure: keep what was walked so far
        pass
    return parts or [message]


def _is_attachment(part: Message) -> bool:
    disposition = _safe(lambda: part.get_content_disposition(), None)
    filename = _safe(lambda: part.get_filename(), None)
    return (
        disposition == "attachment"
        or (bool(filename) and disposition != "inline")
        or (bool(filename) and not part.get_content_type().startswith("text/"))
    )


def _body(parts: list[Message]) -> tuple[str, str | None]:
    """The best text body (text/plain first, else HTML made readable) and the HTML, if any."""
    plain: str | None = None
    html: str | None = None
    for part in parts:
        if _safe(lambda p=part: p.is_multipart(), False) or _is_attachment(part):  # type: ignore[misc]
            continue
        content_type = _safe(lambda p=part: p.get_content_type(), "text/plain")  # type: ignore[misc]
        if content_type == "text/plain" and plain is None:
            plain = decode_text(part)
        elif content_type == "text/html" and html is None:
            html = decode_text(part)
        if plain and html is not None:
            break
    if plain and plain.strip():
        return plain, html
    if html and html.strip():
        return html_to_text(html), html
    # No text/plain or text/html part: any other text part (text/enriched, text/x-...), or a
    # "multipart" whose boundary is missing (its payload is then plain text).
    for part in parts:
        maintype = _safe(lambda p=part: p.get_content_maintype(), "text")  # type: ignore[misc]
        if maintype in ("text", "multipart") and not part.is_multipart() and not _is_attachment(part):
            text = decode_text(part)
            if text.strip():
                return text, None
    return plain or "", html


def decode_text(part: Message) -> str:
    """A text part's content whatever its declared charset (missing, wrong or unknown)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = _safe(lambda: part.get_content_charset(), None) or "utf-8"
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    # Wrongly declared: Windows-1252 decodes any byte and is the most common real charset then.
    return payload.decode("cp1252", errors="replace")


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.unicode_snob = True
    try:
        return str(converter.handle(html)).strip()
    except Exception:  # html2text on pathological markup: fall back to tag stripping
        return re.sub(r"<[^>]+>", " ", html).strip()


def _attachments(parts: list[Message]) -> list[ParsedAttachment]:
    found = []
    for number, part in enumerate(parts):
        if _safe(lambda p=part: p.is_multipart(), False) or not _is_attachment(part):  # type: ignore[misc]
            continue
        data = _safe(lambda p=part: p.get_payload(decode=True), None)  # type: ignore[misc]
        if not isinstance(data, bytes):
            continue
        filename = safe_filename(_safe(lambda p=part: p.get_filename(), None) or f"attachment-{number}")  # type: ignore[misc]
        found.append(ParsedAttachment(filename, part.get_content_type(), data))
    return found


def _safe(call, default):  # type: ignore[no-untyped-def]
    try:
        return call()
    except Exception:
        return default
