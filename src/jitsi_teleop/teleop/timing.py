"""How regularly a control loop actually runs: its measured rate, its longest gap, late ticks.

Why: a force-feedback loop run late behaves like one with more delay. On a starved machine (a
busy onboard computer, one Python process holding many nodes) a 100 Hz timer can fire at 15 Hz,
and the contact loop then rings while every input looks fresh. The teleop node reports this in
its diagnostics so the operator sees it before feeling it. Pure logic: the caller gives the
times (seconds, monotonic).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = ["LoopTiming"]


@dataclass
class LoopTiming:
    """Ticks of a loop meant to run every ``period_s``, judged over the last ``window_s``."""

    period_s: float
    window_s: float = 1.0
    late_factor: float = 3.0  #: a gap longer than this many periods is a late tick
    slow_ratio: float = 0.8  #: below this fraction of the nominal rate the loop is "slow"
    late_ticks: int = 0  #: since start
    _times: deque[float] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if not (self.period_s > 0 and self.window_s >= self.period_s):
            raise ValueError("need period_s > 0 and window_s >= period_s")

    def tick(self, now: float) -> None:
        t = self._times
        if t and now - t[-1] > self.late_factor * self.period_s:
            self.late_ticks += 1
        t.append(now)
        while t and t[0] < now - self.window_s:
            t.popleft()

    def rate_hz(self, now: float) -> float | None:
        """Ticks per second over the window ending ``now``; None before a full window."""
        t = self._times
        if len(t) < 2 or now - t[0] < 0.5 * self.window_s:
            return None
        recent = [x for x in t if x >= now - self.window_s]
        return len(recent) / self.window_s

    def max_gap_s(self, now: float) -> float | None:
        """The longest interval between ticks in the window, counting the one still open."""
        t = [x for x in self._times if x >= now - self.window_s]
        if not t:
            return None
        gaps = [b - a for a, b in pairwise(t)]
        return max([*gaps, now - t[-1]])

    def slow(self, now: float) -> bool:
        """Running below ``slow_ratio`` of its nominal rate (or not at all) over the window."""
        rate = self.rate_hz(now)
        if rate is None:
            gap = self.max_gap_s(now)
            return gap is not None and gap > self.window_s
        return rate < self.slow_ratio / self.period_s
