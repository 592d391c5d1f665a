"""Follower safety filter: the only path from the network to the follower's joint command.

Whatever the network delivers, the follower only ever gets finite joint targets inside its local
limits, moving no faster and accelerating no harder than configured, and it stops when the leader
goes quiet. Pure logic, no I/O: the node feeds it commands, measurements and the clock.

* **Lease.** Each accepted (finite, authenticated, fresh, in-range) command renews a lease of
  ``timeout_s``. When the lease runs out the reference brakes to a stop at
  ``brake_acceleration`` and holds there. A stale command stream is worse than none: the leader
  may have let go.
* **Limits.** Targets within ``reject_beyond`` of the joint limits are clamped to the limits
  (minus ``limit_margin``); further out they are refused: that is a mapping or calibration fault,
  not an operator asking for the limit.
* **Slew.** The reference follows the target with per-joint velocity and acceleration limits and
  decelerates in time (``v <= sqrt(2 a |e|)``), so a jump in the stream never becomes a jump in
  the command. After a hold it resumes at ``resume_velocity`` until it has caught up.
* **Deviation (optional).** ``max_deviation`` keeps the reference near the measured pose, so a
  blocked follower cannot press harder than servo stiffness × that angle, whatever the leader does.
* **Robot link.** When the arm's own state stops arriving (the robot link is down: a cut cable,
  a restarted robot), the reference stops where it is and nothing is tracked, whatever the
  leader does (:meth:`SafetyFilter.robot_lost`). When the state comes back, the reference
  restarts at the arm's *measured* pose, which may differ from the last command (a restarted
  robot is wherever it booted), and resumes toward the leader at ``resume_velocity``
  (:meth:`SafetyFilter.resync`): never a step to a pose commanded before the outage.
* **E-stop.** Latches: holds the measured pose (which also relieves a contact force) and ignores
  every command until :meth:`SafetyFilter.reset` is called explicitly, whatever the link does.
  A non-finite measurement latches it too (the filter can no longer know where the arm is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dexter_driver.protocol import HDI_JOINT_LIMITS_RAD

__all__ = [
    "SafetyConfig",
    "SafetyCounters",
    "SafetyFilter",
    "SafetyOutput",
    "SafetyState",
    "Verdict",
]

FloatArray = NDArray[np.float64]


class SafetyState(Enum):
    IDLE = "idle"  #: no command accepted yet: hold the initial pose
    TRACKING = "tracking"  #: lease alive: follow the target within the limits
    HOLDING = "holding"  #: lease expired: brake and hold
    ESTOP = "estop"  #: latched until reset(): hold the measured pose, ignore commands


class Verdict(Enum):
    """Why a command was (not) accepted; everything but ACCEPTED leaves the filter unchanged."""

    ACCEPTED = "accepted"
    BAD_SHAPE = "bad_shape"
    NONFINITE = "nonfinite"
    OUT_OF_LIMITS = "out_of_limits"
    UNAUTHENTICATED = "unauthenticated"
    STALE = "stale"
    ESTOPPED = "estopped"


def _per_joint(value: float | Sequence[float], n: int, name: str) -> tuple[float, ...]:
    vals = (float(value),) * n if isinstance(value, (int, float)) else tuple(map(float, value))
    if len(vals) != n or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"{name} needs {n} finite positive values")
    return vals


@dataclass(frozen=True)
class SafetyConfig:
    """Local limits of the follower; nothing on the network can change them."""

    lower: tuple[float, ...]  #: rad, hardware limits
    upper: tuple[float, ...]
    max_velocity: float | tuple[float, ...] = 1.0  #: rad/s (below the driver's `P` cap)
    max_acceleration: float | tuple[float, ...] = 8.0  #: rad/s²
    timeout_s: float = 0.15  #: lease: hold when no fresh command arrived for this long
    max_age_s: float | None = None  #: refuse commands older than this (sender stamp), if known
    limit_margin: float = 0.02  #: rad kept clear of the hardware limits
    reject_beyond: float = 0.1  #: rad outside the limits from which a command is refused
    brake_acceleration: float = 20.0  #: rad/s², used to stop when the lease expires
    resume_velocity: float = 0.3  #: rad/s cap after a hold until caught up
    resume_tolerance: float = 0.01  #: rad: "caught up"
    max_step_s: float = 0.05  #: a longer gap between updates is integrated as this much
    #: the arm's measured state older than this means the robot link is down: hold, and
    #: re-sync to the measured pose when it returns (used by FollowerControl)
    measurement_timeout_s: float = 0.2
    #: rad, keep the reference within this of the measured pose (None = off): with servo
    #: stiffness K this bounds the joint torque, hence the force the follower can press with
    max_deviation: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.lower)
        if len(self.upper) != n or n == 0:
            raise ValueError("lower and upper limits need the same, non-zero length")
        if any(lo + 2 * self.limit_margin >= hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError("each joint needs lower + 2 * margin < upper")
        _per_joint(self.max_velocity, n, "max_velocity")
        _per_joint(self.max_acceleration, n, "max_acceleration")
        for name in (
            "timeout_s",
            "brake_acceleration",
            "resume_velocity",
            "max_step_s",
            "measurement_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.limit_margin < 0 or self.reject_beyond < 0 or self.resume_tolerance < 0:
            raise ValueError("limit_margin, reject_beyond and resume_tolerance must be >= 0")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError("max_age_s must be > 0 or None")
        if self.max_deviation is not None:
            _per_joint(self.max_deviation, n, "max_deviation")

    @classmethod
    def hdi(cls, **overrides: object) -> SafetyConfig:
        """The HDI's J1..J5 limits (docs/dexter-protocol.md §3) with the given overrides."""
        lower = tuple(lo for lo, _ in HDI_JOINT_LIMITS_RAD)
        upper = tuple(hi for _, hi in HDI_JOINT_LIMITS_RAD)
        return cls(lower=lower, upper=upper, **overrides)  # type: ignore[arg-type]

    @property
    def size(self) -> int:
        return len(self.lower)


