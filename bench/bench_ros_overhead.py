"""Bench (issue 5): what the ROS layer adds to the leader -> follower latency, as a number.

Same run, same machine, same JointState payload (6 joints, CDR), same pacing, per rate:

* ``ros``: a publisher on ``/joint_states`` in the leader's domain -> leader transport process
  (``python -m jitsi_teleop.ros.transport_node``) -> room / P2P -> follower transport process ->
  ``/leader/joint_states`` -> a subscriber in the follower's domain. Both ends live in this
  process (one rclpy context per domain, each spun in its own thread: ``test/ros_sites.py``).
* ``core``: the transport's asyncio core without ROS: two :class:`~jitsi_teleop.bridge.core.Bridge`
  in two processes (no rclpy imported), same kind of room and P2P link, ``Bridge.send`` in the
  leader's loop -> the follower's ``deliver`` callback.
* ``dds-echo``: a plain rclpy node in a process of its own republishes ``/ping`` as ``/pong``
  (same QoS as the transport's subscription and publisher): the two DDS hops and the executor
  callback of the ``ros`` path without the bridge.
* ``dds-local``: publisher and subscriber in this process, one domain, no transport: the cost of
  this process's own executor on the receive side (Fast DDS delivers in-process).

Latency is receive minus send of CLOCK_MONOTONIC, which Linux shares between processes, so no
clock estimation. Send time: just before ``publish`` / ``Bridge.send``; receive time: first thing
in the subscription / deliver callback. The sequence number rides in ``header.stamp.sec``.
ROS overhead = ``ros`` - ``core`` (p50 and p99); ``residual`` = overhead - ``dds-echo``, what the
transport node adds beyond two plain DDS hops (mainly its ROS thread -> asyncio hand-off).

Each rate runs ``--rounds`` rounds; a round gives every path ``duration / rounds`` seconds, in
a rotated order, so that load from elsewhere on the machine falls on all paths alike. A path's
first window follows ``--warmup`` s of unmeasured sending, later ones 0.25 s.

The shaper is kept out of the way by default (a topic file with only ``joint_states`` at
``max_rate_hz`` 10000): rate shaping is the core's, not ROS's, and both paths would share it.
``--config`` benches another topic file on both paths (``config/teleop_topics.yaml`` caps the
stream at 500 Hz, so 1000 Hz is then thinned).

    python bench/bench_ros_overhead.py [--rates 500] [--duration 10] [--warmup 2]
                                       [--rounds 5] [--json bench/results/ros_overhead.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # before any rclpy import

import argparse
import asyncio
import json
import platform
import queue
import secrets
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "test"))  # the two-site harness (imported lazily: it loads rclpy)

DEFAULT_JSON = HERE / "results" / "ros_overhead.json"
SEQ_AT = 4  # CDR: 4-byte encapsulation header, then header.stamp.sec (int32)
_SEQ = struct.Struct("<i")
TAIL_S = 0.5  # after the last send: arrivals still in flight count
REWARM_S = 0.25  # not measured, before each window after a path's first (which has --warmup)
BENCH_TOPICS = """\
# bench_ros_overhead: only the command stream; the shaper never holds a sample back
topics:
  - topic: joint_states
    from: leader
    type: sensor_msgs/msg/JointState
    delivery: latest
    max_rate_hz: 10000
    max_age_s: 0.25
