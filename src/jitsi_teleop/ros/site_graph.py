"""One ROS domain seen from a process that watches several: a context, a node and a spinning
thread of its own per domain, and raw recorders that keep (receive time, CDR bytes).

Why: the demo's parent and the tests look at two sites that live in two ROS domains (as two
real sites would), from one process. Recording raw bytes keeps callbacks cheap on a machine the
sites already load; messages are deserialized afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

#: matches any publisher's QoS and never holds the publisher back
BEST_EFFORT = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)


@dataclass
class RawRecorder:
    """Messages as they arrive: (CLOCK_MONOTONIC receive time in ns, CDR bytes)."""

    items: list[tuple[int, bytes]] = field(default_factory=list)

    def __call__(self, data: bytes) -> None:
        self.items.append((time.monotonic_ns(), data))

    @property
    def payloads(self) -> list[bytes]:
        return [d for _, d in self.items]


class SiteGraph:
    """A node in ROS domain ``domain_id``, spun in a daemon thread until :meth:`close`."""

    def __init__(self, domain_id: int, name: str) -> None:
        self.domain_id = domain_id
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(
            name, context=self.context, start_parameter_services=False, enable_rosout=False
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"ros-{name}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shut down while waiting
                return

    def publisher(self, msg_type: Any, topic: str, qos: QoSProfile | int = 10) -> Any:
        return self.node.create_publisher(msg_type, topic, qos)

    def subscribe(
        self, msg_type: Any, topic: str, callback: Callable[[Any], None], qos: QoSProfile | int
    ) -> None:
        self.node.create_subscription(msg_type, topic, callback, qos)

    def record(self, msg_type: Any, topic: str, qos: QoSProfile | int = BEST_EFFORT) -> RawRecorder:
        rec = RawRecorder()
        self.node.create_subscription(msg_type, topic, rec, qos, raw=True)
        return rec

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(2.0)
