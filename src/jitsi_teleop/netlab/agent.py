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

from ..ipc import ParentLink
from ..links.p2p import P2PConfig
from ..pairing import Secret
from ..room.config import RoomConfig
from ..room.room import Room
from ..session import PATH_P2P, Session, SessionConfig
from ..teleop.safety import SafetyConfig, SafetyFilter, SafetyState
from ..wire import StreamDescriptor
from .paths import selected_pair

log = logging.getLogger(__name__)

SID_STATE, SID_FEEDBACK = 1, 3
MAX_AGE_S = 0.5
_SAMPLE = struct.Struct("<Id5d")  # seq, send monotonic time, five joint angles
SAMPLE_SIZE = 276  # a JointState's CDR size


def descriptors(rate_hz: float) -> dict[str, list[StreamDescriptor]]:
    h = "RIHS01_" + "0" * 64
    state = StreamDescriptor(
        SID_STATE, "/joint_states", "sensor_msgs/msg/JointState", h, "latest", rate_hz, MAX_AGE_S
    )
    fb = StreamDescriptor(
        SID_FEEDBACK, "/wrench", "geometry_msgs/msg/WrenchStamped", h, "latest", 100, MAX_AGE_S
    )
    return {"leader": [state], "follower": [fb]}


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
        self.safety = SafetyFilter(SafetyConfig.hdi())
        self.hold_s = 0.0
        self.fast_at: float | None = None
        self.events: list[tuple[float, str]] = []

    def since(self) -> float:
        return time.monotonic() - self.t0

    def on_receive(self, d: StreamDescriptor, payload: bytes, info: Any) -> None:
        now = time.monotonic()
        self.received[info.path] = self.received.get(info.path, 0) + 1
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

    async def run(self) -> None:
        cfg = self.cfg
        room = Room(RoomConfig(**cfg.room))
        sc = SessionConfig(
            p2p=P2PConfig(), discover_ice_servers=cfg.discover_ice_servers, **cfg.session
        )
        streams = descriptors(cfg.rate_hz)
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
        period = 0.01
        pose = [0.0] * 5
        last = time.monotonic()
        fb = bytes(SAMPLE_SIZE)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            out = self.safety.update(now, pose)
            pose = [float(v) for v in out.command]
            if out.state is SafetyState.HOLDING:
                self.hold_s += now - last
            last = now
            self.session.publish(SID_FEEDBACK, fb)

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
            if "reset" in msg:
                self.latency.clear()
                self.received.clear()
                self.lost = 0
                self.last_seq = -1
                self.link.say(reset=self.since())


async def _main() -> int:
    link = ParentLink()
    await link.start()
    cfg = AgentConfig(**await link.expect("config"))
    try:
        await Agent(cfg, link).run()
    except Exception as exc:
        log.exception("agent %s failed", cfg.role)
        link.say(error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
