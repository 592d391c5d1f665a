"""Replay a rosbag2 bag through the room and compare what arrives with what was sent.

Each bag topic is published at one site (raw CDR, with the bag's original timing) and recorded
where the transport republishes it at the other site; what arrived is written to a new bag in
the same storage format (timestamps = receive time, CLOCK_MONOTONIC ns), and the two are
compared per stream: for ``reliable`` streams every message, in order, byte-identical; for
``latest`` streams an in-order, byte-identical subsequence; plus the send-to-arrival latency
(both ends are in this process, so one clock).

By hand (starts its own Prosody and two transports)::

    python test/bag_replay.py test/fixtures/bags/sim_mcap
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_sites import Site


@dataclass(frozen=True)
class Route:
    """Where one bag topic is published and where it is expected to arrive."""

    bag_topic: str  #: e.g. /leader/joint_states (how the recording site named it)
    site: str  #: "leader" or "follower": where it is published
    local_topic: str  #: e.g. /joint_states at that site
    arrive_topic: str  #: e.g. /leader/joint_states at the other site
    delivery: str  #: what the topic file says: "reliable" or "latest"


@dataclass
class StreamReport:
    route: Route
    msgtype: str
    sent: int = 0
    received: int = 0
    byte_identical: bool = True  #: every arrival equals a sent payload
    in_order: bool = True  #: arrivals in the order they were sent, no repeats
    missing: list[int] = field(default_factory=list)  #: indices of sent messages not received
    latency_ms: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.received == self.sent and not self.missing

    def percentile(self, p: float) -> float | None:
        v = sorted(self.latency_ms)
        return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else None

    @property
    def ok(self) -> bool:
        """What the stream's delivery class promises."""
        if not (self.byte_identical and self.in_order and self.received > 0):
            return False
        return self.complete if self.route.delivery == "reliable" else True


@dataclass
class ReplayReport:
    streams: dict[str, StreamReport]
    output: Path

    def lines(self) -> list[str]:
        out = []
        for s in self.streams.values():
            p50, p99 = s.percentile(50), s.percentile(99)
            lat = "-" if p50 is None else f"{p50:.2f} / {p99:.2f} ms"
            out.append(
                f"{s.route.bag_topic:28} {s.route.delivery:8} sent {s.sent:5} received "
                f"{s.received:5} in order {s.in_order} identical {s.byte_identical} "
                f"latency p50/p99 {lat}"
            )
        return out


def read_bag(path: Path) -> tuple[dict[str, str], list[tuple[int, str, bytes]], StoragePlugin]:
    """(topic -> msgtype, messages by time, storage format) of a rosbag2 bag."""
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        rows = [(t, c.topic, bytes(d)) for c, t, d in reader.messages()]
    rows.sort(key=lambda r: r[0])
    plugin = StoragePlugin.MCAP if storage_of(path) == "mcap" else StoragePlugin.SQLITE3
    return types, rows, plugin


def storage_of(path: Path) -> str:
    """``sqlite3`` or ``mcap``, as the bag's metadata.yaml says."""
    meta = yaml.safe_load((Path(path) / "metadata.yaml").read_text())
    return str(meta["rosbag2_bagfile_information"]["storage_identifier"])


def message_class(msgtype: str) -> Any:
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _qos(delivery: str) -> QoSProfile:
    if delivery == "reliable":
        return QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(depth=1_000, reliability=ReliabilityPolicy.RELIABLE)


