"""A site for the server fault campaign: the real Room and Session in a site namespace, streaming
both ways and keeping a timeline of what the room and the fast path did.

Why not :mod:`.agent`: that site streams one way at a time and only measures latency. Here both
ends send a 500 Hz ``latest`` stream (a JointState's size, max age 0.25 s as in the default topic
file) and a 50 Hz ``reliable`` stream, and each end records, on CLOCK_MONOTONIC (shared by every
namespace, so the parent can compare it with the moment it killed the server):

- room events: left, (re)joined, disconnects, failed keepalive pings;
- ``muc_rx``: when authenticated records from the peer arrived over the room (the room path
  carries traffic end to end);
- path changes of the session, and changes of its session id (a re-pairing);
- latest stream: the longest gap between two deliveries, gaps beyond the max age, frames
  delivered older than it;
- reliable stream: frames out of order or missing (sequence numbers are checked on arrival;
  the totals are compared with the sender's count at the end).

Line protocol as :mod:`.agent`: first line ``{"config": {...}}`` (:class:`FaultSiteConfig`);
``{"stats": 1}`` (with ``"reset_gap": 1`` the longest gap starts again), ``{"quiesce": 1}``
(stop sending; answers once nothing reliable is unacked), ``{"stop": 1}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..ipc import ParentLink, run_child
from ..links.p2p import P2PConfig
from ..pairing import Secret
from ..room.config import RoomConfig
from ..room.occupants import RoomJoined, RoomLeft
from ..room.room import Room
from ..session import PATH_MUC, Session, SessionBusy, SessionConfig
from ..wire import StreamDescriptor

log = logging.getLogger(__name__)

SID_LATEST = {"leader": 1, "follower": 3}
SID_RELIABLE = {"leader": 10, "follower": 11}
LATEST_MAX_AGE_S = 0.25
#: gaps between two deliveries of the latest stream longer than this are listed (the teleop
#: follower's lease, ``command_timeout``, is 0.15 s: a longer gap makes it hold)
LONG_GAP_S = 0.1
STALL_S = 0.05
_SAMPLE = struct.Struct("<Id")  # seq, send monotonic time
SAMPLE_SIZE = 276  # a JointState's CDR size


def descriptors(role: str, rate_hz: float, reliable_hz: float) -> list[StreamDescriptor]:
    h = "RIHS01_" + "0" * 64
    return [
        StreamDescriptor(
            SID_LATEST[role],
            f"/{role}/joint_states",
            "sensor_msgs/msg/JointState",
            h,
            "latest",
            rate_hz,
            LATEST_MAX_AGE_S,
        ),
        StreamDescriptor(
            SID_RELIABLE[role], f"/{role}/mode", "std_msgs/msg/String", h, "reliable", reliable_hz
        ),
    ]


@dataclass
class FaultSiteConfig:
    role: str  # "leader" | "follower"
    room: dict[str, Any]
    secret_hex: str
    rate_hz: float = 500.0
    reliable_hz: float = 50.0
    #: SessionConfig overrides
    session: dict[str, Any] = field(default_factory=dict)
    pair_timeout_s: float = 60.0


@dataclass
class StreamCheck:
    """What arrived on one of the peer's streams."""

    received: int = 0
    last_rx: float | None = None
    max_gap_s: float = 0.0
    #: (monotonic time of the delivery that ended it, gap in s) for gaps over LONG_GAP_S
    long_gaps: list[tuple[float, float]] = field(default_factory=list)
    stale_delivered: int = 0
    #: the oldest a latest frame was when delivered (true age: both ends share the clock)
    max_age_delivered_s: float = 0.0
    next_seq: int = 0
    #: reliable: sequence numbers skipped (lost) and delivered again (duplicates)
    missing: int = 0
    duplicates: int = 0