"""
JS_HASH = "RIHS01_" + "0" * 64  # core path: both ends announce and expect the same string


# =============================================================================================
# shared


def pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (the same rule as ``jitsi_teleop.benchmark``)."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q / 100 * len(v)))]


def seq_of(data: bytes) -> int:
    return _SEQ.unpack_from(data, SEQ_AT)[0]


def with_seq(template: bytes, seq: int) -> bytes:
    return template[:SEQ_AT] + _SEQ.pack(seq) + template[SEQ_AT + _SEQ.size :]


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc (psutil is not a dependency)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pace(rate: float, seconds: float, send: Callable[[int], None], first: int = 0) -> list[int]:
    """Call ``send(n)`` ``rate`` times a second; the monotonic ns just before each call.
    Late wake-ups catch up (never burst more than what is due), like the fast-path bench."""
    stamps: list[int] = []
    t0 = time.monotonic()
    n = 0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= seconds:
            return stamps
        due = int(elapsed * rate) + 1
        while n < due:
            stamps.append(time.monotonic_ns())
            send(first + n)
            n += 1
        time.sleep(max(0.0, n / rate - (time.monotonic() - t0)))


async def apace(
    rate: float, seconds: float, send: Callable[[int], None], first: int = 0
) -> list[int]:
    """:func:`pace` in an asyncio loop (whose timers are rounded to 1 ms: late wake-ups
    catch up, so at 1000 Hz two sends may leave back to back)."""
    stamps: list[int] = []
    t0 = time.monotonic()
    n = 0
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= seconds:
            return stamps
        due = int(elapsed * rate) + 1
        while n < due:
            stamps.append(time.monotonic_ns())
            send(first + n)
            n += 1
        await asyncio.sleep(max(0.0, n / rate - (time.monotonic() - t0)))


@dataclass
class Row:
    """One path at one rate; latencies in ms over the measurement window only."""

    path: str
    rate_hz: int
    includes: str
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    latency_mean_ms: float | None = None
    #: p99 of each window, and their median: one window hit by a load burst from elsewhere on
    #: the machine moves the pooled p99 but not this one
    window_p99_ms: list[float | None] = field(default_factory=list)
    latency_p99_median_window_ms: float | None = None
    cpu_pct: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def summarize(row: Row, sent: dict[int, int], received: list[tuple[int, int]]) -> Row:
    """``sent``: seq -> send ns (window only); ``received``: (seq, receive ns), any run."""
    first: dict[int, int] = {}
    for seq, ns in received:
        if seq in sent:
            if seq in first:
                row.duplicates += 1
            else:
                first[seq] = ns
    lat = [(first[s] - sent[s]) / 1e6 for s in first]
    row.sent, row.received, row.lost = len(sent), len(first), len(sent) - len(first)
    row.latency_p50_ms = _r(pct(lat, 50))
    row.latency_p90_ms = _r(pct(lat, 90))
    row.latency_p99_ms = _r(pct(lat, 99))
    row.latency_max_ms = _r(max(lat) if lat else None)
    row.latency_mean_ms = _r(sum(lat) / len(lat) if lat else None)
    return row


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


# =============================================================================================
# core path children: one Bridge per process, no rclpy


async def _child_core(args: argparse.Namespace) -> None:
    from jitsi_teleop.bridge.core import Bridge, Incoming, Outgoing
    from jitsi_teleop.bridge.options import RoomOptions, load_site_secret, resolve_room
    from jitsi_teleop.bridge.topics import default_peer_prefix, load_topics
    from jitsi_teleop.links.p2p import P2PConfig, loopback_only
    from jitsi_teleop.session import PATH_P2P, SessionConfig

    assert "rclpy" not in sys.modules, "the core path must run without ROS"
    role = args.child[1]
    topics = load_topics(args.config)
    secret = load_site_secret(args.key, args.room)
    opts = RoomOptions(websocket_url=args.ws, domain=args.domain, room=args.room)
    room_config = await resolve_room(opts, role, secret.key_id, "dexter")
    # exactly what the transport node builds with loopback_only:=true stun_turn:=false
    session_config = SessionConfig(
        p2p=P2PConfig(candidate_filter=loopback_only), discover_ice_servers=False
    )
    outgoing = [Outgoing(s, JS_HASH, i + 1) for i, s in enumerate(topics.outgoing(role))]
    prefix = default_peer_prefix(role)
    incoming = [Incoming(s, JS_HASH, s.receive_topic(prefix)) for s in topics.incoming(role)]
    received: list[tuple[int, bytes]] = []

    def deliver(_inc: Any, payload: bytes, _info: Any) -> None:
        received.append((time.monotonic_ns(), payload))

    bridge = Bridge(room_config, session_config, secret, role, outgoing, incoming, deliver)
    await bridge.connect()
    while bridge.session is None or bridge.session.path != PATH_P2P:
        await asyncio.sleep(0.05)

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def pump() -> None:
        while line := await reader.readline():
            await lines.put(json.loads(line))
        await lines.put({"quit": True})

    pump_task = asyncio.ensure_future(pump())
    _say(ready=True)
    while True:
        cmd = await lines.get()
        if "quit" in cmd:
            break
        if "run" in cmd:  # leader: send a run, report the send stamps
            _say(sent=await _core_send(bridge, cmd["run"]))
        if "collect" in cmd:  # follower: receive stamps since the last collect
            rows = [(seq_of(p), ns) for ns, p in received]
            received.clear()
            st = bridge.status()
            _say(received={"rows": rows, "path": st.session.path if st else ""})
    pump_task.cancel()
    await bridge.close()


async def _core_send(bridge: Any, r: dict[str, Any]) -> dict[str, Any]:
    """One run from the core leader: warm-up, then the measured window (stamped)."""
    template, first = bytes.fromhex(r["template"]), r["first"]
    payloads = [with_seq(template, first + n) for n in range(r["count"])]

    def send(seq: int) -> None:
        bridge.send(0, payloads[seq - first])

    await apace(r["rate"], r["warmup"], send, first)
    start = first + r["warm_count"]
    return {"first": start, "stamps": await apace(r["rate"], r["seconds"], send, start)}


def _say(**msg: Any) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


# =============================================================================================
# dds-echo child: a plain rclpy node, /ping -> /pong


def _child_echo() -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from jitsi_teleop.ros.common import make_executor

    rclpy.init()
    node = rclpy.create_node("bench_echo")
    # the transport's QoS: best-effort depth-10 subscription, default (reliable, 10) publisher
    pub = node.create_publisher(JointState, "/pong", 10)
    sub_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    node.create_subscription(JointState, "/ping", pub.publish, sub_qos, raw=True)
    executor = make_executor()  # the transport node's executor, so the residual compares
    executor.add_node(node)
    try:
        while executor.context.ok():
            executor.spin_once(timeout_sec=1.0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


# =============================================================================================
# parent


class Child:
    """A child process speaking JSON lines on stdin/stdout."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        self.msgs: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.msgs.put(json.loads(line))
            except ValueError:
                continue
        self.msgs.put({"eof": True})

    def tell(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.msgs.get(timeout=max(0.1, deadline - time.monotonic()))
            if key in msg:
                return msg[key]
            if "eof" in msg:
                raise RuntimeError(f"child exited:\n{self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(2)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        self._log.close()


class CpuWindow:
    """CPU seconds of some processes over a window, from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = {k: proc_cpu_s(p) for k, p in pids.items()}

    def used(self) -> tuple[dict[str, float], float]:
        """CPU seconds per process since the start, and the wall seconds."""
        wall = time.monotonic() - self.t0
        return {k: proc_cpu_s(p) - self.c0[k] for k, p in self.pids.items()}, wall


INCLUDES = {
    "dds-local": "publish -> subscription callback in this process, one domain (Fast DDS "
    "in-process delivery + this process's executor wake-up)",
    "dds-echo": "publish -> other process (plain rclpy node, executor callback) -> republish "
    "-> this process's subscription callback: two cross-process DDS hops",
    "core": "Bridge.send in the leader process -> session seal -> ICE datagram -> open -> "
    "Bridge deliver callback in the follower process; no rclpy",
    "ros": "publish (leader domain) -> DDS -> leader transport executor -> thread hand-off -> "
    "Bridge/session/ICE datagram -> follower transport republish (asyncio thread) -> DDS -> "
    "this process's subscription callback (follower domain)",
}


class Bench:
    """Everything that stays up across rates: Prosody, the two ROS sites with their transport
    processes, the core pair, the echo node."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import rclpy.serialization
        from sensor_msgs.msg import JointState

        from jitsi_teleop.local_prosody import ProsodyServer
        from ros_sites import Site, make_key_file, site_domains, start_transport

        self.args = args
        self.tmp = tmp
        self.JointState = JointState
        self.template = self._template(rclpy.serialization.serialize_message)
        self.next_seq = 1
        self.server = ProsodyServer()
        self.server.start()
        key = make_key_file(tmp)
        config = args.config or (tmp / "bench_topics.yaml")
        if args.config is None:
            config.write_text(BENCH_TOPICS)
        self.config = Path(config)
        dom_a, dom_b = site_domains()
        self.dom_c = site_domains()[0]
        ros_room, core_room = "ro" + secrets.token_hex(4), "co" + secrets.token_hex(4)
        self.leader = Site(dom_a, "bench_leader")
        self.follower = Site(dom_b, "bench_follower")
        self.base = Site(self.dom_c, "bench_base")
        self.leader_diag = self.leader.diagnostics()
        self.follower_diag = self.follower.diagnostics()
        self.transports = [
            start_transport(r, d, self.server, ros_room, key, config=config, log_dir=tmp)
            for r, d in (("leader", dom_a), ("follower", dom_b))
        ]
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
        me = [sys.executable, str(Path(__file__).resolve())]
        core_args = ["--ws", self.server.websocket_url, "--domain", self.server.domain]
        core_args += ["--room", core_room, "--key", str(key), "--config", str(config)]
        self.core = {
            r: Child([*me, "--child", "core", r, *core_args], env, tmp / f"core-{r}.log")
            for r in ("leader", "follower")
        }
        self.echo = Child(
            [*me, "--child", "echo", "-"],
            dict(env, ROS_DOMAIN_ID=str(self.dom_c)),
            tmp / "echo.log",
        )
        # endpoints of the bench process
        self.ros_pub = self.leader.publisher(JointState, "/joint_states", 10)
        self.ros_rec = self.follower.record(JointState, "/leader/joint_states", 1000)
        self.loop_pub = self.base.publisher(JointState, "/loop", 10)
        self.loop_rec = self.base.record(JointState, "/loop", 1000)
        self.ping_pub = self.base.publisher(JointState, "/ping", 10)
        self.pong_rec = self.base.record(JointState, "/pong", 1000)
        self._wait_ready()

    def _template(self, serialize: Callable[[Any], bytes]) -> bytes:
        m = self.JointState()
        m.header.stamp.sec = 0
        m.header.frame_id = "base_link"
        m.name = [f"joint_{i}" for i in range(1, 7)]
        m.position = [0.1, -0.5, 1.25, 0.45, -0.25, 0.0]
        m.velocity = [0.0] * 6
        m.effort = [0.0] * 6
        data = bytes(serialize(m))
        assert data[:2] == b"\x00\x01", "expected little-endian CDR"
        assert seq_of(with_seq(data, 12345)) == 12345
        return data

    def _wait_ready(self) -> None:
        from ros_sites import link_status, wait_for

        def paired() -> bool:
            a, b = link_status(self.leader_diag), link_status(self.follower_diag)
            return bool(a and b and a.get("path") == "p2p" and b.get("path") == "p2p")

        wait_for(paired, 60, "both transports on the data channel", self.transports)
        for c in self.core.values():
            c.expect("ready", 60)
        wait_for(lambda: self.ros_pub.get_subscription_count() > 0, 10, "leader transport sub")
        wait_for(lambda: self.ping_pub.get_subscription_count() > 0, 20, "echo node subscribed")
        wait_for(lambda: self.pong_rec_matched(), 20, "echo node publishing")
        wait_for(lambda: self.loop_pub.get_subscription_count() > 0, 10, "local subscription")

    def pong_rec_matched(self) -> bool:
        return self.base.node.count_publishers("/pong") > 0

    def close(self) -> None:
        for c in (*self.core.values(), self.echo):
            c.stop()
        for p in self.transports:
            p.stop()
        for s in (self.leader, self.follower, self.base):
            s.close()
        self.server.cleanup()

    # ------------------------------------------------------------ runs -------------------
    def _seqs(self, rate: int, warmup: float, seconds: float) -> tuple[int, int, int]:
        """First seq, warm-up count, total count budget of a part (fresh seqs per part)."""
        warm = int(warmup * rate) + 2
        count = warm + int(seconds * rate) + 2
        first = self.next_seq
        self.next_seq += count + 10
        return first, warm, count

    def part_ros_like(
        self,
        rate: int,
        warmup: float,
        seconds: float,
        publish: Callable[[bytes], None],
        recorder: Any,
        pids: dict[str, int],
    ) -> Part:
        """Pace ``publish`` in this process; receive with ``recorder`` (a Site's)."""
        first, warm, count = self._seqs(rate, warmup, seconds)
        payloads = [with_seq(self.template, first + n) for n in range(count)]
        recorder.items.clear()
        warm_stamps = pace(rate, warmup, lambda s: publish(payloads[s - first]), first)
        cpu = CpuWindow({"bench_process": os.getpid(), **pids})
        start = first + warm
        stamps = pace(rate, seconds, lambda s: publish(payloads[s - first]), start)
        cpu_s, wall = cpu.used()
        time.sleep(TAIL_S)
        got = [(seq_of(d), ns) for ns, d in list(recorder.items)]
        part = Part({start + i: ns for i, ns in enumerate(stamps)}, got, cpu_s, wall)
        part.counts.update(bench_published=len(warm_stamps) + len(stamps), bench_received=len(got))
        return part

    def part_core(self, rate: int, warmup: float, seconds: float) -> Part:
        first, warm, count = self._seqs(rate, warmup, seconds)
        lead, foll = self.core["leader"], self.core["follower"]
        foll.tell(collect=True)  # drop anything older
        foll.expect("received", 10)
        run = dict(rate=rate, warmup=warmup, seconds=seconds)
        run.update(first=first, warm_count=warm, count=count, template=self.template.hex())
        lead.tell(run=run)
        time.sleep(warmup)
        cpu = CpuWindow({"core_leader": lead.proc.pid, "core_follower": foll.proc.pid})
        s = lead.expect("sent", warmup + seconds + 60)
        cpu_s, wall = cpu.used()
        time.sleep(TAIL_S)
        foll.tell(collect=True)
        r = foll.expect("received", 30)
        sent = {s["first"] + i: ns for i, ns in enumerate(s["stamps"])}
        part = Part(sent, [(q, ns) for q, ns in r["rows"]], cpu_s, wall)
        part.notes.update(path=r["path"])
        return part

    def _stages(self) -> dict[str, int]:
        """Cumulative counters of the transports (diagnostics), to say where samples went."""
        from ros_sites import topic_status

        o = topic_status(self.leader_diag, "out joint_states") or {}
        i = topic_status(self.follower_diag, "in /leader/joint_states") or {}
        return {
            "leader_transport_sent": int(o.get("sent") or 0),
            "leader_transport_coalesced": int(o.get("coalesced") or 0),
            "leader_transport_not_sent": int(o.get("not_sent") or 0),
            "follower_transport_republished": int(i.get("received") or 0),
            "follower_session_lost": int(i.get("lost") or 0),
        }

    def part_ros(self, rate: int, warmup: float, seconds: float) -> Part:
        from ros_sites import link_status, topic_status

        pids = {f"transport_{p.role}": p.proc.pid for p in self.transports}
        before = self._stages()
        part = self.part_ros_like(rate, warmup, seconds, self.ros_pub.publish, self.ros_rec, pids)
        time.sleep(0.6)  # one more diagnostics period
        after = self._stages()
        part.counts.update({k: after[k] - before[k] for k in after})
        link = link_status(self.leader_diag) or {}
        inc = topic_status(self.follower_diag, "in /leader/joint_states") or {}
        part.notes.update(
            path=link.get("path"),
            leader_handoff_p50_us=link.get("handoff_p50_us"),
            leader_handoff_p99_us=link.get("handoff_p99_us"),
            follower_session_latency_p50_ms=inc.get("latency_p50_ms"),
            follower_session_latency_p99_ms=inc.get("latency_p99_ms"),
        )
        return part

    def run_rate(self, rate: int, out: Callable[[str], None]) -> list[Row]:
        """``--rounds`` rounds; each runs every path for duration/rounds seconds, in a rotated
        order, so that load from elsewhere on the machine falls on all paths alike."""
        runners: dict[str, Callable[[float, float], Part]] = {
            "dds-local": lambda w, t: self.part_ros_like(
                rate, w, t, self.loop_pub.publish, self.loop_rec, {}
            ),
            "dds-echo": lambda w, t: self.part_ros_like(
                rate, w, t, self.ping_pub.publish, self.pong_rec, {"echo": self.echo.proc.pid}
            ),
            "core": lambda w, t: self.part_core(rate, w, t),
            "ros": lambda w, t: self.part_ros(rate, w, t),
        }
        names = list(runners)
        parts: dict[str, list[Part]] = {n: [] for n in names}
        rounds = max(1, self.args.rounds)
        for k in range(rounds):
            for name in names[k % len(names) :] + names[: k % len(names)]:
                warmup = self.args.warmup if k == 0 else REWARM_S
                parts[name].append(runners[name](warmup, self.args.duration / rounds))
        rows = [merge(name, rate, parts[name]) for name in names]
        for r in rows:
            out(fmt_row(r))
        return rows


@dataclass
class Part:
    """One measured window of one path: send stamps by seq, (seq, receive stamp), CPU."""

    sent: dict[int, int]
    got: list[tuple[int, int]]
    cpu_s: dict[str, float]
    wall_s: float
    counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def merge(path: str, rate: int, parts: list[Part]) -> Row:
    """One row from a path's windows: latencies pooled, CPU over the summed windows."""
    sent: dict[int, int] = {}
    got: list[tuple[int, int]] = []
    cpu: dict[str, float] = {}
    counts: dict[str, int] = {}
    for p in parts:
        sent.update(p.sent)
        got += p.got
        for k, v in p.cpu_s.items():
            cpu[k] = cpu.get(k, 0.0) + v
        for k, n in p.counts.items():
            counts[k] = counts.get(k, 0) + n
    wall = sum(p.wall_s for p in parts)
    row = Row(path, rate, INCLUDES[path])
    row.cpu_pct = {k: round(100 * v / wall, 1) for k, v in cpu.items()}
    row.notes["windows"] = len(parts)
    row.notes["counts_incl_warmup"] = counts
    if any(p.notes for p in parts):
        row.notes["per_window"] = [p.notes for p in parts]
    summarize(row, sent, got)
    for p in parts:
        row.window_p99_ms.append(summarize(Row(path, rate, ""), p.sent, p.got).latency_p99_ms)
    known = sorted(v for v in row.window_p99_ms if v is not None)
    row.latency_p99_median_window_ms = known[len(known) // 2] if known else None
    return row


STATS = (("p50", "latency_p50_ms"), ("p99", "latency_p99_ms"))
STATS += (("p99w", "latency_p99_median_window_ms"),)


@dataclass
class Overhead:
    """One quantity at one rate, in ms: a path's latency, or a difference of two."""

    rate_hz: int
    quantity: str
    p50_ms: float | None
    p99_ms: float | None
    p99w_ms: float | None  #: from the median-of-windows p99s


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


def overhead(rows: list[Row]) -> list[Overhead]:
    """Per rate: the four paths, ROS overhead = ros - core, residual = overhead - dds-echo."""
    out = []
    for rate in sorted({r.rate_hz for r in rows}):
        by = {r.path: r for r in rows if r.rate_hz == rate}
        vals = {p: [getattr(by[p], f) for _, f in STATS] for p in INCLUDES}
        ovh = [_sub(a, b) for a, b in zip(vals["ros"], vals["core"])]
        vals["ROS overhead (ros - core)"] = ovh
        vals["residual (overhead - dds-echo)"] = [_sub(a, b) for a, b in zip(ovh, vals["dds-echo"])]
        out += [Overhead(rate, q, *v) for q, v in vals.items()]
    return out


HEADER = (
    f"{'path':<10} {'rate':>5} {'sent':>6} {'recv':>6} {'lost':>5} "
    f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99w ms':>7} {'max ms':>7}  cpu %"
)


def _f(v: float | None, w: int = 7) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.3f}"


def fmt_row(r: Row) -> str:
    cpu = " ".join(f"{k}={v:g}" for k, v in r.cpu_pct.items())
    return (
        f"{r.path:<10} {r.rate_hz:>5} {r.sent:>6} {r.received:>6} {r.lost:>5} "
        f"{_f(r.latency_p50_ms)} {_f(r.latency_p90_ms)} {_f(r.latency_p99_ms)} "
        f"{_f(r.latency_p99_median_window_ms)} {_f(r.latency_max_ms)}  {cpu}"
    )


def fmt_overhead(o: list[Overhead]) -> str:
    lines = [f"{'rate':>5}  {'quantity':<32} {'p50':>7} {'p99':>7} {'p99w':>7}"]
    for x in o:
        lines.append(
            f"{x.rate_hz:>5}  {x.quantity:<32} {_f(x.p50_ms)} {_f(x.p99_ms)} {_f(x.p99w_ms)}"
        )
    return "\n".join(lines)


def machine(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """Where it ran; the load averages say whether other work shared the machine."""
    load = os.getloadavg()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[500])
    ap.add_argument("--duration", type=float, default=10.0, help="s measured per path and rate")
    ap.add_argument("--warmup", type=float, default=2.0, help="s sent first, not measured")
    ap.add_argument("--rounds", type=int, default=5, help="windows per path, interleaved")
    ap.add_argument("--config", type=Path, default=None, help="topic file for both paths")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    for name in ("--ws", "--domain", "--room", "--key"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child[0] == "core":
            from jitsi_teleop.loop_thread import run as run_loop

            run_loop(_child_core(args))  # the transport node's loop kind (uvloop if installed)
        else:
            _child_echo()
        return 0

    load_at_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ros-overhead-"))
    print(f"setting up (logs in {tmp}) ...", flush=True)
    bench = Bench(args, tmp)
    rows: list[Row] = []
    try:
        print(HEADER, flush=True)
        for rate in args.rates:
            rows += bench.run_rate(rate, lambda s: print(s, flush=True))
    finally:
        bench.close()
    ovh = overhead(rows)
    print()
    print(fmt_overhead(ovh))
    print(
        "(ms; p99w: median over the windows of each window's p99; residual: what the transport "
        "node adds beyond two plain DDS hops and one executor callback)"
    )
    doc = {
        "bench": "ros_overhead",
        "issue": 5,
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(load_at_start),
        "payload": "sensor_msgs/msg/JointState, 6 joints, CDR",
        "payload_bytes": len(bench.template),
        "topic_config": str(args.config) if args.config else BENCH_TOPICS,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "rewarm_s": REWARM_S,
        "clock": "CLOCK_MONOTONIC (time.monotonic_ns), shared by all processes",
        "includes": INCLUDES,
        "overhead": [asdict(o) for o in ovh],
        "results": [asdict(r) for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
