"""The console inside the transport node: parameters, ROS topics, and the site's view.

Thin on purpose: the grammar, permissions, rate limits and event log are in
:mod:`jitsi_teleop.console` (pure, tested without ROS); this module gives them a site to act
on. ``estop`` publishes ``teleop/estop`` (std_msgs/Bool True, reliable, transient local) at
this site: the follower's teleop node latches it, and at the leader's site the transport's own
subscription carries it across to the follower like the operator's e-stop. Notes go out on
``console/notes`` (std_msgs/String) so ``ros2 bag record`` keeps them next to the data. The
local teleop node's and driver's ``/diagnostics`` say whether the robot is connected, holding
or e-stopped.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from jitsi_teleop.bridge.core import Bridge, BridgeStatus
from jitsi_teleop.console.chat import ChatConsole
from jitsi_teleop.console.chime import audio_output, chime
from jitsi_teleop.console.commands import PermissionError_, Permissions
from jitsi_teleop.console.console import Console, ConsoleConfig
from jitsi_teleop.console.eventlog import EventLog, EventLogError
from jitsi_teleop.console.site import EventWatcher, PeerView, SiteView, status_text, who_text
from jitsi_teleop.session import PATH_MUC

ESTOP_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
NOTES_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


class ConsoleSetupError(ValueError):
    """A console parameter is wrong; the message names it."""


def default_event_log(role: str) -> str:
    home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    return os.path.join(home, "jitsi_teleop", f"events-{role}.sqlite")


class ConsoleAdapter:
    """Owned by the transport node; ``attach`` once the bridge is in the room (asyncio
    thread), ``tick`` with every status, ``close`` at shutdown."""

    def __init__(self, node: Node, role: str, robot: str) -> None:
        self.node = node
        self.role = role
        self.robot = robot
        p = self._declare(node, role)
        self.enabled: bool = p["console"]
        self.chime_on_start: bool = p["chime_on_start"]
        self._chime_unavailable_logged = False
        try:
            permissions = Permissions.parse(p["console_permissions"])
        except PermissionError_ as e:
            raise ConsoleSetupError(f"console_permissions: {e}") from None
        path = p["event_log"] or default_event_log(role)
        try:
            self.log = EventLog(path)
        except (EventLogError, OSError) as e:
            if p["event_log"]:  # asked for this file: a clear error, not a silent default
                raise ConsoleSetupError(f"event_log: {e}") from None
            node.get_logger().warning(f"event log {path}: {e}; keeping events in memory")
            self.log = EventLog(":memory:")
        names = tuple(n for n in (p["console_name"], role, robot) if n)
        self.console = Console(
            ConsoleConfig(names=names, site=names[0], permissions=permissions), self.log, self
        )
        self.watcher = EventWatcher(self.log)
        self._pub_estop = node.create_publisher(Bool, "teleop/estop", ESTOP_QOS)
        self._pub_note = node.create_publisher(String, "console/notes", NOTES_QOS)
        self._diag_lock = threading.Lock()
        self._teleop: tuple[str, str] = ("", "")
        self._robot: tuple[bool | None, str] = (None, "")
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 20)
        self._bridge: Bridge | None = None
        self._chat: ChatConsole | None = None
        self._view = SiteView(role=role, robot=robot)
        self.log.add("start", f"{role} started", detail={"robot": robot})

    @staticmethod
    def _declare(node: Node, role: str) -> dict[str, Any]:
        spec: dict[str, tuple[Any, str]] = {
            "console": (True, "answer console commands in the meeting's chat"),
            "console_name": (
                "",
                "what the console answers to in group chat besides its role and robot name "
                "(`NAME: status`, `@NAME status`; `!status` reaches every site)",
            ),
            "console_permissions": (
                "",
                "who may use which command, e.g. 'note=moderators,alice@example.org; "
                "chime=anyone' (defaults: help, status, who, estop anyone; note, log, chime "
                "moderators)",
            ),
            "event_log": ("", "SQLite event log file (default ~/.ros/jitsi_teleop/events-ROLE)"),
            "chime_on_start": (
                role == "follower",
                "chime at this site when the follower starts to track the leader (if the "
                "machine has audio)",
            ),
        }
        out = {}
        for name, (default, text) in spec.items():
            desc = ParameterDescriptor(description=text, read_only=True)
            out[name] = node.declare_parameter(name, default, desc).value
        return out

    # ------------------------------------------------------------ lifecycle (asyncio) ---
    def attach(self, bridge: Bridge) -> None:
        self._bridge = bridge
        if not self.enabled or bridge.room is None or self._chat is not None:
            return
        session = bridge.session

        def busy() -> bool:  # the room carries frames: replies wait
            return session is not None and session.paired and session.path == PATH_MUC

        self._chat = ChatConsole(bridge.room, self.console, busy)
        self._chat.start()

    def tick(self, status: BridgeStatus | None) -> None:
        if status is None:
            return
        try:
            self._view = view = self._site_view(status)
            if self.watcher.update(view) and self.chime_on_start:
                self._chime_before_moving()
        except Exception as e:  # the console must never take the transport down
            self.node.get_logger().error(f"console: {e}")

    async def aclose(self) -> None:
        if self._chat is not None:
            await self._chat.close()

    def close(self) -> None:
        self.log.close()

    # ------------------------------------------------------------ the site's view ------
    def _on_diagnostics(self, arr: DiagnosticArray) -> None:
        for st in arr.status:
            if ": teleop " in st.name:
                values = {kv.key: kv.value for kv in st.values}
                with self._diag_lock:
                    self._teleop = (values.get("state", ""), st.message)
            elif ": Dexter " in st.name:
                level = (
                    int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else st.level
                )
                with self._diag_lock:
                    self._robot = (level != DiagnosticStatus.ERROR, st.message)

    def _site_view(self, status: BridgeStatus) -> SiteView:
        s = status.session
        ages = [
            t.stream.newest_age_us
            for t in status.topics
            if t.direction == "in" and t.stream is not None and t.stream.newest_age_us is not None
        ]
        rtt = s.rtt_us.get(s.path)
        room = self._bridge.room if self._bridge is not None else None
        peers = tuple(
            PeerView(o.nick, o.teleop.role, o.teleop.robot)
            for o in (room.peers if room is not None else [])
            if o.teleop is not None
        )
        with self._diag_lock:
            teleop, robot = self._teleop, self._robot
        return SiteView(
            role=self.role,
            robot=self.robot,
            room_connected=status.room_connected,
            paired=s.paired,
            peer=s.peer or "",
            path=s.path,
            rtt_ms=None if rtt is None else rtt / 1000,
            age_ms=min(ages) / 1000 if ages else None,
            failovers=s.failovers,
            last_detection_s=s.last_detection_s,
            robot_ok=robot[0],
            robot_status=robot[1],
            teleop_state=teleop[0],
            teleop_message=teleop[1],
            refusals=tuple(s.problems) + tuple(f"peer refused: {r}" for r in s.peer_refusals),
            peers=peers,
        )

    def _chime_before_moving(self) -> None:
        text = self.chime("this site")
        if text == "chiming" or not self._chime_unavailable_logged:
            self._chime_unavailable_logged = True
            self.log.add("chime", f"teleoperation starts: {text}")

    # ------------------------------------------------------------ SiteActions ----------
    def status_text(self) -> str:
        return status_text(self._view)

    def who_text(self) -> str:
        return who_text(self._view)

    def estop(self, actor: str) -> str:
        self._pub_estop.publish(Bool(data=True))
        self.node.get_logger().warning(f"e-stop from the chat console by {actor}")
        if self.role == "follower":
            return "e-stop: the follower is stopped (latched; cleared only here with ~/reset)"
        v = self._view
        where = f"over {v.path}" if v.paired else "as soon as the follower pairs"
        return f"e-stop sent to the follower {where} (latched; cleared only at the robot)"

    def note(self, actor: str, text: str) -> None:
        self._pub_note.publish(String(data=f"{actor}: {text}"))

    def chime(self, actor: str) -> str:
        if audio_output() is None:
            return "chime unavailable: this site has no audio output"
        # played in a thread of its own: the asyncio thread carries the teleoperation frames
        threading.Thread(target=chime, name="chime", daemon=True).start()
        return "chiming"
