"""The ``web`` channel: the self-service portal (web chat), agent console, dashboard and REST API."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bot.channel import ChannelContext, MessageHandler
from bot.config import ConfigError, validate_section
from bot.model import OutboundReply
from channels.http_common import is_loopback
from channels.web.api import routes as api_routes
from channels.web.console import routes as console_routes
from channels.web.dashboard import routes as dashboard_routes
from channels.web.front import WebFront
from channels.web.identity import Sessions, random_secret
from channels.web.portal import routes as portal_routes
from channels.web.settings import WebSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


class WebChannel:
    name: ClassVar[str] = "web"
    # The console reads tickets straight from the database; it needs no desk cards.
    hosts_agents: ClassVar[bool] = False

    def __init__(self, *, settings: WebSettings, context: ChannelContext) -> None:
        self._settings = settings
        app_settings = context.settings
        self._db = context.db
        secret = settings.secret_key.get_secret_value() if settings.secret_key else random_secret()
        sessions = Sessions(
            secret,
            max_age_seconds=int(settings.session_hours * 3600),
            link_max_age_seconds=settings.email_link.link_valid_minutes * 60,
        )
        server = app_settings.server
        self.base_url = f"http://{server.host}:{server.port}"
        self.front = WebFront(
            settings=settings,
            app_settings=app_settings,
            db=self._db,
            desk=context.desk,
            sessions=sessions,
            base_url=self.base_url,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, context: ChannelContext) -> WebChannel:
        settings = validate_section(WebSettings, config, key="channels.web")
        host = context.settings.server.host
        if settings.sign_in == "demo" and not is_loopback(host):
            raise ConfigError(
                f"config: channels.web.sign_in: 'demo' lets anyone act as anyone, so it is allowed only when "
                f"server.host is a loopback address (it is {host}); use 'proxy' or 'email_link'"
            )
        if settings.sign_in == "demo":
            log.warning("web: LOCAL DEMO MODE - no real sign-in; anyone can act as any requester or agent")
        return cls(settings=settings, context=context)

    def routes(self) -> Sequence[BaseRoute]:
        return [
            *portal_routes(self.front),
            *console_routes(self.front),
            *dashboard_routes(self.front),
            *api_routes(self.front),
            Mount("/assets", app=StaticFiles(directory=STATIC_DIR), name="web-assets"),
        ]

    def describe(self) -> str:
        mode = {
            "demo": "LOCAL DEMO MODE, no real sign-in",
            "proxy": f"sign-in by trusted proxy header {self._settings.proxy.header}",
            "email_link": "sign-in by e-mailed link",
        }[self._settings.sign_in]
        return f"portal {self.base_url}/  console /console  dashboard /dashboard  API /api/v1 ({mode})"

    async def start(self, on_message: MessageHandler) -> None:
        self.front.on_message = on_message
        self.front.live.closed = False

    async def send(self, reply: OutboundReply) -> None:
        """Replies are already stored; wake the open chat pages so they show it now."""
        self.front.live.notify()

    async def stop(self) -> None:
        self.front.on_message = None
        self.front.live.close()