@dataclass
class SafetyCounters:
    accepted: int = 0
    clamped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    holds: int = 0
    estops: int = 0
    robot_holds: int = 0  #: times the robot link went down (held until re-synced)
    resyncs: int = 0  #: times the reference restarted at the measured pose

    def reject(self, verdict: Verdict) -> Verdict:
        self.rejected[verdict.value] = self.rejected.get(verdict.value, 0) + 1
        return verdict


@dataclass(frozen=True)
class SafetyOutput:
    """The joint command to send now (rad, follower order) and the filter's state."""

    command: FloatArray
    velocity: FloatArray
    state: SafetyState
    clamped: bool = False


class SafetyFilter:
    """Validate leader commands and turn them into a limited, leased follower reference."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        n = config.size
        self._lo = np.asarray(config.lower) + config.limit_margin
        self._hi = np.asarray(config.upper) - config.limit_margin
        self._vmax = np.asarray(_per_joint(config.max_velocity, n, "max_velocity"))
        self._amax = np.asarray(_per_joint(config.max_acceleration, n, "max_acceleration"))
        dev = config.max_deviation
        self._dev = None if dev is None else np.asarray(_per_joint(dev, n, "max_deviation"))
        self.counters = SafetyCounters()
        self.state = SafetyState.IDLE
        self.estop_reason = ""
        self._ref: FloatArray | None = None
        self._vel = np.zeros(n)
        self._target: FloatArray | None = None
        self._last_fresh: float | None = None
        self._last_update: float | None = None
        self._resuming = False
        self._robot_down = False

    # -- commands ---------------------------------------------------------------------------

    def check(self, target: ArrayLike) -> tuple[Verdict, FloatArray | None, bool]:
        """Validate one target without side effects: (verdict, clamped target, was clamped)."""
        try:
            t = np.asarray(target, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return Verdict.BAD_SHAPE, None, False
        if t.size != self.config.size:
            return Verdict.BAD_SHAPE, None, False
        if not np.all(np.isfinite(t)):
            return Verdict.NONFINITE, None, False
        slack = self.config.reject_beyond
        if np.any(t < np.asarray(self.config.lower) - slack) or np.any(
            t > np.asarray(self.config.upper) + slack
        ):
            return Verdict.OUT_OF_LIMITS, None, False
        clamped = np.clip(t, self._lo, self._hi)
        return Verdict.ACCEPTED, clamped, bool(np.any(clamped != t))

    def accept(
        self, target: ArrayLike, now: float, authenticated: bool = True, age_s: float | None = None
    ) -> Verdict:
        """Offer a leader command (already mapped to follower joints) received at ``now``.

        Only an accepted command renews the lease; ``age_s`` is its age by the sender's stamp
        when the clock offset is known.
        """
        c = self.counters
        if self.state is SafetyState.ESTOP:
            return c.reject(Verdict.ESTOPPED)
        if not authenticated:
            return c.reject(Verdict.UNAUTHENTICATED)
        max_age = self.config.max_age_s
        if max_age is not None and (age_s is None or not age_s <= max_age):
            return c.reject(Verdict.STALE)
        verdict, clamped, was_clamped = self.check(target)
        if verdict is not Verdict.ACCEPTED:
            return c.reject(verdict)
        c.accepted += 1
        c.clamped += int(was_clamped)
        self._target = clamped
        self._last_fresh = now
        if self._robot_down:
            return Verdict.ACCEPTED  # kept for resync(); nothing moves until the robot is back
        if self.state is not SafetyState.TRACKING:
            self._resuming = True  # from IDLE or HOLDING the leader may be anywhere: go gently
            self.state = SafetyState.TRACKING
        return Verdict.ACCEPTED

    def robot_lost(self) -> None:
        """The robot link is down: stop the reference where it is and track nothing until
        :meth:`resync` (a command to an arm nobody hears would only be replayed late)."""
        if self._robot_down:
            return
        self._robot_down = True
        self.counters.robot_holds += 1
        self._vel[:] = 0.0
        if self.state is SafetyState.TRACKING:
            self.state = SafetyState.HOLDING

    def resync(self, measured: ArrayLike, now: float) -> bool:
        """The robot link is back: restart the reference at the measured pose (the arm may have
        moved, or rebooted elsewhere) and resume toward the leader at ``resume_velocity`` if
        the lease is still fresh. False (nothing changed) for a malformed measurement."""
        m = np.asarray(measured, dtype=np.float64).reshape(-1)
        if m.size != self.config.size or not np.all(np.isfinite(m)):
            return False
        self._robot_down = False
        self.counters.resyncs += 1
        self._vel[:] = 0.0
        self._ref = np.clip(m, self._lo, self._hi)
        self._last_update = now  # integrate from here, not across the outage
        if self.state is SafetyState.ESTOP:
            return True  # held where the arm really is
        self._resuming = True
        fresh = self._last_fresh is not None and now - self._last_fresh <= self.config.timeout_s
        if fresh and self._target is not None:
            self.state = SafetyState.TRACKING
        elif self.state is SafetyState.TRACKING:
            self.state = SafetyState.HOLDING
        return True

    @property
    def robot_down(self) -> bool:
        """True between :meth:`robot_lost` and :meth:`resync`."""
        return self._robot_down

    def estop(self, reason: str = "e-stop", measured: ArrayLike | None = None) -> None:
        """Latch the e-stop: hold the measured pose (or the reference) until :meth:`reset`."""
        if self.state is not SafetyState.ESTOP:
            self.counters.estops += 1
        self.state = SafetyState.ESTOP
        self.estop_reason = reason
        if measured is not None:
            m = np.asarray(measured, dtype=np.float64).reshape(-1)
            if m.size == self.config.size and np.all(np.isfinite(m)):
                self._ref = np.clip(m, self._lo, self._hi)
        self._vel[:] = 0.0
        self._target = None
        self._last_fresh = None

    def reset(self) -> bool:
        """Clear a latched e-stop (an explicit, local operator action). The filter then holds
        until a *new* command arrives; nothing accepted before the reset is replayed."""
        if self.state is not SafetyState.ESTOP:
            return False
        self.state = SafetyState.HOLDING
        self.estop_reason = ""
        self._target = None
        self._last_fresh = None
        return True

    @property
    def holding(self) -> bool:
        return self.state is not SafetyState.TRACKING

    # -- periodic update --------------------------------------------------------------------

    def update(
        self, now: float, measured: ArrayLike, target: ArrayLike | None = None
    ) -> SafetyOutput:
        """Advance the reference to ``now``; ``target`` (e.g. the interpolated leader pose, in
        follower joints) overrides the last accepted command for this tick if it is valid."""
        m = np.asarray(measured, dtype=np.float64).reshape(-1)
        if m.size != self.config.size or not np.all(np.isfinite(m)):
            self.estop("non-finite or malformed measurement")
            m = None  # type: ignore[assignment]
        if self._ref is None:
            if m is None:
                raise ValueError("the first update needs a valid measurement")
            self._ref = np.clip(m, self._lo, self._hi)
        dt = 0.0 if self._last_update is None else now - self._last_update
        dt = min(max(dt, 0.0), self.config.max_step_s)
        self._last_update = now
        if (
            self.state is SafetyState.TRACKING
            and self._last_fresh is not None
            and now - self._last_fresh > self.config.timeout_s
        ):
            self.state = SafetyState.HOLDING
            self.counters.holds += 1
        clamped = False
        if self.state is SafetyState.ESTOP or self._robot_down:
            self._vel[:] = 0.0
        elif self.state is SafetyState.TRACKING and dt > 0:
            goal = self._target
            if target is not None:
                verdict, checked, clamped = self.check(target)
                if verdict is Verdict.ACCEPTED:
                    goal = checked
                else:
                    self.counters.reject(verdict)
            if goal is not None:
                self._track(goal, dt)
        elif dt > 0:
            self._brake(dt)
        if (
            self._dev is not None
            and m is not None
            and self.state is not SafetyState.ESTOP
            and not self._robot_down
        ):
            self._limit_deviation(m)
        ref = self._ref
        assert ref is not None
        return SafetyOutput(ref.copy(), self._vel.copy(), self.state, clamped)

    def _track(self, goal: FloatArray, dt: float) -> None:
        """Time-optimal-ish slew toward goal: v <= vmax and v <= sqrt(2 a |e|), |dv| <= a dt."""
        assert self._ref is not None
        err = goal - self._ref
        vmax = self._vmax
        if self._resuming:
            if np.max(np.abs(err)) <= self.config.resume_tolerance:
                self._resuming = False
            else:
                vmax = np.minimum(vmax, self.config.resume_velocity)
        v_des = np.sign(err) * np.minimum.reduce(
            [vmax, np.sqrt(2.0 * self._amax * np.abs(err)), np.abs(err) / dt]
        )
        self._vel += np.clip(v_des - self._vel, -self._amax * dt, self._amax * dt)
        self._integrate(dt)

    def _brake(self, dt: float) -> None:
        a = self.config.brake_acceleration * dt
        self._vel = np.sign(self._vel) * np.maximum(np.abs(self._vel) - a, 0.0)
        self._integrate(dt)

    def _limit_deviation(self, measured: FloatArray) -> None:
        """Pull the reference back toward the arm where it leads by more than max_deviation:
        a blocked follower then presses with at most stiffness x max_deviation per joint."""
        assert self._ref is not None and self._dev is not None
        lo = np.maximum(measured - self._dev, self._lo)
        hi = np.minimum(measured + self._dev, self._hi)
        new = np.clip(self._ref, lo, hi)
        moved = new != self._ref
        self._vel[moved] = 0.0
        self._ref = new

    def _integrate(self, dt: float) -> None:
        assert self._ref is not None
        new = self._ref + self._vel * dt
        hit = (new < self._lo) | (new > self._hi)
        self._ref = np.clip(new, self._lo, self._hi)
        self._vel[hit] = 0.0
