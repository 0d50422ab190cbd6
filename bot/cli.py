"""The ``tierzero`` command line."""

from __future__ import annotations

import asyncio
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from bot import handoff
from bot.app import TierZero
from bot.config import CONFIG_PATH_ENV, SECRET_KEY, ConfigError, Settings, load_settings
from bot.logs import configure_logging
from kb_index import CorruptIndexError, IndexNotFoundError, KnowledgeBaseError, ModelLoadError, load_embedder
from ticketing import outbox
from ticketing.db import Database, DatabaseUnavailableError, redact_url
from ticketing.service import TicketError, get_ticket, list_tickets

# Never fetch anything from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

F = TypeVar("F", bound=Callable[..., Any])

# Errors whose message is meant for the person at the terminal: shown as one line, exit 1.
USER_ERRORS = (
    ConfigError,
    DatabaseUnavailableError,
    ModelLoadError,
    CorruptIndexError,
    IndexNotFoundError,
    KnowledgeBaseError,
    TicketError,
)


def friendly_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def app_from_context(ctx: click.Context, *, server: bool = False) -> TierZero:
    settings = ctx.obj["settings"]()
    # Only the server logs routine progress; other commands print their results
    # and show warnings and errors (and everything when log_level is DEBUG).
    quiet = not server and settings.log_level != "DEBUG"
    configure_logging("WARNING" if quiet else settings.log_level, settings.log_format)
    app = TierZero(settings)
    # Close pooled connections when the command ends (PostgreSQL otherwise logs an unexpected EOF).
    ctx.call_on_close(app.db.dispose)
    return app


def migrated_database(ctx: click.Context) -> Database:
    """The configured database, migrated: for commands (plugin ones too) that work on records."""
    app = app_from_context(ctx)
    try:
        app.db.migrate()
    except DatabaseUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    return app.db


COMMANDS_ENTRY_POINT_GROUP = "tierzero.commands"


