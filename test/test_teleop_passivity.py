"""TDPA: port energy bookkeeping, the observer, variable damping, and a delayed 1-DOF contact."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from jitsi_teleop.teleop.passivity import (
    PassivityConfig,
    PassivityController,
    PortEnergy,
    PortObserver,
)


def test_port_energy_splits_in_and_out() -> None:
    p = PortEnergy()
    p.add(2.0, 0.5)  # the network delivers 1 J here
    p.add(-4.0, 0.25)  # 1 J enters the network here
    p.add(0.0, 1.0)
    assert (p.e_in, p.e_out) == (pytest.approx(1.0), pytest.approx(1.0))


def test_passive_channel_is_left_alone() -> None:
    pc = PassivityController(PassivityConfig(scale=0.5))
    tau = np.array([0.0, 1.0, 0.5, 0.0, 0.0])
    qd = np.array([0.0, 0.2, 0.1, 0.0, 0.0])
    step = pc.step(tau, qd, remote_e_in=10.0, dt=0.002)
    assert step.damping == 0.0 and step.observed > 0
    np.testing.assert_array_equal(step.torque, tau)
    assert pc.dissipated == 0.0


def test_active_observer_adds_just_enough_damping() -> None:
    """W < 0: the PC dissipates exactly the deficit, so W is back at zero afterwards."""
    dt = 0.002
    pc = PassivityController(PassivityConfig(scale=1.0, max_damping=1e9))
    tau = np.array([0.0, 2.0, 1.0, 0.0, 0.0])
    qd = np.array([0.0, 0.3, 0.2, 0.0, 0.0])
    step = pc.step(tau, qd, remote_e_in=0.0, dt=dt)
    out_energy = float(tau @ qd) * dt
    assert step.observed == pytest.approx(-out_energy)
    assert step.damping == pytest.approx(out_energy / (dt * float(qd @ qd)))
    np.testing.assert_allclose(step.torque, tau - step.damping * qd)
    assert pc.observe(0.0) == pytest.approx(0.0, abs=1e-15)
    assert pc.dissipated == pytest.approx(out_energy)


def test_damping_is_capped_and_weighted() -> None:
    w = (0.08, 0.08, 0.05, 0.01, 0.01)
    pc = PassivityController(PassivityConfig(max_damping=100.0, weights=w))
    qd = np.full(5, 0.1)
    step = pc.step(np.full(5, 5.0), qd, remote_e_in=0.0, dt=0.002)
    assert step.damping == 100.0
    np.testing.assert_allclose(step.torque, 5.0 - 100.0 * np.asarray(w) * qd)
    assert pc.observe(0.0) < 0  # the rest of the deficit waits for the next steps


def test_disabled_controller_only_observes() -> None:
    pc = PassivityController(PassivityConfig(enabled=False))
    step = pc.step(np.ones(5), np.ones(5), remote_e_in=0.0, dt=0.01)
    assert step.observed < 0 and step.damping == 0.0
    np.testing.assert_array_equal(step.torque, np.ones(5))


def test_remote_energy_is_monotone() -> None:
    pc = PassivityController()
    pc.observe(2.0)
    pc.observe(1.0)  # older message
    pc.observe(float("nan"))
    assert pc.remote_e_in == 2.0
    obs = PortObserver(scale=0.5)
    assert obs.step(1.0, remote_e_in=1.0, dt=1.0) == pytest.approx(1.0 / 0.5 - 1.0)
    assert obs.step(0.0, remote_e_in=0.5, dt=1.0) == pytest.approx(1.0)


def _delayed_contact(pc_on: bool, rtt: float = 0.2) -> np.ndarray:
    """1-DOF version of the teleop loop: a light leader, pulled by the hand into a wall it feels
    through the delay; a position-servoed follower presses a stiff wall. The contact force is
    estimated from the servo error (like the driver) and sent back; the follower's port is the
    contact (force x measured velocity). Returns the true wall force."""
    dt, m, b = 0.001, 0.3, 2.0
    k_hand, b_hand, x_hand = 300.0, 10.0, 0.03
    m_f, k_s = 0.3, 1600.0
    b_s = 2.0 * np.sqrt(k_s * m_f)
    k_w, b_w = 20000.0, 20.0
    n_way = round(rtt / 2 / dt)
    pc = PassivityController(PassivityConfig(enabled=pc_on, max_damping=m / dt))
    obs = PortObserver()
    to_f = deque([(0.0, 0.0)] * n_way)  # (x, e_in) leader -> follower
    to_l = deque([(0.0, 0.0)] * n_way)  # (force, e_in) follower -> leader
    x = v = xf = vf = 0.0
    forces = []
    for _ in range(int(6.0 / dt)):
        force_l, e_in_f = to_l.popleft()
        step = pc.step(np.array([-force_l]), np.array([v]), e_in_f, dt)
        a = (step.torque[0] + k_hand * (x_hand - x) - (b + b_hand) * v) / m
        v += a * dt
        x += v * dt
        to_f.append((x, pc.e_in))
        sp, e_in_l = to_f.popleft()
        wall = max(0.0, k_w * xf + b_w * vf) if xf > 0 else 0.0
        vf += (k_s * (sp - xf) - b_s * vf - wall) / m_f * dt
        xf += vf * dt
        f_est = max(0.0, k_s * (sp - xf))  # the driver's estimate: servo stiffness x DELTA
        obs.step(f_est * vf, e_in_l, dt)  # power into the environment = F · v
        to_l.append((f_est, obs.e_in))
        forces.append(wall)
    return np.asarray(forces)


def test_delayed_contact_is_stabilised_by_the_pc() -> None:
    """Same 1-DOF contact at 200 ms round trip: oscillates without the PC, settles with it."""
    tail = slice(-2000, None)
    free = _delayed_contact(pc_on=False)
    damped = _delayed_contact(pc_on=True)
    assert np.std(free[tail]) > 1.0
    assert np.std(damped[tail]) < 0.05 * np.std(free[tail])
    # It settles where the hand spring (300 N/m, 3 cm) balances servo and wall in series.
    k_env = 1600.0 * 20000.0 / 21600.0
    assert np.mean(damped[tail]) == pytest.approx(300.0 * 0.03 * k_env / (300.0 + k_env), rel=0.02)


def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        PassivityConfig(max_damping=-1.0)
    with pytest.raises(ValueError):
        PassivityConfig(weights=(1.0, 0.0))
