"""RIHS01 type hashes computed in Python (jitsi_teleop.ros.type_hash) against the middleware's.

The transport announces these hashes to the peer, which refuses a topic whose hash differs
from its own; they must be exactly what ``ros2 topic info -v`` shows, for every type a user may
carry. The check runs on whichever ROS wheels the venv has (Jazzy and Kilted in CI).
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rosidl_parser import definition as idl

from jitsi_teleop.bridge.topics import load_topics
from jitsi_teleop.ros.distro import endpoint_type_hash
from jitsi_teleop.ros.type_hash import TypeHashError, message_class, type_description, type_hash
from ros_sites import site_domains

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[1]
COMMON_PACKAGES = ("std_msgs", "geometry_msgs", "sensor_msgs", "trajectory_msgs", "diagnostic_msgs")


def common_types() -> list[str]:
    """Every message of the common packages and of the default topic file."""
    names = {t.ros_type for t in load_topics(str(ROOT / "config" / "teleop_topics.yaml")).topics}
    for pkg in COMMON_PACKAGES:
        mod = importlib.import_module(f"{pkg}.msg")
        for name, cls in vars(mod).items():
            if inspect.isclass(cls) and hasattr(cls, "SLOT_TYPES"):
                names.add(f"{pkg}/msg/{name}")
    return sorted(names)


def test_computed_hashes_equal_what_the_middleware_reports():
    """One publisher per type on a live node; the graph's hash of each equals ours."""
    types = common_types()
    assert len(types) > 90  # the five packages really were enumerated
    ctx = Context()
    rclpy.init(context=ctx, domain_id=site_domains()[0])
    try:
        node = rclpy.create_node(
            "type_hash_check", context=ctx, start_parameter_services=False, enable_rosout=False
        )
        topics = {}
        for i, t in enumerate(types):
            cls = message_class(t)
            node.create_publisher(cls, f"~/t{i}", 1)
            topics[t] = node.resolve_topic_name(f"~/t{i}")
        reported: dict[str, str | None] = {}
        deadline = time.monotonic() + 60
        while len(reported) < len(types) and time.monotonic() < deadline:
            for t, topic in topics.items():
                if t not in reported:
                    infos = node.get_publishers_info_by_topic(topic)
                    if infos:
                        reported[t] = endpoint_type_hash(infos[0])
            time.sleep(0.05)
        assert len(reported) == len(types), "the middleware never listed some publishers"
        wrong = {t: (type_hash(t), h) for t, h in reported.items() if type_hash(t) != h}
        assert not wrong, f"computed != middleware for {len(wrong)} types: {wrong}"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_every_wheel_set_gives_the_same_hashes():
    """The hashes of the common types, recorded from the Jazzy wheels (where the test above
    shows them equal to the middleware's), are what this distro computes too: a site on one
    distro can carry these types to a site on the other. A definition that changes in a new
    release shows up here by name."""
    recorded = json.loads((ROOT / "test" / "fixtures" / "rihs01_common.json").read_text())
    types = common_types()
    assert sorted(recorded) == types
    changed = {t: (recorded[t], type_hash(t)) for t in types if type_hash(t) != recorded[t]}
    assert not changed, f"definitions differ from the recorded ones: {sorted(changed)}"


def test_the_description_follows_rosidl_field_types():
    """Bounds, arrays, nested and empty types as rosidl describes them (FieldType ids)."""
    d = type_description("sensor_msgs/msg/CameraInfo")
    fields = {f["name"]: f["type"] for f in d["type_description"]["fields"]}
    assert fields["d"] == {
        "type_id": 155,
        "capacity": 0,
        "string_capacity": 0,
        "nested_type_name": "",
    }  # float64[]
    assert fields["k"] == {
        "type_id": 59,
        "capacity": 9,
        "string_capacity": 0,
        "nested_type_name": "",
    }  # float64[9]
    assert fields["header"]["nested_type_name"] == "std_msgs/msg/Header"
    refs = [r["type_name"] for r in d["referenced_type_descriptions"]]
    assert refs == sorted(refs) and len(set(refs)) == len(refs)
    assert refs == [
        "builtin_interfaces/msg/Time",
        "sensor_msgs/msg/RegionOfInterest",
        "std_msgs/msg/Header",
    ]
    empty = type_description("std_msgs/msg/Empty")["type_description"]["fields"]
    assert [f["name"] for f in empty] == ["structure_needs_at_least_one_member"]
    assert empty[0]["type"]["type_id"] == 3  # uint8


