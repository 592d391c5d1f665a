"""Bags recorded from the simulators, replayed at their sites with their original timing through
two transports and the room, recorded where they arrive: reliable streams arrive complete, in
order and byte-identical; latest streams as an in-order, byte-identical subsequence; the bag
written from the arrivals reads back with rosbags and holds exactly what arrived."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from bag_replay import Route, replay, storage_of
from ros_sites import topic_status, wait_for
from test_transport_node import Sites

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.ros, pytest.mark.timeout(180)]

BAGS = Path(__file__).parent / "fixtures" / "bags"
#: the bag's two joint-state streams reliable (every message must arrive), the wrench latest
TOPICS = """topics:
  - topic: joint_states
    from: leader
    type: sensor_msgs/msg/JointState
    delivery: reliable
    max_rate_hz: 500
  - topic: joint_states
    from: follower
    type: sensor_msgs/msg/JointState
    delivery: reliable
    max_rate_hz: 500
  - topic: wrench
    from: follower
    type: geometry_msgs/msg/WrenchStamped
    delivery: latest
    max_rate_hz: 500
    max_age_s: 0.5
"""
ROUTES = [
    Route("/leader/joint_states", "leader", "/joint_states", "/leader/joint_states", "reliable"),
    Route(
        "/follower/joint_states", "follower", "/joint_states", "/follower/joint_states", "reliable"
    ),
    Route("/follower/wrench", "follower", "/wrench", "/follower/wrench", "latest"),
]


@pytest.fixture(scope="module")
def sites(prosody, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    config = tmp / "topics.yaml"
    config.write_text(TOPICS)
    s = Sites(prosody, tmp, config=config)
    try:
        s.wait_paired()
        yield s
    finally:
        s.close()


def _wrench_out(sites) -> dict[str, int]:
    """The follower transport's counters of its outgoing wrench stream (cumulative)."""
    st = None
    deadline = time.monotonic() + 30
    while st is None and time.monotonic() < deadline:
        st = topic_status(sites.follower_diag, "out /wrench")
        time.sleep(0.1)
    assert st is not None, "no diagnostics for the outgoing wrench"
    return {k: int(st[k]) for k in ("taken", "sent", "coalesced", "link_busy", "not_sent")}


@pytest.mark.parametrize("bag", ["sim_sqlite3", "sim_mcap"])
def test_bag_replayed_through_the_room_arrives_as_recorded(sites, bag, tmp_path):
    out = tmp_path / f"arrived_{bag}"
    before = _wrench_out(sites)
    report = replay(BAGS / bag, ROUTES, {"leader": sites.leader, "follower": sites.follower}, out)
    lines = "\n".join(report.lines())
    for s in report.streams.values():
        assert s.sent > 50, lines
        assert s.byte_identical and s.in_order, lines
        if s.route.delivery == "reliable":
            assert s.complete, f"{s.route.bag_topic}: missing {s.missing}\n{lines}"
    # the latest stream (wrench): newest wins, so a loaded machine thins it (the sending
    # transport coalesces samples that reach its loop in a burst). What must hold: it is not
    # starved, and every sample the sending transport sent arrived and was republished; what
    # it did not send it counted (taken = sent + coalesced + link_busy + not_sent).
    wrench = report.streams["/follower/wrench"]
    assert wrench.received > 0, lines
    after: dict[str, int] = {}

    def accounted() -> bool:
        after.update(_wrench_out(sites))
        return after["sent"] - before["sent"] == wrench.received

    wait_for(accounted, 30, f"the wrench samples sent match those recorded\n{lines}", sites.procs)
    d = {k: after[k] - before[k] for k in before}
    assert d["taken"] == d["sent"] + d["coalesced"] + d["link_busy"] + d["not_sent"], d
    assert d["taken"] <= wrench.sent, d
    for s in report.streams.values():
        p50, p99 = s.percentile(50), s.percentile(99)
        assert p50 is not None and p99 is not None
        assert math.isfinite(p99) and 0 < p50 <= p99
    # the arrivals were written as a bag of the same format, under the arrival topics
    with Reader(out) as reader:
        stored = {c.topic: c.msgtype for c in reader.connections}
        assert stored == {
            "/leader/joint_states": "sensor_msgs/msg/JointState",
            "/follower/joint_states": "sensor_msgs/msg/JointState",
            "/follower/wrench": "geometry_msgs/msg/WrenchStamped",
        }
        counts: dict[str, int] = {}
        for conn, _, _ in reader.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
    for s in report.streams.values():
        assert counts[s.route.arrive_topic] == s.received
    assert storage_of(out) == storage_of(BAGS / bag)
