"""A site of the simulated internet: the real Room and Session in a process inside a site
namespace, driven line by line from the parent (:mod:`jitsi_teleop.ipc`).

Why a process per site: ICE gathers the addresses of the namespace it runs in, so each site
must live in its own namespace; ``ip netns exec`` starts this module there.

First stdin line: ``{"config": {...}}`` (:class:`AgentConfig`). The agent joins the room
(WebSocket to the server namespace), takes STUN/TURN from the room (XEP-0215), pairs, and
says ``joined``, ``paired`` and ``fast`` with seconds since it started joining. The leader
publishes a joint-state-sized sample at ``rate_hz`` carrying its send time (both processes share
CLOCK_MONOTONIC, so one-way latency is exact); the follower feeds each sample to the real
:class:`~jitsi_teleop.teleop.safety.SafetyFilter` and runs it at 100 Hz, so "the follower holds"
is the product's own lease logic, not a guess. ``{"stats": 1}`` answers ``stats`` (path,
selected ICE pair, per-path latency, follower state); ``{"reset": 1}`` clears the latency
samples; ``{"stop": 1}`` ends it.

With ``both_ways`` (the fault campaign's link cuts, bench/faults_cuts.py) the follower also
streams its joint state and tip force back at ``rate_hz`` and runs its safety filter at that
rate with the command stream's max age, and with ``reliable_hz`` each end sends a numbered
reliable stream. ``{"timeline": 1}`` then answers with what happened when (CLOCK_MONOTONIC, so
the parent can lay it beside the moments it cut the network): path switches, the follower's
holds, gaps in the fast path's arrivals, latest samples delivered older than their max age,
and reliable frames missing from the sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ..ipc import ParentLink, run_child
from ..links.p2p import P2PConfig
from ..pairing import Secret
from ..room.config import RoomConfig
from ..room.room import Room
from ..session import PATH_P2P, Session, SessionBusy, SessionConfig
from ..teleop.safety import SafetyConfig, SafetyFilter, SafetyState
from ..wire import StreamDescriptor
from .paths import selected_pair

log = logging.getLogger(__name__)

SID_STATE, SID_FEEDBACK = 1, 3
#: with ``both_ways``: the follower's joint state, and a reliable stream from each end
SID_FSTATE, SID_REL_LEADER, SID_REL_FOLLOWER = 4, 5, 6
MAX_AGE_S = 0.5
#: the command and force streams' max age in config/teleop_topics.yaml (``both_ways``)
COMMAND_MAX_AGE_S = 0.25
_SAMPLE = struct.Struct("<Id5d")  # seq, send monotonic time, five joint angles
_RELIABLE = struct.Struct("<Id")  # seq, send monotonic time
SAMPLE_SIZE = 276  # a JointState's CDR size
WRENCH_SIZE = 80  # a WrenchStamped's CDR size (header + six doubles)
#: a pause in the fast path's arrivals longer than this is recorded as a gap (``both_ways``)
GAP_S = 0.03
_KEEP = 400  # newest entries kept per timeline list


def descriptors(
    rate_hz: float, both_ways: bool = False, reliable_hz: float = 0.0
) -> dict[str, list[StreamDescriptor]]:
    h = "RIHS01_" + "0" * 64
    js, ws = "sensor_msgs/msg/JointState", "geometry_msgs/msg/WrenchStamped"
    if not both_ways:
        state = StreamDescriptor(SID_STATE, "/joint_states", js, h, "latest", rate_hz, MAX_AGE_S)
        fb = StreamDescriptor(SID_FEEDBACK, "/wrench", ws, h, "latest", 100, MAX_AGE_S)
        return {"leader": [state], "follower": [fb]}
    # The demo's topic plan (config/teleop_topics.yaml), every stream at the campaign's rate.
    age = COMMAND_MAX_AGE_S
    leader = [StreamDescriptor(SID_STATE, "/joint_states", js, h, "latest", rate_hz, age)]
    follower = [
        StreamDescriptor(SID_FEEDBACK, "/teleop/feedback", ws, h, "latest", rate_hz, age),
        StreamDescriptor(SID_FSTATE, "/remote/joint_states", js, h, "latest", rate_hz, MAX_AGE_S),
    ]
    if reliable_hz > 0:
        b = "std_msgs/msg/UInt32"
        leader.append(
            StreamDescriptor(SID_REL_LEADER, "/teleop/events", b, h, "reliable", reliable_hz, 5.0)
        )
        follower.append(
            StreamDescriptor(SID_REL_FOLLOWER, "/teleop/status", b, h, "reliable", reliable_hz, 5.0)
        )
    return {"leader": leader, "follower": follower}


@dataclass
class AgentConfig:
    role: str  # "leader" | "follower"
    room: dict[str, Any]
    secret_hex: str
    rate_hz: float = 100.0
    #: session timers (SessionConfig fields), e.g. failover_after
    session: dict[str, Any] = field(default_factory=dict)
    discover_ice_servers: bool = True
    pair_timeout_s: float = 60.0
    #: the follower streams state and force back at ``rate_hz`` (see the module docstring)
    both_ways: bool = False
    #: a numbered reliable stream from each end at this rate (0: none)
    reliable_hz: float = 0.0


def leader_pose(t: float) -> tuple[float, ...]:
    """A slow sine on every joint, well inside the HDI limits."""
    return tuple(0.2 * math.sin(0.5 * t + i) for i in range(5))


class Agent:
    def __init__(self, cfg: AgentConfig, link: ParentLink) -> None:
        self.cfg = cfg
        self.link = link
        self.t0 = time.monotonic()
        self.latency: dict[str, list[float]] = {}
        self.received: dict[str, int] = {}
        self.seq_seen = 0
        self.lost = 0
        self.last_seq = -1
        self.max_accepted_age = 0.0
        age = COMMAND_MAX_AGE_S if cfg.both_ways else None
        self.safety = SafetyFilter(SafetyConfig.hdi(max_age_s=age))
        self.hold_s = 0.0
        self.fast_at: float | None = None
        self.events: list[tuple[float, str]] = []
        self.streams = descriptors(cfg.rate_hz, cfg.both_ways, cfg.reliable_hz)
        # the timeline (both_ways): monotonic times, see the module docstring
        self.holds: list[list[float | None]] = []  #: [start, end or None]
        self.p2p_last: float | None = None
        self.p2p_gaps: list[tuple[float, float]] = []
        self.stale: list[tuple[float, int, float]] = []  #: (at, stream id, age s)
        self.stale_n: dict[int, int] = {}
        self.rel_next: dict[int, int] = {}
        self.rel_rx = 0
        self.rel_lost: list[tuple[float, int, int]] = []  #: (at, stream id, frames missing)
        self.rel_lost_n = 0
        self.rel_disorder = 0
        self.rel_tx = 0
        self.rel_busy = 0

    def since(self) -> float:
        return time.monotonic() - self.t0

    def on_receive(self, d: StreamDescriptor, payload: bytes, info: Any) -> None:
        now = time.monotonic()
        self.received[info.path] = self.received.get(info.path, 0) + 1
        if self.cfg.both_ways:
            self._on_timeline(d, payload, info, now)
        if d.stream_id != SID_STATE:
            return
        seq, sent, *q = _SAMPLE.unpack_from(payload)
        self.latency.setdefault(info.path, []).append((now - sent) * 1e3)
        if seq > self.last_seq:
            if self.last_seq >= 0:
                self.lost += seq - self.last_seq - 1
            self.last_seq = seq
        age = now - sent
        verdict = self.safety.accept(q, now, age_s=age)
        if verdict.value == "accepted":
            self.max_accepted_age = max(self.max_accepted_age, age)

    def _on_timeline(self, d: StreamDescriptor, payload: bytes, info: Any, now: float) -> None:
        """Exact ages (shared CLOCK_MONOTONIC), fast-path gaps, reliable sequence checks."""
        if info.path == PATH_P2P:
            if self.p2p_last is not None and now - self.p2p_last > GAP_S:
                self.p2p_gaps.append((self.p2p_last, now))
                del self.p2p_gaps[:-_KEEP]
            self.p2p_last = now
        if d.delivery == "reliable":
            seq, _sent = _RELIABLE.unpack_from(payload)
            want = self.rel_next.get(d.stream_id, 0)
            if seq > want:
                self.rel_lost.append((now, d.stream_id, seq - want))
                del self.rel_lost[:-_KEEP]
                self.rel_lost_n += seq - want
            elif seq < want:
                self.rel_disorder += 1
                return
            self.rel_next[d.stream_id] = seq + 1
            self.rel_rx += 1
            return
        _seq, sent = struct.unpack_from("<Id", payload)
        age = now - sent
        if age > d.max_age_s:
            self.stale_n[d.stream_id] = self.stale_n.get(d.stream_id, 0) + 1
            self.stale.append((now, d.stream_id, age))
            del self.stale[:-_KEEP]

    async def run(self) -> None:
        cfg = self.cfg
        room = Room(RoomConfig(**cfg.room))
        sc = SessionConfig(
            p2p=P2PConfig(), discover_ice_servers=cfg.discover_ice_servers, **cfg.session
        )
        streams = self.streams
        other = "follower" if cfg.role == "leader" else "leader"
        session = Session(
            room,
            sc,
            Secret(bytes.fromhex(cfg.secret_hex)),
            cfg.role,
            streams[cfg.role],
            expected=streams[other],
            on_receive=self.on_receive,
        )
        self.session = session
        tasks: list[asyncio.Task[None]] = []
        try:
            await room.join()
            self.link.say(joined=self.since())
            await session.start()
            tasks.append(asyncio.ensure_future(self._watch_paths()))
            await session.wait_paired(cfg.pair_timeout_s)
            self.link.say(paired=self.since(), ice_servers=[s.urls for s in session.ice_servers])
            if cfg.role == "leader":
                tasks.append(asyncio.ensure_future(self._publish()))
            else:
                tasks.append(asyncio.ensure_future(self._follow()))
            if cfg.reliable_hz > 0:
                tasks.append(asyncio.ensure_future(self._reliable()))
            await self._serve()
        finally:
            for t in tasks:
                t.cancel()
            await session.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.close(), 5)

    async def _watch_paths(self) -> None:
        last = None
        while True:
            path = self.session.path
            if path != last:
                self.events.append((self.since(), path))
                if path == PATH_P2P and self.fast_at is None:
                    self.fast_at = self.since()
                    self.link.say(fast=self.fast_at, pair=selected_pair(self.session))
                last = path
            await asyncio.sleep(0.01)

    async def _publish(self) -> None:
        period = 1.0 / self.cfg.rate_hz
        seq = 0
        nxt = time.monotonic()
        pad = bytes(SAMPLE_SIZE - _SAMPLE.size)
        while True:
            now = time.monotonic()
            payload = _SAMPLE.pack(seq, now, *leader_pose(now - self.t0)) + pad
            self.session.publish(SID_STATE, payload)
            seq += 1
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def _follow(self) -> None:
        both = self.cfg.both_ways
        period = 1.0 / self.cfg.rate_hz if both else 0.01
        pose = [0.0] * 5
        last = time.monotonic()
        nxt = last
        fb = bytes(SAMPLE_SIZE)
        pad = bytes(SAMPLE_SIZE - _SAMPLE.size)
        seq = 0
        while True:
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            now = time.monotonic()
            out = self.safety.update(now, pose)
            pose = [float(v) for v in out.command]
            holding = out.state is SafetyState.HOLDING
            if holding:
                self.hold_s += now - last
            last = now
            if not both:
                self.session.publish(SID_FEEDBACK, fb)
                continue
            if holding and (not self.holds or self.holds[-1][1] is not None):
                self.holds.append([now, None])
                del self.holds[:-_KEEP]
            elif not holding and self.holds and self.holds[-1][1] is None:
                self.holds[-1][1] = now
            # stamped just before each publish (the session's max age counts from there), so
            # the leader can tell the exact age of what it gets
            state = _SAMPLE.pack(seq, time.monotonic(), *pose) + pad
            self.session.publish(SID_FSTATE, state)
            wrench = _SAMPLE.pack(seq, time.monotonic(), *pose)[:WRENCH_SIZE]
            self.session.publish(SID_FEEDBACK, wrench.ljust(WRENCH_SIZE, b"\0"))
            seq += 1

    async def _reliable(self) -> None:
        """A numbered reliable stream: a frame refused for back-pressure is sent again once the
        session is writable (refused, never lost), so any gap at the peer is a loss."""
        sid = SID_REL_LEADER if self.cfg.role == "leader" else SID_REL_FOLLOWER
        period = 1.0 / self.cfg.reliable_hz
        nxt = time.monotonic()
        while True:
            try:
                self.session.publish(sid, _RELIABLE.pack(self.rel_tx, time.monotonic()))
                self.rel_tx += 1
            except SessionBusy:
                self.rel_busy += 1
                await self.session.wait_writable()
                continue
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    def timeline(self) -> dict[str, Any]:
        return {
            "now": time.monotonic(),
            "path": self.session.path,
            "path_events": [
                (e.at, e.old, e.new, e.reason, e.detection_s) for e in self.session.path_events
            ][-_KEEP:],
            "holds": self.holds,
            "p2p_gaps": self.p2p_gaps,
            "p2p_last": self.p2p_last,
            "stale": self.stale,
            "stale_n": {str(k): v for k, v in self.stale_n.items()},
            "rel_tx": self.rel_tx,
            "rel_rx": self.rel_rx,
            "rel_busy": self.rel_busy,
            "rel_lost": self.rel_lost,
            "rel_lost_n": self.rel_lost_n,
            "rel_disorder": self.rel_disorder,
            "received": dict(self.received),
            "failovers": self.session.stats().failovers,
        }

    def stats(self) -> dict[str, Any]:
        snap = self.session.stats()
        lat = {}
        for path, xs in self.latency.items():
            s = sorted(xs)
            if s:
                lat[path] = {
                    "n": len(s),
                    "p50_ms": s[len(s) // 2],
                    "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))],
                    "max_ms": s[-1],
                }
        return {
            "t": self.since(),
            "path": snap.path,
            "paired": snap.paired,
            "pair": selected_pair(self.session),
            "received": dict(self.received),
            "latency": lat,
            "lost": self.lost,
            "last_seq": self.last_seq,
            "failovers": snap.failovers,
            "failbacks": snap.failbacks,
            "last_detection_s": snap.last_detection_s,
            "failover_bound_s": snap.failover_bound_s,
            "fast_at": self.fast_at,
            "events": self.events[-20:],
            "follower": {
                "state": self.safety.state.value,
                "holds": self.safety.counters.holds,
                "hold_s": self.hold_s,
                "accepted": self.safety.counters.accepted,
                "rejected": dict(self.safety.counters.rejected),
                "max_accepted_age_s": self.max_accepted_age,
            },
            "problems": snap.problems,
            "ice": getattr(snap, "ice", None),
        }

    async def _serve(self) -> None:
        while True:
            msg = await self.link.inbox.get()
            if "eof" in msg or "stop" in msg:
                return
            if "stats" in msg:
                self.link.say(stats=self.stats())
            if "timeline" in msg:
                self.link.say(timeline=self.timeline())
            if "reset" in msg:
                self.latency.clear()
                self.received.clear()
                self.lost = 0
                self.last_seq = -1
                self.link.say(reset=self.since())


async def _main() -> int:
    return await run_child(AgentConfig, lambda cfg, link: Agent(cfg, link).run(), "agent")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