class _Bounded:
    """A generated-class look-alike with the field kinds the common packages lack."""

    __module__ = "jt_fake_msgs.msg._bounded"
    SLOT_TYPES = (
        idl.BoundedString(16),
        idl.BoundedSequence(idl.BasicType("int32"), 5),
        idl.UnboundedSequence(idl.BoundedString(8)),
        idl.Array(idl.BoundedWString(4), 3),
        idl.UnboundedWString(),
    )

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        return {"s": "", "seq": "", "names": "", "w": "", "ws": ""}


def test_bounded_strings_and_sequences():
    fields = [f["type"] for f in type_description(_Bounded)["type_description"]["fields"]]
    assert [(f["type_id"], f["capacity"], f["string_capacity"]) for f in fields] == [
        (21, 0, 16),  # string<=16
        (102, 5, 0),  # int32[<=5]
        (165, 0, 8),  # string<=8[]
        (70, 3, 4),  # wstring<=4[3]
        (18, 0, 0),  # wstring
    ]


def test_a_changed_definition_changes_the_hash():
    class Renamed(_Bounded):
        __module__ = _Bounded.__module__

        @classmethod
        def get_fields_and_field_types(cls) -> dict[str, str]:
            return {"s": "", "seq": "", "names": "", "w": "", "wide": ""}

    class Rebounded(_Bounded):
        __module__ = _Bounded.__module__
        SLOT_TYPES = (idl.BoundedString(17), *_Bounded.SLOT_TYPES[1:])

    Renamed.__name__ = Rebounded.__name__ = "_Bounded"
    hashes = {type_hash(c) for c in (_Bounded, Renamed, Rebounded)}
    assert len(hashes) == 3
    assert all(h.startswith("RIHS01_") and len(h) == 7 + 64 for h in hashes)


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("JointState", "not a type name like pkg/msg/Type"),
        ("sensor_msgs/msg/", "not a type name"),
        ("no_such_msgs/msg/Thing", "type no_such_msgs/msg/Thing is not installed"),
        ("sensor_msgs/msg/NoSuchThing", "is not installed"),
        (int, "not a generated ROS message class"),
    ],
)
def test_bad_type_names_get_a_clear_error(what, message):
    with pytest.raises(TypeHashError, match=message):
        type_hash(what)


def test_a_field_type_rihs01_cannot_describe_is_refused_by_name():
    class Long(_Bounded):
        __module__ = _Bounded.__module__
        SLOT_TYPES = (idl.BasicType("long"),)

        @classmethod
        def get_fields_and_field_types(cls) -> dict[str, str]:
            return {"n": ""}

    with pytest.raises(TypeHashError, match=r"\.n: RIHS01 has no field type for 'long'"):
        type_hash(Long)


def test_the_command_prints_what_the_transport_announces():
    """What a user runs at each site to compare hashes when the peer refuses a topic."""
    cmd = [sys.executable, "-m", "jitsi_teleop.ros.type_hash"]
    ok = subprocess.run(
        [*cmd, "sensor_msgs/msg/JointState", "std_msgs/msg/Bool"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        f"sensor_msgs/msg/JointState {type_hash('sensor_msgs/msg/JointState')}",
        f"std_msgs/msg/Bool {type_hash('std_msgs/msg/Bool')}",
    ]
    bad = subprocess.run([*cmd, "nope_msgs/msg/X"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "nope_msgs/msg/X is not installed" in bad.stderr
    usage = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
