"""Micro-batching: many threads' one-question encodes become one model call.

The encoder costs ~13 ms for one short question on a CPU but only ~3 ms per
question in a batch of 32, because the per-call overhead (tokeniser set-up,
thread hand-offs inside torch, small matrix products) is paid once. When
several chats are answered at the same time, each worker thread asks for one
vector; ``BatchingEmbedder`` lets a single encoder thread collect what arrives
within a short window and encode it together.

How it works:

* ``encode`` puts a request (its texts and a ``Future``) on a queue and waits
  for the future.
* One daemon thread takes the first request, then keeps taking more until
  ``max_batch`` texts are collected or ``window_ms`` has passed since the
  first one, calls the wrapped embedder once and gives each caller its rows.
  Under no load a question waits at most the window; under load the queue is
  never empty and batches fill up without waiting.
* A call with at least ``max_batch`` texts (indexing) gains nothing from
  waiting: it runs directly on the caller's thread. The wrapped model is not
  thread-safe, so direct calls and the encoder thread share one lock.
* An error of the model reaches every caller of that batch; the thread goes on.
* ``close`` lets the thread encode what was already asked for, then stops it;
  later calls raise ``EmbedderClosed``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from kb_index.embedding import Embedder

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
DEFAULT_WINDOW_MS = 2.0  # the config default (kb.encoder_batch_window_ms), best in a microbenchmark


class EmbedderClosed(RuntimeError):
    """``encode`` was called on (or was waiting in) a closed ``BatchingEmbedder``."""


@dataclass
class _Request:
    texts: list[str]
    result: Future[np.ndarray] = field(default_factory=Future)


_STOP = object()


class BatchingEmbedder:
    """An ``Embedder`` that batches concurrent small ``encode`` calls into one call of ``inner``."""

    def __init__(
        self, inner: Embedder, *, max_batch: int = DEFAULT_MAX_BATCH, window_ms: float = DEFAULT_WINDOW_MS
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_ms < 0:
            raise ValueError(f"window_ms must not be negative, got {window_ms}")
        self._inner = inner
        self._max_batch = max_batch
        self._window = window_ms / 1000.0
        self._requests: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        # Held around every call of the inner model: the encoder thread's and direct ones.
        self._model_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Written by the encoder thread only: how full its batches are (texts / batches).
        self.batches = 0
        self.batched_texts = 0

    @property
    def inner(self) -> Embedder:
        return self._inner

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        if self._closed:
            raise EmbedderClosed("the embedder is closed")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) >= self._max_batch:
            with self._model_lock:
                return self._inner.encode(texts, batch_size=batch_size)
        request = _Request(list(texts))
        with self._state_lock:
            # Checked again under the lock, so no request is queued after close() drained the queue.
            if self._closed:
                raise EmbedderClosed("the embedder is closed")
            self._ensure_thread()
            self._requests.put(request)
        return request.result.result()

    def close(self, timeout: float | None = 5.0) -> None:
        """Encode what callers already asked for, then stop the thread; later calls raise ``EmbedderClosed``."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._requests.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> BatchingEmbedder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_thread(self) -> None:
        # Started on first use: a process (or test) that never searches never owns a thread.
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="batching-embedder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._requests.get()
            if first is _STOP:
                break
            assert isinstance(first, _Request)
            batch = [first]
            size = len(first.texts)
            deadline = time.monotonic() + self._window
            while size < self._max_batch:
                # Whatever is already queued joins without waiting; then wait out the window.
                remaining = deadline - time.monotonic()
                try:
                    item = self._requests.get(timeout=remaining) if remaining > 0 else self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Request)
                batch.append(item)
                size += len(item.texts)
            self._encode_batch(batch)
        self._fail_queued()

    def _encode_batch(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        self.batches += 1
        self.batched_texts += len(texts)
        try:
            with self._model_lock:
                vectors = self._inner.encode(texts, batch_size=self._max_batch)
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.shape[0] != len(texts):
                raise RuntimeError(f"the embedder returned {vectors.shape[0]} vectors for {len(texts)} texts")
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the model's error
            for request in batch:
                request.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            # A copy, so one caller's array does not keep the whole batch alive or alias another's.
            request.result.set_result(vectors[start:end].copy())
            start = end

    def _fail_queued(self) -> None:
        # Nothing is queued after the stop signal (close() sets _closed first); this is a safety net.
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request):
                item.result.set_exception(EmbedderClosed("the embedder was closed before this text was encoded"))
