"""Playout interpolation: a jittery, lossy stream becomes a smooth, constant-delay target."""

from __future__ import annotations

import numpy as np
import pytest

from jitsi_teleop.teleop.interpolation import InterpolatorConfig, TargetInterpolator

OFFSET = 1000.0  # sender clock minus receiver clock: the interpolator must not care
DELAY = 0.05


def signal(t: float) -> np.ndarray:
    return np.array([0.3 * np.sin(2.0 * t), 0.2 * np.cos(3.0 * t)])


def jittery_stream(seed: int, jitter: float, loss: float = 0.0, duration: float = 4.0):
    """(arrival, stamp, value) at 200 Hz with uniform jitter, in arrival order."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(int(duration / 0.005)):
        t = k * 0.005
        if rng.random() < loss:
            continue
        out.append((t + DELAY + rng.uniform(0, jitter), t + OFFSET, signal(t)))
    out.sort(key=lambda x: x[0])
    return out


def replay(interp: TargetInterpolator, stream, dt: float = 0.002, duration: float = 4.0):
    """Sample at the follower's control rate; returns times and outputs."""
    i, ts, ys = 0, [], []
    for k in range(int(duration / dt)):
        now = k * dt
        while i < len(stream) and stream[i][0] <= now:
            interp.push(stream[i][1], stream[i][2], stream[i][0])
            i += 1
        y = interp.sample(now)
        if y is not None:
            ts.append(now)
            ys.append(y)
    return np.asarray(ts), np.asarray(ys)


def test_jittery_stream_becomes_smooth_and_accurate() -> None:
    stream = jittery_stream(seed=1, jitter=0.015, loss=0.05)
    ts, ys = replay(TargetInterpolator(InterpolatorConfig(playout_delay_s=0.02)), stream)
    steady = ts > 1.0
    # Output = the signal delayed by the fastest transit plus the playout delay.
    truth = np.array([signal(t - DELAY - 0.02) for t in ts[steady]])
    assert np.max(np.abs(ys[steady] - truth)) < 0.001  # rad; the jitter alone would give ~0.01
    # Smooth: second differences stay near those of the true signal; the naive "latest
    # sample" replay of the same stream is a staircase.
    smooth = np.max(np.abs(np.diff(ys[steady], n=2, axis=0)))
    naive = []
    i = 0
    latest = None
    for now in ts[steady]:
        while i < len(stream) and stream[i][0] <= now:
            if latest is None or stream[i][1] > latest[0]:
                latest = (stream[i][1], stream[i][2])
            i += 1
        naive.append(latest[1])
    staircase = np.max(np.abs(np.diff(np.asarray(naive), n=2, axis=0)))
    assert smooth < 0.1 * staircase
    assert smooth < 1e-4


def test_older_samples_are_dropped() -> None:
    interp = TargetInterpolator()
    assert interp.push(10.0, [1.0], now=0.0)
    assert not interp.push(9.99, [2.0], now=0.001)
    assert not interp.push(10.0, [3.0], now=0.002)
    assert interp.dropped_old == 2


def test_gap_restarts_the_timeline_instead_of_replaying_old_motion() -> None:
    cfg = InterpolatorConfig(playout_delay_s=0.02, gap_reset_s=0.25)
    interp = TargetInterpolator(cfg)
    for k in range(100):
        interp.push(k * 0.01, [k * 0.01], now=k * 0.01 + 0.03)
    interp.sample(1.03)
    # Link cut for 1 s; the first new sample is the only truth: hold it.
    interp.push(2.0, [5.0], now=2.03)
    assert interp.resets == 1
    np.testing.assert_allclose(interp.sample(2.03), [5.0])
    interp.push(2.01, [5.01], now=2.04)
    y = interp.sample(2.045)
    assert 5.0 <= y[0] <= 5.01


def test_extrapolates_briefly_then_holds() -> None:
    cfg = InterpolatorConfig(playout_delay_s=0.0, max_extrapolation_s=0.03)
    interp = TargetInterpolator(cfg)
    for k in range(10):
        interp.push(k * 0.01, [k * 0.01], now=k * 0.01)  # ramp at 1 unit/s
    y_near = interp.sample(0.1)
    assert y_near[0] == pytest.approx(0.1, abs=1e-6)
    y_far = interp.sample(0.2)  # the stream stopped: extrapolate at most 30 ms
    assert y_far[0] == pytest.approx(0.09 + 0.03, abs=1e-6)


def test_playout_clock_never_runs_backwards() -> None:
    cfg = InterpolatorConfig(playout_delay_s=0.01, window_s=0.2)
    interp = TargetInterpolator(cfg)
    rng = np.random.default_rng(5)
    last = -np.inf
    for k in range(2000):
        now = k * 0.002
        if k % 3 == 0:
            # transit alternates between regimes: the window minimum jumps up and down
            transit = 0.02 if (k // 300) % 2 == 0 else 0.12
            interp.push(now - transit - rng.uniform(0, 0.005), [0.0], now)
        play = interp.playout_time(now)
        assert play >= last
        last = play


def test_sample_before_any_data_is_none() -> None:
    assert TargetInterpolator().sample(0.0) is None


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        InterpolatorConfig(playout_delay_s=-1.0)
    with pytest.raises(ValueError):
        InterpolatorConfig(max_warp=1.5)
