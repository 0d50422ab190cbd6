"""The web front: self-service portal (also the web-chat channel), agent console, dashboard, REST API."""

from channels.web.channel import WebChannel

__all__ = ["WebChannel"]
