"""What a site looks like to the console, and the events its changes make (pure).

The ROS adapter fills a :class:`SiteView` from the bridge's status, the room's occupants and
the local nodes' diagnostics; ``status``/``who`` are rendered from it, and
:class:`EventWatcher` turns the difference between two views into event-log rows (pairing,
path switches with their detection time, holds, e-stops, refusals), so the log records edges,
not samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .eventlog import EventLog


@dataclass(frozen=True)
class PeerView:
    nick: str
    role: str
    robot: str


@dataclass(frozen=True)
class SiteView:
    role: str
    robot: str = ""
    room_connected: bool = False
    paired: bool = False
    peer: str = ""
    path: str = "none"
    rtt_ms: float | None = None
    #: age of the newest sample received from the peer (ms), any stream
    age_ms: float | None = None
    failovers: int = 0
    last_detection_s: float | None = None
    #: the local robot driver's diagnostics message ('' = none seen)
    robot_status: str = ""
    robot_ok: bool | None = None
    #: the local teleop node's state: tracking, holding, estop, rendering ... ('' = unknown)
    teleop_state: str = ""
    teleop_message: str = ""
    refusals: tuple[str, ...] = ()
    peers: tuple[PeerView, ...] = field(default_factory=tuple)


def _ms(v: float | None) -> str:
    return "?" if v is None else f"{v:.1f} ms"


def status_text(v: SiteView) -> str:
    """One compact paragraph: what a person in the meeting needs to decide whether to act."""
    parts = [f"{v.role}" + (f" ({v.robot})" if v.robot else "")]
    if not v.room_connected:
        parts.append("room: reconnecting")
    if v.paired:
        parts.append(f"paired with {v.peer or '?'}")
        parts.append(f"path {v.path}, rtt {_ms(v.rtt_ms)}, newest data {_ms(v.age_ms)} old")
    else:
        parts.append("not paired (waiting for the peer)")
    if v.failovers:
        det = "" if v.last_detection_s is None else f", last detected in {v.last_detection_s:.2f} s"
        parts.append(f"{v.failovers} failovers{det}")
    if v.robot_ok is None:
        parts.append("robot: no driver seen")
    else:
        parts.append(f"robot: {'connected' if v.robot_ok else 'NOT connected'}")
    if v.teleop_state:
        state = v.teleop_state
        if state == "estop":
            parts.append(f"E-STOPPED ({v.teleop_message})")
        elif state in ("holding", "hold"):
            parts.append(f"holding ({v.teleop_message})")
        else:
            parts.append(state)
    if v.refusals:
        parts.append("last refusals: " + "; ".join(v.refusals[-3:]))
    return "; ".join(parts)


def who_text(v: SiteView) -> str:
    me = f"me: {v.role}" + (f" robot {v.robot}" if v.robot else "") + f", path {v.path}"
    others = [f"{p.nick}: {p.role}" + (f" robot {p.robot}" if p.robot else "") for p in v.peers]
    return me + ("; " + "; ".join(others) if others else "; no other site in the room")


def starts_moving(old: SiteView | None, new: SiteView) -> bool:
    """The follower begins to track the leader (from idle, a hold or after a reset): the moment
    for an audible warning at the robot's site."""
    was = old.teleop_state if old is not None else ""
    return new.role == "follower" and new.teleop_state == "tracking" and was != "tracking"


class EventWatcher:
    """Feed it views; it logs what changed."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._last: SiteView | None = None
        self._refusals: set[str] = set()

    def update(self, v: SiteView) -> bool:
        """Log what changed; True when the follower just started moving (see starts_moving)."""
        old = self._last
        self._last = v
        log = self.log
        if old is None or old.paired != v.paired:
            if v.paired:
                log.add("pairing", f"paired with {v.peer}", detail={"peer": v.peer})
            elif old is not None:
                log.add("pairing", f"lost the pairing with {old.peer}", detail={"peer": old.peer})
        if old is not None and old.path != v.path and v.paired:
            detail: dict[str, object] = {"from": old.path, "to": v.path}
            text = f"path {old.path} -> {v.path}"
            if v.failovers > old.failovers and v.last_detection_s is not None:
                detail["detection_s"] = round(v.last_detection_s, 3)
                text += f" (detected in {v.last_detection_s:.3f} s)"
            log.add("path", text, detail=detail)
        old_state = old.teleop_state if old is not None else ""
        if v.teleop_state != old_state and v.teleop_state:
            if v.teleop_state == "estop":
                log.add("estop", f"e-stopped: {v.teleop_message}", detail={"from": old_state})
            elif v.teleop_state in ("holding", "hold"):
                log.add("hold", f"holding: {v.teleop_message}", detail={"from": old_state})
            elif old_state in ("holding", "hold", "estop"):
                log.add("hold", f"{v.teleop_state} again", detail={"from": old_state})
        for r in v.refusals:
            if r not in self._refusals:
                self._refusals.add(r)
                log.add("refusal", r)
        return starts_moving(old, v)
