"""Distro differences where they are used (jitsi_teleop.ros.distro), fed the shapes of each
distro's API: Humble's TopicEndpointInfo has no ``topic_type_hash``; Iron and later have it,
``INVALID`` when the RMW left it unset; the RMW may list our own endpoints late or never."""

from __future__ import annotations

import pytest

from jitsi_teleop.ros.distro import (
    Endpoint,
    GraphHashCheck,
    endpoint_type_hash,
    graph_has_type_hashes,
)

H1 = "RIHS01_" + "1" * 64
H2 = "RIHS01_" + "2" * 64
NODE = ("jitsi_teleop_transport", "/")


class HumbleTopicEndpointInfo:
    """rclpy 3.3's endpoint info: these properties and no type hash."""

    def __init__(self, node_name: str, node_namespace: str) -> None:
        self.node_name, self.node_namespace = node_name, node_namespace
        self.topic_type = "sensor_msgs/msg/JointState"
        self.endpoint_type = "PUBLISHER"
        self.endpoint_gid = [0] * 16
        self.qos_profile = None


class _Info(HumbleTopicEndpointInfo):
    """Iron and later: plus topic_type_hash, a TypeHash whose str() is RIHS01_... or INVALID."""

    def __init__(self, node: tuple[str, str], hash_text: str) -> None:
        super().__init__(*node)
        self.topic_type_hash = _TypeHash(hash_text)


class _TypeHash:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def check(*endpoints: Endpoint) -> GraphHashCheck:
    return GraphHashCheck(list(endpoints), *NODE, deadline_polls=5)


def test_humble_endpoint_info_has_no_hash_and_the_check_says_so_quietly():
    assert endpoint_type_hash(HumbleTopicEndpointInfo(*NODE)) is None
    assert not graph_has_type_hashes(HumbleTopicEndpointInfo)
    c = check(Endpoint("/joint_states", False, H1), Endpoint("/leader/x", True, H2))
    graph = lambda topic: [HumbleTopicEndpointInfo(*NODE)]  # noqa: E731
    assert c.poll(graph, graph) == []
    assert c.done and c.unavailable and c.mismatches == []


@pytest.mark.ros
def test_this_rclpy_has_hashes_in_the_graph():
    """The wheels under test are Jazzy or Kilted (Iron and later)."""
    assert graph_has_type_hashes()


def test_endpoints_listed_late_are_checked_when_they_appear():
    c = check(Endpoint("/joint_states", False, H1))
    nothing = lambda topic: []  # noqa: E731
    for _ in range(3):
        assert c.poll(nothing, nothing) == []
        assert not c.done
    other_node = lambda topic: [_Info(("someone_else", "/"), H2)]  # noqa: E731
    assert c.poll(nothing, other_node) == [] and not c.done  # not ours: still waiting
    ours = lambda topic: [_Info(NODE, H1)]  # noqa: E731
    assert c.poll(nothing, ours) == []
    assert c.done and not c.unavailable and c.mismatches == []


def test_endpoints_never_listed_are_given_up_without_a_complaint():
    c = check(Endpoint("/joint_states", False, H1))
    nothing = lambda topic: []  # noqa: E731
    for _ in range(5):
        assert c.poll(nothing, nothing) == []
    assert c.done and c.mismatches == [] and not c.unavailable


def test_a_hash_that_differs_from_the_middlewares_is_reported_naming_the_topic():
    c = check(Endpoint("/leader/joint_states", True, H1))
    graph = lambda topic: [_Info(NODE, H2)]  # noqa: E731
    (text,) = c.poll(graph, lambda topic: [])
    assert "/leader/joint_states" in text and H1 in text and H2 in text
    assert c.done and c.mismatches == [text]


def test_an_unset_hash_counts_as_none():
    assert endpoint_type_hash(_Info(NODE, "INVALID")) is None
    assert endpoint_type_hash(_Info(NODE, H1)) == H1
