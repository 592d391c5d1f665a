"""Transport node (``ros2 run jitsi_teleop transport``): the configured topics cross the room.

Raw subscriptions in, serialized publishes out: the node never decodes a message. The rclpy
executor owns the main thread; the asyncio core (:class:`~jitsi_teleop.bridge.core.Bridge`:
room, session, rate shaping) runs in a :class:`~jitsi_teleop.loop_thread.LoopThread`. A local
message crosses threads once, through ``call_soon_threadsafe``; the peer's messages are
republished straight from the asyncio thread (rcl publishers are thread-safe), so no executor
wake-up sits on the receive path.

Parameters (all read-only): ``role``, ``config`` (topic YAML; default the package's
``config/teleop_topics.yaml``), ``peer_prefix`` (default ``/<peer role>``), the room
(``room``: meeting URL; or ``domain``, ``room_name``, ``websocket_url`` / ``tcp``, ``muc_domain``,
``focus``), ``password``, ``insecure``, ``secret_file`` (else ``$JITSI_TELEOP_KEY_FILE`` or
``$JITSI_TELEOP_PASSPHRASE``: never the secret itself as a parameter), ``loopback_only``
(ICE on 127.0.0.1 only: tests and the one-machine simulation), ``impairment_relay`` (the
fast path through the demo's delay/loss relay on this host), ``stun_turn`` (ask the server
for STUN/TURN), ``robot``, ``diagnostics_period``, and the room keepalive (``ping_interval``,
``ping_timeout``, ``ping_failures``: how soon a room connection that died silently is found).

Out: the peer's topics under ``peer_prefix``, and ``/diagnostics`` (path in use, peer, round
trip, clock, failovers, problems; per topic: rate, one-way latency p50/p99, age, drops).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

from jitsi_teleop.bridge.core import Bridge, BridgeStatus, Incoming, Outgoing
from jitsi_teleop.bridge.options import RoomOptions, SiteError, load_site_secret, resolve_room
from jitsi_teleop.bridge.topics import (
    QosSpec,
    TopicConfigError,
    TopicSpec,
    default_peer_prefix,
    load_topics,
    peer_of,
)
from jitsi_teleop.carriers.dropdown import dropdown_lan_name
from jitsi_teleop.linklocal.carrier import LanConfig, is_lan_room
from jitsi_teleop.links.ice import ice_summary
from jitsi_teleop.links.p2p import P2PConfig, loopback_only
from jitsi_teleop.loop_thread import LoopThread
from jitsi_teleop.relay_faces import ipv4_loopback, remote_advertise
from jitsi_teleop.room.account import AccountError, load_account
from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.ros import console_adapter
from jitsi_teleop.ros.common import spin_node
from jitsi_teleop.ros.distro import Endpoint, GraphHashCheck
from jitsi_teleop.ros.type_hash import TypeHashError, type_hash
from jitsi_teleop.ros.type_hash import message_class as _message_class
from jitsi_teleop.session import PATH_P2P, ReceiveInfo, SessionConfig

DEFAULT_TOPICS = "teleop_topics.yaml"
#: What a raw subscription asks for: best effort matches any publisher; latest streams keep
#: a few samples, so that the bridge's shaper (not the DDS queue, where it goes uncounted)
#: picks the newest and counts what it supersedes; reliable ones keep everything.
_SUB_LATEST = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
_SUB_RELIABLE = QoSProfile(
    history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE, depth=1000
)


class TransportError(RuntimeError):
    """The node cannot start: the message says which setting or topic is at fault."""


def default_config_path() -> str:
    """The installed share/jitsi_teleop/config file, else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        p = Path(get_package_share_directory("jitsi_teleop")) / "config" / DEFAULT_TOPICS
        if p.exists():
            return str(p)
    except Exception:  # not in a ROS workspace (pip install -e): use the source tree
        pass
    return str(Path(__file__).resolve().parents[3] / "config" / DEFAULT_TOPICS)


def message_class(spec: TopicSpec) -> Any:
    """Import ``pkg/msg/Type``; a clear error naming the topic when it is not installed."""
    try:
        return _message_class(spec.ros_type)
    except TypeHashError as e:
        raise TransportError(f"topic {spec.topic}: {e}") from None


