"""The parent's view of the two ROS sites in ``demo --ros``: one rclpy context per ROS domain,
raw subscriptions that only keep (receive time, CDR bytes), the transports' ``/diagnostics``,
and the simulators' JSON-lines control ports.

Why raw: the parent shares two cores with eight ROS nodes, two simulators and Prosody; taking
the bytes in the callback and deserializing after the run keeps recording cheap.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ros.site_graph import RawRecorder, SiteGraph

__all__ = ["ControlPort", "Diagnostics", "RawRecorder", "RosSite", "level_of"]

TRANSPORT = "jitsi_teleop transport: "


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


class RosSite(SiteGraph):
    """One site's ROS domain, with its transport's diagnostics kept up to date."""

    def __init__(self, domain_id: int, name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        super().__init__(domain_id, f"jitsi_teleop_demo_{name}")
        self.diagnostics = Diagnostics()
        self.subscribe(DiagnosticArray, "/diagnostics", self.diagnostics, 50)


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
