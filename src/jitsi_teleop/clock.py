"""Clock offset between the two ends, estimated over the link (NTP-style), and what it buys:
one-way latency and message age at the receiver.

Pure logic, no I/O; all times are integer microseconds supplied by the caller. Each end should
use its monotonic clock (``time.monotonic_ns() // 1000``) for frame timestamps and probes: it
never steps, and the estimated offset absorbs the arbitrary origin.

A probe is four timestamps: t1 (ping sent, local clock), t2 (ping received, remote clock),
t3 (pong sent, remote clock), t4 (pong received, local clock). Then::

    offset = ((t2 - t1) + (t3 - t4)) / 2     remote clock minus local clock
    rtt    = (t4 - t1) - (t3 - t2)

The true offset lies within offset +- rtt/2, so the sample with the smallest RTT is the most
trustworthy (minimum-RTT filtering). Clocks drift (tens of ppm), so an old sample's error grows
with its age (NTP's dispersion); the drift itself is estimated from the best sample of the older
and the newer half of the window, and applied when projecting the offset to "now".
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

PROBE_VERSION = 1
_PROBE = struct.Struct(">BBIQQQ")  # version, kind, id, t1, t2, t3
PROBE_SIZE = _PROBE.size
PING = 1
PONG = 2
_U64 = (1 << 64) - 1


class ClockError(ValueError):
    """A malformed, unexpected or impossible probe."""


@dataclass(frozen=True)
class ClockSample:
    """One probe round trip; see the module docstring for t1..t4."""

    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def offset_us(self) -> float:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def rtt_us(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    def check(self) -> None:
        """Refuse samples no real exchange can produce (time going backwards, negative RTT)."""
        if self.t4 < self.t1:
            raise ClockError("pong received before the ping was sent")
        if self.t3 < self.t2:
            raise ClockError("remote answered before it received the ping")
        if self.rtt_us < 0:
            raise ClockError("remote processing time exceeds the round trip")


@dataclass(frozen=True)
class ClockEstimate:
    """The offset (remote minus local) valid at local time ``at_us``, and its error bound."""

    offset_us: float
    rtt_us: int
    error_us: float
    drift_ppm: float
    at_us: int
    samples: int

    def offset_at(self, local_us: float) -> float:
        return self.offset_us + self.drift_ppm * 1e-6 * (local_us - self.at_us)

    def to_local(self, remote_us: float) -> float:
        """A remote timestamp expressed on the local clock."""
        return remote_us - self.offset_at(remote_us - self.offset_us)

    def one_way_latency_us(self, sender_ts_us: float, recv_local_us: float) -> float:
        """Sender timestamp (remote clock) to arrival (local clock)."""
        return recv_local_us - self.to_local(sender_ts_us)

    def age_us(self, sender_ts_us: float, now_local_us: float) -> float:
        """How old the sample stamped ``sender_ts_us`` is now."""
        return now_local_us - self.to_local(sender_ts_us)


@dataclass
class ClockCounters:
    accepted: int = 0
    invalid: int = 0  # impossible timestamps
    too_slow: int = 0  # RTT above max_rtt_us


class ClockEstimator:
    """Minimum-RTT filter over a bounded window of recent samples, drift-tolerant.

    ``window``: samples kept; ``max_age_us``: samples older than this are forgotten;
    ``drift_bound_ppm``: how fast an old sample's error grows, and the clamp on the drift
    estimate (crystal oscillators are within ~100 ppm).
    """

    def __init__(
        self,
        *,
        window: int = 64,
        max_age_us: int = 300_000_000,
        drift_bound_ppm: float = 100.0,
        max_rtt_us: int = 5_000_000,
        min_drift_span_us: int = 10_000_000,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.max_age_us = max_age_us
        self.drift_bound_ppm = drift_bound_ppm
        self.max_rtt_us = max_rtt_us
        self.min_drift_span_us = min_drift_span_us
        self.counters = ClockCounters()
        self._samples: deque[ClockSample] = deque(maxlen=window)

    def add(self, sample: ClockSample) -> bool:
        """Keep a sample; False (and counted) when it is impossible or too slow to be useful."""
        try:
            sample.check()
        except ClockError:
            self.counters.invalid += 1
            return False
        if sample.rtt_us > self.max_rtt_us:
            self.counters.too_slow += 1
            return False
        self._samples.append(sample)
        self.counters.accepted += 1
        return True

    def __len__(self) -> int:
        return len(self._samples)

    def estimate(self, now_us: int | None = None) -> ClockEstimate | None:
        """Best estimate at local time ``now_us`` (default: the newest sample's t4)."""
        if not self._samples:
            return None
        now = self._samples[-1].t4 if now_us is None else now_us
        live = [s for s in self._samples if now - s.t4 <= self.max_age_us]
        if not live:
            return None
        best = min(live, key=lambda s: self._error(s, now))
        drift = self._drift(live)
        offset = best.offset_us + drift * 1e-6 * (now - best.t4)
        return ClockEstimate(offset, best.rtt_us, self._error(best, now), drift, now, len(live))

    def _error(self, s: ClockSample, now: int) -> float:
        return s.rtt_us / 2 + self.drift_bound_ppm * 1e-6 * abs(now - s.t4)

    def _drift(self, live: list[ClockSample]) -> float:
        """Slope between the best sample of the older and of the newer half, clamped."""
        if len(live) < 4 or live[-1].t4 - live[0].t4 < self.min_drift_span_us:
            return 0.0
        half = len(live) // 2
        a = min(live[:half], key=lambda s: s.rtt_us)
        b = min(live[half:], key=lambda s: s.rtt_us)
        span = b.t4 - a.t4
        if span < self.min_drift_span_us / 2:
            return 0.0
        ppm = (b.offset_us - a.offset_us) / span * 1e6
        return max(-self.drift_bound_ppm, min(self.drift_bound_ppm, ppm))

    # Conveniences that return None until the first sample arrived. Each recomputes the
    # estimate; on a 500 Hz path call estimate() once per probe and use the ClockEstimate.

    def to_local(self, remote_us: int, now_us: int | None = None) -> float | None:
        e = self.estimate(now_us)
        return None if e is None else e.to_local(remote_us)

    def one_way_latency_us(self, sender_ts_us: int, recv_local_us: int) -> float | None:
        e = self.estimate(recv_local_us)
        return None if e is None else e.one_way_latency_us(sender_ts_us, recv_local_us)

    def age_us(self, sender_ts_us: int, now_local_us: int) -> float | None:
        e = self.estimate(now_local_us)
        return None if e is None else e.age_us(sender_ts_us, now_local_us)


# ---------------------------------------------------------------------------------------------
# Probe messages (carried as CONTROL frames inside sealed records, so they are authentic).


def _pack(kind: int, probe_id: int, t1: int, t2: int, t3: int) -> bytes:
    for t in (t1, t2, t3):
        if not 0 <= t <= _U64:
            raise ClockError(f"timestamp {t} out of the u64 range")
    return _PROBE.pack(PROBE_VERSION, kind, probe_id, t1, t2, t3)


def _unpack(data: bytes, kind: int) -> tuple[int, int, int, int]:
    if len(data) != PROBE_SIZE:
        raise ClockError(f"probe of {len(data)} bytes, expected {PROBE_SIZE}")
    version, k, probe_id, t1, t2, t3 = _PROBE.unpack(data)
    if version != PROBE_VERSION:
        raise ClockError(f"probe version {version}, this end speaks {PROBE_VERSION}")
    if k != kind:
        raise ClockError(f"probe kind {k}, expected {kind}")
    return probe_id, t1, t2, t3


def answer_ping(ping: bytes, t2_us: int, t3_us: int) -> bytes:
    """The pong for a ping: its id and t1 echoed, with our receive (t2) and send (t3) times."""
    probe_id, t1, _, _ = _unpack(ping, PING)
    return _pack(PONG, probe_id, t1, t2_us, t3_us)


class ClockProber:
    """Makes pings and turns matching pongs into samples; unknown or repeated pongs refused."""

    def __init__(self, max_outstanding: int = 16) -> None:
        self.max_outstanding = max_outstanding
        self._next_id = 0
        self._outstanding: dict[int, int] = {}  # id -> t1

    def ping(self, now_us: int) -> bytes:
        probe_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        self._outstanding[probe_id] = now_us
        while len(self._outstanding) > self.max_outstanding:
            del self._outstanding[next(iter(self._outstanding))]
        return _pack(PING, probe_id, now_us, 0, 0)

    def on_pong(self, pong: bytes, t4_us: int) -> ClockSample:
        probe_id, t1, t2, t3 = _unpack(pong, PONG)
        sent = self._outstanding.get(probe_id)
        if sent is None or sent != t1:
            raise ClockError(f"pong {probe_id} answers no outstanding ping")
        del self._outstanding[probe_id]
        sample = ClockSample(t1, t2, t3, t4_us)
        sample.check()
        return sample
