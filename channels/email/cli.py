"""``tierzero deadletter list|replay``: mail the email channel kept raw instead of dropping it."""

from __future__ import annotations

import smtplib

import click

from bot.cli import migrated_database
from bot.config import ConfigError, validate_section
from channels.email import deadletter as store
from channels.email.config import EmailSettings


@click.group(help="Mail kept raw because it could not be turned into a conversation.")
def deadletter() -> None:
    pass


@deadletter.command("list", help="Show dead letters, newest first.")
@click.option("--status", type=click.Choice(["new", "replayed", "failed"]), default=None)
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def list_command(ctx: click.Context, status: str | None, limit: int) -> None:
    letters = store.list_dead_letters(migrated_database(ctx), status=status, limit=limit)
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        click.echo(
            f"{letter.id}\t{letter.received_at:%Y-%m-%d %H:%M}\t{letter.status}\t{letter.size} bytes\t"
            f"from {letter.mail_from or '<>'}\t{letter.reason}"
        )


@deadletter.command(help="Submit dead letters again to the running email listener (same path as live mail).")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.pass_context
def replay(ctx: click.Context, ids: tuple[int, ...]) -> None:
    settings = ctx.find_root().obj["settings"]()
    try:
        email_settings = validate_section(EmailSettings, settings.channels.get("email"), key="channels.email")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    db = migrated_database(ctx)
    failed = 0
    for dead_id in ids:
        letter = store.load(db, dead_id)
        if letter is None:
            click.echo(f"{dead_id}: no such dead letter", err=True)
            failed += 1
            continue
        raw, mail_from, rcpt_tos = letter
        try:
            with smtplib.SMTP(email_settings.host, email_settings.port, timeout=60) as smtp:
                smtp.sendmail(mail_from, rcpt_tos or email_settings.support_addresses[:1], raw)
        except (OSError, smtplib.SMTPException) as exc:
            click.echo(f"{dead_id}: not replayed: {exc} (is `tierzero run` serving the email channel?)", err=True)
            store.mark(db, dead_id, status="failed")
            failed += 1
            continue
        store.mark(db, dead_id, status="replayed")
        click.echo(f"{dead_id}: replayed")
    if failed:
        raise SystemExit(1)
