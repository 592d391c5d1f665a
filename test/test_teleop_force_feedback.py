"""Force feedback: the driver's contact-force estimate, deadband/scale/saturation, Jᵀ F."""

from __future__ import annotations

import numpy as np
import pytest

from dexter_driver import kinematics
from dexter_driver.sim import DexterPhysics, SimConfig
from jitsi_teleop.teleop.force_feedback import (
    ForceFeedback,
    ForceFeedbackConfig,
    estimate_tip_force,
    leader_torques_from_follower_effort,
    shape_force,
)
from jitsi_teleop.teleop.mapping import ArmMapping

Q = np.array([0.2, 0.3, 1.2, 0.07, 0.1])


def test_estimate_matches_a_force_applied_to_the_simulated_follower() -> None:
    """Push the simulated arm (position mode) at the tip; the estimate from stiffness x DELTA
    (what the driver publishes) recovers the applied force once the servo has settled."""
    cfg = SimConfig(rate=0.0)
    arm = DexterPhysics(cfg)
    arm.q = Q.copy()
    arm.setpoint = Q.copy()
    arm.set_offset(Q)
    applied = np.array([3.0, -2.0, -6.0])
    arm.ext_wrench = np.concatenate([applied, np.zeros(3)])
    arm.run(1500, 0.001)
    est = estimate_tip_force(arm.q, arm.delta(), cfg.stiffness)
    np.testing.assert_allclose(est, applied, atol=0.05)


def test_deadband_is_subtractive_and_continuous() -> None:
    cfg = ForceFeedbackConfig(scale=0.5, deadband_n=2.0, max_force_n=100.0)
    assert not shape_force([0.0, 0.0, 1.99], cfg).any()
    just_above = shape_force([0.0, 0.0, 2.01], cfg)
    assert just_above[2] == pytest.approx(0.005)  # grows from zero, no step at the threshold
    np.testing.assert_allclose(shape_force([0.0, 6.0, 8.0], cfg), [0.0, 2.4, 3.2])  # |F|=10 -> 4
    np.testing.assert_allclose(shape_force([0.0, 6.0, 8.0], cfg, scaled=False), [0.0, 4.8, 6.4])


def test_torques_render_the_scaled_force_at_the_leader_tip() -> None:
    ff = ForceFeedback(ForceFeedbackConfig(scale=0.5, deadband_n=1.0, max_force_n=50.0))
    f = np.array([2.0, -3.0, 6.0])  # |F| = 7 N
    assert ff.set_force(f, now=0.0)
    tau = ff.torques(Q, now=0.01)
    np.testing.assert_allclose(tau, kinematics.jacobian(Q)[:3].T @ (f * (6.0 * 0.5 / 7.0)))
    rendered = kinematics.tip_force_from_joint_torques(Q, tau)
    np.testing.assert_allclose(rendered, f * (3.0 / 7.0), atol=1e-3)


def test_saturation_bounds_force_and_torque_and_keeps_direction() -> None:
    cfg = ForceFeedbackConfig(scale=1.0, deadband_n=0.0, max_force_n=10.0, max_torque_nm=0.5)
    ff = ForceFeedback(cfg)
    f = np.array([100.0, 0.0, -400.0])
    ff.set_force(f, 0.0)
    rendered = ff.rendered_force(0.0)
    assert np.linalg.norm(rendered) == pytest.approx(10.0)
    np.testing.assert_allclose(rendered / 10.0, f / np.linalg.norm(f))
    tau = ff.torques(Q, 0.0)
    assert np.max(np.abs(tau)) == pytest.approx(0.5)
    unsat = kinematics.jacobian(Q)[:3].T @ rendered
    np.testing.assert_allclose(tau / np.linalg.norm(tau), unsat / np.linalg.norm(unsat))
    assert ff.saturated == 1


def test_stale_and_nonfinite_feedback_render_nothing() -> None:
    ff = ForceFeedback(ForceFeedbackConfig(timeout_s=0.25))
    ff.set_force([0.0, 0.0, 20.0], now=0.0)
    assert ff.torques(Q, 0.2).any()
    assert not ff.torques(Q, 0.3).any()  # stale: the wall may be gone
    assert not ff.set_force([0.0, np.nan, 1.0], now=0.3)
    assert not ff.set_force([0.0, 1.0], now=0.3)
    assert ff.rejected == 2
    assert not ff.torques(Q, 0.3).any()


def test_joint_space_feedback_through_a_mapping() -> None:
    m = ArmMapping(order=(1, 0, 2, 3, 4), scale=(2.0, 1.0, 1.0, 1.0, -1.0))
    tau = leader_torques_from_follower_effort([0.1, 0.2, 0.0, 0.0, 0.3], m, 0.5, 10.0)
    np.testing.assert_allclose(tau, [0.1, 0.1, 0.0, 0.0, -0.15])
    sat = leader_torques_from_follower_effort([10.0, 0.0, 0.0, 0.0, 5.0], m, 1.0, 4.0)
    np.testing.assert_allclose(sat, [0.0, 4.0, 0.0, 0.0, -1.0])  # (0, 20, 0, 0, -5) / 5


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        ForceFeedbackConfig(scale=-1.0)
    with pytest.raises(ValueError):
        ForceFeedbackConfig(max_torque_nm=0.0)
