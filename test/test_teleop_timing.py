"""The control loop's own timing (LoopTiming), as the teleop node reports it."""

from __future__ import annotations

import pytest

from jitsi_teleop.teleop.timing import LoopTiming


def _run(t: LoopTiming, start: float, end: float, period: float) -> float:
    now = start
    while now < end:
        t.tick(now)
        now += period
    return now


def test_a_loop_on_time_is_not_slow() -> None:
    t = LoopTiming(0.01)
    now = _run(t, 0.0, 2.0, 0.01)
    assert t.rate_hz(now) == pytest.approx(100, abs=2)
    assert t.max_gap_s(now) == pytest.approx(0.01, abs=1e-6)
    assert not t.slow(now) and t.late_ticks == 0


def test_a_starved_loop_is_slow_and_its_late_ticks_counted() -> None:
    t = LoopTiming(0.01)
    now = _run(t, 0.0, 1.0, 0.01)
    now = _run(t, now, now + 2.0, 1 / 15)  # what one busy process made of a 100 Hz timer
    assert t.rate_hz(now) == pytest.approx(15, abs=2)
    assert t.slow(now)
    assert t.late_ticks >= 25  # each 67 ms gap is over 3 periods
    assert t.max_gap_s(now) == pytest.approx(1 / 15, abs=0.01)
    now = _run(t, now, now + 2.0, 0.01)  # back on time: no longer slow
    assert not t.slow(now)


def test_a_stopped_loop_is_slow() -> None:
    t = LoopTiming(0.01)
    now = _run(t, 0.0, 1.0, 0.01)
    assert not t.slow(now)
    assert t.slow(now + 1.5) and t.rate_hz(now + 1.5) == 0.0
    assert t.max_gap_s(now + 0.5) == pytest.approx(0.51, abs=0.01)


def test_nothing_is_judged_before_the_loop_ran() -> None:
    t = LoopTiming(0.01)
    assert t.rate_hz(0.0) is None and t.max_gap_s(0.0) is None and not t.slow(0.0)
    t.tick(0.0)
    assert t.rate_hz(0.1) is None and not t.slow(0.1)
    with pytest.raises(ValueError):
        LoopTiming(0.0)
