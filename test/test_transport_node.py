"""The transport node end to end: two sites as two ROS domain ids, a transport process per
site, a real Prosody and real aiortc; this process publishes and records at both sites."""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path

import pytest
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64

from jitsi_teleop import wire
from jitsi_teleop.links.muc import MucLink
from jitsi_teleop.links.p2p import P2PConfig, loopback_only
from jitsi_teleop.loop_thread import LoopThread
from jitsi_teleop.pairing import Secret
from jitsi_teleop.protect import SessionCipher
from jitsi_teleop.room.room import Room
from jitsi_teleop.session import Session, SessionConfig
from jitsi_teleop.wire import StreamDescriptor
from prosody_server import room_config
from ros_sites import (
    Site,
    TransportProcess,
    link_status,
    make_key_file,
    site_domains,
    start_transport,
    topic_status,
    wait_for,
)

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.ros, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ROOT / "config" / "teleop_topics.yaml"
ESTOP_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def joint_state(i: int) -> JointState:
    m = JointState()
    m.header.stamp.sec = 1_700_000_000 + i
    m.header.stamp.nanosec = (i * 7919) % 1_000_000_000
    m.header.frame_id = "base_link"
    m.name = ["j1", "j2", "j3", "j4", "j5"]
    m.position = [0.001 * i, -0.5, 1.25, math.pi / 7, -0.25]
    m.velocity = [0.0] * 5
    m.effort = [0.1 * i] * 5
    return m


