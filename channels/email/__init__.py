"""The email channel: an SMTP listener (aiosmtpd) for support mail, threaded replies through a relay."""

from channels.email.channel import EmailChannel

__all__ = ["EmailChannel"]
