"""Hot reload: a running server answers from the newest knowledge index without a restart.

``tierzero kb index`` (or an admin publishing suggested articles) writes a new
index generation and atomically replaces its manifest. The server polls the
manifest's identity and, when it changed, has the index read and fully build
the new generation aside before swapping it in with one reference assignment
(``KnowledgeIndex.reload_if_changed``): no question ever sees a half-built index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bot import telemetry

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def start_index_watch(retriever: Any, *, interval: float = POLL_SECONDS) -> asyncio.Task[None] | None:
    """Start polling when the retriever can reload itself (a fake or fixed retriever cannot)."""
    reload: Callable[[], bool] | None = getattr(retriever, "reload_if_changed", None)
    if reload is None:
        return None
    return asyncio.create_task(_watch(reload, interval), name="kb-index-watch")


async def stop_index_watch(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _watch(reload: Callable[[], bool], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            # Reading and building the new generation is blocking work.
            if await asyncio.to_thread(reload):
                telemetry.count_index_reload()
        except Exception:  # a broken write must never stop the watch (or the server)
            telemetry.count_index_reload(failed=True)
            log.exception("could not check the knowledge index for changes")
