"""The Teams app package: manifest.json plus two icons, zipped, ready to upload to Teams.

The icons are drawn here (a ring: tier *zero*) rather than stored as binary files:
a 192x192 colour icon on the accent colour and a 32x32 white-on-transparent outline,
the two sizes Teams requires.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

from channels.teams.config import ManifestSettings

MANIFEST_VERSION = "1.17"
MANIFEST_SCHEMA = (
    f"https://developer.microsoft.com/en-us/json-schemas/teams/v{MANIFEST_VERSION}/MicrosoftTeams.schema.json"
)
COLOR_ICON = "color.png"
OUTLINE_ICON = "outline.png"
WHITE = (255, 255, 255, 255)
TRANSPARENT = (0, 0, 0, 0)


def manifest(*, app_id: str, settings: ManifestSettings) -> dict[str, Any]:
    return {
        "$schema": MANIFEST_SCHEMA,
        "manifestVersion": MANIFEST_VERSION,
        "version": settings.version,
        "id": settings.app_package_id or app_id,
        "developer": {
            "name": settings.developer_name,
            "websiteUrl": settings.website_url,
            "privacyUrl": settings.privacy_url,
            "termsOfUseUrl": settings.terms_url,
        },
        "name": {"short": settings.short_name, "full": settings.full_name},
        "description": {"short": settings.short_description, "full": settings.full_description},
        "icons": {"color": COLOR_ICON, "outline": OUTLINE_ICON},
        "accentColor": settings.accent_color.upper(),
        "bots": [
            {
                "botId": app_id,
                "scopes": ["personal", "team", "groupChat"],
                "supportsFiles": False,
                "isNotificationOnly": False,
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [],
        # Resource-specific consent: the bot receives the messages of a team's channels
        # without an @mention, so agents can simply reply in a ticket's thread.
        "webApplicationInfo": {"id": app_id, "resource": "https://RscPermission"},
        "authorization": {
            "permissions": {"resourceSpecific": [{"name": "ChannelMessage.Read.Group", "type": "Application"}]}
        },
    }


def build_package(*, app_id: str, settings: ManifestSettings, out: Path) -> Path:
    """Write the zip to ``out``; returns its path."""
    accent = _rgb(settings.accent_color)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("manifest.json", json.dumps(manifest(app_id=app_id, settings=settings), indent=2) + "\n")
        package.writestr(COLOR_ICON, ring_icon(192, background=(*accent, 255), ring=WHITE))
        package.writestr(OUTLINE_ICON, ring_icon(32, background=TRANSPARENT, ring=WHITE))
    return out


def ring_icon(size: int, *, background: tuple[int, int, int, int], ring: tuple[int, int, int, int]) -> bytes:
    """A square PNG of ``size`` pixels: a ring centred on ``background``."""
    centre = (size - 1) / 2
    outer = size * 0.34
    inner = size * 0.22
    rows = []
    for y in range(size):
        row = bytearray([0])  # PNG filter type 0 for each scanline
        for x in range(size):
            distance = ((x - centre) ** 2 + (y - centre) ** 2) ** 0.5
            row += bytes(ring if inner <= distance <= outer else background)
        rows.append(bytes(row))
    return _png(size, size, b"".join(rows))


def _png(width: int, height: int, scanlines: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines, 9))
        + chunk(b"IEND", b"")
    )


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