def announced_hash(spec: TopicSpec, cls: Any) -> str:
    """The RIHS01 hash the peer compares with its own: computed from the class, so start-up
    never waits for the middleware to list our endpoints (and works on Humble)."""
    try:
        return type_hash(cls)
    except TypeHashError as e:
        raise TransportError(f"topic {spec.topic}: {e}") from None


def publisher_qos(q: QosSpec) -> QoSProfile:
    return QoSProfile(
        depth=q.depth,
        reliability=ReliabilityPolicy.RELIABLE
        if q.reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL
        if q.durability == "transient_local"
        else DurabilityPolicy.VOLATILE,
    )


class TransportNode(Node):
    # Kilted's rclpy.shutdown() also destroys a node whose constructor raised (bad settings):
    # destroy_node must work on a half-built node, so these exist before __init__ runs
    _closing = False
    _started = False  #: the session's asyncio task runs: close() has something to stop

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("jitsi_teleop_transport", **kwargs)
        p = self._declare_params()
        self.role: str = p["role"]
        if self.role not in ("leader", "follower"):
            raise TransportError(f"role must be leader or follower, not {self.role!r}")
        self.peer_prefix: str = p["peer_prefix"] or default_peer_prefix(self.role)
        try:
            topics = load_topics(p["config"] or default_config_path())
        except TopicConfigError as e:
            raise TransportError(str(e)) from None
        self.topics_source = topics.source
        self._pubs: dict[str, Any] = {}
        outgoing = self._make_outgoing(topics.outgoing(self.role))
        incoming = self._make_incoming(topics.incoming(self.role))
        try:  # the password from a file or the environment, never a parameter
            account = load_account(p["jid"], p["password_file"])
        except AccountError as e:
            raise TransportError(str(e)) from None
        opts = RoomOptions(
            account=account,
            direct_peers=tuple(j.strip() for j in p["peer_jid"].split(",") if j.strip()),
            meeting_url=p["room"],
            websocket_url=p["websocket_url"],
            bosh_url=p["bosh_url"],
            tcp=p["tcp"],
            domain=p["domain"],
            muc_domain=p["muc_domain"],
            room=p["room_name"],
            focus=p["focus"],
            password=os.environ.get("JITSI_TELEOP_ROOM_PASSWORD", "") or p["password"],
            insecure=p["insecure"],
            ping_interval=p["ping_interval"],
            ping_timeout=p["ping_timeout"],
            ping_failures=p["ping_failures"],
        )
        room_hint = opts.room or opts.meeting_url.rstrip("/").rsplit("/", 1)[-1]
        lan = is_lan_room(p["room"])  # room:=lan:NAME: serverless, XEP-0174 on the LAN
        if lan:
            room_hint = p["room"].strip().lower()
        try:
            secret = load_site_secret(p["secret_file"], room_hint)
        except SiteError as e:
            raise TransportError(str(e)) from None
        p2p = self._p2p_config(p["loopback_only"], p["impairment_relay"])
        session_config = SessionConfig(
            p2p=p2p, discover_ice_servers=p["stun_turn"], lock_room=p["lock_room"]
        )
        self._loop = LoopThread("transport-asyncio")
        try:
            room_config: RoomConfig | LanConfig
            if lan:
                room_config = LanConfig(
                    p["room"],
                    self.role,
                    key_id=secret.key_id,
                    robot=p["robot"],
                    display_name=f"jitsi-teleop {self.role}",
                    addresses=[a.strip() for a in p["lan_addresses"].split(",") if a.strip()]
                    or None,
                )
            else:
                room_config = self._loop.run(
                    resolve_room(opts, self.role, secret.key_id, p["robot"]), timeout=30
                )
        except Exception as e:
            self._loop.stop()
            raise TransportError(f"room: {getattr(e, 'reason', None) or e}") from None
        self.room_jid = room_config.room_jid
        self.key_id = secret.key_id
        dropdown = None
        if p["lan_dropdown"] and not lan:
            dropdown = LanConfig(
                dropdown_lan_name(room_config.room),
                self.role,
                key_id=secret.key_id,
                robot=p["robot"],
                addresses=[a.strip() for a in p["lan_addresses"].split(",") if a.strip()] or None,
            )
        self.bridge = Bridge(
            room_config,
            session_config,
            secret,
            self.role,
            outgoing,
            incoming,
            self._republish,
            dropdown=dropdown,
        )
        try:  # the chat console and the event log (jitsi_teleop.console)
            self.console = console_adapter.ConsoleAdapter(self, self.role, p["robot"])
        except console_adapter.ConsoleSetupError as e:
            self._loop.stop()
            raise TransportError(str(e)) from None
        self._reported: set[str] = set()
        self._told: tuple[str | None, int] = (None, 0)  # (peer reported, path events reported)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._runner = self._loop.submit(self._run(p["diagnostics_period"]))
        # every topic's messages cross to the asyncio thread through one batching hand-off
        send = self.bridge.send
        self._handoff = self._loop.handoff(lambda item: send(*item))
        self._started = True
        # subscriptions last: nothing is handed to the bridge before it exists
        for i, o in enumerate(outgoing):
            self._subscribe(i, o)
        self._start_hash_check(outgoing, incoming)
        self.get_logger().info(
            f"{self.role} in {self.room_jid} (key id {self.key_id}): "
            f"{len(outgoing)} topics out, {len(incoming)} in under {self.peer_prefix}"
        )

    # ------------------------------------------------------------ setup ----------------
    def _declare_params(self) -> dict[str, Any]:
        spec: dict[str, tuple[Any, str]] = {
            "role": ("leader", "leader or follower"),
            "config": ("", "topic YAML (default: the package's config/teleop_topics.yaml)"),
            "peer_prefix": ("", "where the peer's topics appear (default /<peer role>)"),
            "room": (
                "",
                "meeting URL, e.g. https://meet.example.org/MyRoom; or lan:NAME: no server, "
                "find the peer on the LAN (XEP-0174 link-local)",
            ),
            "lan_addresses": ("", "LAN carrier: IPv4 addresses to use (default: all)"),
            "lan_dropdown": (
                False,
                "in a Jitsi room, also announce on the LAN: when the peer is on the LAN too, "
                "signalling and the slow path go over it and survive the server going away",
            ),
            "room_name": ("", "room name (default: from the meeting URL)"),
            "domain": ("", "XMPP domain (with websocket_url or tcp: no config.js lookup)"),
            "muc_domain": ("", "MUC domain (default conference.<domain>)"),
            "websocket_url": ("", "XMPP WebSocket URL (ws:// or wss://)"),
            "bosh_url": (
                "",
                "XMPP BOSH URL (http(s)://HOST/http-bind): forces BOSH (with websocket_url: "
                "WebSocket first, BOSH if it cannot be opened)",
            ),
            "tcp": ("", "host:port: plain XMPP over TCP instead of WebSocket"),
            "focus": ("", "focus component JID (empty: none, or config.js's)"),
            "password": ("", "room password (prefer $JITSI_TELEOP_ROOM_PASSWORD)"),
            "insecure": (False, "do not verify TLS certificates (test servers only)"),
            "jid": ("", "log in with this XMPP account (user@domain) instead of anonymously"),
            "peer_jid": (
                "",
                "no MUC: pair one-to-one with this account (user@domain; comma-separated for "
                "several); needs jid; room_name is then the pairing name both sites share",
            ),
            "password_file": (
                "",
                "file holding the account's password (else $JITSI_TELEOP_XMPP_PASSWORD_FILE "
                "or $JITSI_TELEOP_XMPP_PASSWORD; never the password itself as a parameter)",
            ),
            "secret_file": ("", "pairing key file (jitsi-teleop keygen FILE)"),
            "loopback_only": (False, "ICE candidates on 127.0.0.1 only (one-machine tests)"),
            "impairment_relay": (
                0,
                "port of an impairment relay's face server on 127.0.0.1 (jitsi-teleop demo "
                "--ros --delay ...): the fast path goes through the relay; 0 = off",
            ),
            "stun_turn": (True, "ask the server for STUN/TURN (XEP-0215)"),
            "lock_room": (
                False,
                "while paired, lock the room with a random password (only when this site owns "
                "or moderates the room; the peer gets the password sealed, to rejoin)",
            ),
            "robot": ("dexter", "robot name announced in presence"),
            "diagnostics_period": (1.0, "s between /diagnostics messages"),
            "ping_interval": (
                5.0,
                "room keepalive: s between pings to the server; a connection that died "
                "silently (a NAT reboot) is found within ping_interval + ping_timeout",
            ),
            "ping_timeout": (3.0, "room keepalive: s to wait for any byte from the server"),
            "ping_failures": (1, "room keepalive: failed pings in a row that drop the connection"),
        }
        out = {}
        for name, (default, text) in spec.items():
            desc = ParameterDescriptor(description=text, read_only=True)
            out[name] = self.declare_parameter(name, default, desc).value
        return out

    def _p2p_config(self, loopback: bool, relay_port: int) -> P2PConfig:
        if not relay_port:
            return P2PConfig(candidate_filter=loopback_only if loopback else None)
        if not 0 < relay_port < 65536:
            raise TransportError(f"impairment_relay must be a port number, not {relay_port}")
        # the relay stands between the two sites on this host: the leader is its side a
        side = "a" if self.role == "leader" else "b"
        return P2PConfig(
            candidate_filter=ipv4_loopback, advertise=remote_advertise(relay_port, side)
        )

    def _make_outgoing(self, specs: Sequence[TopicSpec]) -> list[Outgoing]:
        out = []
        self._sub_specs: list[tuple[TopicSpec, Any]] = []
        for i, s in enumerate(specs):
            cls = message_class(s)
            h = announced_hash(s, cls)
            out.append(
                Outgoing(s, h, stream_id=i + 1, local_topic=self.resolve_topic_name(s.topic))
            )
            self._sub_specs.append((s, cls))
        return out

    def _make_incoming(self, specs: Sequence[TopicSpec]) -> list[Incoming]:
        inc = []
        for s in specs:
            cls = message_class(s)
            topic = s.receive_topic(self.peer_prefix)
            pub = self.create_publisher(cls, topic, publisher_qos(s.qos))
            h = announced_hash(s, cls)
            key = "/" + s.remote
            self._pubs[key] = pub
            inc.append(Incoming(s, h, pub.topic_name))
        return inc

    def _subscribe(self, index: int, o: Outgoing) -> None:
        spec, cls = self._sub_specs[index]
        qos = _SUB_RELIABLE if spec.delivery == "reliable" else _SUB_LATEST
        put = self._handoff.put

        def on_message(data: bytes) -> None:
            put((index, data, perf_counter_ns()))

        self.create_subscription(cls, spec.topic, on_message, qos, raw=True)

    def _start_hash_check(self, outgoing: Sequence[Outgoing], incoming: Sequence[Incoming]) -> None:
        """Cross-check the announced hashes with what the middleware lists for our own
        endpoints, whenever it lists them (Fast DDS at once, Cyclone DDS later, Humble without
        hashes): a warning, never a reason not to start."""
        endpoints = [Endpoint(o.local_topic, False, o.type_hash) for o in outgoing]
        endpoints += [Endpoint(i.local_topic, True, i.type_hash) for i in incoming]
        check = GraphHashCheck(endpoints, self.get_name(), self.get_namespace())

        def poll() -> None:
            for text in check.poll(
                self.get_publishers_info_by_topic, self.get_subscriptions_info_by_topic
            ):
                self.get_logger().warning(text)
            if check.done:
                if check.unavailable:
                    self.get_logger().info("no type hashes in this ROS graph: computed ones used")
                self.destroy_timer(timer)

        timer = self.create_timer(1.0, poll)
        self._hash_check = check

    # ------------------------------------------------------------ asyncio side ---------
    def _republish(self, inc: Incoming, payload: bytes, info: ReceiveInfo) -> None:
        if self._closing or not self.context.ok():  # Ctrl-C: rclpy is already shut down
            return
        self._pubs["/" + inc.spec.remote].publish(payload)

    async def _run(self, period: float) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self.bridge.connect()
                self.console.attach(self.bridge)
                break
            except Exception as e:
                reason = getattr(e, "reason", None) or str(e) or type(e).__name__
                self.get_logger().warning(f"cannot join {self.room_jid}: {reason}; retrying")
                self._publish_diagnostics(None)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        while not self._closing:
            status = self.bridge.status()
            self.console.tick(status)
            self._report_problems(status)
            self._report_pairing(status)
            self._publish_diagnostics(status)
            await asyncio.sleep(period)

    def _report_problems(self, status: BridgeStatus | None) -> None:
        if status is None:
            return
        for text in status.session.problems + [
            f"peer refused: {r}" for r in status.session.peer_refusals
        ]:
            if text not in self._reported:
                self._reported.add(text)
                self.get_logger().error(text)

    def _report_pairing(self, status: BridgeStatus | None) -> None:
        """INFO: whom we paired with and how long it took, every path change and why."""
        session = self.bridge.session
        if status is None or session is None:
            return
        s = status.session
        peer, seen = self._told
        log = self.get_logger()
        if s.paired and s.peer != peer:
            t = s.timings.get("join_to_paired_s")
            took = "" if t is None else f" {t:.2f} s after joining"
            unproven = s.refusals.get("unproven_claimants", 0)
            extra = f"; {unproven} occupant(s) claimed its role and could not prove it" * bool(
                unproven
            )
            log.info(f"paired with {peer_of(self.role)} {s.peer}{took}{extra}")
        elif not s.paired and peer is not None:
            log.warning(f"{peer_of(self.role)} {peer} gone; pairing again")
        events = session.path_events
        for ev in events[seen:]:
            why = "" if ev.detection_s is None else f", detected after {ev.detection_s:.2f} s"
            log.info(f"path {ev.old} -> {ev.new}: {ev.reason}{why}")
            if ev.new == PATH_P2P and s.timings.get("join_to_fast_path_s") is not None:
                log.info(f"fast path up {s.timings['join_to_fast_path_s']:.2f} s after joining")
        self._told = (s.peer if s.paired else None, len(events))

    def _publish_diagnostics(self, status: BridgeStatus | None) -> None:
        if self._closing or not self.context.ok():
            return
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = diagnostics(self, status)
        self._diag_pub.publish(arr)

    def close(self) -> None:
        already, self._closing = self._closing, True
        if already or not self._started:
            return
        try:
            self._loop.run(self.console.aclose(), timeout=2)
            self._loop.run(self.bridge.close(), timeout=5)
        except Exception as e:  # shutting down anyway
            self.get_logger().warning(f"closing the session: {e}")
        self._runner.cancel()
        self._loop.stop()
        self.console.close()  # the event log's file

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def _us(us: float | None) -> str:
    return "" if us is None else f"{us:.1f}"


