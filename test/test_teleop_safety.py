"""Follower safety filter: lease and hold, limits, slew, NaN rejection, e-stop latch."""

from __future__ import annotations

import numpy as np
import pytest

from jitsi_teleop.teleop.safety import (
    SafetyConfig,
    SafetyFilter,
    SafetyState,
    Verdict,
)

DT = 0.004
Q0 = np.array([0.0, 0.3, 1.2, 0.07, 0.0])


def make(**overrides: object) -> SafetyFilter:
    return SafetyFilter(SafetyConfig.hdi(**overrides))


def limits(f: SafetyFilter) -> tuple[np.ndarray, np.ndarray]:
    c = f.config
    return np.asarray(c.lower) + c.limit_margin, np.asarray(c.upper) - c.limit_margin


def test_idle_holds_the_measured_pose() -> None:
    f = make()
    out = f.update(0.0, Q0)
    assert out.state is SafetyState.IDLE
    np.testing.assert_allclose(out.command, Q0)
    for k in range(1, 50):
        out = f.update(k * DT, Q0 + 0.001 * k)  # the arm drifting does not move the reference
    np.testing.assert_allclose(out.command, Q0)


def test_tracks_within_velocity_and_acceleration_limits() -> None:
    f = make(max_velocity=1.0, max_acceleration=8.0, resume_velocity=5.0)
    f.update(0.0, Q0)
    target = Q0 + np.array([0.5, -0.3, 0.2, 0.0, 0.4])
    prev_cmd, prev_vel = Q0.copy(), np.zeros(5)
    for k in range(1, 800):
        now = k * DT
        assert f.accept(target, now) is Verdict.ACCEPTED
        out = f.update(now, prev_cmd)
        assert np.all(np.abs(out.command - prev_cmd) <= 1.0 * DT + 1e-12)
        assert np.all(np.abs(out.velocity - prev_vel) <= 8.0 * DT + 1e-12)
        prev_cmd, prev_vel = out.command, out.velocity
    np.testing.assert_allclose(prev_cmd, target, atol=1e-9)


def test_jump_in_the_stream_is_not_a_jump_in_the_command() -> None:
    f = make(max_velocity=1.0, max_acceleration=8.0)
    f.update(0.0, Q0)
    f.accept(Q0, 0.0)
    for k in range(1, 20):
        f.accept(Q0, k * DT)
        f.update(k * DT, Q0)
    prev = f.update(20 * DT, Q0).command
    f.accept(Q0 + 1.0, 21 * DT)  # a 1 rad jump in every joint
    out = f.update(21 * DT, Q0)
    assert np.max(np.abs(out.command - prev)) <= 8.0 * DT * DT + 1e-12


@pytest.mark.parametrize(
    ("bad", "verdict"),
    [
        ([0.0, np.nan, 0.0, 0.0, 0.0], Verdict.NONFINITE),
        ([0.0, 0.0, np.inf, 0.0, 0.0], Verdict.NONFINITE),
        ([0.0, 0.0, 0.0, -np.inf, 0.0], Verdict.NONFINITE),
        ([0.0, 0.0, 0.0], Verdict.BAD_SHAPE),
        ([0.0, 2.5, 0.0, 0.0, 0.0], Verdict.OUT_OF_LIMITS),  # J2 limit is 1.83 rad
        ("garbage", Verdict.BAD_SHAPE),
    ],
)
def test_bad_commands_are_refused_and_change_nothing(bad: object, verdict: Verdict) -> None:
    f = make()
    f.update(0.0, Q0)
    f.accept(Q0, 0.0)
    before = f.update(DT, Q0)
    assert f.accept(bad, 2 * DT) is verdict  # type: ignore[arg-type]
    assert f.counters.rejected[verdict.value] == 1
    after = f.update(2 * DT, Q0)
    np.testing.assert_allclose(after.command, before.command)


