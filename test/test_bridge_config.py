"""Topic file, room/secret settings and the site plan: pure checks, no network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jitsi_teleop.bridge.options import (
    ENV_KEY_FILE,
    ENV_PASSPHRASE,
    RoomOptions,
    SiteError,
    load_site_secret,
    meeting_room_name,
    resolve_room,
)
from jitsi_teleop.bridge.topics import TopicConfigError, load_topics, parse_topics
from jitsi_teleop.pairing import generate_key_file
from jitsi_teleop.site_plan import SiteArgs, site_processes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "teleop_topics.yaml"


def test_default_topics_carry_the_teleop_loop_both_ways():
    cfg = load_topics(DEFAULT)
    out_leader = {t.remote: t for t in cfg.outgoing("leader")}
    out_follower = {t.remote: t for t in cfg.outgoing("follower")}
    # what the follower's teleop node reads, and what the leader's reads
    assert out_leader["joint_states"].ros_type == "sensor_msgs/msg/JointState"
    assert out_leader["teleop/estop"].delivery == "reliable"
    assert out_leader["teleop/estop"].qos.durability == "transient_local"
    assert {"teleop/feedback", "teleop/energy", "wrench", "joint_states"} <= set(out_follower)
    assert out_follower["teleop/feedback"].ros_type == "geometry_msgs/msg/WrenchStamped"
    assert cfg.incoming("follower") == cfg.outgoing("leader")
    assert out_leader["joint_states"].receive_topic("/leader") == "/leader/joint_states"
    assert out_follower["teleop/feedback"].receive_topic("/follower/") == (
        "/follower/teleop/feedback"
    )


def test_teleop_node_topics_match_the_default_config():
    """The teleop node's peer topics must be ones the transport republishes."""
    src = (ROOT / "src" / "jitsi_teleop" / "ros" / "teleop_node.py").read_text()
    cfg = load_topics(DEFAULT)
    for role in ("leader", "follower"):
        for t in cfg.incoming(role):
            if t.remote.startswith("teleop/") or (
                role == "follower" and t.remote == "joint_states"
            ):
                assert t.remote in src, t.remote


ENTRY = "topics:\n  - topic: joint_states\n    from: leader\n    type: sensor_msgs/msg/JointState\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("topics: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping with a 'topics' list"),
        ("topics: []\n", "empty"),
        (ENTRY + "    colour: red\n", "unknown keys ['colour']"),
        (ENTRY.replace("from: leader", "from: both"), "'from' must be leader or follower"),
        (ENTRY.replace("sensor_msgs/msg/JointState", "JointState"), "pkg/msg/Type"),
        (ENTRY + "    delivery: sometimes\n", "latest or reliable"),
        (ENTRY + "    max_rate_hz: .nan\n", "max_rate_hz"),
        (ENTRY + "    max_age_s: -1\n", "max_age_s"),
        (ENTRY + "    qos: {durability: forever}\n", "durability"),
        (ENTRY + "    qos: {depth: 0}\n", "depth"),
        (ENTRY + "    remote: /abs\n", "relative topic name"),
        (ENTRY.replace("topic: joint_states", "topic: 'bad name'"), "ROS topic name"),
        (ENTRY + ENTRY.split("\n", 1)[1], "already used"),
        (
            "topics:\n  - topic: ~/private\n    from: leader\n    type: std_msgs/msg/Bool\n",
            "private",
        ),
        ("colour: red\ntopics: []\n", "unknown top-level keys"),
    ],
)
def test_bad_topic_files_are_refused_naming_the_problem(text, expected):
    with pytest.raises(TopicConfigError) as e:
        parse_topics(text, source="t.yaml")
    assert expected in str(e.value)
    assert str(e.value).startswith("t.yaml")


def test_missing_topic_file_is_a_clear_error(tmp_path):
    with pytest.raises(TopicConfigError, match="cannot read"):
        load_topics(tmp_path / "nope.yaml")


def test_secret_comes_from_a_file_or_the_environment_never_a_value(tmp_path):
    key = tmp_path / "k"
    s = generate_key_file(key)
    assert load_site_secret(str(key), "room", env={}).key == s.key
    assert load_site_secret("", "room", env={ENV_KEY_FILE: str(key)}).key == s.key
    p1 = load_site_secret("", "room", env={ENV_PASSPHRASE: "correct horse battery"})
    p2 = load_site_secret("", "other", env={ENV_PASSPHRASE: "correct horse battery"})
    assert p1.key != p2.key  # salted with the room
    with pytest.raises(SiteError, match="no pairing secret"):
        load_site_secret("", "room", env={})
    with pytest.raises(SiteError, match="secret file"):
        load_site_secret(str(tmp_path / "missing"), "room", env={})
    (tmp_path / "bad").write_text("hello")
    with pytest.raises(SiteError, match="not a key file"):
        load_site_secret(str(tmp_path / "bad"), "room", env={})


async def test_room_from_explicit_settings():
    cfg = await resolve_room(
        RoomOptions(domain="meet.test", room="Lab", websocket_url="ws://127.0.0.1:1/x"),
        "follower",
        "abcdef012345",
    )
    assert cfg.room == "lab" and cfg.teleop_role == "follower" and cfg.key_id == "abcdef012345"
    tcp = await resolve_room(
        RoomOptions(domain="meet.test", room="lab", tcp="127.0.0.1:5999"), "leader", ""
    )
    assert (tcp.tcp_host, tcp.tcp_port, tcp.websocket_url) == ("127.0.0.1", 5999, None)
    with pytest.raises(SiteError, match="no room"):
        await resolve_room(RoomOptions(domain="meet.test"), "leader", "")
    with pytest.raises(SiteError, match="host:port"):
        await resolve_room(RoomOptions(domain="d", room="r", tcp="nohost"), "leader", "")
    assert meeting_room_name("https://meet.example.org/tenant/MyLab?x=1") == "mylab"


