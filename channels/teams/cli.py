"""``tierzero teams ...``: set-up helpers for the Teams channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bot.config import ConfigError, Settings, expand_env_references, load_settings, validate_section
from channels.teams.config import GUID, ManifestSettings
from channels.teams.manifest import build_package


@click.group()
def teams() -> None:
    """Microsoft Teams set-up helpers."""


@teams.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tierzero-teams.zip"),
    show_default=True,
    help="Where to write the app package.",
)
@click.option("--app-id", default=None, help="The bot's Microsoft App ID (default: channels.teams.app_id).")
@click.pass_context
def manifest(ctx: click.Context, out: Path, app_id: str | None) -> None:
    """Build the Teams app package (manifest.json and icons, zipped) to upload to Teams."""
    try:
        settings = _settings(ctx)
        section: dict[str, Any] = expand_env_references(dict(settings.channels.get("teams") or {}))
        app_id = app_id or section.get("app_id")
        if not app_id:
            raise ConfigError("no app id: set TEAMS_APP_ID (channels.teams.app_id) or pass --app-id")
        if not isinstance(app_id, str) or not GUID.match(app_id):
            raise ConfigError(f"app id {app_id!r} is not a GUID (the Microsoft App ID of the Azure Bot)")
        manifest_settings = validate_section(
            ManifestSettings, section.get("manifest") or {}, key="channels.teams.manifest"
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    path = build_package(app_id=app_id, settings=manifest_settings, out=out)
    click.echo(f"wrote {path} (bot {app_id}); upload it in Teams: Apps > Manage your apps > Upload an app")


def _settings(ctx: click.Context) -> Settings:
    # Under `tierzero`, the main group has read --config already; standalone, read the default file.
    parent = ctx.find_root().obj
    if isinstance(parent, dict) and "settings" in parent:
        settings: Settings = parent["settings"]()
        return settings
    return load_settings()
