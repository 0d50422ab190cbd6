"""Engine creation, transactions and schema migration for SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ticketing.sqlite_writes import install_transaction_hooks, serialise_writes

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed 64-bit number, the same in every tierzero process: PostgreSQL's advisory lock for migrations.
_MIGRATION_LOCK_KEY = 0x7469657230  # "tier0"


class DatabaseUnavailableError(Exception):
    """The database cannot be reached or used; the message is safe to show."""


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing of it rather than a secret
        return "<unparsable database URL>"


def _enable_sqlite_durability(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes a commit
    # survive power loss, which persist-before-acknowledge relies on.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_database_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True, "future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            if not parsed.database.startswith("file:"):
                # Writers of this process queue on a lock, not in SQLite's busy sleep (sqlite_writes).
                kwargs["connect_args"].update(serialise_writes(parsed.database))
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_durability)
        install_transaction_hooks(engine)
    return engine


class Database:
    """One engine and its session factory; ``transaction()`` is the unit of work."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = create_database_engine(url, echo=echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on any error."""
        with self._sessions.begin() as session:
            yield session

    def check_connection(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise DatabaseUnavailableError(
                f"cannot reach the database at {redact_url(self.url)}: {_first_line(exc)}"
            ) from exc

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        self.check_connection()
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Replicas starting at once on a fresh database would each create the schema;
                    # the second waits here, then finds it at head. Released at commit.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise DatabaseUnavailableError(
                f"cannot migrate the database at {redact_url(self.url)}: {_first_line(exc)}"
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


@contextmanager
def private_schema(base_url: str, *, prefix: str, keep: bool = False) -> Iterator[str]:
    """A new, empty schema on the PostgreSQL server at ``base_url``; yields a URL that uses it.

    For tests and benchmarks that share one server: each gets its own tables, dropped afterwards
    (unless ``keep``). The schema is left empty: whoever connects migrates it.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
