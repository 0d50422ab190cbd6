"""One SQLite writer at a time per process, handed over on a Python lock instead of SQLite's busy sleep.

SQLite allows one write transaction at a time. A second writer gets SQLITE_BUSY
and SQLite's busy handler sleeps and retries in steps of 1, 2, 5, ... up to
100 ms, however soon the first writer finishes. With a few dozen threads
answering chats, writers then spend most of their time asleep: measured with
32 threads doing short write transactions, throughput halved and latency
tails grew to hundreds of milliseconds.

So every connection of a file database takes a process-wide lock (one per
database file) before its first write statement and releases it when its
transaction ends (commit, rollback, close). Threads of this process queue on
that lock and are woken the moment it is free; SQLite's own lock and busy
timeout still arbitrate between processes (the CLI, a second server).
Durability is unchanged: WAL with synchronous=FULL, commit before acknowledge.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

# The same as the busy_timeout set on every connection: waiting longer for another
# writer of this process means something is stuck, and the caller gets SQLite's error.
WRITE_LOCK_TIMEOUT_SECONDS = 30.0

# Statements that need (or start a transaction that will need) SQLite's write lock.
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|SAVEPOINT|CREATE|DROP|ALTER)\b", re.IGNORECASE)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(database: str) -> threading.Lock:
    key = str(Path(database).resolve())
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


class SerialisedWriteConnection(sqlite3.Connection):
    """A sqlite3 connection that holds its database's process-wide write lock while it writes."""

    _write_lock: threading.Lock  # set on the per-database subclass

    def begin_write(self) -> None:
        if getattr(self, "_writing", False):
            return
        if not self._write_lock.acquire(timeout=WRITE_LOCK_TIMEOUT_SECONDS):
            raise sqlite3.OperationalError(
                f"database is locked (another writer in this process held it for {WRITE_LOCK_TIMEOUT_SECONDS:.0f}s)"
            )
        self._writing = True

    def _end_write(self) -> None:
        if getattr(self, "_writing", False):
            self._writing = False
            self._write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if not self.in_transaction:  # a failed commit leaves the transaction open until the rollback
                self._end_write()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end_write()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._end_write()


def serialise_writes(database: str) -> dict[str, Any]:
    """``connect_args`` that make every connection to the file ``database`` share its write lock."""
    factory = type("SerialisedWriteConnection", (SerialisedWriteConnection,), {"_write_lock": _lock_for(database)})
    return {"factory": factory}


def install_transaction_hooks(engine: Engine) -> None:
    """Take the write lock before the first write statement, and make a leading SAVEPOINT nest.

    Python's sqlite3 module opens a transaction implicitly only before INSERT, UPDATE,
    DELETE and REPLACE. A SAVEPOINT that comes first (SQLAlchemy's ``begin_nested``, used
    to insert-or-reload) therefore opens the transaction itself, and its RELEASE commits
    everything so far: the rest of the unit of work would no longer be atomic with it, and
    each such commit costs an fsync. A BEGIN just before it keeps the savepoint nested.
    """

    def before_cursor_execute(
        _conn: Any, cursor: Any, statement: str, _params: Any, _context: Any, _executemany: bool
    ) -> None:
        match = _WRITE.match(statement)
        if match is None:
            return
        connection = cursor.connection
        if isinstance(connection, SerialisedWriteConnection):
            connection.begin_write()
        if match.group(1).upper() == "SAVEPOINT" and not connection.in_transaction:
            cursor.execute("BEGIN")

    event.listen(engine, "before_cursor_execute", before_cursor_execute)
