"""The Slack app manifest: exactly the scopes and events this channel uses, for a one-paste app set-up.

``manifest.yaml`` next to this file is the generated manifest with a placeholder
URL; ``tierzero slack manifest`` prints it for a real URL (or Socket Mode) and
``--check`` fails when the file and this code disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFEST_PATH = Path(__file__).with_name("manifest.yaml")
PLACEHOLDER_URL = "https://tierzero.example.com"
EVENTS_PATH = "/slack/events"

# Every Web API method the channel calls, and the bot scope it needs.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.open": "im:write",  # /tierzero <question> answers in a DM
    "users.info": "users:read",  # names on tickets and cards
    "usergroups.users.list": "usergroups:read",  # agents given as a user group
}
# Every event the channel listens to, and the scope that delivers it.
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.im": "im:history",
    "message.channels": "channels:history",  # thread replies in public channels, triage threads
    "message.groups": "groups:history",  # the same in private channels
    "message.mpim": "mpim:history",  # group DMs that mention the bot
}
COMMAND_SCOPE = "commands"
# Downloading shared files from url_private_download with the bot token (channels.slack.files).
FILES_SCOPE = "files:read"


def bot_scopes() -> list[str]:
    scopes = {s for s in METHOD_SCOPES.values() if s} | set(EVENT_SCOPES.values()) | {COMMAND_SCOPE, FILES_SCOPE}
    return sorted(scopes)


def build_manifest(
    *, url: str = PLACEHOLDER_URL, socket_mode: bool = False, name: str = "tierzero", command: str = "/tierzero"
) -> dict[str, Any]:
    request_url = url.rstrip("/") + EVENTS_PATH
    slash_command: dict[str, Any] = {
        "command": command,
        "description": "Ask IT privately, or list your open tickets",
        "usage_hint": "<question> | tickets",
        "should_escape": False,
    }
    events: dict[str, Any] = {"bot_events": sorted(EVENT_SCOPES)}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        slash_command["url"] = request_url
        events["request_url"] = request_url
        interactivity["request_url"] = request_url
    return {
        "_metadata": {"major_version": 1, "minor_version": 1},
        "display_information": {
            "name": name,
            "description": "IT help: answers from the knowledge base, tickets, and agents who take over.",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": False,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [slash_command],
        },
        "oauth_config": {"scopes": {"bot": bot_scopes()}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }


def render(manifest: dict[str, Any]) -> str:
    header = "# Slack app manifest for tierzero. Regenerate with: tierzero slack manifest --url https://your.host\n"
    return header + yaml.safe_dump(manifest, sort_keys=False, width=120)