def replay(
    bag: Path,
    routes: list[Route],
    sites: dict[str, Site],
    output: Path,
    *,
    settle_s: float = 1.5,
    ready_timeout_s: float = 20.0,
    complete_timeout_s: float = 30.0,
) -> ReplayReport:
    """Publish the bag at its sites with its timing, record at the other sites, compare."""
    types, rows, plugin = read_bag(bag)
    by_topic = {r.bag_topic: r for r in routes}
    pubs, recs, reports = {}, {}, {}
    for r in routes:
        cls = message_class(types[r.bag_topic])
        other = "follower" if r.site == "leader" else "leader"
        pubs[r.bag_topic] = sites[r.site].publisher(cls, r.local_topic, _qos(r.delivery))
        recs[r.bag_topic] = sites[other].record(cls, r.arrive_topic, _qos(r.delivery))
        reports[r.bag_topic] = StreamReport(r, types[r.bag_topic])
    deadline = time.monotonic() + ready_timeout_s

    def matched() -> bool:  # the transports subscribe here, and republish where we record
        for r in routes:
            other = "follower" if r.site == "leader" else "leader"
            if pubs[r.bag_topic].get_subscription_count() == 0:
                return False
            if sites[other].node.count_publishers(r.arrive_topic) == 0:
                return False
        return True

    while not matched():
        if time.monotonic() > deadline:
            raise TimeoutError("the transports never subscribed to the replayed topics")
        time.sleep(0.05)
    sent: dict[str, list[tuple[int, bytes]]] = {t: [] for t in pubs}
    rows = [row for row in rows if row[1] in by_topic]
    start = time.monotonic_ns() + 200_000_000
    first = rows[0][0] if rows else 0
    for stamp, topic, data in rows:  # the bag's own timing
        due = start + (stamp - first)
        wait = (due - time.monotonic_ns()) / 1e9
        if wait > 0:
            time.sleep(wait)
        t = time.monotonic_ns()
        pubs[topic].publish(data)
        sent[topic].append((t, data))
    # reliable streams: wait until all arrived (generous, a loaded machine is slow), then
    # give the latest ones ``settle_s`` more; a fixed wait alone cut a slow tail short
    deadline = time.monotonic() + complete_timeout_s
    while time.monotonic() < deadline and any(
        len(recs[t].items) < len(sent[t]) for t, r in by_topic.items() if r.delivery == "reliable"
    ):
        time.sleep(0.05)
    time.sleep(settle_s)
    for topic, rep in reports.items():
        _compare(rep, sent[topic], list(recs[topic].items))
    _write(output, plugin, types, {t: list(recs[t].items) for t in recs}, by_topic)
    return ReplayReport(reports, output)


def _compare(
    rep: StreamReport, sent: list[tuple[int, bytes]], got: list[tuple[int, bytes]]
) -> None:
    rep.sent, rep.received = len(sent), len(got)
    where: dict[bytes, list[int]] = {}
    for i, (_, data) in enumerate(sent):
        where.setdefault(data, []).append(i)
    last, seen = -1, set()
    for t_recv, data in got:
        candidates = [i for i in where.get(data, []) if i > last]
        if not candidates:
            if data in where:
                rep.in_order = False
            else:
                rep.byte_identical = False
            continue
        i = candidates[0]
        seen.add(i)
        last = i
        rep.latency_ms.append((t_recv - sent[i][0]) / 1e6)
    rep.missing = [i for i in range(len(sent)) if i not in seen]


def _write(
    output: Path,
    plugin: StoragePlugin,
    types: dict[str, str],
    got: dict[str, list[tuple[int, bytes]]],
    routes: dict[str, Route],
) -> None:
    """What arrived, as a bag under the arrival topic names, receive times as timestamps."""
    store = get_typestore(Stores.ROS2_JAZZY)
    with Writer(output, version=9, storage_plugin=plugin) as writer:
        conns = {
            t: writer.add_connection(routes[t].arrive_topic, types[t], typestore=store) for t in got
        }
        rows = sorted((ts, t, d) for t, items in got.items() for ts, d in items)
        for ts, t, data in rows:
            writer.write(conns[t], ts, data)


# ---- by hand ---------------------------------------------------------------------------------
ROUTES = [
    Route("/leader/joint_states", "leader", "/joint_states", "/leader/joint_states", "latest"),
    Route(
        "/follower/joint_states", "follower", "/joint_states", "/follower/joint_states", "latest"
    ),
    Route("/follower/wrench", "follower", "/wrench", "/follower/wrench", "latest"),
]


def main(argv: list[str]) -> int:
    from jitsi_teleop.local_prosody import ProsodyServer
    from ros_sites import link_status, make_key_file, site_domains, start_transport, wait_for

    bag = Path(argv[0])
    tmp = Path(tempfile.mkdtemp(prefix="bag-replay-"))
    with ProsodyServer() as srv:
        key = make_key_file(tmp)
        domains = site_domains()
        procs = [
            start_transport(role, d, srv, "replay", key, log_dir=tmp)
            for role, d in zip(("leader", "follower"), domains)
        ]
        sites = {"leader": Site(domains[0], "leader"), "follower": Site(domains[1], "follower")}
        try:
            diags = [sites[r].diagnostics() for r in ("leader", "follower")]
            wait_for(
                lambda: all((link_status(d) or {}).get("path") == "p2p" for d in diags),
                40,
                "both transports paired on the data channel",
                procs,
            )
            report = replay(bag, ROUTES, sites, tmp / "arrived", settle_s=2.0)
            print("\n".join(report.lines()))
            print(f"arrived bag: {report.output}")
        finally:
            for p in procs:
                p.stop()
            for s in sites.values():
                s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
