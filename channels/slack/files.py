"""Downloading files shared in Slack messages into the attachment store.

A file share is accepted with its metadata first (the 3 s ack must not wait for a
download); the file is fetched afterwards from ``url_private_download`` with the
bot token (needs the ``files:read`` scope) and its stored path recorded on the
message. A file that cannot be fetched or is refused keeps its metadata and gets
a note saying why.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx

from bot.attachments import AttachmentStore, too_large
from bot.model import Attachment

log = logging.getLogger(__name__)


class FileFetcher:
    def __init__(self, *, token: str, store: AttachmentStore, files_url: str, timeout: float) -> None:
        self._token = token
        self._store = store
        # The bot token is only ever sent to Slack's file host.
        self.files_url = files_url
        self._timeout = timeout

    async def fetch(self, attachment: Attachment, *, key: str) -> Path | str:
        """The stored file's path, or why it is not kept (never raises for a bad file or a failed download)."""
        url = attachment.url or ""
        if not url.startswith(self.files_url):
            return "no Slack download address"
        limit = self._store.settings.max_bytes
        if attachment.size is not None and (refused := too_large(attachment.size, self._store.settings)):
            return refused
        try:
            data = await self._download(url, limit, attachment.content_type)
        except httpx.HTTPError as exc:
            return f"download failed ({type(exc).__name__})"
        if isinstance(data, str):
            return data
        try:
            return await asyncio.to_thread(self._store.save, attachment.name, data, key=key)
        except OSError as exc:
            log.error("slack: cannot store file %r: %s", attachment.name, exc)
            return f"could not be stored ({type(exc).__name__})"

    async def _download(self, url: str, limit: int, expected_type: str) -> bytes | str:
        headers = {"Authorization": f"Bearer {self._token}"}
        # httpx drops the Authorization header on a redirect to another host.
        async with (
            httpx.AsyncClient(timeout=self._timeout, follow_redirects=True) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                return f"download failed (HTTP {response.status_code})"
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and (refused := too_large(int(declared), self._store.settings)):
                return refused
            served = response.headers.get("content-type", "")
            if served.startswith("text/html") and not expected_type.startswith("text/html"):
                # What Slack answers instead of the file when the token lacks files:read.
                return "Slack sent a sign-in page instead of the file (is the files:read scope granted?)"
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:  # a missing or wrong Content-Length
                    return too_large(len(data), self._store.settings) or "too large"
            return bytes(data)