def _ms(us: float | None) -> str:
    return "" if us is None or not math.isfinite(us) else f"{us / 1000:.3f}"


def _s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.3f}"


def diagnostics(node: TransportNode, status: BridgeStatus | None) -> list[DiagnosticStatus]:
    """One status for the link, one per topic. Levels: OK on the data channel, WARN on the
    room's slow path or while pairing, ERROR when the room is down or a topic was refused."""
    link = DiagnosticStatus(name="jitsi_teleop transport: link", hardware_id=node.room_jid)
    kv = [("role", node.role), ("room", node.room_jid), ("key_id", node.key_id)]
    if status is None:
        link.level = DiagnosticStatus.ERROR
        link.message = f"not in the room: {node.bridge.last_error or 'joining'}"
        link.values = [KeyValue(key=k, value=v) for k, v in kv]
        return [link]
    s = status.session
    problems = [p for p in s.problems] + [f"peer refused: {r}" for r in s.peer_refusals]
    if not status.room_connected:
        link.level, link.message = DiagnosticStatus.ERROR, "room connection lost; reconnecting"
    elif problems:
        link.level, link.message = DiagnosticStatus.ERROR, problems[0]
    elif not s.paired:
        link.level, link.message = DiagnosticStatus.WARN, f"waiting for the {peer_of(node.role)}"
    elif s.path != PATH_P2P:
        link.level, link.message = DiagnosticStatus.WARN, f"path {s.path}: slow path via the room"
    else:
        rtt = _ms(s.rtt_us.get(PATH_P2P))
        via = (s.ice.get("selected") or {}).get("turn_server")
        kind = s.ice.get("path") or "direct"
        kind = f"{kind} via {via}" if via else kind
        link.level, link.message = DiagnosticStatus.OK, f"path p2p ({kind}), rtt {rtt} ms"
    kv += [
        ("path", s.path),
        ("paired", str(s.paired).lower()),
        ("peer", s.peer or ""),
        ("rtt_p2p_ms", _ms(s.rtt_us.get("p2p"))),
        ("rtt_muc_ms", _ms(s.rtt_us.get("muc"))),
        ("clock_offset_ms", _ms(s.clock_offset_us)),
        ("clock_error_ms", _ms(s.clock_error_us)),
        ("failovers", str(s.failovers)),
        ("failbacks", str(s.failbacks)),
        (
            "last_failover_detection_s",
            "" if s.last_detection_s is None else f"{s.last_detection_s:.3f}",
        ),
        ("failover_bound_s", f"{s.failover_bound_s:.3f}"),
        ("unacked", str(s.unacked)),
        ("join_to_paired_s", _s(s.timings.get("join_to_paired_s"))),
        ("join_to_fast_path_s", _s(s.timings.get("join_to_fast_path_s"))),
        ("unproven_claimants", str(s.refusals.get("unproven_claimants", 0))),
        (
            "refused",
            ", ".join(
                f"{k}={v}"
                for k, v in sorted(s.refusals.items())
                if v and k not in ("unproven_claimants", "candidates", "offers")
            ),
        ),
        ("handoff_p50_us", _us(status.handoff_p50_us)),
        ("handoff_p99_us", _us(status.handoff_p99_us)),
        ("problems", "; ".join(problems)),
        *ice_summary(s.ice),
    ]
    link.values = [KeyValue(key=k, value=v) for k, v in kv]
    out = [link]
    for t in status.topics:
        d = DiagnosticStatus(
            name=f"jitsi_teleop transport: {t.direction} {t.topic}", hardware_id=node.room_jid
        )
        vals = [("direction", t.direction), ("remote", t.remote)]
        vals += [(k, str(v)) for k, v in t.counters.items()]
        st = t.stream
        if st is not None:
            vals += [
                ("rate_hz", f"{st.rate_hz:.1f}"),
                ("latency_p50_ms", _ms(st.latency_p50_us)),
                ("latency_p99_ms", _ms(st.latency_p99_us)),
                ("latency_max_ms", _ms(st.latency_max_us)),
                ("newest_age_ms", _ms(st.newest_age_us)),
                ("lost", str(st.lost)),
                ("drops", ", ".join(f"{k}={v}" for k, v in sorted(st.drops.items()))),
            ]
            d.message = f"{st.rate_hz:.0f} Hz, latency p50 {_ms(st.latency_p50_us)} ms"
        elif t.direction == "in":
            d.message = "nothing received yet"
        else:
            d.message = f"{t.counters.get('sent', 0)} sent"
        refused = any(f"topic /{t.remote}:" in p for p in problems)
        d.level = DiagnosticStatus.ERROR if refused else DiagnosticStatus.OK
        d.values = [KeyValue(key=k, value=v) for k, v in vals]
        out.append(d)
    return out


def main(args: Sequence[str] | None = None) -> None:
    level = os.environ.get("JITSI_TELEOP_LOG_LEVEL", "WARNING").upper()  # the core's own log
    logging.basicConfig(level=level, format="[%(name)s] %(levelname)s: %(message)s")
    try:
        spin_node(TransportNode, args)
    except TransportError as e:
        print(f"jitsi_teleop transport: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
