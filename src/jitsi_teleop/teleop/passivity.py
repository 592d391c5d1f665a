"""Time-domain passivity (TDPA) for the delayed force channel: observer + variable damping.

The network between the arms is a two-port: the leader port (leader velocity in, rendered force
out) and the follower port (commanded motion in, contact force out). With delay it can create
energy: the operator feels a force computed from where the follower *was*, and the phase lag
pumps energy into contact oscillations. TDPA (Ryu, Artigas, Preusche, Mechatronics 2010; Artigas
et al., IROS 2011) keeps it passive by bookkeeping, with no model of the delay:

* Each port sums the energy that enters the network there (``e_in``) and leaves it
  (``e_out``), from the power (force · velocity) it observes. The counters are monotone, so
  sending the newest ``e_in`` to the other side over a lossy newest-wins stream loses nothing.
* The passivity observer at a port compares what has left locally with what entered at the other
  end and has arrived: ``W = scale · e_in_remote − e_out + dissipated``. A passive channel never
  lets ``W`` go negative.
* When it would, the passivity controller adds just enough damping to the rendered torque,
  ``τ −= α q̇`` with ``α = −W / (Δt · q̇ᵀDq̇)``, to dissipate the excess — zero when the channel
  behaves, so free motion and a well-behaved contact are untouched.

``scale`` is the force scale of the feedback: the leader may output ``scale`` times the energy
that entered at the follower. ``weights`` (per joint, e.g. the joint inertias) shape the damping
so one gain suits heavy shoulder and light wrist joints alike; ``max_damping`` bounds ``α`` so the
discrete damper itself stays stable (α · w · Δt below the joint inertia).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "PassivityConfig",
    "PassivityController",
    "PassivityStep",
    "PortEnergy",
    "PortObserver",
]

FloatArray = NDArray[np.float64]


@dataclass
class PortEnergy:
    """Energy through one port of the network, J: ``e_in`` entered it, ``e_out`` left it."""

    e_in: float = 0.0
    e_out: float = 0.0

    def add(self, power_out: float, dt: float) -> None:
        """Book ``power_out`` (W, positive = the network delivers power here) over ``dt``."""
        if power_out > 0.0:
            self.e_out += power_out * dt
        else:
            self.e_in -= power_out * dt


@dataclass(frozen=True)
class PassivityConfig:
    enabled: bool = True  #: False = observe only (the bookkeeping still runs and is reported)
    scale: float = 1.0  #: energy gain allowed through the channel (the force-feedback scale)
    max_damping: float = 200.0  #: cap on α (units of 1/s when weights are inertias)
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    min_speed: float = 1e-4  #: below this |q̇| no damping can dissipate; the deficit waits

    def __post_init__(self) -> None:
        if not self.scale >= 0 or not self.max_damping >= 0 or not self.min_speed > 0:
            raise ValueError("need scale >= 0, max_damping >= 0 and min_speed > 0")
        if any(not w > 0 for w in self.weights):
            raise ValueError("weights must be > 0")


@dataclass(frozen=True)
class PassivityStep:
    torque: FloatArray  #: the torque to render (input torque minus the PC's damping)
    damping: float  #: α applied this step (0 when the observer is passive)
    observed: float  #: W before the PC acted, J (negative = active)


class PassivityController:
    """Impedance-type PO/PC at a port where torque is rendered on a moving arm (the leader)."""

    def __init__(self, config: PassivityConfig | None = None) -> None:
        self.config = config or PassivityConfig()
        self.port = PortEnergy()
        self.dissipated = 0.0  #: J taken out by the PC so far
        self.active_steps = 0
        self.remote_e_in = 0.0
        self._weights = np.asarray(self.config.weights, dtype=np.float64)

    @property
    def e_in(self) -> float:
        """The counter to send to the other side."""
        return self.port.e_in

    def observe(self, remote_e_in: float) -> float:
        """W = scale · e_in(remote, newest known) − e_out + dissipated."""
        if np.isfinite(remote_e_in) and remote_e_in > self.remote_e_in:
            self.remote_e_in = float(remote_e_in)  # monotone: an older or bogus value is ignored
        return self.config.scale * self.remote_e_in - self.port.e_out + self.dissipated

    def step(
        self, torque: ArrayLike, velocity: ArrayLike, remote_e_in: float, dt: float
    ) -> PassivityStep:
        """Book this step's power of ``torque`` at ``velocity`` and return the torque to render."""
        tau = np.asarray(torque, dtype=np.float64).reshape(-1)
        qd = np.asarray(velocity, dtype=np.float64).reshape(-1)
        self.port.add(float(tau @ qd), dt)
        w = self.observe(remote_e_in)
        if not self.config.enabled or w >= 0.0 or dt <= 0.0:
            return PassivityStep(tau.copy(), 0.0, w)
        weighted = float(qd @ (self._weights[: qd.size] * qd))
        if np.sqrt(weighted / float(np.sum(self._weights[: qd.size]))) < self.config.min_speed:
            return PassivityStep(tau.copy(), 0.0, w)
        alpha = min(-w / (dt * weighted), self.config.max_damping)
        self.dissipated += alpha * weighted * dt
        self.active_steps += 1
        return PassivityStep(tau - alpha * self._weights[: qd.size] * qd, alpha, w)


class PortObserver:
    """Observe-only port (e.g. the follower's): books power, reports ``e_in`` and ``W``."""

    def __init__(self, scale: float = 1.0) -> None:
        self.port = PortEnergy()
        self.scale = scale
        self.remote_e_in = 0.0

    @property
    def e_in(self) -> float:
        return self.port.e_in

    def step(self, power_out: float, remote_e_in: float, dt: float) -> float:
        """Book ``power_out`` and return W = e_in_remote / scale − e_out (J)."""
        self.port.add(power_out, dt)
        if np.isfinite(remote_e_in) and remote_e_in > self.remote_e_in:
            self.remote_e_in = float(remote_e_in)
        return (self.remote_e_in / self.scale if self.scale > 0 else np.inf) - self.port.e_out
