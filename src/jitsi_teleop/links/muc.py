"""The slow path: frames as private MUC messages to the peer's occupant JID.

Each frame is ``<message type="chat"><frame xmlns="urn:jitsi-teleop:0" .../></message>`` with a
base64 payload. Everything we send is shaped by the room's byte budget (the server's per-client
rate limit), so a 500 Hz stream is thinned to what fits instead of building a backlog. The same
link carries JSON signalling messages (the pairing, the fast path's offer/answer/candidates),
reliable too, in a queue of their own that goes first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slixmpp import Message

from ..room.occupants import (
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    RoomEvent,
    RoomJoined,
)
from ..room.room import Room
from ..room.stanzas import TeleopAck
from .base import (
    FrameTooLarge,
    Link,
    LinkBusy,
    LinkClosed,
    LinkStats,
    ReceiveCallback,
    check_stream_id,
)
from .budget import BoundedQueue, LatestSlots, QueueFull

log = logging.getLogger(__name__)

SignalCallback = Callable[[str, dict[str, Any]], None]
_EPOCH_RE = re.compile(r"[0-9a-f]{1,16}")
_INT_RE = re.compile(r"[0-9]{1,20}")


@dataclass
class _Out:
    kind: str  # "frame" or "signal"
    stream_id: int
    payload: bytes | str
    latest: bool
    created: float
    seq: int | None = None  # reliable items keep their first sequence number when resent
    size: int = 0

    @property
    def channel(self) -> str:
        """Ack channel: the stream id, or ``sig`` for signals."""
        return "sig" if self.kind == "signal" else str(self.stream_id)

    @property
    def lane(self) -> str:
        """Send queue: ``signal`` (the fast path's signalling, the pairing) or ``data``."""
        return "signal" if self.kind == "signal" else "data"


class MucLink(Link):
    """Slow path to one peer (``peer_nick``) through the room. Create it inside the loop.

    Sending: signals first, then reliable frames, each in order; then the longest-waiting
    latest-only stream's newest frame; each only when the room's byte budget allows. Signals
    have a queue (and bounds) of their own: while the room path is the only path, reliable
    frames can fill theirs for as long as the outage lasts, and the offer, answer and
    candidates that would bring the fast path back must not wait behind them (or be refused).
    ``max_latest_age``: a latest-only frame older than this when its turn comes is dropped
    (counted as ``expired``) rather than sent late.

    Peer identity: with ``follow_key`` the link remembers the peer's (role, key id) and
    follows it to a new nick when the current one is gone or silent for ``peer_silence`` s
    (after a reconnect the old occupant can linger as a ghost). Frames from another occupant
    claiming the same identity are delivered with that occupant's nick; ``pin(nick)`` stops
    all following once a higher layer has authenticated the peer.

    ``replay``: on creation, take the peer's signals that arrived in the last ``replay``
    seconds and nobody claimed (the room keeps a few).

    Receiving: frames are checked (attributes, strict base64, sizes) and counted as
    ``invalid`` when bad; latest-only frames older than the newest seen are ``stale``.
    """

    def __init__(
        self,
        room: Room,
        peer_nick: str,
        *,
        reliable_max_items: int = 64,
        reliable_max_bytes: int = 64 * 1024,
        max_latest_streams: int = 64,
        max_latest_age: float = 1.0,
        max_signal_bytes: int = 32 * 1024,
        signal_max_items: int = 64,
        signal_max_bytes: int = 128 * 1024,
        follow_key: bool = True,
        peer_silence: float = 1.0,
        ack_interval: float = 0.3,
        ack_timeout: float = 3.0,
        replay: float = 0.0,
    ) -> None:
        self.room = room
        self.peer_nick = peer_nick
        self.rebinds = 0
        peer = room.occupants.get(peer_nick)
        #: the peer's (role, key id): when it comes back under another nick (after a
        #: reconnect its old occupant may linger as a ghost), the link follows it
        self.peer_identity: tuple[str, str] | None = (
            (peer.teleop.role, peer.teleop.key_id)
            if follow_key and peer is not None and peer.teleop is not None and peer.teleop.key_id
            else None
        )
        self.epoch = secrets.token_hex(4)
        self.max_latest_age = max_latest_age
        self.max_signal_bytes = max_signal_bytes
        self._stats = LinkStats()
        self._latest: LatestSlots[_Out] = LatestSlots(max_latest_streams)
        self._reliable: BoundedQueue[_Out] = BoundedQueue(reliable_max_items, reliable_max_bytes)
        self._signals: BoundedQueue[_Out] = BoundedQueue(signal_max_items, signal_max_bytes)
        self._queues = {"data": self._reliable, "signal": self._signals}
        self._seq: dict[int, int] = {}
        self._signal_seq = 0
        self._rx_epoch: str | None = None
        self._rx_latest: dict[int, int] = {}
        self._rx_reliable: dict[int, int] = {}
        self._rx_signal = -1
        self._on_frame: ReceiveCallback | None = None
        self._on_signal: SignalCallback | None = None
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self._overhead: int | None = None
        self._unsubscribe = room.subscribe(self._on_room_event)
        self.peer_silence = peer_silence
        self._last_rx = time.monotonic()
        self._stale: set[str] = set()
        # reliability across dead sessions: what we sent and the peer has not acked yet,
        # and what we received and have not acked yet
        self.ack_interval = ack_interval
        self.ack_timeout = ack_timeout
        self._unacked: deque[tuple[_Out, float]] = deque()
        #: per lane: items and bytes sent and not acked yet (they count against its bounds)
        self._unacked_n = {"data": 0, "signal": 0}
        self._unacked_b = {"data": 0, "signal": 0}
        self._ack_due: dict[str, int] = {}
        self._ack_epoch: str | None = None
        self._ack_task: asyncio.Future[None] | None = None
        self._retx = asyncio.ensure_future(self._retransmit_timer())
        self._watch = asyncio.ensure_future(self._watch_peer()) if self.peer_identity else None
        self._task = asyncio.ensure_future(self._run())
        self._unregister = room.add_message_handler(self._on_message)
        if replay > 0:
            # signals the peer sent before this link existed (its first handshake), once the
            # caller has set the callbacks (next loop turn, before any newer message)
            asyncio.get_running_loop().call_soon(self._replay, replay)

    # ------------------------------------------------------------------ Link API ----------
    @property
    def peer_id(self) -> str:
        """The carrier address of the peer (:class:`jitsi_teleop.carrier.PeerChannel`)."""
        return self.peer_nick

    @property
    def stats(self) -> LinkStats:
        self._stats.queued_reliable = len(self._reliable) + len(self._signals)
        self._stats.pending_latest = len(self._latest)
        return self._stats

    @property
    def ready(self) -> bool:
        return not self._closed and self.room.online and self.peer_nick in self.room.occupants

    def set_receive_callback(self, callback: ReceiveCallback | None) -> None:
        self._on_frame = callback

    def set_signal_callback(self, callback: SignalCallback | None) -> None:
        """JSON signalling: ``callback(peer_nick, message_dict)``."""
        self._on_signal = callback

    def send(self, stream_id: int, payload: bytes, latest: bool) -> None:
        if self._closed:
            raise LinkClosed("link closed")
        check_stream_id(stream_id)
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes")
        payload = bytes(payload)
        size = self.frame_stanza_size(len(payload))
        limit = self.room.config.max_stanza_bytes
        if size > limit:
            self._stats.refused += 1
            raise FrameTooLarge(
                f"a {len(payload)}-byte frame makes a {size}-byte stanza, over the "
                f"{limit}-byte limit (the server kills sessions that send stanzas over "
                f"256 KiB); split it or use the fast path"
            )
        item = _Out("frame", stream_id, payload, latest, time.monotonic())
        if latest:
            try:
                if self._latest.put(stream_id, item, item.created):
                    self._stats.thinned += 1
            except OverflowError as e:
                self._stats.refused += 1
                raise LinkBusy(str(e)) from e
        else:
            self._put_reliable(item, size)
        self._wake.set()

    def send_signal(self, message: dict[str, Any]) -> None:
        """Queue a JSON object for the peer (reliable, ordered). Raises like ``send``."""
        if self._closed:
            raise LinkClosed("link closed")
        text = json.dumps(message, separators=(",", ":"))
        if len(text.encode()) > self.max_signal_bytes:
            self._stats.refused += 1
            raise FrameTooLarge(f"signal of {len(text)} bytes exceeds {self.max_signal_bytes}")
        self._put_reliable(_Out("signal", 0, text, False, time.monotonic()), len(text) + 200)
        self._wake.set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    async def close(self) -> None:
        self._closed = True
        self._unregister()
        self._unsubscribe()
        self._task.cancel()
        self._retx.cancel()
        if self._ack_task is not None:
            self._ack_task.cancel()
        if self._watch is not None:
            self._watch.cancel()
        self._latest.clear()
        self._wake.set()

    def frame_stanza_size(self, payload_len: int) -> int:
        """Upper bound of the stanza size for a payload of this many bytes."""
        if self._overhead is None:
            probe = self._build(_Out("frame", 65535, b"", False, 0.0), seq=10**19, stamp=10**19)
            self._overhead = self.room.stanza_size(probe)
        return self._overhead + 4 * ((payload_len + 2) // 3)

    # ------------------------------------------------------------------ sending -----------
    def _has_room(self, size: int, lane: str = "data") -> bool:
        q = self._queues[lane]
        return (
            len(q) + self._unacked_n[lane] < q.max_items
            and q.bytes + self._unacked_b[lane] + size <= q.max_bytes
        )

    def _put_reliable(self, item: _Out, size: int) -> None:
        """Admit a reliable item to its lane; what waits for an ack counts against the same
        bounds, so a peer that stops acking (gone, or its session died) causes backpressure.
        ``wait_writable`` is about frames: a full signal lane refuses signals only."""
        item.size = size
        lane = item.lane
        q = self._queues[lane]
        if not self._has_room(size, lane):
            self._stats.refused += 1
            if lane == "data":
                self._writable.clear()
            raise LinkBusy(
                f"{'signal' if lane == 'signal' else 'reliable'} queue full ({len(q)} queued, "
                f"{self._unacked_n[lane]} awaiting ack, {q.bytes + self._unacked_b[lane]} bytes)"
            )
        try:
            q.put(item, size)
        except QueueFull as e:
            self._stats.refused += 1
            if lane == "data":
                self._writable.clear()
            raise LinkBusy(str(e)) from e
        if lane == "data" and not self._has_room(1):
            self._writable.clear()

    def _update_writable(self) -> None:
        if self._has_room(1):
            self._writable.set()

    def _next(self) -> tuple[_Out, bool] | None:
        """Signals first, then reliable frames (commands), then the longest-waiting latest
        stream."""
        head = self._signals.peek()
        if head is None:
            head = self._reliable.peek()
        if head is not None:
            return head, True
        pending = self._latest.peek()
        if pending is not None:
            return pending.item, False
        return None

    def _build(self, item: _Out, seq: int, stamp: int) -> Message:
        # a bare Message: no id, no xml:lang; every byte counts against 10 kB/s
        msg = Message()
        msg["to"] = self.room.occupant_jid(self.peer_nick)
        msg["type"] = "chat"
        if item.kind == "signal":
            sig = msg["teleop_signal"]
            sig["e"] = self.epoch
            sig["n"] = str(seq)
            sig["json"] = str(item.payload)
        else:
            fr = msg["teleop_frame"]
            fr["s"] = str(item.stream_id)
            fr["n"] = str(seq)
            fr["t"] = str(stamp)
            fr["k"] = "l" if item.latest else "r"
            fr["e"] = self.epoch
            fr["data"] = base64.b64encode(item.payload).decode("ascii")  # type: ignore[arg-type]
        return msg

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._send_loop()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the sender die silently
                log.exception("slow path sender failed; restarting it")
                await asyncio.sleep(0.5)

    async def _send_loop(self) -> None:
        room = self.room
        while not self._closed:
            nxt = self._next()
            if nxt is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            item, reliable = nxt
            if not reliable and time.monotonic() - item.created > self.max_latest_age:
                self._latest.pop(item.stream_id)
                self._stats.expired += 1
                continue
            if not room.online:
                await _wait_any(room.wait_online(), self._wake.wait(), timeout=0.5)
                self._wake.clear()
                continue
            if item.seq is not None:
                seq = item.seq  # a retransmission
            elif item.kind == "signal":
                seq = self._signal_seq + 1
            else:
                seq = self._seq.get(item.stream_id, 0) + 1
            msg = self._build(item, seq, time.time_ns() // 1000)
            size = room.stanza_size(msg)
            delay = room.budget.delay_for(size)
            if delay > 0:
                # a newer latest frame may replace this one meanwhile: re-pick after the wait
                await asyncio.sleep(delay)
                continue
            if reliable:
                self._queues[item.lane].pop()
            else:
                self._latest.pop(item.stream_id)
            try:
                room.send(msg, size)
            except Exception as e:  # went offline between the check and the send
                log.debug("slow path send failed: %s", e)
                if reliable:
                    self._queues[item.lane].requeue_front([(item, item.size)])
                continue
            resend = item.seq is not None
            if reliable:
                item.seq = seq
                self._unacked.append((item, time.monotonic()))
                self._unacked_n[item.lane] += 1
                self._unacked_b[item.lane] += item.size
            if resend:
                self._stats.resent += 1
            elif item.kind == "signal":
                self._signal_seq = seq
                self._stats.signals_sent += 1
            else:
                self._seq[item.stream_id] = seq
                self._stats.sent += 1
            self._stats.bytes_sent += size
            await asyncio.sleep(0)

    def _replay(self, within: float) -> None:
        if not self._closed:
            self.room.replay_unclaimed(self._on_message, within)

    def pin(self, nick: str) -> None:
        """Bind to this occupant for good (e.g. once a higher layer authenticated it)."""
        self.peer_nick = nick
        self.peer_identity = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _claimants(self) -> list[Occupant]:
        return [
            o
            for o in self.room.occupants.values()
            if o.nick != self.peer_nick and self._is_claimant(o.nick)
        ]

    def _session_renewed(self, event: RoomEvent) -> bool:
        """We rejoined, or the peer is back (same nick) in a new XMPP session."""
        if isinstance(event, RoomJoined):
            return event.rejoin
        if isinstance(event, OccupantJoined):
            return event.occupant.nick == self.peer_nick
        if isinstance(event, OccupantChanged):
            return event.new.nick == self.peer_nick and event.old.jid != event.new.jid
        return False

    def _on_room_event(self, event: RoomEvent) -> None:
        # reliability: after our rejoin, or when the peer comes back in a new session,
        # anything not acked may have died with the old session
        if self._session_renewed(event):
            self._requeue_unacked()
        if self.peer_identity is None:
            return
        if isinstance(event, OccupantLeft) and event.occupant.nick == self.peer_nick:
            # whoever claims the identity now is not where the peer went
            self._stale = {o.nick for o in self._claimants()}
        elif isinstance(event, (OccupantJoined, OccupantChanged)):
            occ = event.occupant if isinstance(event, OccupantJoined) else event.new
            if self.peer_nick not in self.room.occupants and self._is_claimant(occ.nick):
                self._rebind(occ.nick)  # the peer is back under a new nick

    async def _watch_peer(self) -> None:
        while not self._closed:
            await asyncio.sleep(min(0.5, self.peer_silence / 2))
            self._maybe_rebind()

    def _maybe_rebind(self) -> None:
        """Follow the peer to a new nick (after a reconnect its old occupant can linger as a
        silent ghost for a while). Anyone can copy a presence, so a live peer is never
        displaced: we move only when the current nick is gone or has been silent for
        ``peer_silence`` seconds. A higher layer that authenticates frames can ``pin()``."""
        if self.peer_identity is None or not self.room.online:
            return
        present = self.peer_nick in self.room.occupants
        silent = time.monotonic() - self._last_rx >= self.peer_silence
        if present and not silent:
            return
        candidates = [o for o in self._claimants() if silent or o.nick not in self._stale]
        if candidates:
            self._rebind(candidates[-1].nick)  # the most recently joined

    def _rebind(self, nick: str) -> None:
        log.info("peer %s is now %s", self.peer_nick, nick)
        self.peer_nick = nick
        self.rebinds += 1
        self._last_rx = time.monotonic()
        self._stale = set()
        self._requeue_unacked()  # what went to the old nick may be lost

    # ------------------------------------------------------------------ reliability -------
    def _requeue_unacked(self) -> None:
        """Send everything not yet acked again, first and in order (the receiver drops
        duplicates by sequence number and re-acks them)."""
        if not self._unacked:
            return
        for lane, q in self._queues.items():
            q.requeue_front([(item, item.size) for item, _t in self._unacked if item.lane == lane])
            self._unacked_n[lane] = self._unacked_b[lane] = 0
        self._unacked.clear()
        self._wake.set()

    async def _retransmit_timer(self) -> None:
        while not self._closed:
            await asyncio.sleep(max(0.1, self.ack_timeout / 2))
            if (
                self._unacked
                and self.room.online
                and self.peer_nick in self.room.occupants
                and time.monotonic() - self._unacked[0][1] > self.ack_timeout
            ):
                self._requeue_unacked()

    def _receive_acks(self, msg: Message) -> None:
        for ack in msg["teleop_acks"]:
            e, ch, n = ack["e"], ack["s"], ack["n"]
            if (
                e != self.epoch
                or not _INT_RE.fullmatch(n)
                or not (ch == "sig" or _INT_RE.fullmatch(ch))
            ):
                if e != self.epoch and _EPOCH_RE.fullmatch(e or ""):
                    continue  # an ack for a previous link instance of ours: harmless
                self._stats.invalid += 1
                continue
            upto = int(n)
            kept: deque[tuple[_Out, float]] = deque()
            for item, t in self._unacked:
                if item.channel == ch and item.seq is not None and item.seq <= upto:
                    self._unacked_n[item.lane] -= 1
                    self._unacked_b[item.lane] -= item.size
                else:
                    kept.append((item, t))
            self._unacked = kept
        self._update_writable()

    def _schedule_ack(self, channel: str, seq: int) -> None:
        self._ack_due[channel] = max(seq, self._ack_due.get(channel, 0))
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.ensure_future(self._flush_acks())

    async def _flush_acks(self) -> None:
        """Coalesce acks (one small message per ``ack_interval`` at most) to save budget."""
        await asyncio.sleep(self.ack_interval)
        while self._ack_due and not self._closed:
            if not self.room.online or self._rx_epoch is None:
                await asyncio.sleep(0.2)
                continue
            msg = Message()
            msg["to"] = self.room.occupant_jid(self.peer_nick)
            msg["type"] = "chat"
            for channel, seq in self._ack_due.items():
                ack = TeleopAck()
                ack["e"], ack["s"], ack["n"] = self._rx_epoch, channel, str(seq)
                msg.append(ack)
            size = self.room.stanza_size(msg)
            delay = self.room.budget.delay_for(size)
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._ack_due.clear()
            try:
                self.room.send(msg, size)
            except Exception as e:  # offline meanwhile: the retransmission will re-ack
                log.debug("ack not sent: %s", e)
            return

    # ------------------------------------------------------------------ receiving ---------
    def _on_message(self, nick: str, msg: Message) -> bool:
        xml = msg.xml
        frame_el = xml.find("{urn:jitsi-teleop:0}frame")
        signal_el = xml.find("{urn:jitsi-teleop:0}signal")
        ack_el = xml.find("{urn:jitsi-teleop:0}ack")
        if frame_el is None and signal_el is None and ack_el is None:
            return False
        if nick != self.peer_nick and not self._is_claimant(nick):
            return False  # not ours: the room counts it (or another link takes it)
        if ack_el is not None:
            self._receive_acks(msg)
        if frame_el is not None:
            self._receive_frame(nick, msg)
        elif signal_el is not None:
            self._receive_signal(nick, msg)
        return True

    def _is_claimant(self, nick: str) -> bool:
        """Another occupant announcing our peer's identity (the peer back under a new nick,
        or an impostor: frames are delivered with the sender's nick either way)."""
        if self.peer_identity is None:
            return False
        occ = self.room.occupants.get(nick)
        return (
            occ is not None
            and occ.teleop is not None
            and not occ.is_self
            and (occ.teleop.role, occ.teleop.key_id) == self.peer_identity
        )

    def _heard_from(self, nick: str) -> None:
        now = time.monotonic()
        if nick == self.peer_nick:
            self._last_rx = now
        elif now - self._last_rx >= self.peer_silence:
            # the current nick went quiet and the identity speaks from another: follow it
            self._rebind(nick)

    def _check_epoch(self, epoch: str) -> None:
        if epoch != self._rx_epoch:
            self._rx_epoch = epoch
            self._ack_due.clear()
            self._rx_latest.clear()
            self._rx_reliable.clear()
            self._rx_signal = -1

    def _receive_frame(self, nick: str, msg: Message) -> None:
        fr = msg["teleop_frame"]
        s, n, k, e, data = fr["s"], fr["n"], fr["k"], fr["e"], fr["data"]
        if not (
            _INT_RE.fullmatch(s)
            and _INT_RE.fullmatch(n)
            and k in ("l", "r")
            and _EPOCH_RE.fullmatch(e)
            and int(s) <= 0xFFFF
        ):
            self._stats.invalid += 1
            return
        if len(data) > self.room.config.max_stanza_bytes:
            self._stats.invalid += 1
            return
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self._stats.invalid += 1
            return
        stream_id, seq = int(s), int(n)
        self._check_epoch(e)
        last = self._rx_latest if k == "l" else self._rx_reliable
        if seq <= last.get(stream_id, 0):
            self._stats.stale += 1
            if k == "r":  # a retransmission of something we have: ack it again
                self._schedule_ack(str(stream_id), last[stream_id])
            return
        last[stream_id] = seq
        if k == "r":
            self._schedule_ack(str(stream_id), seq)
        self._heard_from(nick)
        self._stats.delivered += 1
        self._stats.bytes_received += len(payload)
        if self._on_frame is not None:
            try:
                self._on_frame(nick, stream_id, payload)
            except Exception:
                log.exception("receive callback failed")

    def _receive_signal(self, nick: str, msg: Message) -> None:
        sig = msg["teleop_signal"]
        e, n, text = sig["e"], sig["n"], sig["json"]
        if (
            not (_EPOCH_RE.fullmatch(e) and _INT_RE.fullmatch(n))
            or len(text) > self.max_signal_bytes
        ):
            self._stats.invalid += 1
            return
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
            self._stats.invalid += 1
            return
        if not isinstance(obj, dict):
            self._stats.invalid += 1
            return
        self._check_epoch(e)
        if int(n) <= self._rx_signal:
            self._stats.stale += 1
            self._schedule_ack("sig", self._rx_signal)
            return
        self._rx_signal = int(n)
        self._schedule_ack("sig", self._rx_signal)
        self._heard_from(nick)
        self._stats.signals_received += 1
        if self._on_signal is not None:
            try:
                self._on_signal(nick, obj)
            except Exception:
                log.exception("signal callback failed")


async def _wait_any(*aws, timeout: float) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