def test_slightly_out_of_limit_is_clamped_inside_the_margin() -> None:
    f = make(resume_velocity=5.0, max_velocity=5.0, max_acceleration=100.0)
    _, hi = limits(f)
    cmd = f.update(0.0, Q0).command
    target = Q0.copy()
    target[1] = f.config.upper[1] + 0.05  # within reject_beyond (0.1): clamp
    for k in range(1, 500):
        assert f.accept(target, k * DT) is Verdict.ACCEPTED
        cmd = f.update(k * DT, cmd).command
    assert cmd[1] == pytest.approx(hi[1])
    assert f.counters.clamped > 0


def test_fuzz_no_invalid_value_ever_reaches_the_output() -> None:
    """Random garbage mixed into a valid stream: every output is finite and inside the limits."""
    rng = np.random.default_rng(7)
    f = make()
    lo, hi = limits(f)
    f.update(0.0, Q0)
    cmd = Q0
    for k in range(1, 3000):
        now = k * DT
        kind = rng.integers(5)
        if kind == 0:
            target = rng.uniform(-10, 10, size=5)  # mostly far outside the limits
        elif kind == 1:
            target = Q0 + rng.normal(scale=0.3, size=5)
            target[rng.integers(5)] = rng.choice([np.nan, np.inf, -np.inf])
        else:
            target = rng.uniform(
                np.asarray(f.config.lower) - 0.12, np.asarray(f.config.upper) + 0.12
            )
        f.accept(target, now)
        interp = None if rng.random() < 0.5 else target  # also through the per-tick target
        out = f.update(now, cmd, interp)
        assert np.all(np.isfinite(out.command))
        assert np.all(out.command >= lo - 1e-12) and np.all(out.command <= hi + 1e-12)
        cmd = out.command
    assert f.counters.rejected["nonfinite"] > 0 and f.counters.rejected["out_of_limits"] > 0


def test_unauthenticated_and_stale_commands_do_not_renew_the_lease() -> None:
    f = make(timeout_s=0.1, max_age_s=0.2)
    f.update(0.0, Q0)
    assert f.accept(Q0, 0.0, age_s=0.01) is Verdict.ACCEPTED
    for k in range(1, 60):
        now = k * DT
        assert f.accept(Q0, now, authenticated=False) is Verdict.UNAUTHENTICATED
        assert f.accept(Q0, now, age_s=0.5) is Verdict.STALE
        assert f.accept(Q0, now, age_s=None) is Verdict.STALE  # age unknown but required
        f.update(now, Q0)
    assert f.state is SafetyState.HOLDING


@pytest.mark.parametrize("seed", range(3))
def test_holds_within_the_timeout_after_random_cuts(seed: int) -> None:
    """Many trials: a moving stream is cut at a random moment; the filter enters HOLD no later
    than timeout + one update, brakes at brake_acceleration and then keeps the command still.
    While commands are fresh it never holds."""
    rng = np.random.default_rng(seed)
    cfg = SafetyConfig.hdi(timeout_s=0.15, brake_acceleration=20.0)
    for _ in range(40):
        f = SafetyFilter(cfg)
        f.update(0.0, Q0)
        period = rng.uniform(0.002, 0.02)  # sender period
        t_cut = rng.uniform(0.3, 2.0)
        next_send, last_accept, now = 0.0, None, 0.0
        cmd = Q0
        hold_cmd = None
        while now < t_cut + 1.0:
            if now >= next_send and now < t_cut:
                target = Q0 + 0.3 * np.sin(2.0 * now + np.arange(5))
                assert f.accept(target, now) is Verdict.ACCEPTED
                last_accept = now
                next_send += period * rng.uniform(0.5, 1.5)
            out = f.update(now, cmd)
            cmd = out.command
            assert last_accept is not None or out.state is SafetyState.IDLE
            if last_accept is not None and now - last_accept <= cfg.timeout_s:
                assert out.state is SafetyState.TRACKING
            if last_accept is not None and now - last_accept > cfg.timeout_s:
                assert out.state is SafetyState.HOLDING
                v_max = 1.0  # default max_velocity
                if now - last_accept > cfg.timeout_s + v_max / cfg.brake_acceleration + DT:
                    if hold_cmd is None:
                        hold_cmd = out.command.copy()
                    np.testing.assert_array_equal(out.command, hold_cmd)
                    assert not out.velocity.any()
            now += DT
        assert hold_cmd is not None


