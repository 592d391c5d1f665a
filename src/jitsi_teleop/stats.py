"""Per-stream and per-path statistics: rate, loss, one-way latency percentiles, jitter, age of
the newest sample, and drop counters by reason.

Pure logic, no I/O; the caller supplies every time (integer microseconds, local monotonic
clock) and the one-way latency it computed with :mod:`jitsi_teleop.clock`. Memory is bounded:
latency goes into a fixed log-bucket histogram, loss uses a fixed bitmap window, rate a capped
deque. Why: these run at 500 Hz per stream for hours and feed diagnostics and the CLI.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

SEQ_MODULUS = 1 << 32

#: Reasons the transport drops frames; any other string is accepted and counted too.
DROP_REASONS = (
    "stale",
    "unauthenticated",
    "replayed",
    "too_old",
    "malformed",
    "wrong_session",
    "duplicate",
    "superseded",
    "reassembly",
    "unknown_stream",
)


class LatencyHistogram:
    """Log-spaced buckets (``per_octave`` per factor of two) from 1 µs up to 2^max_octave µs.

    Relative resolution is 2^(1/per_octave) - 1 (4.4 % at 16); exact min, max and mean are
    kept alongside. Negative values (possible while the clock estimate settles) land in the
    first bucket and are counted in ``negative``.
    """

    def __init__(self, per_octave: int = 16, max_octave: int = 37) -> None:
        self.per_octave = per_octave
        self.buckets = [0] * (per_octave * max_octave + 1)
        self.count = 0
        self.negative = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value_us: float) -> None:
        if not math.isfinite(value_us):
            return
        self.count += 1
        self.total += value_us
        self.min = min(self.min, value_us)
        self.max = max(self.max, value_us)
        if value_us < 0:
            self.negative += 1
        self.buckets[self._index(value_us)] += 1

    def _index(self, v: float) -> int:
        if v < 1:
            return 0
        i = int(math.log2(v) * self.per_octave) + 1
        return min(i, len(self.buckets) - 1)

    def _value(self, i: int) -> float:
        """Geometric middle of bucket ``i``."""
        if i == 0:
            return 0.0
        return 2 ** ((i - 0.5) / self.per_octave)

    def percentile(self, p: float) -> float | None:
        """Approximate p-th percentile (0..100), clamped to the exact min and max."""
        if self.count == 0:
            return None
        if p <= 0:
            return self.min
        if p >= 100:
            return self.max
        rank = p / 100 * self.count
        acc = 0
        for i, n in enumerate(self.buckets):
            acc += n
            if acc >= rank:
                return min(self.max, max(self.min, self._value(i)))
        return self.max  # pragma: no cover - acc reaches count

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream at one moment; latencies and ages in microseconds, None when unknown."""

    stream_id: int
    received: int
    bytes: int
    lost: int
    loss_ratio: float
    duplicates: int
    reordered: int
    late: int
    resyncs: int
    rate_hz: float
    bytes_per_s: float
    jitter_us: float
    latency_samples: int
    latency_min_us: float | None
    latency_p50_us: float | None
    latency_p90_us: float | None
    latency_p99_us: float | None
    latency_max_us: float | None
    newest_age_us: float | None
    since_last_us: int | None
    drops: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class StreamStats:
    """Statistics of one stream received on one path.

    Loss follows RFC 3550 A.1: sequence numbers are extended across the 32-bit wrap, frames
    behind the newest but within ``reorder_window`` fill their gap (reordered), a jump beyond
    ``max_dropout`` or far behind is taken as a sender restart only when the next frame
    confirms it (then the sequence is resynchronised instead of counting a huge loss).
    """

    def __init__(
        self,
        stream_id: int,
        *,
        rate_window_us: int = 1_000_000,
        reorder_window: int = 1024,
        max_dropout: int = 3000,
        max_rate_samples: int = 20_000,
    ) -> None:
        self.stream_id = stream_id
        self.rate_window_us = rate_window_us
        self.reorder_window = reorder_window
        self.max_dropout = max_dropout
        self.latency = LatencyHistogram()
        self.drops: dict[str, int] = {}
        self.received = 0
        self.bytes = 0
        self.duplicates = 0
        self.reordered = 0
        self.late = 0
        self.resyncs = 0
        self.jitter_us = 0.0
        self._arrivals: deque[tuple[int, int]] = deque(maxlen=max_rate_samples)
        self._highest: int | None = None  # extended sequence number
        self._base = 0
        self._seen = 0  # bit i: (highest - i) received
        self._in_run = 0  # received in the current sequence run
        self._lost_before = 0  # loss of earlier runs (before resyncs)
        self._bad_next: int | None = None
        self._prev_transit: int | None = None
        self._newest_recv: int | None = None
        self._newest_latency: float | None = None

    # -- input ----------------------------------------------------------------------------

    def on_frame(
        self,
        seq: int,
        sender_ts_us: int,
        recv_us: int,
        size: int = 0,
        latency_us: float | None = None,
    ) -> None:
        """An authenticated frame was delivered. ``latency_us``: one-way, if the clock is known.
        Duplicates and frames too late to place are counted but not taken as received."""
        before = self._highest
        if not self._sequence(seq % SEQ_MODULUS):
            return
        if self._highest != before or self._newest_recv is None:  # the newest sample so far
            self._newest_recv, self._newest_latency = recv_us, latency_us
        self.received += 1
        self.bytes += size
        self._arrivals.append((recv_us, size))
        transit = recv_us - sender_ts_us
        if self._prev_transit is not None:
            d = abs(transit - self._prev_transit)
            self.jitter_us += (d - self.jitter_us) / 16
        self._prev_transit = transit
        if latency_us is not None:
            self.latency.add(latency_us)

    def on_drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def _sequence(self, seq: int) -> bool:
        """Update loss accounting; False for duplicates and frames too late to place."""
        if self._highest is None:
            self._restart(seq)
            return True
        top = self._highest
        delta = (seq - top) % SEQ_MODULUS
        if delta >= SEQ_MODULUS // 2:
            delta -= SEQ_MODULUS
        if 0 < delta <= self.max_dropout:
            self._advance(top + delta)
        elif delta <= 0 and -delta < self.reorder_window:
            bit = 1 << -delta
            if self._seen & bit:
                self.duplicates += 1
                self.on_drop("duplicate")
                return False
            self._seen |= bit
            self._in_run += 1
            if delta < 0:
                self.reordered += 1
            if top + delta < self._base:  # reordered frame from before the first one we saw
                self._base = top + delta
            return True
        elif self._bad_next == seq:
            self.resyncs += 1
            self._lost_before += self._lost_in_run()
            self._restart(seq)
            return True
        else:
            self._bad_next = (seq + 1) % SEQ_MODULUS
            self.late += 1
            return False
        self._in_run += 1
        return True

    def _restart(self, seq: int) -> None:
        self._highest = self._base = seq
        self._seen = 1
        self._in_run = 1
        self._bad_next = None

    def _advance(self, ext: int) -> None:
        assert self._highest is not None
        shift = ext - self._highest
        mask = (1 << self.reorder_window) - 1
        self._seen = ((self._seen << shift) | 1) & mask if shift < self.reorder_window else 1
        self._highest = ext
        self._bad_next = None

    def _lost_in_run(self) -> int:
        if self._highest is None:
            return 0
        return max(0, self._highest - self._base + 1 - self._in_run)

    # -- output ---------------------------------------------------------------------------

    @property
    def lost(self) -> int:
        return self._lost_before + self._lost_in_run()

    def rate(self, now_us: int) -> tuple[float, float]:
        """(frames/s, bytes/s) over the last ``rate_window_us``."""
        while self._arrivals and self._arrivals[0][0] <= now_us - self.rate_window_us:
            self._arrivals.popleft()
        n = len(self._arrivals)
        b = sum(s for _, s in self._arrivals)
        w = self.rate_window_us / 1e6
        return n / w, b / w

    def snapshot(self, now_us: int) -> StreamSnapshot:
        rate, bps = self.rate(now_us)
        lost = self.lost
        expected = self.received + lost
        h = self.latency
        since = None if self._newest_recv is None else now_us - self._newest_recv
        age = None
        if since is not None and self._newest_latency is not None:
            age = self._newest_latency + since
        return StreamSnapshot(
            self.stream_id,
            self.received,
            self.bytes,
            lost,
            lost / expected if expected else 0.0,
            self.duplicates,
            self.reordered,
            self.late,
            self.resyncs,
            rate,
            bps,
            self.jitter_us,
            h.count,
            h.min if h.count else None,
            h.percentile(50),
            h.percentile(90),
            h.percentile(99),
            h.max if h.count else None,
            age,
            since,
            dict(self.drops),
        )


