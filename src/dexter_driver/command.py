"""The driver's last line of defence for joint commands: validate, clamp, and hold on silence.

Pure logic (no I/O): the ROS node feeds it commands and the clock, and sends whatever target it
returns. Whatever arrives from a topic, the robot only ever gets finite targets inside the local
joint limits, and when commands stop arriving it holds where it is instead of finishing a move
that nobody is watching any more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum


class CommandError(ValueError):
    """A joint command that cannot be mapped onto the arm (names, lengths, NaN)."""


class GateState(Enum):
    IDLE = "idle"  # no command received yet: nothing is sent
    TRACKING = "tracking"  # fresh commands arrive: their (clamped) targets are sent
    HOLDING = "holding"  # commands stopped: the position at the timeout is held


def order_values(
    joint_names: Sequence[str], names: Sequence[str], values: Sequence[float]
) -> tuple[float, ...]:
    """Order a (names, values) command like the arm; empty ``names`` means arm order.

    Raises CommandError for unknown names, missing joints, wrong lengths or NaN/inf values.
    """
    if names:
        if len(names) != len(values):
            raise CommandError(f"{len(names)} names but {len(values)} values")
        by_name = dict(zip(names, values))
        unknown = sorted(set(by_name) - set(joint_names))
        if unknown:
            raise CommandError(f"unknown joint names {unknown}")
        missing = [n for n in joint_names if n not in by_name]
        if missing:
            raise CommandError(f"command lacks joints {missing}")
        ordered = tuple(float(by_name[n]) for n in joint_names)
    else:
        if len(values) != len(joint_names):
            raise CommandError(f"expected {len(joint_names)} values, got {len(values)}")
        ordered = tuple(float(v) for v in values)
    bad = [n for n, v in zip(joint_names, ordered) if not math.isfinite(v)]
    if bad:
        raise CommandError(f"non-finite value for joints {bad}")
    return ordered


@dataclass(frozen=True)
class GateConfig:
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]  # rad
    upper: tuple[float, ...]  # rad
    timeout_s: float = 0.25

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        if len(self.lower) != n or len(self.upper) != n:
            raise ValueError("joint_names, lower and upper limits must have the same length")
        if any(lo > hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError("a lower joint limit is above its upper limit")
        if self.timeout_s <= 0:
            raise ValueError("command timeout must be positive")


@dataclass
class GateCounters:
    accepted: int = 0
    clamped: int = 0
    rejected: int = 0
    holds: int = 0


@dataclass
class Decision:
    """What to send now: a target (rad, in joint order) or nothing; and why."""

    target: tuple[float, ...] | None
    state: GateState
    clamped: bool = False


@dataclass
class CommandGate:
    config: GateConfig
    counters: GateCounters = field(default_factory=GateCounters)
    state: GateState = GateState.IDLE
    _last_time: float | None = None
    _target: tuple[float, ...] | None = None

    def command(self, names: Sequence[str], positions: Sequence[float], now: float) -> Decision:
        """Accept a command at time ``now`` (monotonic s); invalid ones are counted and dropped."""
        try:
            values = order_values(self.config.joint_names, names, positions)
        except CommandError:
            self.counters.rejected += 1
            raise
        clamped = tuple(
            min(max(v, lo), hi) for v, lo, hi in zip(values, self.config.lower, self.config.upper)
        )
        was_clamped = clamped != values
        if was_clamped:
            self.counters.clamped += 1
        self.counters.accepted += 1
        self._last_time = now
        self._target = clamped
        self.state = GateState.TRACKING
        return Decision(clamped, self.state, was_clamped)

    def tick(self, now: float, measured: Sequence[float] | None) -> Decision | None:
        """Call periodically; returns a hold decision once when commands have gone stale.

        ``measured`` is the arm's current position: holding there (rather than at the last
        target) stops a move in progress.
        """
        if self.state is not GateState.TRACKING or self._last_time is None:
            return None
        if now - self._last_time <= self.config.timeout_s:
            return None
        self.state = GateState.HOLDING
        self.counters.holds += 1
        if measured is None:
            hold = self._target
        else:
            hold = tuple(
                min(max(float(v), lo), hi)
                for v, lo, hi in zip(measured, self.config.lower, self.config.upper)
            )
        self._target = hold
        return Decision(hold, self.state)


@dataclass
class ForceGate:
    """Force feedback (joint torques, N·m) for an arm in follow-me mode: finite, saturated, fresh.

    Stale feedback is worse than none, since a torque that was right 300 ms ago pushes the
    operator's hand against a wall that is no longer there: after ``timeout_s`` the torques go
    to zero (once), until fresh feedback arrives.
    """

    joint_names: tuple[str, ...]
    max_torque_nm: tuple[float, ...]
    timeout_s: float = 0.25
    rejected: int = 0
    saturated: int = 0
    _last_time: float | None = None

    def command(
        self, names: Sequence[str], efforts: Sequence[float], now: float
    ) -> tuple[float, ...]:
        """Validated, saturated torques in arm order; raises CommandError on bad input."""
        try:
            values = order_values(self.joint_names, names, efforts)
        except CommandError:
            self.rejected += 1
            raise
        out = tuple(min(max(v, -m), m) for v, m in zip(values, self.max_torque_nm))
        if out != values:
            self.saturated += 1
        self._last_time = now
        return out

    def tick(self, now: float) -> tuple[float, ...] | None:
        """Zero torques once when feedback has gone stale, else None."""
        if self._last_time is None or now - self._last_time <= self.timeout_s:
            return None
        self._last_time = None
        return tuple(0.0 for _ in self.joint_names)