async def test_room_keepalive_from_site_settings():
    """The transport node's ping_* parameters reach the room (how soon a connection that died
    silently is found); a bad value is a clear site error, not a traceback."""
    opts = RoomOptions(domain="d", room="r", tcp="127.0.0.1:5999")
    default = await resolve_room(opts, "leader", "")
    assert (default.ping_interval, default.ping_timeout, default.ping_failures) == (5.0, 3.0, 1)
    fast = await resolve_room(
        dataclasses.replace(opts, ping_interval=1.0, ping_timeout=0.5, ping_failures=2),
        "leader",
        "",
    )
    assert (fast.ping_interval, fast.ping_timeout, fast.ping_failures) == (1.0, 0.5, 2)
    with pytest.raises(SiteError, match="ping_timeout"):
        await resolve_room(dataclasses.replace(opts, ping_timeout=0.0), "leader", "")


def _plan(role: str, **kw: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in site_processes(SiteArgs(share=str(ROOT), role=role, **kw)):
        out.setdefault(p.name if not p.namespace else f"{p.namespace}/{p.name}", []).append(p)
    return out


def test_follower_site_plan_draws_the_leader_arm_and_servos_its_own():
    plan = _plan("follower", sim="true", robot_port="50002", secret_file="~/k")
    assert plan["dexter_sim"][0].cmd[:5] == ("dexter-sim", "--host", "127.0.0.1", "--port", "50002")
    assert plan["dexter_sim"][0].cmd[5:] == ("--start", "ready")
    driver = plan["dexter_driver"][0].parameters[1]
    assert driver == {"host": "127.0.0.1", "port": 50002, "mode": "position"}
    transport = plan["jitsi_teleop_transport"][0].parameters[0]
    assert transport["role"] == "follower" and transport["peer_prefix"] == "/leader"
    assert transport["secret_file"].endswith("/k") and not transport["secret_file"].startswith("~")
    teleop = plan["teleop"][0].parameters
    assert teleop[0] == str(ROOT / "config" / "teleop.yaml")  # then role and prefix win
    assert teleop[1] == {"role": "follower", "peer_prefix": "/leader"}
    remote = plan["remote/leader_state_publisher"][0]
    assert remote.remappings == (("joint_states", "/leader/joint_states"),)
    assert remote.parameters[0]["frame_prefix"] == "remote/"
    assert "<robot" in remote.parameters[0]["robot_description"]
    assert "remote/base_link" in plan["world_to_remote"][0].arguments
    assert plan["rviz2"][0].arguments[1].endswith("rviz/teleop.rviz")


def test_leader_site_plan_on_a_real_robot():
    assert _plan("leader", teleop_config="/lab/t.yaml")["teleop"][0].parameters[0] == "/lab/t.yaml"
    plan = _plan("leader", robot_host="192.168.1.142", teleop="false", rviz="false")
    assert "dexter_sim" not in plan and "teleop" not in plan and "rviz2" not in plan
    assert plan["dexter_driver"][0].parameters[1]["mode"] == "follow_me"
    assert plan["dexter_driver"][0].parameters[1]["host"] == "192.168.1.142"
    assert plan["jitsi_teleop_transport"][0].parameters[0]["peer_prefix"] == "/follower"
    assert plan["remote/follower_state_publisher"][0].remappings[0][1] == "/follower/joint_states"
    with pytest.raises(ValueError, match="role"):
        site_processes(SiteArgs(share=str(ROOT), role="boss"))


def test_two_sites_in_one_launch_have_no_duplicate_node_names():
    """two_site_sim.launch.py starts both sites' plans in one launch; launch_ros warns about
    every fully qualified name (a node with a namespace) seen twice in a launch, whatever the
    domains. Both sites' plans, as that launch builds them, give no name twice."""
    common = dict(sim="true", domain="meet.local", loopback_only="true", stun_turn="false")
    names: dict[str, list[str]] = {}
    for role in ("leader", "follower"):
        for p in site_processes(SiteArgs(share=str(ROOT), role=role, **common)):
            if p.namespace and not p.cmd:  # what launch_ros counts
                names.setdefault(f"/{p.namespace}/{p.name}", []).append(role)
    assert names, "the plans have namespaced nodes (the remote arm's state publisher)"
    assert {n: r for n, r in names.items() if len(r) > 1} == {}
    assert names["/remote/follower_state_publisher"] == ["leader"]  # the arm it draws


def test_reliable_topics_are_republished_deep_enough_for_a_burst():
    """A reliable, volatile topic's republisher keeps 1000 samples unless the file says
    otherwise (KEEP_LAST 10 let a burst overwrite samples a slow subscriber had not taken);
    latest and transient_local topics keep the old default, an explicit depth wins."""
    text = """topics:
  - {topic: a, from: leader, type: std_msgs/msg/String, delivery: reliable}
  - {topic: b, from: leader, type: std_msgs/msg/String}
  - topic: c
    from: leader
    type: std_msgs/msg/String
    delivery: reliable
    qos: {durability: transient_local}
  - {topic: d, from: leader, type: std_msgs/msg/String, delivery: reliable, qos: {depth: 5}}
"""
    depth = {s.topic: s.qos.depth for s in parse_topics(text, "t.yaml").topics}
    assert depth == {"a": 1000, "b": 10, "c": 10, "d": 5}
