"""Force feedback: the follower's contact force rendered as joint torques on the leader.

Chain: follower servo tracking error → external joint torque (stiffness × DELTA, the driver's
estimate) → tip force (point contact, least squares, :func:`tip_force_from_joint_torques`) →
network → deadband → scale → saturate → leader joint torques ``τ = Jᵥ(q_leader)ᵀ F``.

Why each step:

* The **deadband** hides what the estimate gets wrong in free motion (the follower's own inertia
  and damping show up in DELTA too); it subtracts rather than gates, so the force grows from zero
  at the threshold instead of stepping.
* The **scale** (< 1) lets a light leader render a stiff contact without going unstable at once;
  the passivity controller takes the same factor into its energy bookkeeping.
* The **saturation** (tip force norm, then per-joint torque, both keeping the direction) bounds
  what a wrong or malicious message can do to the operator's hand.
* **Stale** feedback fades to zero: a force that was true 300 ms ago pushes against a wall that
  is no longer there.

Rendering through the leader's own Jacobian assumes both arms share the base-frame geometry
(the identity :class:`~jitsi_teleop.teleop.mapping.ArmMapping`); for a permuted or scaled mapping
use :func:`leader_torques_from_follower_effort` (joint space, power preserving).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dexter_driver import kinematics
from jitsi_teleop.teleop.mapping import ArmMapping

__all__ = [
    "ForceFeedback",
    "ForceFeedbackConfig",
    "estimate_tip_force",
    "leader_torques_from_follower_effort",
    "shape_force",
    "tip_force_from_servo_torque",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ForceFeedbackConfig:
    scale: float = 0.5  #: leader tip force per follower tip force
    deadband_n: float = 1.5  #: follower force magnitude below which nothing is rendered, N
    max_force_n: float = 15.0  #: leader tip force saturation, N
    max_torque_nm: float | tuple[float, ...] = 3.0  #: per-joint torque saturation, N·m
    timeout_s: float = 0.25  #: feedback older than this (by arrival) renders zero
    links: kinematics.LinkLengths = kinematics.HDI

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError("scale must be finite and >= 0")
        if self.deadband_n < 0 or not self.max_force_n > 0 or not self.timeout_s > 0:
            raise ValueError("need deadband_n >= 0, max_force_n > 0 and timeout_s > 0")
        lim = self.torque_limits()
        if not np.all(np.isfinite(lim)) or np.any(lim <= 0):
            raise ValueError("max_torque_nm must be finite and > 0")

    def torque_limits(self, n: int = 5) -> FloatArray:
        m = self.max_torque_nm
        return np.full(n, float(m)) if isinstance(m, (int, float)) else np.asarray(m, float)


def tip_force_from_servo_torque(
    q: ArrayLike, servo_torque: ArrayLike, links: kinematics.LinkLengths = kinematics.HDI
) -> FloatArray:
    """External force on the follower's tip (N, base frame) from the servo torque, i.e. the
    driver's ``joint_states`` effort (stiffness × DELTA): at quasi-static balance the external
    joint torque is its negative. Same estimate as the driver's ``wrench`` topic."""
    tau_ext = -np.asarray(servo_torque, float).reshape(-1)[:5]
    return kinematics.tip_force_from_joint_torques(q, tau_ext, links)


def estimate_tip_force(
    q: ArrayLike,
    delta: ArrayLike,
    stiffness: Sequence[float],
    links: kinematics.LinkLengths = kinematics.HDI,
) -> FloatArray:
    """:func:`tip_force_from_servo_torque` from DELTA (set-point − measured) and stiffness."""
    servo = np.asarray(stiffness, float) * np.asarray(delta, float).reshape(-1)[:5]
    return tip_force_from_servo_torque(q, servo, links)


def shape_force(force: ArrayLike, config: ForceFeedbackConfig, scaled: bool = True) -> FloatArray:
    """Deadband (subtractive), scale and saturate a follower tip force; direction is kept.

    ``scaled=False`` gives the same force before the scale, i.e. the part of the follower's
    force that the leader renders: the follower's passivity port books exactly that, so the
    follower's own inertia inside the deadband is not mistaken for energy sent to the leader.
    """
    f = np.asarray(force, dtype=np.float64).reshape(3)
    mag = float(np.linalg.norm(f))
    if mag <= config.deadband_n:
        return np.zeros(3)
    out_mag = min((mag - config.deadband_n) * config.scale, config.max_force_n)
    if not scaled:
        out_mag = out_mag / config.scale if config.scale > 0 else 0.0
    return f * (out_mag / mag)


def leader_torques_from_follower_effort(
    external_torque: ArrayLike, mapping: ArmMapping, scale: float, max_torque_nm: ArrayLike
) -> FloatArray:
    """Joint-space feedback for arms whose geometry differs: scaled transpose of the mapping,
    saturated with the direction kept."""
    tau = scale * mapping.torque_to_leader(external_torque)
    return _saturate(tau, np.asarray(max_torque_nm, float) * np.ones(tau.size))


def _saturate(tau: FloatArray, limits: FloatArray) -> FloatArray:
    ratio = float(np.max(np.abs(tau) / limits)) if tau.size else 0.0
    return tau / ratio if ratio > 1.0 else tau


class ForceFeedback:
    """Leader-side renderer: hold the newest valid follower force, turn it into torques."""

    def __init__(self, config: ForceFeedbackConfig | None = None) -> None:
        self.config = config or ForceFeedbackConfig()
        self._force = np.zeros(3)
        self._at: float | None = None
        self.rejected = 0
        self.saturated = 0

    def set_force(self, force: ArrayLike, now: float) -> bool:
        """Take a follower tip force (N, base frame) received at ``now``; refuses non-finite."""
        f = np.asarray(force, dtype=np.float64).reshape(-1)
        if f.size != 3 or not np.all(np.isfinite(f)):
            self.rejected += 1
            return False
        self._force, self._at = f.copy(), now
        return True

    def fresh(self, now: float) -> bool:
        return self._at is not None and now - self._at <= self.config.timeout_s

    def rendered_force(self, now: float) -> FloatArray:
        """The leader tip force that will be rendered now (zero when stale)."""
        if not self.fresh(now):
            return np.zeros(3)
        return shape_force(self._force, self.config)

    def torques(self, q_leader: ArrayLike, now: float) -> FloatArray:
        """Leader joint torques (N·m, J1..J5) = Jᵥᵀ F, saturated per joint."""
        f = self.rendered_force(now)
        if not f.any():
            return np.zeros(5)
        jv = kinematics.jacobian(q_leader, self.config.links)[:3]
        tau = jv.T @ f
        out = _saturate(tau, self.config.torque_limits(tau.size))
        if out is not tau:
            self.saturated += 1
        return out
