"""The transport's start-up does not depend on when (or whether) the middleware lists the node's
own endpoints, nor on the graph having type hashes at all.

Cyclone DDS lists a node's own publisher a moment after creating it, and Humble's endpoint info
has no type hash: a transport that read its hashes back from the graph exited at start on both.
Here two transport nodes run in this process, each in its own ROS domain, joined through a
local Prosody: the leader's graph queries return nothing (late, never), the follower's return
Humble-shaped endpoint info (no ``topic_type_hash``). Both start, pair, and carry topics both
ways; neither reads the graph while it is being built.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rclpy
from geometry_msgs.msg import WrenchStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from jitsi_teleop.ros.transport_node import TransportNode
from jitsi_teleop.ros.type_hash import type_hash
from ros_sites import Site, make_key_file, site_domains, wait_for

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.ros, pytest.mark.timeout(150)]


@dataclass
class GraphShape:
    """What ``get_{publishers,subscriptions}_info_by_topic`` return for one node."""

    humble: bool  #: list own endpoints, without hash fields; else list nothing at all
    calls: list[str] = field(default_factory=list)

    def info(self, node: TransportNode, topic: str, kind: str) -> list[Any]:
        self.calls.append(topic)
        if not self.humble:
            return []
        # rclpy 3.3 (Humble) TopicEndpointInfo: these fields, no topic_type_hash
        return [
            SimpleNamespace(
                node_name=node.get_name(),
                node_namespace=node.get_namespace(),
                topic_type="",
                endpoint_type=kind,
                endpoint_gid=[0] * 16,
                qos_profile=None,
            )
        ]


class InProcessTransport:
    """A TransportNode in this process, spun by an executor thread of its own."""

    def __init__(self, role: str, domain: int, server: Any, room: str, key: Path) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        params = {
            "role": role,
            "domain": server.domain,
            "room_name": room,
            "websocket_url": server.websocket_url,
            "loopback_only": True,
            "stun_turn": False,
            "diagnostics_period": 0.5,
            "secret_file": str(key),
        }
        self.node = TransportNode(
            context=self.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shut down while waiting
                return

    def close(self) -> None:
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
        self._thread.join(2.0)


@pytest.fixture
def graphs(monkeypatch) -> Iterator[dict[str, GraphShape]]:
    shapes = {"leader": GraphShape(humble=False), "follower": GraphShape(humble=True)}

    def pubs(self: TransportNode, topic: str) -> list[Any]:
        return shapes[self.role].info(self, topic, "PUBLISHER")

    def subs(self: TransportNode, topic: str) -> list[Any]:
        return shapes[self.role].info(self, topic, "SUBSCRIPTION")

    monkeypatch.setattr(TransportNode, "get_publishers_info_by_topic", pubs)
    monkeypatch.setattr(TransportNode, "get_subscriptions_info_by_topic", subs)
    yield shapes


def test_starts_and_carries_topics_whatever_the_graph_reports(prosody, tmp_path, graphs):
    d_leader, d_follower = site_domains()
    key = make_key_file(tmp_path)
    room = f"startup{time.monotonic_ns() % 10**8}"
    made: list[Any] = []
    try:
        leader = InProcessTransport("leader", d_leader, prosody, room, key)
        made.append(leader)
        assert graphs["leader"].calls == []  # built without a single graph query
        follower = InProcessTransport("follower", d_follower, prosody, room, key)
        made.append(follower)
        assert graphs["follower"].calls == []
        # what each announces is the computed hash of the installed type
        hashes = {o.spec.ros_type: o.type_hash for o in leader.node.bridge.outgoing}
        assert hashes["sensor_msgs/msg/JointState"] == type_hash(JointState)

        site_l, site_f = Site(d_leader, "leader"), Site(d_follower, "follower")
        made += [site_l, site_f]
        got_f = site_f.record(JointState, "/leader/joint_states", 100)
        got_l = site_l.record(WrenchStamped, "/follower/teleop/feedback", 100)
        pub_js = site_l.publisher(JointState, "/joint_states", 10)
        pub_w = site_f.publisher(WrenchStamped, "/teleop/feedback", 10)

        def both_ways() -> bool:
            pub_js.publish(JointState(name=["j1"], position=[0.5]))
            pub_w.publish(WrenchStamped())
            time.sleep(0.05)
            return bool(got_f.items and got_l.items)

        wait_for(both_ways, 60, "joint states and wrenches crossing both ways")

        # the background cross-check: the follower saw Humble-shaped info and gave up on
        # hashes quietly; the leader's graph listed nothing and it is still just waiting
        wait_for(lambda: follower.node._hash_check.done, 20, "the follower's graph check")
        assert follower.node._hash_check.unavailable
        assert follower.node._hash_check.mismatches == []
        # it did look, later, in the background (a timer, once a second)
        wait_for(lambda: bool(graphs["leader"].calls), 20, "the leader's graph check")
        assert not leader.node._hash_check.unavailable
        assert leader.node._hash_check.mismatches == []
    finally:
        for m in reversed(made):
            m.close()
