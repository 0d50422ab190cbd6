"""SQLite transactions: a leading savepoint stays nested; writers of one process queue on a lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from ticketing.conversations import get_or_create_conversation, get_or_create_requester
from ticketing.db import Database
from ticketing.models import Conversation, Requester
from ticketing.sqlite_writes import SerialisedWriteConnection


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'tierzero.db'}")
    database.migrate()
    yield database
    database.dispose()


def count(db: Database, model: type) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_work_after_a_leading_savepoint_rolls_back_with_it(sqlite_db: Database) -> None:
    # get_or_create_* insert inside a savepoint; before the fix, releasing the first
    # savepoint committed the transaction, so the requester outlived the rollback.
    with pytest.raises(RuntimeError, match="fail after the inserts"):
        with sqlite_db.transaction() as session:
            requester = get_or_create_requester(session, channel="test", platform_id="U1")
            get_or_create_conversation(
                session, channel="test", channel_conversation_id="c1", thread_id=None, requester=requester
            )
            raise RuntimeError("fail after the inserts")
    assert count(sqlite_db, Requester) == 0
    assert count(sqlite_db, Conversation) == 0


def test_a_failed_savepoint_undoes_only_its_own_insert(sqlite_db: Database) -> None:
    with sqlite_db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO requester (channel, platform_id, display_name, created_at) "
                "VALUES ('test', 'U1', '', CURRENT_TIMESTAMP)"
            )
        )
    with sqlite_db.transaction() as session:
        get_or_create_requester(session, channel="test", platform_id="U2")
        with pytest.raises(IntegrityError), session.begin_nested():
            session.add(Requester(channel="test", platform_id="U1", display_name=""))
        get_or_create_requester(session, channel="test", platform_id="U3")
    assert count(sqlite_db, Requester) == 3


def test_concurrent_writers_all_commit_and_the_lock_is_released(sqlite_db: Database) -> None:
    def write(number: int) -> None:
        with sqlite_db.transaction() as session:
            session.scalar(select(func.count()).select_from(Requester))  # a read first, as real units of work do
            get_or_create_requester(session, channel="test", platform_id=f"U{number}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(write, range(200)))
    assert count(sqlite_db, Requester) == 200

    with sqlite_db.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert isinstance(raw, SerialisedWriteConnection)
        lock = raw._write_lock  # noqa: SLF001
    assert lock.acquire(blocking=False), "a finished transaction kept the write lock"
    lock.release()


def test_a_rolled_back_writer_releases_the_lock(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError):
        with sqlite_db.transaction() as session:
            get_or_create_requester(session, channel="test", platform_id="U1")
            raise RuntimeError("roll back")
    done = threading.Event()

    def write() -> None:
        with sqlite_db.transaction() as session:
            get_or_create_requester(session, channel="test", platform_id="U2")
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(10)
    assert done.is_set()
    assert count(sqlite_db, Requester) == 1
