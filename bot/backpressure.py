"""The bound on accepted-but-unanswered messages, and what a refusal tells the sender.

The pipeline commits a message before the channel acknowledges it; workers answer
it later. When answering falls behind, accepted messages pile up. Past
``pipeline.max_pending`` (counted per process: queued, being answered, or being
committed right now) new messages are refused *before* anything is stored:
``Overloaded`` reaches the channel, which answers the platform's "retry later"
(HTTP 503 + Retry-After, SMTP 451). The platform keeps the message meanwhile, so
nothing is lost, and a refusal costs no memory here: it only bumps counters.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from bot.channel import Overloaded

log = logging.getLogger(__name__)

# Retry-After is clamped to this range: at least 1 s (HTTP has no smaller unit), and
# at most 30 s so a sender does not wait long after a short burst.
MIN_RETRY_SECONDS = 1
MAX_RETRY_SECONDS = 30
# At most one overload warning per this many seconds (with the number refused meanwhile).
LOG_INTERVAL_SECONDS = 60.0


class AnswerRate:
    """Messages answered per second over the last 10 to 20 s, in constant memory (two counters)."""

    WINDOW_SECONDS = 10.0

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self._count = 0
        self._previous: int | None = None  # answered in the window before the current one

    def tick(self) -> None:
        self._roll()
        self._count += 1

    def per_second(self) -> float:
        now = self._roll()
        span = now - self._start
        count = self._count
        if self._previous is not None:
            span += self.WINDOW_SECONDS
            count += self._previous
        return count / max(span, 1.0)

    def _roll(self) -> float:
        now = self._clock()
        elapsed = now - self._start
        if elapsed >= self.WINDOW_SECONDS:
            windows = int(elapsed // self.WINDOW_SECONDS)
            self._previous = self._count if windows == 1 else 0
            self._start += windows * self.WINDOW_SECONDS
            self._count = 0
        return now


class InboundLimit:
    """Admits a message for storing only while fewer than ``limit`` are waiting for an answer.

    ``waiting`` (passed in by the pipeline) counts messages queued or being answered;
    messages admitted but still being committed are counted here, so a burst of
    concurrent accepts cannot overshoot the limit.
    """

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError("the limit must be at least 1")
        self.limit = limit
        self.refused = 0  # messages refused since start
        self._clock = clock
        self._storing = 0
        self._rate = AnswerRate(clock)
        self._logged_at: float | None = None
        self._unlogged = 0

    def full(self, waiting: int) -> bool:
        return waiting + self._storing >= self.limit

    @contextlib.contextmanager
    def slot(self, waiting: int) -> Iterator[None]:
        """Hold a place for one message while it is committed; raises ``Overloaded`` when none is left."""
        if self.full(waiting):
            self._refuse(waiting)
        self._storing += 1
        try:
            yield
        finally:
            self._storing -= 1

    def answered(self) -> None:
        """One message left the pipeline (answered or given back to the sweeper): feeds the estimate."""
        self._rate.tick()

    def retry_after(self, waiting: int) -> int:
        """Seconds the workers need, at the recent rate, to answer what is waiting now (1..30).

        Senders told this come back roughly when there is room again, spread out
        rather than all at once. Nothing answered recently (workers stuck): the maximum.
        """
        rate = self._rate.per_second()
        if rate <= 0:
            return MAX_RETRY_SECONDS
        seconds = round((waiting + self._storing) / rate)
        return max(MIN_RETRY_SECONDS, min(MAX_RETRY_SECONDS, seconds))

    def _refuse(self, waiting: int) -> None:
        self.refused += 1
        self._unlogged += 1
        retry_after = self.retry_after(waiting)
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= LOG_INTERVAL_SECONDS:
            since = "" if self._logged_at is None else f" since the last such warning {now - self._logged_at:.0f} s ago"
            log.warning(
                "inbound queue full (%s messages waiting, pipeline.max_pending=%s): refused %s message(s)%s; "
                "senders are told to retry in %s s",
                waiting + self._storing,
                self.limit,
                self._unlogged,
                since,
                retry_after,
            )
            self._logged_at = now
            self._unlogged = 0
        raise Overloaded(retry_after)