def test_resumes_after_a_hold_without_a_jump() -> None:
    f = make(timeout_s=0.1, resume_velocity=0.3, max_velocity=1.0)
    f.update(0.0, Q0)
    cmd = Q0
    for k in range(1, 50):
        f.accept(Q0, k * DT)
        cmd = f.update(k * DT, cmd).command
    now = 50 * DT
    for _ in range(100):  # silence: hold
        now += DT
        cmd = f.update(now, cmd).command
    assert f.state is SafetyState.HOLDING
    far = Q0 + np.array([0.4, -0.4, 0.4, 0.0, 0.0])  # the leader moved while the link was down
    steps = []
    for _ in range(600):
        now += DT
        assert f.accept(far, now) is Verdict.ACCEPTED
        new = f.update(now, cmd).command
        steps.append(np.max(np.abs(new - cmd)))
        cmd = new
    assert max(steps[:300]) <= 0.3 * DT + 1e-12  # resume at resume_velocity: no jump
    assert max(steps) <= 1.0 * DT + 1e-12  # and never beyond max_velocity once caught up
    np.testing.assert_allclose(cmd, far, atol=0.011)


def test_estop_latches_and_survives_a_reconnect() -> None:
    f = make(timeout_s=0.1)
    f.update(0.0, Q0)
    cmd = Q0
    now = 0.0
    for _ in range(50):
        now += DT
        f.accept(Q0 + 0.1, now)
        cmd = f.update(now, cmd).command
    measured = cmd + 0.003  # the arm lags its reference a little
    f.estop("operator pressed e-stop", measured)
    held = f.update(now + DT, measured).command
    np.testing.assert_allclose(held, measured)  # holds where the arm is
    # The link drops and comes back with a fresh, valid, authenticated stream.
    now += 1.0
    for _ in range(200):
        now += DT
        assert f.accept(Q0 + 0.3, now) is Verdict.ESTOPPED
        out = f.update(now, measured)
        assert out.state is SafetyState.ESTOP
        np.testing.assert_array_equal(out.command, held)
    assert f.counters.estops == 1
    # Only an explicit reset clears it, and then nothing old is replayed: hold until new data.
    assert f.reset()
    assert not f.reset()
    for _ in range(20):
        now += DT
        out = f.update(now, measured)
        assert out.state is SafetyState.HOLDING
        np.testing.assert_array_equal(out.command, held)
    now += DT
    assert f.accept(Q0 + 0.3, now) is Verdict.ACCEPTED
    assert f.update(now + DT, measured).state is SafetyState.TRACKING


def test_nonfinite_measurement_latches_the_estop() -> None:
    f = make()
    f.update(0.0, Q0)
    f.accept(Q0, 0.0)
    bad = Q0.copy()
    bad[2] = np.nan
    out = f.update(DT, bad)
    assert out.state is SafetyState.ESTOP
    assert np.all(np.isfinite(out.command))
    assert "measurement" in f.estop_reason


def test_max_deviation_bounds_how_far_the_reference_leads_a_blocked_arm() -> None:
    f = make(max_deviation=0.02, resume_velocity=1.0)
    f.update(0.0, Q0)
    blocked = Q0.copy()  # the arm is against an obstacle and does not move
    for k in range(1, 300):
        f.accept(Q0 + 0.5, k * DT)
        out = f.update(k * DT, blocked)
        assert np.max(np.abs(out.command - blocked)) <= 0.02 + 1e-12
    np.testing.assert_allclose(out.command, blocked + 0.02)


def test_first_update_needs_a_measurement() -> None:
    with pytest.raises(ValueError):
        make().update(0.0, [np.nan] * 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0.0},
        {"max_velocity": -1.0},
        {"max_acceleration": (1.0, 2.0)},
        {"limit_margin": 5.0},
        {"max_age_s": 0.0},
        {"max_deviation": 0.0},
    ],
)
def test_invalid_configs_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SafetyConfig.hdi(**kwargs)


