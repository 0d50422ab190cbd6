"""SIGTERM under load: stop accepting, answer what was accepted, deliver every reply, then exit 0.

The server process, fakes and driver are the crash benchmark's (``benchmarks.crash``), with the
tests' fake retriever in place of the embedding model so the server starts in seconds.
Below it, the outbox's pause, which keeps channels from closing a connection under a send.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from benchmarks import crash
from bot.model import OutboundReply
from bot.outbox_worker import OutboxWorker
from tests.bot.test_outbox_worker import SETTINGS, queue, statuses
from tests.conftest import REPO_ROOT
from ticketing.db import Database
from ticketing.models import OutboxItem, OutboxStatus

SHUTDOWN_TIMEOUT = 30.0


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def first_refusal(driver: crash.Driver, server: crash.ServerProcess, timeout: float = 15.0) -> str:
    """Post new messages on fresh connections until one is refused; how it was refused.

    Messages accepted meanwhile (the signal not handled yet) are acknowledged ones like any other.
    """
    deadline = time.monotonic() + timeout
    while True:
        message = driver.new_message(channel="http_api")
        message.attempts = 1
        driver.sent.append(message)
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
                response = await driver.post(client, message)
        except httpx.ConnectError:
            return "connection refused"
        except httpx.TransportError as exc:  # accepted, then closed: not acknowledged
            message.failures.append(type(exc).__name__)
        else:
            if response.status_code == 503:
                return "503"
            message.acked = response.is_success
            message.failures += [] if response.is_success else [str(response.status_code)]
        assert time.monotonic() < deadline, "the server kept accepting new messages after SIGTERM"
        await asyncio.sleep(0.02)


def unsent(database_url: str) -> list[tuple[object, ...]]:
    """Outbox rows not sent, with why (for a failure message)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = select(
                OutboxItem.id,
                OutboxItem.status,
                OutboxItem.attempts,
                OutboxItem.last_error,
                OutboxItem.created_at,
                OutboxItem.next_attempt_at,
            ).where(OutboxItem.status != OutboxStatus.SENT)
            return [tuple(row) for row in connection.execute(query)]
    finally:
        engine.dispose()


@pytest.mark.slow
async def test_sigterm_under_load_delivers_every_acknowledged_reply_and_exits_0(
    tmp_path: Path, database_url: str
) -> None:
    fakes = crash.Fakes()
    async with crash.serving(fakes.asgi()) as fakes_url:
        port = crash.free_port()
        config = crash.write_config(
            tmp_path,
            port=port,
            fakes_url=fakes_url,
            database_url=database_url,
            kb=REPO_ROOT / "kb",
            index_dir=tmp_path / "index",
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        server = crash.ServerProcess(config, port=port, log_path=tmp_path / "server.log", fake_knowledge=True)
        driver = crash.Driver(
            server.base_url, crash.Options(rate=30, concurrency=6, give_up_seconds=2), random.Random(5)
        )
        try:
            server.start()
            await server.wait_ready(120)
            load = asyncio.create_task(driver.run())
            await until(lambda: sum(m.acked for m in driver.sent) >= 20, "20 acknowledged messages")
            # Keep HTTP API replies in flight at the webhook: the outbox has work left when the signal comes.
            fakes.hold_webhook()
            await until(lambda: fakes.held > 0, "a reply held at the webhook")
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            refusal = await first_refusal(driver, server)
            refused_while_running = server.process.poll() is None
            # Hold the reply a little longer, so the server stops its channels while it is in flight.
            await asyncio.sleep(0.5)
            fakes.release_webhook()
            driver.stop()
            await load
            exit_code = await asyncio.to_thread(server.process.wait, SHUTDOWN_TIMEOUT + 30)
        finally:
            fakes.release_webhook()
            server.stop_quietly()
        deliveries = fakes.deliveries()

    log = (tmp_path / "server.log").read_text(encoding="utf-8")
    assert refusal in ("connection refused", "503")
    assert refused_while_running, "new messages were refused only once the process had exited"
    assert exit_code == 0, log[-3000:]
    assert "Traceback" not in log
    report = crash.verify(database_url, driver.sent, deliveries)
    assert report["acked"] >= 20
    assert report["lost"] == 0 and report["unanswered"] == 0 and report["no_reply"] == 0
    # Every stored message was answered and its reply reached the fake, once, before the exit.
    assert report["still_in_outbox"] == {}, (unsent(database_url), log[-3000:])
    assert report["replied_once"] == report["stored"]
    assert report["duplicate_replies"] == 0
    assert report["problems"] == []


class GatedChannel:
    """Sends only once the gate opens; says when a send has started."""

    name = "test"

    def __init__(self) -> None:
        self.sent: list[OutboundReply] = []
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(self, reply: OutboundReply) -> None:
        self.started.set()
        await self.gate.wait()
        self.sent.append(reply)


async def test_outbox_pause_lets_the_send_in_flight_finish_and_claims_nothing_until_resumed(db: Database) -> None:
    # Runtime.stop pauses the outbox around channel.stop(), which closes the channels' connections.
    channel = GatedChannel()
    worker = OutboxWorker(db=db, senders={"test": channel}, settings=SETTINGS)
    queue(db, "first")
    in_flight = asyncio.create_task(worker.deliver_due())
    await asyncio.wait_for(channel.started.wait(), 5)
    pausing = asyncio.create_task(worker.pause(timeout=5))
    await asyncio.sleep(0.05)
    assert not pausing.done(), "pause() returned while a send was in flight"
    channel.gate.set()
    await pausing
    assert await in_flight == 1

    queue(db, "second", conversation_id="c2")
    assert await worker.deliver_due() == 0  # paused: nothing is claimed
    worker.resume()
    assert await worker.deliver_due() == 1
    assert [reply.text for reply in channel.sent] == ["first", "second"]
    assert statuses(db) == [OutboxStatus.SENT, OutboxStatus.SENT]
