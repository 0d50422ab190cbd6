"""Attachments: kept on disk when small enough and of an allowed type, listed on the message.

The type is checked twice: by the file name's extension and by sniffing the
first bytes, so an executable renamed to ``invoice.pdf`` is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from bot.model import Attachment
from channels.email.config import AttachmentSettings
from channels.email.parse import ParsedAttachment

# Magic numbers of the types we accept, and of executables we refuse whatever their name.
_SIGNATURES = {
    b"%PDF-": ".pdf",
    b"\x89PNG\r\n\x1a\n": ".png",
    b"\xff\xd8\xff": ".jpg",
    b"GIF87a": ".gif",
    b"GIF89a": ".gif",
    b"PK\x03\x04": ".zip",  # also docx/xlsx/pptx/odt
}
_EXECUTABLE = (b"MZ", b"\x7fELF", b"#!", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe")
_ZIP_BASED = {".zip", ".docx", ".xlsx", ".pptx", ".odt", ".ods"}
_JPEG = {".jpg", ".jpeg"}
_TEXT = {".txt", ".log", ".csv", ".json", ".xml", ".md", ".eml"}


def sniff(data: bytes) -> str:
    """ ".pdf", ".png"... from the content; "executable"; "text"; or "unknown"."""
    if data.startswith(_EXECUTABLE):
        return "executable"
    for magic, kind in _SIGNATURES.items():
        if data.startswith(magic):
            return kind
    if data[:12].startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ".webp"
    try:
        data[:4096].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown"


def allowed(name: str, data: bytes, settings: AttachmentSettings) -> str | None:
    """None when the attachment may be kept, else why not (shown on the ticket)."""
    extension = Path(name).suffix.lower()
    if len(data) > settings.max_bytes:
        return f"larger than {settings.max_bytes // 1024} KiB"
    if extension not in {e.lower() for e in settings.allowed_extensions}:
        return f"type {extension or '(none)'} not allowed"
    kind = sniff(data)
    if kind == "executable":
        return "content is a program"
    consistent = (
        kind == extension
        or (kind == ".zip" and extension in _ZIP_BASED)
        or (kind == ".jpg" and extension in _JPEG)
        or (kind == "text" and extension in _TEXT)
    )
    return None if consistent else f"content does not match {extension}"


class AttachmentStore:
    def __init__(self, settings: AttachmentSettings, *, default_dir: Path) -> None:
        self._settings = settings
        self._dir = settings.store_dir or default_dir

    def keep(self, attachments: Iterable[ParsedAttachment], *, key: str) -> tuple[list[Attachment], list[str]]:
        """Store the allowed ones; returns them and one note per refused one."""
        kept: list[Attachment] = []
        notes: list[str] = []
        for item in attachments:
            refused = allowed(item.filename, item.data, self._settings)
            if refused:
                notes.append(f"[attachment {item.filename} not kept: {refused}]")
                continue
            digest = hashlib.sha256(item.data).hexdigest()
            folder = self._dir / hashlib.sha256(key.encode()).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{digest[:12]}-{item.filename}"
            if not path.exists():
                path.write_bytes(item.data)
            kept.append(Attachment(item.filename, item.content_type, len(item.data), url=path.as_uri()))
        return kept, notes
