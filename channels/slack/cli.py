"""``tierzero slack ...``: set-up helpers for the Slack channel."""

from __future__ import annotations

import sys

import click

from channels.slack.manifest import MANIFEST_PATH, PLACEHOLDER_URL, build_manifest, render


@click.group(help="Slack channel set-up helpers.")
def slack() -> None:
    pass


@slack.command(help="Print the Slack app manifest (paste it at api.slack.com/apps > Create New App > From a manifest).")
@click.option("--url", default=PLACEHOLDER_URL, show_default=True, help="The public https URL tierzero is served at.")
@click.option("--socket-mode", is_flag=True, help="For Socket Mode: no request URLs (needs an app-level token).")
@click.option("--command", "command_name", default="/tierzero", show_default=True, help="The slash command.")
@click.option("--check", is_flag=True, help=f"Fail if {MANIFEST_PATH.name} differs from what this version generates.")
def manifest(url: str, socket_mode: bool, command_name: str, check: bool) -> None:
    if not (url.startswith("https://") or socket_mode):
        raise click.BadParameter("Slack only calls https URLs", param_hint="--url")
    text = render(build_manifest(url=url, socket_mode=socket_mode, command=command_name))
    if check:
        expected = render(build_manifest())
        if MANIFEST_PATH.read_text(encoding="utf-8") != expected:
            click.echo(
                f"{MANIFEST_PATH} is out of date: regenerate it with `tierzero slack manifest > {MANIFEST_PATH}`"
            )
            sys.exit(1)
        click.echo(f"{MANIFEST_PATH} matches the scopes and events the Slack channel uses.")
        return
    click.echo(text, nl=False)
