"""Send budget for a rate-limited path: a byte token bucket, latest-only slots, a bounded queue.

Pure logic (no asyncio, no I/O), driven by an injectable clock so it is testable exactly.

Why: stock Jitsi's Prosody throttles each client to about 10 kB/s (mod_limits). Sending more
does not fail, it just stalls the socket, so every later stanza (including signalling and
pings) waits behind a growing backlog. We therefore shape ourselves: latest-only streams keep
only their newest frame (newer replaces older = "thinned"), reliable messages wait in a bounded
FIFO that refuses new work when full.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class TokenBucket:
    """Bytes per second with a burst allowance. A send may overdraw (a frame bigger than the
    burst must still go out eventually); the debt is paid back before the next send."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def delay_for(self, size: int) -> float:
        """Seconds until a ``size``-byte send is allowed (0 when it is allowed now)."""
        self._refill()
        need = min(float(size), self.burst)
        if self._tokens >= need:
            return 0.0
        return (need - self._tokens) / self.rate

    def consume(self, size: int) -> None:
        """Charge ``size`` bytes (may go negative)."""
        self._refill()
        self._tokens -= size

    def try_consume(self, size: int) -> bool:
        if self.delay_for(size) > 0:
            return False
        self._tokens -= size
        return True


@dataclass
class Pending(Generic[T]):
    """A frame waiting for budget; ``enqueued`` orders fairness between streams."""

    stream_id: int
    item: T
    enqueued: float


class LatestSlots(Generic[T]):
    """One slot per latest-only stream: a newer frame replaces the waiting one.

    Memory is bounded by the number of streams (``max_streams``), never by the send rate.
    """

    def __init__(self, max_streams: int = 256) -> None:
        self.max_streams = max_streams
        self._slots: OrderedDict[int, Pending[T]] = OrderedDict()

    def put(self, stream_id: int, item: T, now: float) -> bool:
        """Store the newest frame; return True if it replaced (thinned) an older one.

        A stream keeps its place in line (its first enqueue time), so a fast stream cannot
        starve a slow one.
        """
        old = self._slots.get(stream_id)
        if old is not None:
            old.item = item
            return True
        if len(self._slots) >= self.max_streams:
            raise OverflowError(f"more than {self.max_streams} latest-only streams")
        self._slots[stream_id] = Pending(stream_id, item, now)
        return False

    def peek(self) -> Pending[T] | None:
        """The longest-waiting stream's newest frame."""
        return next(iter(self._slots.values()), None)

    def pop(self, stream_id: int) -> Pending[T] | None:
        return self._slots.pop(stream_id, None)

    def clear(self) -> int:
        n = len(self._slots)
        self._slots.clear()
        return n

    def __len__(self) -> int:
        return len(self._slots)


class QueueFull(Exception):
    """The reliable queue is full: the caller must slow down (backpressure)."""


class BoundedQueue(Generic[T]):
    """FIFO for reliable messages, bounded in count and bytes."""

    def __init__(self, max_items: int = 64, max_bytes: int = 64 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self.bytes = 0

    def put(self, item: T, size: int) -> None:
        if len(self._items) >= self.max_items or self.bytes + size > self.max_bytes:
            raise QueueFull(
                f"reliable queue full ({len(self._items)} messages, {self.bytes} bytes)"
            )
        self._items.append((item, size))
        self.bytes += size

    def peek(self) -> T | None:
        return self._items[0][0] if self._items else None

    def pop(self) -> T:
        item, size = self._items.popleft()
        self.bytes -= size
        return item

    def requeue_front(self, items: list[tuple[T, int]]) -> None:
        """Put items back at the head, in their order (retransmission; capacity is the
        caller's business since they were admitted before)."""
        for item, size in reversed(items):
            self._items.appendleft((item, size))
            self.bytes += size

    def has_room(self, size: int = 0) -> bool:
        return len(self._items) < self.max_items and self.bytes + size <= self.max_bytes

    def __len__(self) -> int:
        return len(self._items)