class FaultSite:
    def __init__(self, cfg: FaultSiteConfig, link: ParentLink) -> None:
        self.cfg = cfg
        self.link = link
        self.other = "follower" if cfg.role == "leader" else "leader"
        self.latest = StreamCheck()
        self.reliable = StreamCheck()
        self.sent = {"latest": 0, "reliable": 0, "reliable_busy": 0}
        self.events: list[tuple[float, str, Any]] = []
        self._sending = True
        #: arrival times of authenticated records from the peer over the room (about 8 a
        #: second: the session's clock probes and their answers)
        self.muc_rx: deque[float] = deque(maxlen=4000)
        #: (end, length in s) of the times this process's event loop ran late by more than
        #: STALL_S (a loaded machine): a gap in the stream then says nothing about the network
        self.stalls: deque[tuple[float, float]] = deque(maxlen=500)

    def event(self, kind: str, detail: Any = None) -> None:
        self.events.append((time.monotonic(), kind, detail))

    # ------------------------------------------------------------------ receive ------------
    def on_receive(self, d: StreamDescriptor, payload: bytes, info: Any) -> None:
        now = time.monotonic()
        seq, sent = _SAMPLE.unpack_from(payload)
        if d.stream_id == SID_LATEST[self.other]:
            c = self.latest
            if c.last_rx is not None:
                gap = now - c.last_rx
                c.max_gap_s = max(c.max_gap_s, gap)
                if gap > LONG_GAP_S:
                    c.long_gaps.append((now, gap))
            c.max_age_delivered_s = max(c.max_age_delivered_s, now - sent)
            if now - sent > LATEST_MAX_AGE_S:
                c.stale_delivered += 1
        elif d.stream_id == SID_RELIABLE[self.other]:
            c = self.reliable
            if seq < c.next_seq:
                c.duplicates += 1
            else:
                c.missing += seq - c.next_seq
                c.next_seq = seq + 1
        else:
            return
        c.received += 1
        c.last_rx = now

    def on_room_event(self, ev: Any) -> None:
        if isinstance(ev, RoomLeft):
            self.event("room_left", ev.reason)
        elif isinstance(ev, RoomJoined):
            self.event("room_joined", ev.rejoin)

    # ------------------------------------------------------------------ run ----------------
    async def run(self) -> None:
        cfg = self.cfg
        self.room = room = Room(RoomConfig(**cfg.room))
        room.subscribe(self.on_room_event)
        sc = SessionConfig(p2p=P2PConfig(), **cfg.session)
        self.session = session = Session(
            room,
            sc,
            Secret(bytes.fromhex(cfg.secret_hex)),
            cfg.role,
            descriptors(cfg.role, cfg.rate_hz, cfg.reliable_hz),
            expected=descriptors(self.other, cfg.rate_hz, cfg.reliable_hz),
            on_receive=self.on_receive,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            t0 = time.monotonic()
            await room.join()
            self.link.say(joined=time.monotonic() - t0)
            await session.start()
            tasks.append(asyncio.ensure_future(self._watch()))
            await session.wait_paired(cfg.pair_timeout_s)
            self.link.say(paired=time.monotonic() - t0)
            tasks.append(asyncio.ensure_future(self._send_latest()))
            tasks.append(asyncio.ensure_future(self._send_reliable()))
            await self._serve()
        finally:
            for t in tasks:
                t.cancel()
            await session.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.close(), 5)

    async def _watch(self) -> None:
        """Path, session id and the room path's first record after a (re)join, every 5 ms."""
        path = None
        sid = None
        fast_said = False
        n = 0
        while True:
            s = self.session
            if s.path != path:
                self.event("path", s.path)
                path = s.path
                if path == "p2p" and not fast_said:
                    fast_said = True
                    self.link.say(fast=True)
            if n % 20 == 0:  # the snapshot is not free: every 100 ms
                new_sid = s.stats().session_id
                if new_sid != sid:
                    self.event("session_id", new_sid)
                    sid = new_sid
            # the session's last authenticated record from the peer over the room (its clock
            # probes and their answers run there every muc_probe_interval)
            last = s._last_rx.get(PATH_MUC)
            if last is not None and (not self.muc_rx or last > self.muc_rx[-1]):
                self.muc_rx.append(last)
            n += 1
            before = time.monotonic()
            await asyncio.sleep(0.005)
            late = time.monotonic() - before - 0.005
            if late > STALL_S:
                self.stalls.append((time.monotonic(), late))

    async def _send_latest(self) -> None:
        sid = SID_LATEST[self.cfg.role]
        period = 1.0 / self.cfg.rate_hz
        pad = bytes(SAMPLE_SIZE - _SAMPLE.size)
        nxt = time.monotonic()
        seq = 0
        while self._sending:
            self.session.publish(sid, _SAMPLE.pack(seq, time.monotonic()) + pad)
            seq += 1
            self.sent["latest"] = seq
            nxt += period
            delay = nxt - time.monotonic()
            if delay < -0.05:  # far behind (a loaded machine): do not burst to catch up
                nxt = time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    async def _send_reliable(self) -> None:
        sid = SID_RELIABLE[self.cfg.role]
        period = 1.0 / self.cfg.reliable_hz
        seq = 0
        while self._sending:
            try:
                self.session.publish(sid, _SAMPLE.pack(seq, time.monotonic()) + b"mode")
                seq += 1
                self.sent["reliable"] = seq
            except SessionBusy:
                self.sent["reliable_busy"] += 1
                await self.session.wait_writable()
                continue
            await asyncio.sleep(period)

    def stats(self) -> dict[str, Any]:
        snap = self.session.stats()
        room = self.room
        return {
            "t": time.monotonic(),
            "role": self.cfg.role,
            "path": snap.path,
            "paired": snap.paired,
            "session_id": snap.session_id,
            "peer": snap.peer,
            "unacked": snap.unacked,
            "failovers": snap.failovers,
            "muc_rx": list(self.muc_rx)[-600:],
            "room": {"online": room.online, "nick": room.nick, **room.stats.as_dict()},
            "sent": dict(self.sent),
            "latest": {
                "received": self.latest.received,
                "max_gap_s": self.latest.max_gap_s,
                "long_gaps": self.latest.long_gaps[-50:],
                "stale_delivered": self.latest.stale_delivered,
                "max_age_delivered_s": self.latest.max_age_delivered_s,
            },
            "stalls": list(self.stalls)[-200:],
            "reliable": {
                "received": self.reliable.received,
                "next_seq": self.reliable.next_seq,
                "missing": self.reliable.missing,
                "duplicates": self.reliable.duplicates,
            },
            "events": self.events[-400:],
            "counters": snap.counters,
        }

    async def _quiesce(self) -> None:
        self._sending = False
        deadline = time.monotonic() + 30
        while self.session.stats().unacked and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.link.say(quiesced=self.session.stats().unacked)

    async def _serve(self) -> None:
        while True:
            msg = await self.link.inbox.get()
            if "eof" in msg or "stop" in msg:
                return
            if "stats" in msg:
                self.link.say(stats=self.stats())
                if msg.get("reset_gap"):  # the next window's longest gap and age start now
                    self.latest.max_gap_s = 0.0
                    self.latest.max_age_delivered_s = 0.0
            if "quiesce" in msg:
                self._quiescing = asyncio.ensure_future(self._quiesce())


async def _main() -> int:
    return await run_child(FaultSiteConfig, lambda cfg, link: FaultSite(cfg, link).run(), "site")


def main() -> int:
    import os

    # JT_FAULT_SITE_LOG=DIR: each site logs at INFO to DIR/<pid>.log (to see what happened)
    where = os.environ.get("JT_FAULT_SITE_LOG")
    logging.basicConfig(
        level=logging.INFO if where else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        filename=f"{where}/{os.getpid()}.log" if where else None,
    )
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
