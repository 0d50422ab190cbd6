"""BatchingEmbedder: concurrent small encodes become one call of the wrapped model."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from kb_index.batching import BatchingEmbedder, EmbedderClosed
from kb_index.embedding import Embedder, load_embedder

DIMENSION = 8


class RecordingEmbedder:
    """Deterministic fake model: records every call's texts and the thread it ran on.

    ``gate`` (when set) holds every call until the test opens it, so a test can
    line up requests behind a call in progress without relying on timing.
    """

    def __init__(self, *, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[str] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_on = fail_on
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def model_id(self) -> str:
        return "recording"

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        # Two calls at once would mean the wrapper let the (not thread-safe) model be shared.
        assert self._lock.acquire(blocking=False), "the inner embedder was called concurrently"
        try:
            self.batches.append(list(texts))
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            if self.gate is not None:
                assert self.gate.wait(10), "test gate never opened"
            if self.fail_on is not None and self.fail_on in texts:
                raise ValueError(f"cannot encode {self.fail_on!r}")
            return np.stack([vector_of(text) for text in texts])
        finally:
            self._lock.release()

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def vector_of(text: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    vector = rng.standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


@pytest.fixture
def inner() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture
def batching(inner: RecordingEmbedder) -> Iterator[BatchingEmbedder]:
    embedder = BatchingEmbedder(inner, max_batch=4, window_ms=20)
    yield embedder
    if inner.gate is not None:
        inner.gate.set()
    embedder.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


def hold_first_call(
    inner: RecordingEmbedder, batching: BatchingEmbedder, pool: ThreadPoolExecutor
) -> Future[np.ndarray]:
    """Start one encode and keep it inside the model until ``inner.gate`` is set."""
    inner.gate = threading.Event()
    first = pool.submit(batching.encode, ["first"])
    assert inner.entered.wait(10)
    return first


def queued(batching: BatchingEmbedder) -> int:
    return batching._requests.qsize()  # noqa: SLF001 - the only way to know callers are lined up


def test_is_an_embedder_with_the_inner_models_identity(inner: RecordingEmbedder, batching: BatchingEmbedder) -> None:
    embedder: Embedder = batching
    assert embedder.dimension == DIMENSION
    assert embedder.model_id == "recording"
    assert batching.encode([]).shape == (0, DIMENSION)
    assert inner.batches == []


def test_single_call_returns_the_inner_models_vectors_in_order(batching: BatchingEmbedder) -> None:
    texts = ["vpn drops", "printer offline", "reset password"]
    vectors = batching.encode(texts)
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, np.stack([vector_of(t) for t in texts]))


def test_concurrent_callers_are_encoded_in_one_batch_and_each_gets_its_own_rows(
    inner: RecordingEmbedder, batching: BatchingEmbedder, pool: ThreadPoolExecutor
) -> None:
    first = hold_first_call(inner, batching, pool)
    texts = [f"question {n}" for n in range(3)]
    futures = [pool.submit(batching.encode, [text]) for text in texts]
    wait_until(lambda: queued(batching) == 3)
    assert inner.gate is not None
    inner.gate.set()

    np.testing.assert_array_equal(first.result(10), vector_of("first")[None, :])
    for text, future in zip(texts, futures, strict=True):
        np.testing.assert_array_equal(future.result(10), vector_of(text)[None, :])
    assert inner.sizes == [1, 3]
    assert sorted(inner.batches[1]) == texts
    assert (batching.batches, batching.batched_texts) == (2, 4)
    assert set(inner.threads) == {"batching-embedder"}


def test_batches_never_start_beyond_max_batch(
    inner: RecordingEmbedder, batching: BatchingEmbedder, pool: ThreadPoolExecutor
) -> None:
    first = hold_first_call(inner, batching, pool)
    futures = {f"q{n}": pool.submit(batching.encode, [f"q{n}"]) for n in range(9)}
    wait_until(lambda: queued(batching) == 9)
    assert inner.gate is not None
    inner.gate.set()

    first.result(10)
    for text, future in futures.items():
        np.testing.assert_array_equal(future.result(10)[0], vector_of(text))
    assert inner.sizes == [1, 4, 4, 1]


def test_multi_text_requests_keep_their_rows_together(
    inner: RecordingEmbedder, batching: BatchingEmbedder, pool: ThreadPoolExecutor
) -> None:
    first = hold_first_call(inner, batching, pool)
    a = pool.submit(batching.encode, ["a1", "a2"])
    wait_until(lambda: queued(batching) == 1)
    b = pool.submit(batching.encode, ["b1"])
    wait_until(lambda: queued(batching) == 2)
    assert inner.gate is not None
    inner.gate.set()

    first.result(10)
    np.testing.assert_array_equal(a.result(10), np.stack([vector_of("a1"), vector_of("a2")]))
    np.testing.assert_array_equal(b.result(10), vector_of("b1")[None, :])
    assert inner.batches[1] == ["a1", "a2", "b1"]


def test_a_large_call_runs_directly_on_the_callers_thread(inner: RecordingEmbedder, batching: BatchingEmbedder) -> None:
    texts = [f"chunk {n}" for n in range(10)]
    vectors = batching.encode(texts, batch_size=64)
    np.testing.assert_array_equal(vectors, np.stack([vector_of(t) for t in texts]))
    assert inner.batches == [texts]
    assert inner.threads == [threading.current_thread().name]


def test_a_large_call_waits_for_the_batch_in_progress(
    inner: RecordingEmbedder, batching: BatchingEmbedder, pool: ThreadPoolExecutor
) -> None:
    first = hold_first_call(inner, batching, pool)
    large = pool.submit(batching.encode, [f"chunk {n}" for n in range(8)])
    time.sleep(0.05)  # give it the chance to overlap (the fake model asserts it never does)
    assert not large.done()
    assert inner.gate is not None
    inner.gate.set()
    first.result(10)
    assert large.result(10).shape == (8, DIMENSION)
    assert inner.sizes == [1, 8]


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_works(
    pool: ThreadPoolExecutor,
) -> None:
    inner = RecordingEmbedder(fail_on="boom")
    with BatchingEmbedder(inner, max_batch=4, window_ms=20) as batching:
        first = hold_first_call(inner, batching, pool)
        futures = [pool.submit(batching.encode, [text]) for text in ("ok", "boom", "fine")]
        wait_until(lambda: queued(batching) == 3)
        assert inner.gate is not None
        inner.gate.set()

        first.result(10)
        for future in futures:
            with pytest.raises(ValueError, match="cannot encode 'boom'"):
                future.result(10)
        np.testing.assert_array_equal(batching.encode(["after"])[0], vector_of("after"))
        assert inner.sizes == [1, 3, 1]


def test_a_wrong_number_of_vectors_is_an_error_not_a_wrong_answer(pool: ThreadPoolExecutor) -> None:
    class Short(RecordingEmbedder):
        def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
            return super().encode(texts, batch_size=batch_size)[:-1]

    with BatchingEmbedder(Short(), max_batch=4, window_ms=0) as batching:
        with pytest.raises(RuntimeError, match="returned 0 vectors for 1 texts"):
            batching.encode(["x"])


def test_close_finishes_what_was_asked_then_refuses_new_work(
    inner: RecordingEmbedder, batching: BatchingEmbedder, pool: ThreadPoolExecutor
) -> None:
    first = hold_first_call(inner, batching, pool)
    waiting = pool.submit(batching.encode, ["asked before close"])
    wait_until(lambda: queued(batching) == 1)
    closing = pool.submit(batching.close)
    wait_until(lambda: queued(batching) == 2)  # the stop signal is behind the waiting caller
    with pytest.raises(EmbedderClosed):
        batching.encode(["asked after close"])
    assert inner.gate is not None
    inner.gate.set()
    closing.result(10)

    np.testing.assert_array_equal(first.result(10)[0], vector_of("first"))
    np.testing.assert_array_equal(waiting.result(10)[0], vector_of("asked before close"))
    assert inner.sizes == [1, 1]
    thread = batching._thread  # noqa: SLF001
    assert thread is not None and not thread.is_alive()
    with pytest.raises(EmbedderClosed):
        batching.encode([f"large {n}" for n in range(8)])
    batching.close()  # idempotent


def test_close_without_use_starts_no_thread(inner: RecordingEmbedder) -> None:
    batching = BatchingEmbedder(inner)
    batching.close()
    assert batching._thread is None  # noqa: SLF001


def test_invalid_settings_are_refused(inner: RecordingEmbedder) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingEmbedder(inner, max_batch=0)
    with pytest.raises(ValueError, match="window_ms"):
        BatchingEmbedder(inner, window_ms=-1)


@pytest.mark.slow
def test_batched_vectors_equal_unbatched_ones_with_the_real_model(pool: ThreadPoolExecutor) -> None:
    model = load_embedder()
    questions = [
        "My VPN keeps disconnecting",
        "printer offline on the third floor",
        "how do I reset my password?",
        "Outlook asks for my password again and again",
        "new laptop please",
        "wifi is slow in meeting room 4",
    ]
    one_by_one = np.vstack([model.encode([q]) for q in questions])
    with BatchingEmbedder(model, max_batch=8, window_ms=50) as batching:
        futures = [pool.submit(batching.encode, [q]) for q in questions]
        batched = np.vstack([f.result(60) for f in futures])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
