"""The ``channels.slack`` section of config.yaml."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.attachments import AttachmentSettings
from bot.config import StrictModel

SLACK_ID = r"^[A-Z][A-Z0-9]{2,30}$"


class SlackSettings(StrictModel):
    # "http": Events API, interactivity and slash commands POSTed to `path` on the shared server.
    # "socket": Socket Mode over a websocket Slack opens for us (no public URL needed; needs app_token).
    mode: Literal["http", "socket"] = "http"
    bot_token: SecretStr | None = None  # xoxb-...
    signing_secret: SecretStr | None = None  # HTTP mode
    app_token: SecretStr | None = None  # xapp-..., Socket Mode
    # Only these workspaces are served; events from any other are dropped.
    team_ids: list[str] = Field(default_factory=list)
    path: str = Field(default="/slack/events", pattern=r"^/[A-Za-z0-9/_-]*$")
    # The Web API root (changed only by tests and proxies).
    api_url: str = "https://slack.com/api/"
    api_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Slack wants an answer within 3 s; the message must be committed before that.
    ack_timeout_seconds: float = Field(default=2.5, gt=0, le=3)
    # Messages from other bots are ignored unless this is on (our own always are).
    allow_bots: bool = False
    # Shared files are downloaded (bot token, files:read) into the attachment store;
    # store_dir empty: <data_dir>/slack/attachments.
    attachments: AttachmentSettings = AttachmentSettings()
    # Where Slack serves shared files; the bot token is sent to no other address (changed only by tests).
    files_url: str = "https://files.slack.com/"
    # -- agents ------------------------------------------------------------------
    # Channel id where escalated tickets are posted for agents; empty: no agent desk in Slack.
    triage_channel: str | None = Field(default=None, pattern=SLACK_ID)
    # Slack user ids allowed to press Take / Resolve / Hand back and to reply to tickets.
    agents: list[str] = Field(default_factory=list)
    # Or a user group (S...) whose members are agents; looked up with usergroups.users.list.
    agent_group: str | None = Field(default=None, pattern=SLACK_ID)
    agent_group_refresh_seconds: float = Field(default=300.0, gt=0)
    command: str = Field(default="/tierzero", pattern=r"^/[a-z0-9_-]{1,31}$")

    @field_validator("team_ids", "agents", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # From an environment variable: "T0123,T0456" (or spaces).
        return [part for part in re.split(r"[,\s]+", value) if part] if isinstance(value, str) else value

    @field_validator("team_ids", "agents")
    @classmethod
    def _slack_ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not re.fullmatch(SLACK_ID, i)]
        if bad:
            raise ValueError(f"not Slack ids: {', '.join(bad)}")
        return ids

    @field_validator("api_url", "files_url")
    @classmethod
    def _trailing_slash(cls, url: str) -> str:
        return url if url.endswith("/") else url + "/"

    @model_validator(mode="after")
    def _credentials_complete(self) -> SlackSettings:
        """A half-configured Slack app would accept forged requests or fail later: refuse now."""
        problems = []
        if not _present(self.bot_token):
            problems.append("bot_token is empty (the app's Bot User OAuth Token, xoxb-...)")
        if self.mode == "http" and not _present(self.signing_secret):
            problems.append("signing_secret is empty (Basic Information > App Credentials > Signing Secret)")
        if self.mode == "socket" and not _present(self.app_token):
            problems.append("app_token is empty (an app-level token with connections:write, xapp-...)")
        if not self.team_ids:
            problems.append("team_ids is empty (the workspace ids to serve, T...)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def has_desk(self) -> bool:
        return self.triage_channel is not None


def _present(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value().strip())