class Sites:
    """Leader and follower sites joined through one room; closed by the fixture."""

    def __init__(
        self,
        prosody,
        tmp: Path,
        follower_config: Path | None = None,
        config: Path | None = None,
    ) -> None:
        self.prosody = prosody
        self.domains = site_domains()
        self.room = "tp" + secrets.token_hex(4)
        self.key = make_key_file(tmp)
        self.leader = Site(self.domains[0], "leader")
        self.follower = Site(self.domains[1], "follower")
        self.procs: list[TransportProcess] = [
            start_transport(
                "leader", self.domains[0], prosody, self.room, self.key, config=config, log_dir=tmp
            ),
            start_transport(
                "follower",
                self.domains[1],
                prosody,
                self.room,
                self.key,
                config=follower_config or config,
                log_dir=tmp,
            ),
        ]
        self.leader_diag = self.leader.diagnostics()
        self.follower_diag = self.follower.diagnostics()

    def wait_paired(self, timeout: float = 40) -> None:
        def paired() -> bool:
            a, b = link_status(self.leader_diag), link_status(self.follower_diag)
            return bool(a and b and a.get("path") == "p2p" and b.get("path") == "p2p")

        wait_for(paired, timeout, "both transports paired on the data channel", self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.leader.close()
        self.follower.close()


@pytest.fixture(scope="module")
def sites(prosody, tmp_path_factory):
    s = Sites(prosody, tmp_path_factory.mktemp("sites"))
    try:
        s.wait_paired()
        yield s
    finally:
        s.close()


def test_joint_states_arrive_byte_identical_with_stamps_and_names(sites):
    rec = sites.follower.record(JointState, "/leader/joint_states", 1000)
    pub = sites.leader.publisher(JointState, "/joint_states", 10)
    sent = [serialize_message(joint_state(i)) for i in range(300)]
    wait_for(lambda: pub.get_subscription_count() > 0, 10, "the leader transport subscribed")
    for data in sent:
        pub.publish(data)  # raw bytes: exactly these must come out at the other site
        time.sleep(0.004)  # 250 Hz, under the stream's 500 Hz limit
    wait_for(lambda: len(rec.items) >= 250, 10, "joint states at the follower site", sites.procs)
    time.sleep(0.3)
    got = rec.payloads
    index = {d: i for i, d in enumerate(sent)}
    assert all(g in index for g in got), "a payload was altered on the way"
    order = [index[g] for g in got]
    assert order == sorted(order) and len(set(order)) == len(order)  # newest-wins, no repeats
    assert len(got) >= 0.9 * len(sent)  # latest class on loopback: next to nothing lost
    last = deserialize_message(got[-1], JointState)
    i = order[-1]
    assert last.name == ["j1", "j2", "j3", "j4", "j5"]
    assert (last.header.stamp.sec, last.header.stamp.nanosec) == (
        1_700_000_000 + i,
        (i * 7919) % 1_000_000_000,
    )
    assert last.position[0] == pytest.approx(0.001 * i)


def test_wrenches_come_back_to_the_leader(sites):
    fb = sites.leader.record(WrenchStamped, "/follower/teleop/feedback", 100)
    wr = sites.leader.record(WrenchStamped, "/follower/wrench", 100)
    pub_fb = sites.follower.publisher(WrenchStamped, "/teleop/feedback", 10)
    pub_wr = sites.follower.publisher(WrenchStamped, "/wrench", 10)
    wait_for(
        lambda: pub_fb.get_subscription_count() > 0 and pub_wr.get_subscription_count() > 0,
        10,
        "the follower transport subscribed",
    )
    for i in range(100):
        w = WrenchStamped()
        w.header.frame_id = "base_link"
        w.wrench.force.z = -2.0 - i * 0.01
        pub_fb.publish(w)
        w.header.frame_id = "tool0"
        pub_wr.publish(w)
        time.sleep(0.01)
    wait_for(lambda: len(fb.items) > 50 and len(wr.items) > 50, 10, "wrenches at the leader")
    f = deserialize_message(fb.payloads[-1], WrenchStamped)
    assert f.header.frame_id == "base_link"
    assert -3.0 < f.wrench.force.z <= -2.0
    assert deserialize_message(wr.payloads[-1], WrenchStamped).header.frame_id == "tool0"


def test_estop_is_reliable_and_latched_for_late_subscribers(sites):
    pub = sites.leader.publisher(Bool, "/teleop/estop", ESTOP_QOS)
    wait_for(lambda: pub.get_subscription_count() > 0, 10, "the leader transport subscribed")
    pub.publish(Bool(data=True))
    time.sleep(1.0)
    # subscribed after the message crossed: transient local hands it over anyway
    rec = sites.follower.record(Bool, "/leader/teleop/estop", ESTOP_QOS)
    wait_for(lambda: len(rec.items) >= 1, 10, "the latched e-stop at the follower site")
    assert deserialize_message(rec.payloads[-1], Bool).data is True


def test_latest_stream_is_held_to_its_rate_and_the_newest_sample_wins(sites):
    """teleop/energy is configured at 200 Hz: published at about 1 kHz, at most about 200/s
    cross, and the last value published is the last one delivered (never a stale one)."""
    rec = sites.follower.record(Float64, "/leader/teleop/energy", 1000)
    pub = sites.leader.publisher(Float64, "/teleop/energy", 10)
    wait_for(lambda: pub.get_subscription_count() > 0, 10, "the leader transport subscribed")
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 1.0:
        pub.publish(Float64(data=float(n)))
        n += 1
        time.sleep(0.001)
    last = float(n - 1)
    wait_for(
        lambda: rec.items and deserialize_message(rec.payloads[-1], Float64).data == last,
        5,
        "the newest sample at the follower site",
        sites.procs,
    )
    values = [deserialize_message(d, Float64).data for d in rec.payloads]
    assert values == sorted(values)
    assert n > 400  # the publisher really outran the limit
    assert len(values) <= 200 * 1.3 + 5  # 200 Hz over about one second, plus the flush


def test_diagnostics_report_path_and_latency(sites):
    pub = sites.leader.publisher(JointState, "/joint_states", 10)
    for i in range(200):
        pub.publish(joint_state(i))
        time.sleep(0.005)
    time.sleep(1.2)  # one diagnostics period after the traffic
    link = link_status(sites.follower_diag)
    assert link is not None
    assert link["path"] == "p2p" and link["paired"] == "true" and link["level"] == "0"
    assert float(link["rtt_p2p_ms"]) > 0
    assert link["problems"] == ""
    # the selected ICE pair: a direct loopback pair, no TURN server in it
    assert link.get("ice_path") == "direct" and link["ice_turn_server"] == "", link
    assert link["ice_pair"].startswith(("host 127.0.0.1:", "prflx 127.0.0.1:"))
    # how long the site took from joining the room to paired, and to the fast path
    assert 0 < float(link["join_to_paired_s"]) <= float(link["join_to_fast_path_s"])
    # and a `ros2 launch` user reads whom it paired with and why the path is what it is
    log = {p.role: p.log() for p in sites.procs}
    assert "paired with follower" in log["leader"] and "paired with leader" in log["follower"]
    assert "path muc -> p2p: data channel healthy" in log["follower"]
    assert "fast path up" in log["follower"]
    sender = link_status(sites.leader_diag)  # the ROS -> asyncio thread hop, at the sender
    assert sender is not None
    assert 0 < float(sender["handoff_p50_us"]) <= float(sender["handoff_p99_us"])
    js = topic_status(sites.follower_diag, "in /leader/joint_states")
    assert js is not None and int(js["received"]) > 0
    p50, p99 = float(js["latency_p50_ms"]), float(js["latency_p99_ms"])
    assert 0 < p50 <= p99  # measured, clock-corrected one-way latency
    out = topic_status(sites.leader_diag, "out /joint_states")
    assert out is not None and int(out["sent"]) > 0


def test_a_third_occupant_cannot_publish_into_either_site(sites):
    """A stranger in the room (no key) tries to pair as leader and as follower, and sends
    records straight to both transports through the room: garbage, and frames sealed with keys
    of its own. Nothing of it reaches either ROS graph, and the real pair keeps working."""
    got_f = sites.follower.record(JointState, "/leader/joint_states", 1000)
    got_l = sites.leader.record(WrenchStamped, "/follower/teleop/feedback", 1000)
    fake_hash = "RIHS01_" + "0" * 64
    evil = serialize_message(joint_state(666_666))
    thread = LoopThread("rogue")
    made: list[object] = []
    sent = {"records": 0}

    async def join_rogue(role: str, topic: str) -> list[str]:
        room = Room(room_config(sites.prosody, sites.room, teleop_role=role, key_id=""))
        await room.join()
        config = SessionConfig(
            p2p=P2PConfig(candidate_filter=loopback_only), discover_ice_servers=False
        )
        d = StreamDescriptor(1, topic, "sensor_msgs/msg/JointState", fake_hash)
        session = Session(room, config, Secret(os.urandom(32)), role, [d])
        await session.start()
        made.extend([session, room])
        return [o.nick for o in room.occupants.values() if o.is_endpoint and not o.is_self]

    async def attack(room: Room, nicks: list[str]) -> None:
        for nick in nicks:
            raw = MucLink(room, nick, follow_key=False)
            for i in range(5):
                raw.send(1, b"\x01" + os.urandom(80), latest=False)
                sealed = SessionCipher(os.urandom(32), os.urandom(32), b"abcd").seal(
                    wire.Frame(1, i, time.monotonic_ns() // 1000, evil)
                )
                raw.send(1, sealed, latest=True)
                sent["records"] += 2
            await raw.close()

    try:
        nicks = thread.run(join_rogue("leader", "/joint_states"), timeout=20)
        thread.run(join_rogue("follower", "/teleop/feedback"), timeout=20)
        assert len(nicks) >= 2, "the stranger should see both transports in the room"
        pub = sites.leader.publisher(JointState, "/joint_states", 10)
        thread.run(attack(made[1], nicks), timeout=20)  # type: ignore[arg-type]
        for i in range(150):
            pub.publish(joint_state(i))
            time.sleep(0.01)
        time.sleep(0.5)
        assert not any(s.paired for s in made if isinstance(s, Session))
    finally:
        for obj in made:
            thread.run(obj.close(), timeout=5)  # type: ignore[attr-defined]
        thread.stop()
    assert sent["records"] >= 20
    assert evil not in got_f.payloads
    assert got_l.items == []
    assert len(got_f.items) > 50  # the legitimate leader still gets through
    link = link_status(sites.follower_diag)
    assert link is not None and link["path"] == "p2p" and link["paired"] == "true"
    # the stranger claimed the leader's role and could not prove it: counted, with why
    assert int(link["unproven_claimants"]) >= 1
    assert "key_mismatch=" in link["refused"]
    for p in sites.procs:
        assert p.proc.poll() is None


def test_type_mismatch_is_refused_naming_the_topic(prosody, tmp_path):
    """The follower's config says joint_states is a PoseStamped: its transport refuses the
    leader's JointState stream by name, publishes nothing for it, and the leader hears why."""
    text = TOPICS.read_text().replace(
        "  - topic: joint_states\n    from: leader\n    type: sensor_msgs/msg/JointState",
        "  - topic: joint_states\n    from: leader\n    type: geometry_msgs/msg/PoseStamped",
    )
    assert "geometry_msgs/msg/PoseStamped" in text
    cfg = tmp_path / "follower_topics.yaml"
    cfg.write_text(text)
    s = Sites(prosody, tmp_path, follower_config=cfg)
    try:
        rec = s.follower.record(PoseStamped, "/leader/joint_states", 100)
        pub = s.leader.publisher(JointState, "/joint_states", 10)

        def refused() -> bool:
            pub.publish(joint_state(1))
            f, lead = link_status(s.follower_diag), link_status(s.leader_diag)
            return bool(
                f and lead and "/joint_states" in f["problems"] and "refused" in lead["problems"]
            )

        wait_for(refused, 40, "the mismatch reported at both sites", s.procs)
        f = link_status(s.follower_diag)
        assert f is not None and f["level"] == "2"
        assert "JointState" in f["problems"] and "PoseStamped" in f["problems"]
        wait_for(lambda: "/joint_states" in s.procs[1].log(), 5, "the error in the node's log")
        for i in range(50):  # other topics still cross; the refused one never appears
            pub.publish(joint_state(i))
            time.sleep(0.01)
        assert rec.items == []
        js = topic_status(s.follower_diag, "in /leader/joint_states")
        assert js is not None and js["received"] == "0"
    finally:
        s.close()


def test_bad_settings_exit_with_a_clear_message(prosody, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("topics:\n  - topic: joint_states\n    from: leader\n    type: JointState\n")
    key = make_key_file(tmp_path)
    d = site_domains()[0]
    p = start_transport("leader", d, prosody, "badcfg", key, config=bad, log_dir=tmp_path)
    assert p.proc.wait(30) == 2
    assert "topic joint_states" in p.log() and "pkg/msg/Type" in p.log()
    q = start_transport("leader", d, prosody, "nokey", "", log_dir=tmp_path)
    assert q.proc.wait(30) == 2
    assert "no pairing secret" in q.log()
    r = start_transport(
        "leader", d, prosody, "relay", key, params=["impairment_relay:=70000"], log_dir=tmp_path
    )
    assert r.proc.wait(30) == 2
    assert "impairment_relay must be a port number" in r.log()


def test_a_restarted_room_server_does_not_stop_the_stream(fresh_prosody, tmp_path):
    """The fast path is peer to peer: joint states keep crossing while the room server
    restarts, and both transports rejoin the room afterwards."""
    s = Sites(fresh_prosody, tmp_path)
    try:
        s.wait_paired()
        rec = s.follower.record(JointState, "/leader/joint_states", 1000)
        pub = s.leader.publisher(JointState, "/joint_states", 10)
        wait_for(lambda: pub.get_subscription_count() > 0, 10, "the leader transport subscribed")
        i = 0

        def publish_for(seconds: float) -> None:
            nonlocal i
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pub.publish(joint_state(i))
                i += 1
                time.sleep(0.01)

        publish_for(0.5)
        fresh_prosody.stop()
        mark = len(rec.items)
        publish_for(2.0)  # the server is down
        during = len(rec.items) - mark
        fresh_prosody.start()

        def rejoined() -> bool:
            a, b = link_status(s.leader_diag), link_status(s.follower_diag)
            pub.publish(joint_state(i))
            return bool(a and b and a["level"] == "0" and b["level"] == "0")

        wait_for(rejoined, 60, "both transports back in the room", s.procs)
        mark = len(rec.items)
        publish_for(1.0)
        assert during > 100  # about 200 published while the server was down
        got_after = len(rec.items) - mark
        why = topic_status(s.follower_diag, "in /leader/joint_states")
        assert got_after > 50, f"the stream did not resume after the rejoin: {why}"
        for p in s.procs:
            assert p.proc.poll() is None
    finally:
        s.close()
