"""Playout-buffer interpolation of the leader's targets at the follower.

The leader's joint states arrive with jitter, out of order or not at all (newest-wins stream). Fed
straight to the arm, a jittery stream is a staircase of uneven steps, which a stiff servo turns
into vibration and which the force channel feeds back to the operator. So the follower replays
the stream on its own clock, ``playout_delay_s`` behind the fastest transit seen recently, and
interpolates linearly between the samples that bracket that instant: the output is the leader's
motion, delayed by a constant, with the jitter gone.

* No clock sync needed: the transit (arrival − sender stamp) includes the clock offset, and only
  its recent minimum matters.
* The playout clock never runs backwards and is steered by at most ``max_warp`` (10 %) toward its
  target, so a change in the transit estimate bends time instead of jumping it.
* Past the newest sample it extrapolates for at most ``max_extrapolation_s``, then holds.
* A gap longer than ``gap_reset_s`` (link cut) restarts the timeline: old samples are not
  replayed. The safety filter then slews gently to the new target.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["InterpolatorConfig", "TargetInterpolator"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class InterpolatorConfig:
    playout_delay_s: float = 0.02  #: added delay that absorbs jitter up to about this much
    window_s: float = 2.0  #: the fastest transit is searched over this much recent arrival time
    max_extrapolation_s: float = 0.03
    gap_reset_s: float = 0.25
    max_warp: float = 0.1  #: playout clock rate within 1 ± this while it converges
    snap_s: float = 0.2  #: a larger error in the playout clock is corrected at once
    capacity: int = 256  #: samples kept

    def __post_init__(self) -> None:
        if self.playout_delay_s < 0 or self.max_extrapolation_s < 0:
            raise ValueError("playout_delay_s and max_extrapolation_s must be >= 0")
        if not (self.window_s > 0 and self.gap_reset_s > 0 and self.snap_s > 0):
            raise ValueError("window_s, gap_reset_s and snap_s must be > 0")
        if not 0 < self.max_warp < 1 or self.capacity < 2:
            raise ValueError("need 0 < max_warp < 1 and capacity >= 2")


class TargetInterpolator:
    """Buffer (sender stamp, joint vector) samples; :meth:`sample` gives the smoothed target."""

    def __init__(self, config: InterpolatorConfig | None = None) -> None:
        self.config = config or InterpolatorConfig()
        self.dropped_old = 0
        self.resets = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream (samples, transit estimate and playout clock)."""
        self._stamps: list[float] = []
        self._values: list[FloatArray] = []
        self._transits: deque[tuple[float, float]] = deque()  # (arrival, transit), increasing
        self._last_arrival: float | None = None
        self._play: float | None = None  # playout time, sender clock
        self._play_at: float | None = None  # local time of _play

    def push(self, stamp: float, values: ArrayLike, now: float) -> bool:
        """Add a sample sent at ``stamp`` (sender clock) that arrived at ``now`` (local clock).

        Returns False for a sample at or before the newest one (newest wins). Values must be
        finite (the safety filter checks before anything is pushed).
        """
        v = np.asarray(values, dtype=np.float64).reshape(-1).copy()
        c = self.config
        if self._last_arrival is not None and now - self._last_arrival > c.gap_reset_s:
            self.resets += 1
            self.reset()
        if self._stamps and stamp - self._stamps[-1] > c.gap_reset_s:
            self.resets += 1
            self.reset()
        if self._stamps and stamp <= self._stamps[-1]:
            self.dropped_old += 1
            return False
        self._stamps.append(stamp)
        self._values.append(v)
        if len(self._stamps) > c.capacity:
            del self._stamps[0], self._values[0]
        transit = now - stamp
        while self._transits and self._transits[-1][1] >= transit:
            self._transits.pop()  # monotonic deque: the front is the window minimum
        self._transits.append((now, transit))
        self._last_arrival = now
        return True

    def playout_time(self, now: float) -> float | None:
        """The sender-clock instant replayed at local time ``now`` (None before any sample)."""
        if not self._stamps:
            return None
        c = self.config
        while len(self._transits) > 1 and self._transits[0][0] < now - c.window_s:
            self._transits.popleft()
        target = now - self._transits[0][1] - c.playout_delay_s
        if self._play is None or self._play_at is None:
            self._play, self._play_at = target, now
            return target
        elapsed = max(0.0, now - self._play_at)
        predicted = self._play + elapsed
        err = target - predicted
        if err > c.snap_s:
            play = target  # far behind: jump ahead rather than replay stale motion
        elif err < -c.snap_s:
            play = self._play  # far ahead: stop the clock until it is due (never run backwards)
        else:
            play = predicted + float(np.clip(err, -c.max_warp * elapsed, c.max_warp * elapsed))
        self._play, self._play_at = play, now
        return play

    def sample(self, now: float) -> FloatArray | None:
        """Interpolated target at local time ``now``; None before the first sample."""
        play = self.playout_time(now)
        if play is None:
            return None
        stamps, values = self._stamps, self._values
        if play <= stamps[0]:
            return values[0].copy()
        i = bisect.bisect_right(stamps, play)
        if i < len(stamps):
            t0, t1 = stamps[i - 1], stamps[i]
            w = (play - t0) / (t1 - t0)
            return values[i - 1] + w * (values[i] - values[i - 1])
        if len(stamps) < 2 or self.config.max_extrapolation_s <= 0:
            return values[-1].copy()
        t0, t1 = stamps[-2], stamps[-1]
        ahead = min(play - t1, self.config.max_extrapolation_s)
        return values[-1] + (values[-1] - values[-2]) * (ahead / (t1 - t0))

    @property
    def newest_stamp(self) -> float | None:
        return self._stamps[-1] if self._stamps else None
