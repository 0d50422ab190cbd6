"""The ``channels.email`` section of config.yaml."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.attachments import AttachmentSettings
from bot.config import StrictModel

MIB = 1024 * 1024


def _address(value: str) -> str:
    value = value.strip().lower()
    if value.count("@") != 1 or not all(value.split("@")) or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an email address")
    return value


class TlsSettings(StrictModel):
    # Certificate and key (PEM) for STARTTLS; both unset: STARTTLS is not offered.
    cert_file: Path | None = None
    key_file: Path | None = None
    # Refuse mail from clients that did not STARTTLS first.
    require: bool = False

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        if self.require and self.cert_file is None:
            raise ValueError("require is true but no cert_file/key_file is set")
        return self


class SmtpAuthSettings(StrictModel):
    # login -> password (write ${ENV} references). Empty: AUTH is not offered.
    users: dict[str, SecretStr] = Field(default_factory=dict)
    # Only authenticated clients may send (e.g. when an upstream relay submits to us).
    require: bool = False

    @field_validator("users")
    @classmethod
    def _no_empty_passwords(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for login, password in users.items():
            if len(password.get_secret_value()) < 12:
                raise ValueError(f"password of {login!r} must be at least 12 characters")
        return users


class RelaySettings(StrictModel):
    # The SMTP relay replies go out through. Unset: replies are written as .eml
    # files to pickup_dir (a safe default for development: nothing leaves the machine).
    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Empty: <data_dir>/email/outgoing.
    pickup_dir: Path | None = None

    @model_validator(mode="after")
    def _credentials_together(self) -> RelaySettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be set together")
        if self.password is not None and not self.password.get_secret_value():
            raise ValueError("password is empty")
        return self


class LoopSettings(StrictModel):
    # Per-sender circuit breaker: at most this many automatic answers per window.
    max_auto_replies: int = Field(default=10, ge=1)
    window_minutes: int = Field(default=180, ge=1)
    # Our own loop header; its value names this installation.
    header: str = Field(default="X-TierZero-Loop", pattern=r"^X-[A-Za-z0-9-]+$")


class EmailSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    # Name in the SMTP greeting and in our Message-IDs (default: the first support address's domain).
    hostname: str | None = None
    # Mail to any other recipient is refused at RCPT with 550 5.1.1.
    support_addresses: list[str] = Field(min_length=1)
    # Further addresses of ours (no-reply senders, aliases): never answered.
    own_addresses: list[str] = Field(default_factory=list)
    max_message_bytes: int = Field(default=10 * MIB, ge=1024)
    max_sessions: int = Field(default=50, ge=1)
    session_timeout_seconds: float = Field(default=300.0, gt=0)
    tls: TlsSettings = TlsSettings()
    auth: SmtpAuthSettings = SmtpAuthSettings()
    # authserv-ids (RFC 8601) whose Authentication-Results we believe.
    trusted_relays: list[str] = Field(default_factory=list)
    verify_dkim: bool = False
    # Agent addresses: a verified mail from one of them in a ticket's thread answers the requester.
    agent_addresses: list[str] = Field(default_factory=list)
    # Agent or group mailbox that gets a notification per ticket (and its updates); unset: none.
    agent_notify_address: str | None = None
    relay: RelaySettings = RelaySettings()
    attachments: AttachmentSettings = AttachmentSettings()
    loops: LoopSettings = LoopSettings()

    @field_validator("support_addresses", "own_addresses", "agent_addresses")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_address(v) for v in values]

    @field_validator("agent_notify_address")
    @classmethod
    def _optional_address(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @property
    def our_addresses(self) -> frozenset[str]:
        return frozenset([*self.support_addresses, *self.own_addresses])

    @property
    def domain(self) -> str:
        return self.hostname or self.support_addresses[0].split("@", 1)[1]
