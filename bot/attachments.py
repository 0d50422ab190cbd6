"""Attachments: kept on disk when small enough and of an allowed type, listed on the message.

Shared by the channels that receive files (email parts, Slack file shares). The
type is checked twice: by the file name's extension and by sniffing the first
bytes, so an executable renamed to ``invoice.pdf`` is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Protocol

from pydantic import Field

from bot.config import StrictModel
from bot.model import Attachment

MIB = 1024 * 1024
DEFAULT_ALLOWED_EXTENSIONS = (
    ".pdf .png .jpg .jpeg .gif .webp .txt .log .csv .json .xml .md .docx .xlsx .pptx .odt .ods .eml .zip"
).split()

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


class AttachmentSettings(StrictModel):
    """A channel's ``attachments`` config section."""

    max_bytes: int = Field(default=10 * MIB, ge=0)
    # By extension AND sniffed content: a .pdf that is really an executable is refused.
    allowed_extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_EXTENSIONS))
    # Empty: <data_dir>/<channel>/attachments.
    store_dir: Path | None = None


class FileData(Protocol):
    """One received file (e.g. ``channels.email.parse.ParsedAttachment``)."""

    @property
    def filename(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def data(self) -> bytes: ...


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


def too_large(size: int, settings: AttachmentSettings) -> str | None:
    """Why a file of ``size`` bytes is not kept, or None."""
    return f"larger than {settings.max_bytes // 1024} KiB" if size > settings.max_bytes else None


def allowed(name: str, data: bytes, settings: AttachmentSettings) -> str | None:
    """None when the attachment may be kept, else why not (shown on the ticket)."""
    extension = Path(name).suffix.lower()
    if refused := too_large(len(data), settings):
        return refused
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
        self.settings = settings
        self._dir = settings.store_dir or default_dir

    def keep(self, attachments: Iterable[FileData], *, key: str) -> tuple[list[Attachment], list[str]]:
        """Store the allowed ones; returns them and one note per refused one."""
        kept: list[Attachment] = []
        notes: list[str] = []
        for item in attachments:
            result = self.keep_one(item.filename, item.content_type, item.data, key=key)
            if isinstance(result, str):
                notes.append(f"[attachment {item.filename} not kept: {result}]")
            else:
                kept.append(result)
        return kept, notes

    def keep_one(self, filename: str, content_type: str, data: bytes, *, key: str) -> Attachment | str:
        """The stored attachment (``url`` is its file: URI), or why it was refused."""
        saved = self.save(filename, data, key=key)
        return saved if isinstance(saved, str) else Attachment(filename, content_type, len(data), url=saved.as_uri())

    def save(self, filename: str, data: bytes, *, key: str) -> Path | str:
        """Where the file is stored now, or why it was refused.

        ``key`` groups a message's files in one folder; the same content is written once.
        """
        refused = allowed(filename, data, self.settings)
        if refused:
            return refused
        digest = hashlib.sha256(data).hexdigest()
        folder = self._dir / hashlib.sha256(key.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest[:12]}-{safe_filename(filename)}"
        if not path.exists():
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(data)
            partial.replace(path)  # atomic: a reader never sees half a file
        return path


def safe_filename(name: str) -> str:
    """A file name that cannot climb out of a folder or carry control characters (names come from senders)."""
    name = PurePath(name.replace("\\", "/")).name
    name = re.sub(r"[\x00-\x1f\x7f/]", "_", name).strip(" .")
    return name[:200] or "attachment"