@dataclass(frozen=True)
class PathSnapshot:
    """One path (e.g. "p2p" or "muc") with its streams and path-level drops."""

    name: str
    frames: int
    bytes: int
    rtt_us: float | None
    clock_offset_us: float | None
    clock_error_us: float | None
    drops: dict[str, int]
    streams: dict[int, StreamSnapshot]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values()) + sum(sum(s.drops.values()) for s in self.streams.values())


class PathStats:
    """Statistics of one path. Drops that cannot be attributed to a stream (a record that did
    not authenticate has no trustworthy stream id) are counted at the path level."""

    def __init__(self, name: str, *, max_streams: int = 1024, **stream_kwargs: int) -> None:
        self.name = name
        self.max_streams = max_streams
        self.streams: dict[int, StreamStats] = {}
        self.drops: dict[str, int] = {}
        self.rtt_us: float | None = None
        self.clock_offset_us: float | None = None
        self.clock_error_us: float | None = None
        self._stream_kwargs = stream_kwargs

    def stream(self, stream_id: int) -> StreamStats:
        s = self.streams.get(stream_id)
        if s is None:
            if len(self.streams) >= self.max_streams:
                raise ValueError(f"more than {self.max_streams} streams on path {self.name}")
            s = self.streams[stream_id] = StreamStats(stream_id, **self._stream_kwargs)
        return s

    def on_drop(self, reason: str, stream_id: int | None = None, n: int = 1) -> None:
        if stream_id is not None and stream_id in self.streams:
            self.streams[stream_id].on_drop(reason, n)
        else:
            self.drops[reason] = self.drops.get(reason, 0) + n

    def on_clock(self, rtt_us: float, offset_us: float, error_us: float) -> None:
        """Latest clock estimate for this path (from clock.ClockEstimator)."""
        self.rtt_us, self.clock_offset_us, self.clock_error_us = rtt_us, offset_us, error_us

    def snapshot(self, now_us: int) -> PathSnapshot:
        streams = {sid: s.snapshot(now_us) for sid, s in sorted(self.streams.items())}
        return PathSnapshot(
            self.name,
            sum(s.received for s in streams.values()),
            sum(s.bytes for s in streams.values()),
            self.rtt_us,
            self.clock_offset_us,
            self.clock_error_us,
            dict(self.drops),
            streams,
        )
