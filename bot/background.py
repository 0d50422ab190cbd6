"""A background loop shared by the outbox worker, the desk sync and the SLA escalation job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class PollingLoop:
    """Runs ``work`` round after round: again at once while a round found something to do,
    otherwise after ``interval`` seconds or as soon as ``notify()`` is called.

    ``stop()`` lets the round in progress finish rather than cancelling it: rounds do their
    database work in threads, and a cancelled await would leave a thread mid-transaction
    with a connection the pool is about to close. With ``drain_on_stop`` it keeps going
    until a round finds nothing (the outbox flushes what is due before exit).
    """

    def __init__(
        self, work: Callable[[], Awaitable[int]], *, interval: float, name: str, drain_on_stop: bool = False
    ) -> None:
        self._work = work
        self._interval = interval
        self._name = name
        self._drain_on_stop = drain_on_stop
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self, *, timeout: float = 10.0) -> bool:
        """Finish (up to ``timeout``); False if the loop had to be cancelled."""
        if self._task is None:
            return True
        self._stopping = True
        self._wake.set()
        finished = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            finished = False
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        return finished

    async def _run(self) -> None:
        while True:
            try:
                done = await self._work()
            except Exception:
                log.exception("%s: round failed; trying again in %ss", self._name, self._interval)
                done = 0
            if self._stopping and not (self._drain_on_stop and done):
                return
            if done:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
