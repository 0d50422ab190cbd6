"""Wiring: one ``TierZero`` per process, from settings to a running runtime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from bot import telemetry
from bot.agent import Retriever, Tier0Agent
from bot.channel import Channel, ChannelContext
from bot.config import Settings
from bot.conversations import ConversationReader
from bot.desk import Desk, DeskSync, surfaces_of
from bot.escalation_job import EscalationJob
from bot.index_watch import start_index_watch, stop_index_watch
from bot.outbox_worker import OutboxWorker
from bot.pipeline import Pipeline
from bot.service_rules import for_runtime
from kb_index import (
    CorruptIndexError,
    Embedder,
    IndexNotFoundError,
    IndexReport,
    KnowledgeIndex,
    load_embedder,
)
from kb_index.batching import BatchingEmbedder
from ticketing.db import Database

log = logging.getLogger(__name__)


class TierZero:
    """Settings, database and knowledge index of one tierzero process."""

    def __init__(self, settings: Settings, *, retriever: Retriever | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, echo=settings.database.echo)
        self.conversations = ConversationReader(self.db)
        self.desk = Desk(self.db, sla_policy=settings.service_desk.sla_policy)
        self._retriever = retriever

    def channel_context(self) -> ChannelContext:
        """What every channel is built with (see ``bot.registry.build_channels``)."""
        return ChannelContext(settings=self.settings, conversations=self.conversations, desk=self.desk, db=self.db)

    def open_index(self, *, sync: bool | None = None, progress: bool = False, batched: bool = False) -> KnowledgeIndex:
        """The knowledge index; built or refreshed first when ``sync`` (default: kb.auto_index).

        ``batched``: questions searched at the same time from several threads are embedded
        in one model call (what a server wants; kb.encoder_batch_size / _window_ms).
        """
        kb = self.settings.kb
        sync = kb.auto_index if sync is None else sync
        index = self._index(repair=sync, batched=batched)
        if sync and (len(index) == 0 or index.is_stale(Path(kb.path))):
            report = index.sync(Path(kb.path), progress=progress)
            log.info(
                "knowledge index: %s added, %s updated, %s removed, %s unchanged, %s skipped",
                report.added,
                report.updated,
                report.removed,
                report.unchanged,
                len(report.skipped),
            )
        return index

    def reindex(self, folder: Path | None = None, *, rebuild: bool = False, progress: bool = False) -> IndexReport:
        """Index ``folder`` (default kb.path): changed articles only, or all of them when ``rebuild``."""
        index = self._index(fresh=rebuild, repair=True)
        return index.sync(Path(folder or self.settings.kb.path), progress=progress)

    def _index(self, *, repair: bool, fresh: bool = False, batched: bool = False) -> KnowledgeIndex:
        """The persisted index; an empty one when ``fresh``, or when it is missing or damaged and ``repair``."""
        kb = self.settings.kb
        embedder: Embedder = load_embedder(kb.model, sha256=kb.model_sha256)
        if batched and kb.encoder_batch_size > 1:
            # Indexing calls (EMBED_BATCH_SIZE texts) bypass the batcher; single questions share calls.
            embedder = BatchingEmbedder(embedder, max_batch=kb.encoder_batch_size, window_ms=kb.encoder_batch_window_ms)
        index_dir = self.settings.index_dir
        if not fresh:
            try:
                return KnowledgeIndex.load(index_dir=index_dir, embedder=embedder, max_chunk_chars=kb.max_chunk_chars)
            except (IndexNotFoundError, CorruptIndexError) as exc:
                if not repair:
                    raise
                if isinstance(exc, CorruptIndexError):
                    log.warning("rebuilding the knowledge index: %s", exc)
        return KnowledgeIndex(
            index_dir=index_dir, embedder=embedder, max_chunk_chars=kb.max_chunk_chars, reuse_stored=not fresh
        )

    def load_knowledge(self, *, progress: bool = False) -> Retriever:
        """Open (and, per kb.auto_index, refresh) the index the agent answers from."""
        if self._retriever is None:
            self._retriever = self.open_index(progress=progress, batched=True)
        return self._retriever

    @property
    def retriever(self) -> Retriever:
        return self.load_knowledge()

    def runtime(self, channels: Sequence[Channel]) -> Runtime:
        return Runtime(self, channels)


class Runtime:
    """The running parts: pipeline workers, outbox worker and channels."""

    def __init__(self, app: TierZero, channels: Sequence[Channel]) -> None:
        self.app = app
        self.channels = list(channels)
        settings = app.settings
        self.outbox = OutboxWorker(db=app.db, senders={c.name: c for c in self.channels}, settings=settings.outbox)
        self.desk_sync = DeskSync(
            db=app.db,
            surfaces=surfaces_of(self.channels),
            settings=settings.outbox,
            sla_policy=app.desk.sla_policy,
        )
        agent = Tier0Agent(retriever=app.retriever, settings=settings.agent)
        rules = for_runtime(settings.service_desk, retriever=app.retriever, kb_path=settings.kb.path, db=app.db)
        self.pipeline = Pipeline(
            db=app.db, agent=agent, settings=settings, on_reply_queued=self._changed, service_rules=rules
        )
        self.escalation = EscalationJob(
            db=app.db,
            settings=settings.service_desk,
            on_change=self._changed,
            vendor_mail_channel=next((c.name for c in self.channels if c.name == "email"), None),
        )
        app.desk.on_change = self._changed
        self.running = False

    def _changed(self) -> None:
        """Replies were queued or a ticket changed: deliver now rather than at the next poll."""
        self.outbox.notify()
        self.desk_sync.notify()

    async def start(self) -> None:
        await asyncio.to_thread(self.app.db.migrate)
        await self.pipeline.start(channels=[c.name for c in self.channels])
        self.outbox.start()
        self.desk_sync.start()
        self.escalation.start()
        self._index_watch = start_index_watch(self.app.retriever)
        for channel in self.channels:
            await channel.start(telemetry.instrument(channel.name, self.pipeline.accept))
        self.running = True

    async def stop(self, *, timeout: float | None = None) -> None:
        """Graceful: stop taking messages, finish what was accepted, flush the outbox.

        All within ``timeout`` (default server.shutdown_timeout_seconds). The outbox delivers
        all along, so replies go out while the pipeline finishes; a fifth of the time is kept
        for the last replies. Whatever does not fit stays in the database for the next start.
        """
        budget = self.app.settings.server.shutdown_timeout_seconds if timeout is None else timeout
        clock = asyncio.get_running_loop().time
        deadline = clock() + budget

        def left(*, keep: float = 0.0) -> float:
            return max(deadline - clock() - keep, 0.01)

        self.running = False
        # Channels close their connections when they stop: no reply may be in flight through one
        # then. After stop() they send on one-off connections, so the outbox resumes at once.
        await self.outbox.pause(timeout=left(keep=budget / 2))
        for channel in self.channels:
            try:
                await channel.stop()
            except Exception:
                log.exception("channel %s did not stop cleanly", channel.name)
        self.outbox.resume()
        # Pipeline.stop may wait twice its timeout (for the queue, then for busy workers).
        await self.pipeline.stop(timeout=left(keep=budget / 5) / 2)
        await self.escalation.stop(timeout=left(keep=budget / 5))
        await self.outbox.stop(timeout=left())
        await self.desk_sync.stop(timeout=left())
        await stop_index_watch(getattr(self, "_index_watch", None))
        self.app.desk.on_change = lambda: None

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
