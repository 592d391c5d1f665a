"""The demo's session payloads: real ROS 2 messages in CDR, as the transport node carries them.

Leader → follower: ``/joint_states`` (sensor_msgs/JointState, the leader driver's output) and
``/teleop/energy`` (std_msgs/Float64, the leader port's e_in); follower → leader:
``/teleop/feedback`` (geometry_msgs/WrenchStamped, the contact force) and ``/teleop/energy``.
These are the topics the teleop node publishes and subscribes, so the demo's wire traffic is
what a two-site ROS deployment sends. rclpy serializes without ``rclpy.init``.

Type hashes are computed from the message classes (:mod:`jitsi_teleop.ros.type_hash`), the
values the middleware reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jitsi_teleop.wire import StreamDescriptor

__all__ = [
    "JOINT_NAMES",
    "ROS_TYPES",
    "Streams",
    "decode_energy",
    "decode_joint_state",
    "decode_wrench",
    "encode_energy",
    "encode_joint_state",
    "encode_wrench",
    "type_hashes",
]

JOINT_NAMES = ("j1", "j2", "j3", "j4", "j5")  #: the driver's default ``joint_names``
JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64 = "std_msgs/msg/Float64"
WRENCH = "geometry_msgs/msg/WrenchStamped"
ROS_TYPES = (JOINT_STATE, FLOAT64, WRENCH)

SID_JOINT_STATES, SID_LEADER_ENERGY = 1, 2  #: leader → follower
SID_FEEDBACK, SID_FOLLOWER_ENERGY = 3, 4  #: follower → leader
MAX_AGE_S = 0.5  #: staleness bound of every state stream (the session drops older samples)


class Streams:
    """The descriptors each end sends (``leader``, ``follower``) for the given type hashes."""

    def __init__(self, hashes: dict[str, str], rate_hz: float) -> None:
        def d(sid: int, topic: str, ros_type: str) -> StreamDescriptor:
            return StreamDescriptor(
                sid, topic, ros_type, hashes[ros_type], "latest", rate_hz, MAX_AGE_S
            )

        self.leader = [
            d(SID_JOINT_STATES, "/joint_states", JOINT_STATE),
            d(SID_LEADER_ENERGY, "/teleop/energy", FLOAT64),
        ]
        self.follower = [
            d(SID_FEEDBACK, "/teleop/feedback", WRENCH),
            d(SID_FOLLOWER_ENERGY, "/teleop/energy", FLOAT64),
        ]

    def sends(self, role: str) -> list[StreamDescriptor]:
        return self.leader if role == "leader" else self.follower

    def expects(self, role: str) -> list[StreamDescriptor]:
        return self.follower if role == "leader" else self.leader


# ---------------------------------------------------------------------------- type hashes


def type_hashes(ros_types: Sequence[str] = ROS_TYPES) -> dict[str, str]:
    """``{ros_type: "RIHS01_..."}`` for the demo's message types, computed from the installed
    message classes as the transport node does (no graph, no share/ files needed)."""
    from jitsi_teleop.ros.type_hash import type_hash

    return {t: type_hash(t) for t in ros_types}


# ---------------------------------------------------------------------------- payloads


def _stamp(msg: Any, seconds: float) -> None:
    ns = round(seconds * 1e9)
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000


def _seconds(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def encode_joint_state(stamp: float, q: Sequence[float], effort: Sequence[float] = ()) -> bytes:
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    msg = JointState()
    _stamp(msg, stamp)
    msg.header.frame_id = "base_link"
    msg.name = list(JOINT_NAMES)
    msg.position = [float(v) for v in q]
    msg.effort = [float(v) for v in effort]
    return serialize_message(msg)


def decode_joint_state(cdr: bytes) -> tuple[float, tuple[float, ...]] | None:
    """(stamp, J1..J5 by name); None when the message does not name every joint."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    msg = deserialize_message(cdr, JointState)
    index = {n: i for i, n in enumerate(msg.name)}
    if any(n not in index for n in JOINT_NAMES) or len(msg.position) < len(msg.name):
        return None
    return _seconds(msg), tuple(float(msg.position[index[n]]) for n in JOINT_NAMES)


def encode_energy(value: float) -> bytes:
    from rclpy.serialization import serialize_message
    from std_msgs.msg import Float64

    return serialize_message(Float64(data=float(value)))


def decode_energy(cdr: bytes) -> float:
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Float64

    return float(deserialize_message(cdr, Float64).data)


def encode_wrench(stamp: float, force: Sequence[float]) -> bytes:
    from geometry_msgs.msg import WrenchStamped
    from rclpy.serialization import serialize_message

    msg = WrenchStamped()
    _stamp(msg, stamp)
    msg.header.frame_id = "base_link"
    msg.wrench.force.x, msg.wrench.force.y, msg.wrench.force.z = (float(v) for v in force)
    return serialize_message(msg)


def decode_wrench(cdr: bytes) -> tuple[float, tuple[float, float, float]]:
    from geometry_msgs.msg import WrenchStamped
    from rclpy.serialization import deserialize_message

    msg = deserialize_message(cdr, WrenchStamped)
    f = msg.wrench.force
    return _seconds(msg), (float(f.x), float(f.y), float(f.z))
