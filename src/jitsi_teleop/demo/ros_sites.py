"""The parent's view of the two ROS sites in ``demo --ros``: one rclpy context per ROS domain,
raw subscriptions that only keep (receive time, CDR bytes), the transports' ``/diagnostics``,
and the simulators' JSON-lines control ports.

Why raw: the parent shares two cores with eight ROS nodes, two simulators and Prosody; taking
the bytes in the callback and deserializing after the run keeps recording cheap.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ControlPort", "Diagnostics", "RawRecorder", "RosSite", "level_of"]

TRANSPORT = "jitsi_teleop transport: "


@dataclass
class RawRecorder:
    """Messages as they arrive: (CLOCK_MONOTONIC receive time in ns, CDR bytes)."""

    items: list[tuple[int, bytes]] = field(default_factory=list)

    def __call__(self, data: bytes) -> None:
        self.items.append((time.monotonic_ns(), data))


def level_of(level: Any) -> int:
    return int.from_bytes(level, "little") if isinstance(level, bytes) else int(level)


@dataclass
class Diagnostics:
    """The newest transport statuses of one site, by name without the ``jitsi_teleop
    transport: `` prefix (``link``, ``in /leader/joint_states``, ...), as key → value."""

    latest: dict[str, dict[str, str]] = field(default_factory=dict)
    messages: int = 0

    def __call__(self, arr: Any) -> None:
        self.messages += 1
        for st in arr.status:
            if st.name.startswith(TRANSPORT):
                d = {kv.key: kv.value for kv in st.values}
                d["message"] = st.message
                d["level"] = str(level_of(st.level))
                self.latest[st.name[len(TRANSPORT) :]] = d

    def link(self, key: str) -> str | None:
        return self.latest.get("link", {}).get(key)

    def topic(self, name: str, key: str) -> float | None:
        """A number of a topic's status (``name`` like ``in /leader/joint_states``)."""
        v = self.latest.get(name, {}).get(key)
        try:
            return float(v) if v not in (None, "") else None
        except ValueError:
            return None


class RosSite:
    """One ROS domain seen from this process: a node spun in a thread of its own."""

    def __init__(self, domain_id: int, name: str) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = domain_id
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(
            f"jitsi_teleop_demo_{name}",
            context=self.context,
            start_parameter_services=False,
            enable_rosout=False,
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics = Diagnostics()
        from diagnostic_msgs.msg import DiagnosticArray

        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics, 50)
        self._thread = threading.Thread(target=self._spin, name=f"ros-{name}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # shut down while waiting
                return

    def record(self, msg_type: Any, topic: str) -> RawRecorder:
        """Every message on ``topic``; best effort, so it matches any publisher's QoS."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        rec = RawRecorder()
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(msg_type, topic, rec, qos, raw=True)
        return rec

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(2.0)


class ControlPort:
    """One kept-open connection to a simulator's control port: a JSON line out, one back per
    request (the simulator answers every line, so replies are read to keep its writer from
    blocking)."""

    def __init__(self, port: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self.sock.makefile("rb")

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        line = self._file.readline()
        if not line:
            raise ConnectionError("the simulator closed its control port")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"simulator refused {msg.get('op')}: {reply.get('error')}")
        return reply

    def hand(self, target: Sequence[float]) -> dict[str, Any]:
        return self.request({"op": "hand", "target": [float(v) for v in target]})

    def close(self) -> None:
        try:
            self._file.close()
            self.sock.close()
        except OSError:
            pass
