"""``tierzero tokens``: API tokens for agents and admins (plugged in via ``tierzero.commands``)."""

from __future__ import annotations

import click

from bot.cli import migrated_database
from ticketing.access import AccessDenied, Role, create_api_token, list_api_tokens, revoke_api_token


@click.group()
def tokens() -> None:
    """Create, list and revoke REST API tokens (/api/v1)."""


@tokens.command("create")
@click.option("--agent", required=True, help="The agent the token acts for (their channels.web.agents id or a name).")
@click.option("--role", type=click.Choice(["agent", "admin"]), default="agent", show_default=True)
@click.pass_context
def create(ctx: click.Context, agent: str, role: str) -> None:
    """Create a token; it is shown once and stored only as a digest."""
    db = migrated_database(ctx)
    try:
        with db.transaction() as session:
            row, plain = create_api_token(session, agent=agent, role=Role(role))
            token_id = row.id
    except AccessDenied as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"token #{token_id} for {agent} ({role}); store it now, it is not shown again:")
    click.echo(plain)


@tokens.command("list")
@click.pass_context
def list_tokens(ctx: click.Context) -> None:
    """Every token (without the secret)."""
    with migrated_database(ctx).transaction() as session:
        rows = list_api_tokens(session)
        if not rows:
            click.echo("no tokens")
        for row in rows:
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            used = f"last used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never used"
            click.echo(f"#{row.id:<4} {row.hint}…  {row.agent:<24} {row.role:<6} {state:<18} {used}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke token TOKEN_ID (see `tierzero tokens list`)."""
    with migrated_database(ctx).transaction() as session:
        row = revoke_api_token(session, token_id=token_id)
    if row is None:
        raise click.ClickException(f"no token #{token_id}")
    click.echo(f"token #{token_id} revoked")
