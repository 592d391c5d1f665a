"""The live status while the demo runs: a small block redrawn in place on a terminal, or one
plain line a second when stdout is a pipe or a file (logs stay readable)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["LiveStatus", "StatusSnapshot"]


@dataclass
class StatusSnapshot:
    """The newest status line of each site (their dicts, as the site processes say them)."""

    leader: dict[str, Any] = field(default_factory=dict)
    follower: dict[str, Any] = field(default_factory=dict)

    def tracking_error_mm(self) -> float | None:
        a, b = self.leader.get("tip"), self.follower.get("tip")
        if not a or not b:
            return None
        return 1e3 * math.dist(a, b)


def _f(value: Any, fmt: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "  –"
    return f"{value:{fmt}}{unit}"


class LiveStatus:
    """``update`` with a snapshot as often as statuses arrive; it draws at most ``hz``."""

    def __init__(self, duration_s: float, out: TextIO | None = None, hz: float = 4.0) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.duration_s = duration_s
        self.period = 1.0 / hz if self.tty else 1.0
        self._last = 0.0
        self._drawn = 0

    def lines(self, s: StatusSnapshot) -> list[str]:
        lead, fol = s.leader, s.follower
        t = lead.get("t", fol.get("t", 0.0))
        return [
            f"t {_f(t, '5.1f')} / {self.duration_s:.0f} s   phase {lead.get('phase', '–'):8}"
            f"  path leader {lead.get('path', '–')} / follower {fol.get('path', '–')}"
            + (f"  ({fol['route']})" if fol.get("route", "-") != "-" else ""),
            f"  leader→follower {_f(fol.get('rx_hz'), '5.0f', ' msg/s')}"
            f"  latency {_f(fol.get('latency_ms'), '5.1f', ' ms')}"
            f"  age {_f(fol.get('age_ms'), '5.1f', ' ms')}",
            f"  follower→leader {_f(lead.get('rx_hz'), '5.0f', ' msg/s')}"
            f"  latency {_f(lead.get('latency_ms'), '5.1f', ' ms')}"
            f"  age {_f(lead.get('age_ms'), '5.1f', ' ms')}",
            f"  tracking error {_f(s.tracking_error_mm(), '5.1f', ' mm')}"
            f"  force at follower {_f(fol.get('force'), '5.1f', ' N')}"
            f"  rendered at leader {_f(lead.get('force'), '5.1f', ' N')}",
            f"  refused from the room: leader {lead.get('refused', 0)}"
            f" / follower {fol.get('refused', 0)}"
            f" (impostors: {lead.get('unproven', 0)} / {fol.get('unproven', 0)})",
        ]

    def update(self, s: StatusSnapshot, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.period:
            return
        self._last = now
        lines = self.lines(s)
        if self.tty:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            self.out.write(" |".join(line.strip() for line in lines) + "\n")
        self.out.flush()
