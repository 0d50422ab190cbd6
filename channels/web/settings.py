"""The ``channels.web`` section of config.yaml."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config import StrictModel

MIN_SECRET_CHARS = 32


class AgentAccount(StrictModel):
    # The verified identity the agent signs in with: an e-mail address (e-mail link),
    # or the user name the reverse proxy asserts.
    id: str = Field(min_length=1, max_length=320)
    name: str = Field(default="", max_length=255)
    role: Literal["agent", "admin"] = "agent"
    # Queues the agent works, in addition to service_desk.groups membership ("web:<id>" or the e-mail).
    groups: tuple[str, ...] = ()
    # May take a ticket another agent holds (admins always may).
    take_over: bool = False


class ProxySettings(StrictModel):
    # The header a trusted reverse proxy (SSO gateway) sets to the signed-in user.
    header: str = Field(default="X-Forwarded-Email", min_length=1)
    name_header: str | None = None
    # Only requests from these addresses (IPs or CIDR ranges) may assert an identity.
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
        return value


class EmailLinkSettings(StrictModel):
    # Without an SMTP relay the sign-in link is printed to the server log (local trials only).
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    sender: str = "tierzero@localhost"
    link_valid_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # The address people open the link at (default: http://<server.host>:<server.port>).
    public_url: str | None = None
    # Only these e-mail domains may sign in (empty: any).
    allowed_domains: tuple[str, ...] = ()


class WebSettings(StrictModel):
    # demo: anyone picks who they are (loopback only, clearly marked); proxy: a trusted
    # reverse proxy asserts the user in a header; email_link: a signed link by e-mail.
    sign_in: Literal["demo", "proxy", "email_link"] = "demo"
    # Signs session cookies and e-mail links. Required for email_link; demo and proxy
    # use a random per-process key when unset (sessions then end at restart).
    secret_key: SecretStr | None = None
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    agents: tuple[AgentAccount, ...] = ()
    proxy: ProxySettings = ProxySettings()
    email_link: EmailLinkSettings = EmailLinkSettings()
    # Live views look for new messages this often (and at once when a reply is sent here).
    poll_seconds: float = Field(default=2.0, ge=0.1, le=60)

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters (use a long random string)")
        return value

    @model_validator(mode="after")
    def _mode_needs(self) -> WebSettings:
        if self.sign_in == "email_link" and self.secret_key is None:
            raise ValueError("sign_in 'email_link' needs secret_key (it signs the links)")
        if self.sign_in == "proxy" and not self.proxy.trusted_proxies:
            raise ValueError("sign_in 'proxy' needs proxy.trusted_proxies (who may assert an identity)")
        ids = [a.id.casefold() for a in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agents: each id may appear only once")
        return self
