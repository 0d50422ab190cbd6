"""The server's index watch: polls the retriever's reload, survives errors, stops cleanly."""

from __future__ import annotations

import asyncio

from bot.index_watch import start_index_watch, stop_index_watch


class Reloading:
    def __init__(self, failures: int = 0) -> None:
        self.calls = 0
        self.failures = failures
        self.reloaded = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def reload_if_changed(self) -> bool:  # runs in a worker thread, like reading an index
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("manifest vanished mid-read")
        self._loop.call_soon_threadsafe(self.reloaded.set)
        return True


async def test_the_watch_reloads_and_keeps_going_after_an_error() -> None:
    retriever = Reloading(failures=1)
    task = start_index_watch(retriever, interval=0.01)
    assert task is not None
    await asyncio.wait_for(retriever.reloaded.wait(), timeout=5)
    assert retriever.calls >= 2  # the failed poll was logged, not fatal
    await stop_index_watch(task)
    assert task.done()


async def test_a_retriever_that_cannot_reload_is_not_watched() -> None:
    assert start_index_watch(object()) is None
    await stop_index_watch(None)