class PluginGroup(click.Group):
    """Built-in commands plus those registered under the ``tierzero.commands`` entry points.

    Channels add their own commands this way (``tierzero slack manifest``), so the
    core never imports ``channels/``. They are loaded only when listed or called.
    """

    def _plugins(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=COMMANDS_ENTRY_POINT_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in (plugins := self._plugins()):
            command = plugins[cmd_name].load()
        return command


@click.group(cls=PluginGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Configuration file (default: $TIERZERO_CONFIG or ./config.yaml).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """tierzero: chat-first IT support bot."""

    @functools.cache
    def settings() -> Settings:
        try:
            return load_settings(config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    ctx.obj = {"settings": settings, "config_path": config_path}


@main.command()
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
@click.pass_context
@friendly_errors
def run(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Start the server with every enabled channel (foreground)."""
    from bot.server import serve

    app = app_from_context(ctx, server=True)
    if host or port is not None:
        server = app.settings.server.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
        app.settings = app.settings.model_copy(update={"server": server})
    app.db.migrate()
    click.echo(f"database: {redact_url(app.db.url)}")
    click.echo("loading the knowledge index...")
    app.load_knowledge(progress=True)
    serve(app)


@main.command()
@click.option("--user", default=None, help="Your requester id (default: your login name).")
@click.pass_context
@friendly_errors
def chat(ctx: click.Context, user: str | None) -> None:
    """Talk to the bot in this terminal, through the same pipeline as every channel."""
    from channels.terminal import TerminalChannel

    app = app_from_context(ctx)
    app.db.migrate()
    click.echo("Loading the knowledge base...", err=True)
    app.load_knowledge(progress=True)
    channel = TerminalChannel(user=user or getpass.getuser())

    async def talk() -> None:
        async with app.runtime([channel]):
            await channel.finished()

    asyncio.run(talk())


# -- knowledge base ------------------------------------------------------------


@main.group()
def kb() -> None:
    """Index and search the knowledge base."""


@kb.command("index")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--rebuild", is_flag=True, help="Re-embed every article, not just changed ones.")
@click.pass_context
@friendly_errors
def kb_index(ctx: click.Context, path: Path | None, rebuild: bool) -> None:
    """(Re)index PATH (default: kb.path); only changed articles are re-embedded."""
    app = app_from_context(ctx)
    folder = path or app.settings.kb.path
    report = app.reindex(folder, rebuild=rebuild, progress=True)
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.path}: {skipped.reason}", err=True)
    click.echo(
        f"indexed {folder}: {report.added} added, {report.updated} updated, {report.removed} removed, "
        f"{report.unchanged} unchanged, {len(report.skipped)} skipped; {report.chunks} chunks"
    )


@kb.command("search")
@click.argument("query")
@click.option("-k", "limit", default=5, show_default=True, help="How many articles.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly_errors
def kb_search(ctx: click.Context, query: str, limit: int, as_json: bool) -> None:
    """Rank articles for QUERY, with scores and the matched passage."""
    index = app_from_context(ctx).open_index(sync=False)
    hits = index.search(query, k=limit)
    if as_json:
        click.echo(json.dumps([hit.__dict__ for hit in hits], default=list, indent=2))
        return
    if not hits:
        click.echo("no matching articles")
    for rank, hit in enumerate(hits, 1):
        click.echo(
            f"{rank}. {hit.title}  [{hit.source_path}]  score={hit.score:.3f} "
            f"dense={hit.dense_score:.3f} lexical={hit.lexical_score:.3f}"
        )
        heading = " > ".join(hit.heading_path)
        if heading:
            click.echo(f"   section: {heading}")
        passage = " ".join(hit.passage.split())
        click.echo(f"   {passage[:300]}{'…' if len(passage) > 300 else ''}")


@kb.command("stats")
@click.option("--min-shown", default=3, show_default=True, help="Rank only articles shown at least this often.")
@click.option("--top", default=5, show_default=True, help="How many best and worst articles.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every article).")
@click.pass_context
@friendly_errors
def kb_stats(ctx: click.Context, min_shown: int, top: int, as_json: bool) -> None:
    """Size of the index, and the best and worst articles by how often they solved the problem."""
    from bot import kb_feedback

    app = app_from_context(ctx)
    app.db.migrate()
    with app.db.transaction() as session:
        articles = kb_feedback.article_stats(session)
    try:
        index_stats: dict[str, Any] | None = app.open_index(sync=False).stats().__dict__
    except IndexNotFoundError:
        index_stats = None
    if as_json:
        rows = [{**a.__dict__, "solve_rate": round(a.solve_rate, 4)} for a in articles]
        click.echo(json.dumps({"index": index_stats, "articles": rows}, indent=2))
        return
    for key, value in (index_stats or {"index": "not built yet (tierzero kb index)"}).items():
        click.echo(f"{key}: {value}")
    if not articles:
        click.echo("no answers shown yet")
        return
    best, worst = kb_feedback.best_and_worst(articles, min_shown=min_shown, count=top)
    for heading, ranked in (("best articles", best), ("worst articles", worst)):
        click.echo(f"\n{heading} (shown at least {min_shown} times):")
        if not ranked:
            click.echo("  none yet")
        for row in ranked:
            click.echo(
                f"  {row.solve_rate:>5.0%} solved  {row.escalation_rate:>5.0%} escalated  "
                f"{row.shown:>4} shown  {row.not_helpful:>3} not helpful  {row.article_id}  {row.title}"
            )


@kb.command("suggest")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for the drafts (default: <data_dir>/kb-suggestions).",
)
@click.option("--min-similarity", default=0.7, show_default=True, help="Cosine for two questions to share a draft.")
@click.pass_context
@friendly_errors
def kb_suggest(ctx: click.Context, out: Path | None, min_similarity: float) -> None:
    """Draft articles from escalated questions that agents answered, grouped by similarity, for review."""
    from bot import confidence, kb_feedback

    app = app_from_context(ctx)
    app.db.migrate()
    with app.db.transaction() as session:
        questions = kb_feedback.resolved_questions(session)
    if not questions:
        click.echo("nothing to suggest: no escalated question has been answered and resolved by an agent yet")
        return
    index = app.open_index(sync=False)
    embedder = load_embedder(app.settings.kb.model, sha256=app.settings.kb.model_sha256)
    suggestions = kb_feedback.group_similar(questions, embedder.encode, min_similarity=min_similarity)
    model = confidence.load_model(app.settings.agent.confidence_model)
    for suggestion in suggestions:
        hits = index.search(suggestion.questions[0].question, k=5)
        # Escalated although an article matches well: that article needs work, not a twin.
        if hits and model.probability(confidence.features(hits, merged=1)) >= 0.5:
            suggestion.update_article = hits[0].article_id
    folder = out or app.settings.data_dir / "kb-suggestions"
    for path, suggestion in zip(kb_feedback.write_drafts(suggestions, folder), suggestions, strict=True):
        what = f"update {suggestion.update_article}" if suggestion.update_article else "new article"
        click.echo(f"{path}  ({len(suggestion.questions)} questions; {what})")
    click.echo(f"review and edit the drafts, then publish one with: tierzero kb publish {folder}/<draft>.md")


@kb.command("publish")
@click.argument("draft", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--as", "name", default=None, help="File name in the KB folder (default: the draft's).")
@click.pass_context
@friendly_errors
def kb_publish(ctx: click.Context, draft: Path, name: str | None) -> None:
    """Copy a reviewed draft into the KB folder and re-index (a running server picks it up)."""
    app = app_from_context(ctx)
    target = Path(app.settings.kb.path) / (name or draft.name)
    if target.exists() and target.resolve() != draft.resolve():
        raise click.ClickException(f"{target} already exists; pass --as NEW_NAME.md or edit that article instead")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(draft.read_text(encoding="utf-8"), encoding="utf-8")
    report = app.reindex(progress=True)
    click.echo(f"published {target}: {report.added} added, {report.updated} updated; {report.chunks} chunks indexed")


@kb.command("calibrate")
@click.option(
    "--queries",
    "queries_path",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help='JSONL of labelled questions: {"text", "label": "answer"|"escalate", "doc_id"}.',
)
@click.option("--max-wrong", default=0.05, show_default=True, type=float, help="Target wrong-answer rate.")
@click.option("--dry-run", is_flag=True, help="Report only; change no file.")
@click.pass_context
@friendly_errors
def kb_calibrate(ctx: click.Context, queries_path: Path, max_wrong: float, dry_run: bool) -> None:
    """Fit the answer confidence on labelled questions and set agent.answer_threshold for --max-wrong."""
    from bot import confidence

    app = app_from_context(ctx)
    index = app.open_index(sync=False)
    try:
        labelled = confidence.read_labelled(queries_path)
        known = set(index.article_ids())
        unknown = sorted({q.doc_id for q in labelled if q.doc_id is not None and q.doc_id not in known})
        if unknown:
            raise click.ClickException(
                f"{len(unknown)} labelled doc_id(s) are not articles in the index, e.g. {unknown[0]!r} "
                "(use the article id shown by `tierzero kb search`)"
            )
        result = confidence.calibrate_questions(index, labelled, max_wrong=max_wrong)
    except confidence.CalibrationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{result.questions} labelled questions: threshold {result.threshold:.3f} answers "
        f"{result.expected_coverage:.1%} of answerable questions with the right article at "
        f"{result.expected_wrong_rate:.1%} wrong answers (target at most {max_wrong:.1%}; estimated out-of-fold)"
    )
    if result.threshold >= 1.0:
        click.echo(
            "warning: no threshold keeps wrong answers under the target with these questions, so the bot would "
            "escalate everything; label more questions (a few hundred) or raise --max-wrong",
            err=True,
        )
    if dry_run:
        return
    config_path = _config_file(ctx)
    model_path = app.settings.data_dir / "confidence-model.json"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    confidence.set_agent_keys(
        config_path, {"answer_threshold": f"{result.threshold:.4f}", "confidence_model": str(model_path)}
    )
    click.echo(f"wrote {model_path} and set agent.answer_threshold / agent.confidence_model in {config_path}")


def _config_file(ctx: click.Context) -> Path:
    """The configuration file this command was started with (created if there is none yet)."""
    path = ctx.obj.get("config_path")
    if path is None:
        env_path = os.environ.get(CONFIG_PATH_ENV)
        path = Path(env_path) if env_path else Path("config.yaml")
    return Path(path)


# -- tickets ---------------------------------------------------------------------


@main.group()
def tickets() -> None:
    """List, inspect and work tickets."""


@tickets.command("list")
@click.option("--status", multiple=True, help="Only these statuses (repeatable).")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
@friendly_errors
def tickets_list(ctx: click.Context, status: tuple[str, ...], limit: int) -> None:
    """The newest tickets first."""
    app = app_from_context(ctx)
    app.db.migrate()
    with app.db.transaction() as session:
        rows = list_tickets(session, statuses=status or None, limit=limit)
        if not rows:
            click.echo("no tickets")
        for t in rows:
            click.echo(
                f"{t.number:<10} {t.status:<9} {t.priority:<7} {t.assignee or '-':<14} "
                f"{t.created_at:%Y-%m-%d %H:%M}  {t.subject}"
            )


@tickets.command("show")
@click.argument("number")
@click.pass_context
@friendly_errors
def tickets_show(ctx: click.Context, number: str) -> None:
    """One ticket with its audit trail."""
    app = app_from_context(ctx)
    app.db.migrate()
    with app.db.transaction() as session:
        t = get_ticket(session, number=number)
        if t is None:
            raise TicketError(f"no ticket {number}")
        requester = t.requester
        click.echo(f"{t.number}: {t.subject}")
        click.echo(
            f"status: {t.status}   priority: {t.priority}   tier: {t.tier}   "
            f"assignee: {t.assignee or '-'}   group: {t.group or '-'}   category: {t.category or '-'}"
        )
        click.echo(f"requester: {requester.display_name or requester.platform_id} ({requester.channel})")
        click.echo(
            f"created: {t.created_at:%Y-%m-%d %H:%M:%S %Z}   first response: "
            f"{t.first_response_at or '-'}   resolved: {t.resolved_at or '-'}"
        )
        click.echo("")
        click.echo(t.description)
        click.echo("")
        click.echo("history:")
        for e in t.events:
            click.echo(f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<18} {e.actor} via {e.channel}")


def _agent_action(
    name: str, action: Callable[..., handoff.TicketChange | None], doc: str, *, takes_text: bool = False
) -> None:
    @tickets.command(name, help=doc)
    @click.argument("number")
    @click.option("--agent", default=None, help="Your agent name (default: your login name).")
    @click.pass_context
    @friendly_errors
    def command(ctx: click.Context, number: str, agent: str | None, **extra: Any) -> None:
        app = app_from_context(ctx)
        app.db.migrate()
        agent = agent or getpass.getuser()
        if name == "reply":
            extra["agent_name"] = agent  # the name the requester sees on the reply
        change = action(app.db, number=number, agent=agent, channel="cli", **extra)
        assert change is not None  # only a redelivered platform message gives None
        click.echo(
            f"{change.number}: status {change.status}, conversation owner {change.owner}, "
            f"assignee {change.assignee or '-'}"
        )

    if takes_text:
        click.argument("text")(command)


_agent_action("take", handoff.take, "Take NUMBER: you own the conversation and the bot falls silent.")
_agent_action("reply", handoff.reply, "Send TEXT to the requester of NUMBER (take it first).", takes_text=True)
_agent_action("handback", handoff.hand_back, "Hand NUMBER's conversation back to the bot.")
_agent_action("resolve", handoff.resolve, "Resolve NUMBER and tell the requester.")


# -- outbox ------------------------------------------------------------------------


@main.group("outbox")
def outbox_group() -> None:
    """Inspect and retry replies that could not be delivered."""


@outbox_group.command("list")
@click.option("--status", multiple=True, help="pending, sending, sent, unknown, dead (repeatable).")
@click.pass_context
@friendly_errors
def outbox_list(ctx: click.Context, status: tuple[str, ...]) -> None:
    app = app_from_context(ctx)
    app.db.migrate()
    with app.db.transaction() as session:
        counts = outbox.count_by_status(session)
        click.echo("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "outbox is empty")
        for item in outbox.list_items(session, statuses=list(status) or None):
            click.echo(
                f"#{item.id:<6} {item.status:<8} {item.channel:<10} attempts={item.attempts} {item.last_error or ''}"
            )


@outbox_group.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.pass_context
@friendly_errors
def outbox_retry(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Send UNKNOWN or DEAD items again (all of them, or IDS)."""
    app = app_from_context(ctx)
    app.db.migrate()
    with app.db.transaction() as session:
        count = outbox.retry_unknown(session, item_ids=list(ids) or None)
    click.echo(f"{count} item(s) queued again")


@main.command("check-config")
@click.pass_context
@friendly_errors
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and print it (secrets hidden)."""
    from bot.registry import build_channels

    settings = ctx.obj["settings"]()
    # Channel sections are validated by their channel, as `tierzero run` does (no connection is made).
    build_channels(app_from_context(ctx).channel_context())
    shown = settings.model_dump(mode="json")
    shown["database"]["url"] = redact_url(settings.database_url)
    shown["channels"] = {name: hide_secrets(section) for name, section in shown["channels"].items()}
    click.echo(json.dumps(shown, indent=2))


def hide_secrets(value: Any, key: str = "") -> Any:
    """Channel settings for display: secrets masked, URLs cut to scheme and host
    (webhook URLs often carry a token in their path or query)."""
    if isinstance(value, dict):
        return {k: hide_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_secrets(v, key) for v in value]
    if isinstance(value, str) and value:
        if SECRET_KEY.search(key):
            return "***"
        if key.endswith("url"):
            parts = urlsplit(value)
            return f"{parts.scheme}://{parts.hostname or ''}/***" if parts.scheme else "***"
    return value


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