# -- robot link lost and back (issue 18, part 3) ------------------------------------------------


def _track(f: SafetyFilter, t: float, until: float, target: np.ndarray, q: np.ndarray) -> float:
    while t < until:
        assert f.accept(target, t) is Verdict.ACCEPTED
        f.update(t, q)
        t += DT
    return t


def test_robot_lost_freezes_the_reference_whatever_the_leader_does() -> None:
    f = make()
    t = _track(f, 0.0, 0.5, Q0 + 0.2, Q0)
    f.robot_lost()
    frozen = f.update(t, Q0).command
    assert f.state is SafetyState.HOLDING and f.robot_down
    for _ in range(200):  # the leader keeps moving far away: accepted, but nothing tracks it
        t += DT
        assert f.accept(Q0 + 0.5, t) is Verdict.ACCEPTED
        out = f.update(t, Q0)
        assert out.state is SafetyState.HOLDING
        np.testing.assert_array_equal(out.command, frozen)
        assert not np.any(out.velocity)
    assert f.counters.robot_holds == 1


def test_resync_restarts_at_the_measured_pose_and_ramps_to_the_leader() -> None:
    """A restarted robot is elsewhere: the first command is where it is, not the old target,
    and the reference then moves no faster than the resume velocity until caught up."""
    f = make()
    t = _track(f, 0.0, 1.0, Q0 + 0.2, Q0)
    f.robot_lost()
    rebooted = Q0 - 0.25  # the robot came back at another pose
    t += 2.0
    assert f.accept(Q0 + 0.2, t) is Verdict.ACCEPTED  # the leader is still there, fresh
    assert f.resync(rebooted, t)
    assert not f.robot_down and f.state is SafetyState.TRACKING
    out = f.update(t, rebooted)
    np.testing.assert_allclose(out.command, rebooted, atol=1e-12)
    prev = out.command
    for _ in range(2000):
        t += DT
        f.accept(Q0 + 0.2, t)
        out = f.update(t, rebooted)
        step = np.max(np.abs(out.command - prev))
        far = np.max(np.abs(prev - (Q0 + 0.2))) > f.config.resume_tolerance
        vmax = f.config.resume_velocity if far else f.config.max_velocity
        assert step <= vmax * DT + 1e-9
        prev = out.command
    np.testing.assert_allclose(out.command, Q0 + 0.2, atol=1e-6)  # caught up with the leader
    assert f.counters.resyncs == 1


def test_resync_without_a_fresh_leader_holds_at_the_measured_pose() -> None:
    f = make()
    t = _track(f, 0.0, 0.2, Q0 + 0.1, Q0)
    f.robot_lost()
    t += 5.0  # the leader stopped too meanwhile
    assert f.resync(Q0 - 0.1, t)
    assert f.state is SafetyState.HOLDING
    for _ in range(50):
        t += DT
        out = f.update(t, Q0 - 0.1)
    np.testing.assert_allclose(out.command, Q0 - 0.1, atol=1e-12)


def test_resync_keeps_a_latched_estop() -> None:
    f = make()
    t = _track(f, 0.0, 0.2, Q0 + 0.1, Q0)
    f.estop("operator")
    f.robot_lost()
    assert f.resync(Q0 + 0.05, t)
    assert f.state is SafetyState.ESTOP
    assert f.accept(Q0, t) is Verdict.ESTOPPED
    np.testing.assert_allclose(f.update(t + DT, Q0 + 0.05).command, Q0 + 0.05)


@pytest.mark.parametrize("bad", [[np.nan, 0, 0, 0, 0], [0.0, 0.0], [np.inf] * 5])
def test_resync_refuses_a_malformed_measurement_and_stays_held(bad: list[float]) -> None:
    f = make()
    t = _track(f, 0.0, 0.2, Q0 + 0.1, Q0)
    f.robot_lost()
    assert not f.resync(bad, t)
    assert f.robot_down and f.state is SafetyState.HOLDING


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_measurement_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="measurement_timeout_s"):
        SafetyConfig.hdi(measurement_timeout_s=bad)
