"""The demo's script: where the operator's hand goes, when, and where the obstacle is.

It is :func:`jitsi_teleop.teleop.loop.contact_scenario` (same start pose, table 2 cm below the
start tip, hand aiming 3 cm into it, minimum-jerk hand path, same wall) with a free-space reach
in front, stretched to the requested duration, so the deterministic offline loop and the live
demo exercise the same motion. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dexter_driver import kinematics
from dexter_driver.sim import Wall
from jitsi_teleop.teleop.loop import Q0, hand_target

__all__ = [
    "BASE_DURATION_S",
    "MIN_DURATION_S",
    "Phase",
    "Scenario",
    "build_scenario",
]

BASE_DURATION_S = 20.0  #: the knot times below are for a run of this length; others scale
MIN_DURATION_S = 6.0  #: shorter runs would move the hand faster than the follower may follow
TABLE_DROP_M = 0.02  #: the table surface is this far below the start tip (as contact_scenario)
PRESS_DEPTH_M = 0.03  #: the hand aims this far into the table
WALL_STIFFNESS = 20000.0  #: N/m, as contact_scenario
WALL_DAMPING = 20.0  #: N·s/m


@dataclass(frozen=True)
class Phase:
    """A named stretch of the script, [start, end) seconds from the start of the run."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Scenario:
    """One run's hand path (knots, minimum-jerk between them), phases and obstacle."""

    duration_s: float
    script: tuple[tuple[float, tuple[float, float, float]], ...]
    phases: tuple[Phase, ...]
    wall: Wall  #: placed at the FOLLOWER's simulator: the leader meets it only through feedback
    q0: tuple[float, ...] = Q0

    def hand(self, t: float) -> tuple[float, float, float]:
        """Where the operator's hand holds the leader's tool tip at ``t`` (base frame, m)."""
        p = hand_target(self.script, t)
        return (float(p[0]), float(p[1]), float(p[2]))

    def phase_at(self, t: float) -> str:
        for ph in self.phases:
            if ph.start <= t < ph.end:
                return ph.name
        return self.phases[-1].name if t >= self.phases[-1].end else self.phases[0].name

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    @property
    def contact_window(self) -> tuple[float, float]:
        """From the descent onto the table to the end of the retreat: the follower is blocked
        (or just released) while the leader is not, so their tips differ by design here."""
        return self.phase("contact").start, self.phase("retreat").end

    def outside_contact(self, t: Sequence[float] | NDArray[np.float64]) -> NDArray[np.bool_]:
        ta = np.asarray(t, dtype=float)
        a, b = self.contact_window
        return (ta < a) | (ta >= b)


def build_scenario(duration_s: float = BASE_DURATION_S) -> Scenario:
    """Settle, reach (10 cm forward, 6 cm up, sideways, back: all above the table), descend
    onto the table and press, hold, retreat, rest; knot times scaled by
    ``duration_s / BASE_DURATION_S``."""
    if not duration_s >= MIN_DURATION_S:
        raise ValueError(f"duration must be at least {MIN_DURATION_S:g} s")
    k = duration_s / BASE_DURATION_S
    x, y, z = (float(v) for v in kinematics.tool_position(Q0))
    table_z = z - TABLE_DROP_M
    above = (x, y, z)
    press = (x, y, table_z - PRESS_DEPTH_M)
    knots = [
        (1.0, above),
        (2.5, (x, y + 0.10, z)),
        (4.0, (x, y + 0.10, z + 0.06)),
        (5.5, (x + 0.10, y + 0.05, z + 0.03)),
        (7.0, above),
        (8.5, press),
        (13.5, press),
        (15.0, above),
    ]
    bounds = [
        ("settle", 0.0, 1.0),
        ("reach", 1.0, 7.0),
        ("contact", 7.0, 13.5),
        ("retreat", 13.5, 15.0),
        ("rest", 15.0, BASE_DURATION_S),
    ]
    return Scenario(
        duration_s=float(duration_s),
        script=tuple((t * k, p) for t, p in knots),
        phases=tuple(Phase(n, a * k, b * k) for n, a, b in bounds),
        wall=Wall((0.0, 0.0, 1.0), table_z, WALL_STIFFNESS, WALL_DAMPING),
    )
