"""The ``channels.teams`` section of config.yaml."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config import StrictModel

# Where the Bot Framework publishes the keys that sign the tokens it sends to bots.
BOT_FRAMEWORK_OPENID_METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
# Multi-tenant bot registrations get their connector token here; a single-tenant
# registration uses https://login.microsoftonline.com/<its tenant id>/oauth2/v2.0/token.
BOT_FRAMEWORK_TOKEN_URL = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com/.default"
# Proactive posts into a team work from the global Teams service URL.
TEAMS_GLOBAL_SERVICE_URL = "https://smba.trafficmanager.net/teams/"
MIN_PASSWORD_CHARS = 16
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _as_list(value: Any) -> Any:
    # "${TEAMS_TENANT_IDS}" expands to one string: accept "id1, id2" as well as a YAML list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AgentChannelSettings(StrictModel):
    """The Teams channel where escalated tickets are posted as cards for agents."""

    team_id: str = Field(min_length=1)  # "19:...@thread.tacv2" (the team's General channel id)
    channel_id: str = Field(min_length=1)  # "19:...@thread.tacv2"
    # The connector the bot posts new ticket cards through (not known until Teams writes to us).
    service_url: str = TEAMS_GLOBAL_SERVICE_URL
    # AAD object ids of the people allowed to take, answer, hand back and resolve tickets.
    agents: list[str] = Field(min_length=1)

    @field_validator("agents", mode="before")
    @classmethod
    def _agents_list(cls, value: Any) -> Any:
        return _as_list(value)


class ManifestSettings(StrictModel):
    """What ``tierzero teams manifest`` writes into the Teams app package."""

    # The Teams app id; empty: the bot's app id (a common, valid choice).
    app_package_id: str | None = Field(default=None, pattern=GUID.pattern)
    version: str = Field(default="1.0.0", pattern=r"^\d+\.\d+\.\d+$")
    short_name: str = Field(default="tierzero", min_length=1, max_length=30)
    full_name: str = Field(default="tierzero IT help", max_length=100)
    short_description: str = Field(default="Answers IT questions and hands over to the IT team.", max_length=80)
    full_description: str = Field(
        default=(
            "Ask an IT question in a chat or mention the bot in a channel: tierzero answers from the "
            "knowledge base, and opens a ticket for a person when it cannot."
        ),
        max_length=4000,
    )
    developer_name: str = Field(default="IT department", min_length=1, max_length=32)
    website_url: str = "https://example.com/it"
    privacy_url: str = "https://example.com/it/privacy"
    terms_url: str = "https://example.com/it/terms"
    accent_color: str = Field(default="#2F5597", pattern=r"^#[0-9A-Fa-f]{6}$")


class TeamsSettings(StrictModel):
    # The bot's Microsoft App ID and client secret from its Azure Bot registration.
    app_id: str | None = None
    app_password: SecretStr | None = None
    # Microsoft 365 tenants whose users are served; activities from others are refused.
    tenants: list[str] = Field(default_factory=list)
    # Only for running without an Azure registration (Bot Framework Emulator on this
    # machine): no app id, no token checks inbound or outbound. Never in production.
    local_development: bool = False
    openid_metadata_url: str = BOT_FRAMEWORK_OPENID_METADATA
    token_url: str = BOT_FRAMEWORK_TOKEN_URL
    # Time allowed for one call to the Bot Connector (the outbox has its own limit too).
    connector_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    agent_channel: AgentChannelSettings | None = None
    manifest: ManifestSettings = ManifestSettings()

    @field_validator("agent_channel", mode="before")
    @classmethod
    def _unset_agent_channel(cls, value: Any) -> Any:
        # Every ${...} in the section unset: no agent channel (rather than "team_id missing").
        return None if value == {} else value

    @field_validator("tenants", mode="before")
    @classmethod
    def _tenants_list(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("app_id")
    @classmethod
    def _app_id_is_guid(cls, value: str | None) -> str | None:
        if value is not None and not GUID.match(value):
            raise ValueError("must be the bot's Microsoft App ID (a GUID like 00000000-0000-0000-0000-000000000000)")
        return value

    @field_validator("app_password")
    @classmethod
    def _password_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_PASSWORD_CHARS:
            raise ValueError("is too short to be an Azure client secret (check TEAMS_APP_PASSWORD)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TeamsSettings:
        if self.app_id is not None:
            if self.local_development:
                raise ValueError("local_development runs without app_id; remove one of the two")
            if self.app_password is None:
                raise ValueError("app_id is set but app_password is not (set TEAMS_APP_PASSWORD)")
            if not self.tenants:
                raise ValueError("tenants: list the Microsoft 365 tenant ids whose users the bot serves")
        return self

    @property
    def authenticated(self) -> bool:
        return self.app_id is not None
