"""The transport's asyncio core: topics in, sealed frames out, frames in, bytes republished.

No rclpy here: the ROS adapter (:mod:`jitsi_teleop.ros.transport_node`) hands serialized
messages to :meth:`Bridge.send` (from its executor thread, through ``call_soon_threadsafe``) and
gets the peer's messages back through the ``deliver`` callback, still serialized. The core never
decodes a payload; it only shapes outgoing rates (newest wins within ``max_rate_hz`` for latest
streams), queues reliable frames while the session is busy, and keeps per-topic counters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..carriers.dropdown import DropDownCarrier
from ..carriers.lan import make_room, session_carrier
from ..linklocal.carrier import LanConfig, LanRoom
from ..pairing import Secret
from ..room.config import RoomConfig
from ..room.room import Room
from ..session import ReceiveInfo, Session, SessionBusy, SessionConfig, SessionSnapshot
from ..stats import StreamSnapshot
from ..wire import StreamDescriptor
from .topics import TopicSpec

log = logging.getLogger(__name__)

#: reliable frames held here while the session's unacknowledged window is full
MAX_BACKLOG = 4096


@dataclass
class Outgoing:
    """A local topic that crosses: its spec, the type hash of the local type, its counters."""

    spec: TopicSpec
    type_hash: str
    stream_id: int
    local_topic: str = ""  #: the resolved name of the subscription (diagnostics)
    taken: int = 0  #: messages handed to :meth:`Bridge.send` (what the local publishers sent)
    sent: int = 0
    coalesced: int = 0  #: newer sample replaced a pending one (rate limit), latest streams
    not_sent: int = 0  #: the session had no path (not paired yet)
    link_busy: int = 0  #: latest: the link's buffer was not empty, newest wins (seq used)
    backlog_dropped: int = 0
    errors: int = 0  #: refused by the session (too large, ...)
    last_sent: float = 0.0
    pending: bytes | None = None
    timer: asyncio.TimerHandle | None = None
    backlog: collections.deque[bytes] = field(default_factory=collections.deque)

    def descriptor(self) -> StreamDescriptor:
        s = self.spec
        return StreamDescriptor(
            self.stream_id,
            "/" + s.remote,
            s.ros_type,
            self.type_hash,
            s.delivery,
            s.max_rate_hz,
            s.max_age_s,
        )


@dataclass
class Incoming:
    """A peer topic this end accepts and republishes as ``local_topic``."""

    spec: TopicSpec
    type_hash: str
    local_topic: str
    received: int = 0
    deliver_errors: int = 0

    def descriptor(self) -> StreamDescriptor:
        s = self.spec
        # the stream id of an expectation is not matched (each sender numbers its own)
        return StreamDescriptor(
            0, "/" + s.remote, s.ros_type, self.type_hash, s.delivery, s.max_rate_hz, s.max_age_s
        )


Deliver = Callable[[Incoming, bytes, ReceiveInfo], None]


@dataclass(frozen=True)
class TopicStatus:
    """What the diagnostics say about one topic."""

    topic: str
    direction: str  # "out" or "in"
    remote: str
    counters: dict[str, int]
    stream: StreamSnapshot | None  # receive side: merged over the path that carried it


@dataclass(frozen=True)
class BridgeStatus:
    session: SessionSnapshot
    topics: list[TopicStatus]
    room_connected: bool
    handoff_p50_us: float | None = None
    handoff_p99_us: float | None = None


class Bridge:
    """Owns the room and the session of one site; all methods run in the asyncio loop."""

    def __init__(
        self,
        room_config: RoomConfig | LanConfig,
        session_config: SessionConfig,
        secret: Secret,
        role: str,
        outgoing: Sequence[Outgoing],
        incoming: Sequence[Incoming],
        deliver: Deliver,
        *,
        dropdown: LanConfig | None = None,
    ) -> None:
        self.role = role
        self.outgoing = list(outgoing)
        self.incoming = {("/" + i.spec.remote): i for i in incoming}
        self._deliver = deliver
        self._room_config = room_config
        self._session_config = session_config
        self._secret = secret
        self.room: Room | LanRoom | None = None
        #: drop-down: the LAN underneath the room (signalling and slow path when the peer is
        #: on the LAN too), from ``dropdown``
        self._dropdown = dropdown
        self.lan: LanRoom | None = None
        self.session: Session | None = None
        self.last_error: str | None = None
        self._flusher: asyncio.Task[None] | None = None
        #: the last thread hand-offs (ROS callback -> asyncio loop), µs
        self.handoff_us: collections.deque[float] = collections.deque(maxlen=2000)

    async def connect(self) -> None:
        """Join the room and start pairing (which then continues in the background). A failed
        first join leaves nothing behind (raise RoomError); call again to retry. After the
        first join the room reconnects and rejoins by itself."""
        if self.session is not None:
            return
        room = make_room(self._room_config)  # a Jitsi/XMPP room, or the LAN (lan:NAME)
        try:
            await room.join()
        except Exception as e:
            self.last_error = getattr(e, "reason", None) or str(e) or type(e).__name__
            with contextlib.suppress(Exception):
                await room.close()
            raise
        carrier = session_carrier(room)
        if self._dropdown is not None and isinstance(room, Room):
            self.lan = LanRoom(self._dropdown)
            try:
                await self.lan.join()
                carrier = DropDownCarrier(room, self.lan)
            except Exception as e:  # the room alone still works
                log.warning("drop-down: not on the LAN: %s", e)
                self.lan = None
        session = Session(
            carrier,
            self._session_config,
            self._secret,
            self.role,
            [o.descriptor() for o in self.outgoing],
            expected=[i.descriptor() for i in self.incoming.values()],
            on_receive=self._on_receive,
        )
        await session.start()
        self.room, self.session, self.last_error = room, session, None

    async def close(self) -> None:
        for o in self.outgoing:
            if o.timer is not None:
                o.timer.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.close()
        if self.room is not None:
            with contextlib.suppress(Exception):
                await self.room.close()
        if self.lan is not None:
            with contextlib.suppress(Exception):
                await self.lan.close()

    # ------------------------------------------------------------ out --------------------
    def send(self, index: int, data: bytes, handed_ns: int | None = None) -> None:
        """A local message for ``outgoing[index]`` (serialized CDR). ``handed_ns``: when the
        ROS thread handed it over (``time.perf_counter_ns``), to measure the thread hop."""
        if handed_ns is not None:
            self.handoff_us.append((time.perf_counter_ns() - handed_ns) / 1000)
        o = self.outgoing[index]
        o.taken += 1
        try:
            self._send(o, data)
        except Exception as e:  # too large, link trouble: count, say so once, keep going
            self._failed(o, e)

    @staticmethod
    def _failed(o: Outgoing, e: Exception) -> None:
        o.errors += 1
        if o.errors == 1:
            log.error("%s: cannot send: %s", o.spec.topic, e)

    def _send(self, o: Outgoing, data: bytes) -> None:
        if o.spec.delivery == "reliable":
            self._send_reliable(o, data)
            return
        now = time.monotonic()
        interval = 1.0 / o.spec.max_rate_hz
        if o.pending is not None:  # a send is already scheduled: the newest sample wins
            o.pending = data
            o.coalesced += 1
            return
        wait = o.last_sent + interval - now
        if wait <= 0:
            self._send_latest(o, data, now)
            return
        o.pending = data
        o.timer = asyncio.get_running_loop().call_later(wait, self._flush_latest, o)

    def _flush_latest(self, o: Outgoing) -> None:
        data, o.pending, o.timer = o.pending, None, None
        if data is not None:
            try:
                self._send_latest(o, data, time.monotonic())
            except Exception as e:
                self._failed(o, e)

    def _send_latest(self, o: Outgoing, data: bytes, now: float) -> None:
        o.last_sent = now
        if self.session is None or not self.session.paired:
            o.not_sent += 1
            return
        if self.session.publish(o.stream_id, data):
            o.sent += 1
        else:
            o.link_busy += 1

    def _send_reliable(self, o: Outgoing, data: bytes) -> None:
        if o.backlog or self.session is None:
            self._queue(o, data)
            return
        try:
            self.session.publish(o.stream_id, data)
            o.sent += 1
        except SessionBusy:
            self._queue(o, data)

    def _queue(self, o: Outgoing, data: bytes) -> None:
        if len(o.backlog) >= MAX_BACKLOG:
            o.backlog_dropped += 1
            log.error(
                "%s: %d reliable messages wait for the peer; dropping", o.spec.topic, MAX_BACKLOG
            )
            return
        o.backlog.append(data)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_backlog())

    async def _flush_backlog(self) -> None:
        while any(o.backlog for o in self.outgoing):
            if self.session is None:
                await asyncio.sleep(0.1)
                continue
            await self.session.wait_writable()
            for o in self.outgoing:
                while o.backlog:
                    try:
                        self.session.publish(o.stream_id, o.backlog[0])
                        o.sent += 1
                    except SessionBusy:
                        break
                    except Exception as e:  # this message cannot go: drop it, not the queue
                        self._failed(o, e)
                    o.backlog.popleft()
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------ in ---------------------
    def _on_receive(self, d: StreamDescriptor, payload: bytes, info: ReceiveInfo) -> None:
        inc = self.incoming.get(d.topic)
        if inc is None:  # the session refuses unexpected topics; never republish them
            return
        inc.received += 1
        try:
            self._deliver(inc, payload, info)
        except Exception:
            inc.deliver_errors += 1
            log.exception("republishing %s failed", inc.local_topic)

    # ------------------------------------------------------------ status -----------------
    def status(self) -> BridgeStatus | None:
        """None until the room was joined once."""
        if self.session is None or self.room is None:
            return None
        snap = self.session.stats()
        by_topic: dict[str, int] = {
            d.topic: sid for sid, d in self.session.remote_descriptors.items()
        }
        topics: list[TopicStatus] = []
        for o in self.outgoing:
            topics.append(
                TopicStatus(
                    o.local_topic or o.spec.topic,
                    "out",
                    o.spec.remote,
                    {
                        "taken": o.taken,
                        "sent": o.sent,
                        "coalesced": o.coalesced,
                        "not_sent": o.not_sent,
                        "link_busy": o.link_busy,
                        "backlog": len(o.backlog),
                        "backlog_dropped": o.backlog_dropped,
                        "errors": o.errors,
                    },
                    None,
                )
            )
        for name, inc in self.incoming.items():
            sid = by_topic.get(name)
            stream = _busiest(snap, sid) if sid is not None else None
            topics.append(
                TopicStatus(
                    inc.local_topic,
                    "in",
                    inc.spec.remote,
                    {"received": inc.received, "deliver_errors": inc.deliver_errors},
                    stream,
                )
            )
        hop = sorted(self.handoff_us)
        p50 = hop[len(hop) // 2] if hop else None
        p99 = hop[min(len(hop) - 1, int(0.99 * len(hop)))] if hop else None
        return BridgeStatus(snap, topics, self.room.online, p50, p99)


def _busiest(snap: SessionSnapshot, sid: int) -> StreamSnapshot | None:
    """The stream's snapshot on the path that carried most of it (the path in use)."""
    best: StreamSnapshot | None = None
    for path in snap.paths.values():
        s = path.streams.get(sid)
        if s is not None and (best is None or s.received > best.received):
            best = s
    return best
