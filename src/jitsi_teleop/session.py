"""A teleoperation session with one peer: pairing, stream descriptors, sealed frames over the
healthiest path, clock probes, failover and fail-back, reliable delivery across paths, stats.

Why one object owns all of this: the decisions are coupled. A frame is sealed once per send with
the keys from the pairing; which link carries it depends on path health, which the clock probes
measure; reliable frames must survive a path switch, so the session (not a link) keeps what the
peer has not acknowledged and resends it on whichever path is in use.

Paths: ``muc`` (the room, always there, about 10 kB/s) and ``p2p`` (the WebRTC data channel,
:class:`~jitsi_teleop.links.p2p.P2PLink`). Both carry the same sealed records
(docs/wire-format.md); the session trusts a path only for liveness, never for content.

Health: the session pings over the data channel every ``probe_interval``. When nothing
authenticated has arrived over it for ``failover_after`` seconds (or the link reports it closed),
traffic moves to the room: a deadline timer fires when the silence threshold expires (not at the
next probe tick, which would add up to one interval), and the probe tick is the backstop. The
detection time of every switch is recorded in :attr:`Session.path_events` and must stay within
:attr:`SessionConfig.failover_bound`. A dead link
is rebuilt (same DTLS certificate, so the pairing stays valid) and traffic returns once
``failback_probes`` consecutive probes were answered over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import protect, wire
from .carrier import (
    Carrier,
    CarrierDown,
    CarrierEvent,
    CarrierUp,
    MemberJoined,
    MemberLeft,
    PeerChannel,
)
from .clock import ClockError, ClockEstimator, ClockProber, answer_ping
from .links.base import FrameTooLarge, Link, LinkBusy, LinkClosed, LinkError
from .links.p2p import P2PConfig, P2PDescription, P2PLink
from .pairer import Pairer, PairerConfig
from .pairing import HandshakeError, Pairing, Role, Secret, SessionKeys
from .protect import ProtectError, SessionCipher
from .room.extdisco import IceServer
from .room.room import Room
from .roomlock import RoomLock
from .stats import PathSnapshot, PathStats

log = logging.getLogger(__name__)

# CONTROL frames: their stream ids are a namespace of their own (docs/wire-format.md §1)
CTRL_DESCRIPTORS = 1  # reliable: 8-byte sender epoch || canonical descriptor JSON
CTRL_PING = 2  # latest: clock probe (clock.py)
CTRL_PONG = 3
CTRL_ACK = 4  # latest: cumulative acks, (flags u8, stream u16, seq u32) each
CTRL_REFUSAL = 5  # reliable: JSON list of the problems we found in the peer's descriptors
CTRL_ROOM_LOCK = 6  # reliable: UTF-8 room password we locked the room with ("" = unlocked)
#: link-level stream ids used for control frames (the MUC link thins per link stream id)
_LINK_CTRL = 0xFFF0
_ACK_ITEM = struct.Struct(">BHI")
PATH_P2P = "p2p"
PATH_MUC = "muc"
PATH_NONE = "none"


def _now_us() -> int:
    return time.monotonic_ns() // 1000


def _refinement(error: ProtectError, record: bytes) -> str:
    """The drop reason, finer than protect's ``malformed`` where the record tells why."""
    if error.reason != "malformed":
        return error.reason
    if len(record) > protect.DEFAULT_MAX_RECORD:
        return "oversized"
    try:
        h = wire.decode_header(record, max_payload=protect.DEFAULT_MAX_RECORD)
    except wire.WrongVersion:
        return "wrong_version"
    except wire.Oversized:
        return "oversized"
    except wire.Truncated:
        return "truncated"
    except wire.WireError:
        return "malformed"
    want = protect.PREFIX_SIZE + h.payload_len + protect.TAG_SIZE
    return "truncated" if len(record) < want else "malformed"


def _url_host(url: str) -> str:
    """``turn:[::1]:3478?transport=udp`` -> ``::1``; ``stun:127.0.0.1:3478`` -> ``127.0.0.1``."""
    rest = url.split(":", 1)[-1].split("?", 1)[0]
    if rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


class SessionError(Exception):
    """Misuse of the session API (unknown stream, not started)."""


class SessionBusy(SessionError):
    """Too many reliable frames await acknowledgement; retry after ``await wait_writable()``."""


@dataclass
class SessionConfig:
    """Timing and limits. Defaults suit the internet; tests shorten them."""

    p2p: P2PConfig = field(default_factory=P2PConfig)
    use_p2p: bool = True
    #: ask the server for STUN/TURN (XEP-0215) at start when ``p2p.ice_servers`` is empty;
    #: servers whose host the candidate filter excludes are never contacted
    discover_ice_servers: bool = True
    probe_interval: float = 0.1
    muc_probe_interval: float = 2.0
    #: silence on the data channel (no authenticated frame) that moves traffic to the room;
    #: measured with no false failover at 500 Hz under 20 +- 10 ms jitter and 5 % loss
    #: (bench/faults.py cuts --false-only)
    failover_after: float = 0.35
    #: consecutive answered probes over a (re)built data channel before traffic returns to it
    #: (the first move to a data channel that never failed needs one: it has just been
    #: authenticated end to end, and every probe waited for delays the fast path)
    failback_probes: int = 3
    #: a data channel down or silent this long is torn down and rebuilt (leader offers)
    reconnect_after: float = 1.5
    #: a handshake offered to a role claimant and not completed is offered again after
    #: this long (a lost message; normal pairing never waits for it)
    pair_retry: float = 3.0
    #: bounds on what occupants claiming the peer's role may cost (pairer.PairerConfig)
    pairer: PairerConfig = field(default_factory=PairerConfig)
    #: when we may (room owner/moderator): lock the room with a random password while paired,
    #: so nobody new can join; the password goes to the peer sealed, so it can rejoin
    lock_room: bool = False
    ack_interval: float = 0.05
    resend_after: float = 1.0
    #: a frame the room link accepted is resent by the session only after this long without
    #: an ack (the room link retransmits by itself; at its ~9 kB/s a backlog takes a while)
    room_resend_after: float = 30.0
    max_unacked: int = 512
    max_reorder: int = 1024
    #: sealed message size; fits both the data channel (64 KiB) and a MUC stanza
    max_message_size: int = 60_000
    #: ROS types this end can handle (None: any)
    known_types: Collection[str] | None = None
    #: how long the keys of the previous pairing still open its clock probes (in flight during a
    #: re-pair); its data frames are dropped as old_session (they are resent or superseded)
    old_keys_grace: float = 5.0

    @property
    def failover_bound(self) -> float:
        """The promised worst-case time from the data channel's last frame to the switch:
        the silence threshold plus one probe interval. The deadline timer switches at the
        threshold itself; the interval is the allowance for a late event loop, after which the
        probe tick (the backstop) would switch anyway."""
        return self.failover_after + self.probe_interval


@dataclass(frozen=True)
class ReceiveInfo:
    """Why and how a frame arrived: path, sequence, one-way latency and age (µs, None until
    the clock offset is known)."""

    path: str
    seq: int
    sender_ts_us: int
    latency_us: float | None
    age_us: float | None


@dataclass(frozen=True)
class PathEvent:
    """A path switch. ``detection_s``: from the last frame on the failing path (or the moment
    the link reported failure) to the switch; None for fail-back."""

    at: float
    old: str
    new: str
    reason: str
    detection_s: float | None


@dataclass(frozen=True)
class SessionSnapshot:
    path: str
    paired: bool
    peer: str | None
    session_id: str | None
    rtt_us: dict[str, float | None]
    clock_offset_us: float | None
    clock_error_us: float | None
    failovers: int
    failbacks: int
    last_detection_s: float | None
    failover_bound_s: float
    unacked: int
    counters: dict[str, int]
    pairing: dict[str, int]
    cipher: dict[str, int]
    problems: list[str]
    peer_refusals: list[str]
    paths: dict[str, PathSnapshot]
    #: seconds from the room join to paired / to the fast path (the latest pairing)
    timings: dict[str, float | None] = field(default_factory=dict)
    #: what the room tried that we refused, by reason; ``unproven_claimants``: occupants
    #: that claimed the peer's role and could not prove it
    refusals: dict[str, int] = field(default_factory=dict)
    #: the fast path's ICE: selected pair per connection (host/srflx/prflx/relay, TURN server
    #: when relayed), pair switches, STUN/TURN outcomes, dropped foreign datagrams
    ice: dict[str, Any] = field(default_factory=dict)


ReceiveCallback = Callable[[wire.StreamDescriptor, bytes, ReceiveInfo], None]


@dataclass
class _Unacked:
    frame: wire.Frame
    sent_at: float = 0.0  # monotonic; 0 = never sent
    #: the link that last accepted it (a room link retransmits what it accepted by itself)
    link: object | None = None


@dataclass
class _RxReliable:
    next_seq: int = 0
    held: dict[int, tuple[wire.Frame, str]] = field(default_factory=dict)


class Session:
    """One end of a teleop session. ``descriptors`` are the streams this end sends;
    ``expected`` (optional) the streams it accepts from the peer (None: any announced stream
    of a known type). ``room``: a joined :class:`Room` or any
    :class:`~jitsi_teleop.carrier.Carrier`. Usage::

        s = Session(room, SessionConfig(), secret, "leader", descriptors, on_receive=cb)
        await s.start()          # returns at once; pairing runs in the background
        await s.wait_paired()
        s.publish(stream_id, cdr_bytes)
        s.stats(); s.path
        await s.close()
    """

    def __init__(
        self,
        room: Room | Carrier,
        config: SessionConfig,
        secret: Secret,
        role: Role | str,
        descriptors: Sequence[wire.StreamDescriptor],
        *,
        expected: Sequence[wire.StreamDescriptor] | None = None,
        on_receive: ReceiveCallback | None = None,
    ) -> None:
        if isinstance(room, Room):
            from .carriers.room import RoomCarrier

            self.room: Room | None = room
            self.carrier: Carrier = RoomCarrier(room)
        else:
            self.room = getattr(room, "room", None)
            self.carrier = room
        self.config = config
        self.role = Role(role)
        self.descriptors = {d.stream_id: d for d in descriptors}
        if len(self.descriptors) != len(descriptors):
            raise ValueError("duplicate stream ids in descriptors")
        self.expected = list(expected) if expected is not None else None
        self.on_receive = on_receive
        self._secret = secret
        #: STUN/TURN servers in use (from the config or the server's extdisco)
        self.ice_servers: list[IceServer] = list(config.p2p.ice_servers)
        #: why announced STUN/TURN services were not usable (malformed, no credentials, ...)
        self.ice_problems: list[str] = []
        self._p2p_config = config.p2p
        self._pairer: Pairer | None = None
        self._keys: SessionKeys | None = None
        self._cipher: SessionCipher | None = None
        self._old_cipher: tuple[SessionCipher, float] | None = None
        self._peer: str | None = None
        self._peer_left = False  #: the peer left the room but still talks over the data channel
        self._ice_task: asyncio.Task[None] | None = None
        self._lock = RoomLock(
            self.carrier,
            config.lock_room,
            lambda pw: self._send_control(CTRL_ROOM_LOCK, pw, reliable=True),
            self._count,
            self._spawn,
        )
        self._started_at: float | None = None
        self._joined_at: float | None = None
        self._paired_at: float | None = None
        self._fast_at: float | None = None
        self._removed = False  #: kicked; cleared when back in the room
        self._local_id: str | None = None  #: our address on the carrier (see CarrierUp)
        self._p2p_failed = False  #: the data channel failed once: fail-back needs more probes
        self._offering = False
        self._p2p: P2PLink | None = None
        self._certificate: Any = None
        self._p2p_gen = 0
        self._p2p_down_since: float | None = None
        self._p2p_ok_probes = 0
        self._p2p_started = 0.0
        self._path = PATH_NONE
        self.path_events: list[PathEvent] = []
        self._last_rx: dict[str, float] = {}
        self._probers = {PATH_P2P: ClockProber(), PATH_MUC: ClockProber()}
        self.clock = ClockEstimator()
        self._rtt: dict[str, float | None] = {PATH_P2P: None, PATH_MUC: None}
        self._stats = {PATH_P2P: PathStats(PATH_P2P), PATH_MUC: PathStats(PATH_MUC)}
        self.counters: dict[str, int] = {}
        self._tx_seq: dict[tuple[bool, int], int] = {}
        self._unacked: dict[tuple[bool, int], dict[int, _Unacked]] = {}
        self._rx_rel: dict[tuple[bool, int], _RxReliable] = {}
        self._rx_latest: dict[int, int] = {}
        self._ack_due = False
        self._remote: dict[int, wire.StreamDescriptor] = {}
        self._refused: set[int] = set()
        self.problems: list[wire.DescriptorProblem] = []
        self.peer_refusals: list[str] = []
        self._reassembler = wire.Reassembler()
        self._fragmenter = wire.Fragmenter(config.max_message_size, overhead=28 + 2)
        self._epoch = os.urandom(8)
        self._paired = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Future[Any]] = set()
        self._closed = False
        self._unhook: list[Callable[[], None]] = []

    # ------------------------------------------------------------ public API ------------
    @property
    def path(self) -> str:
        """``p2p``, ``muc`` or ``none`` (not paired yet)."""
        return self._path

    @property
    def paired(self) -> bool:
        return self._cipher is not None

    @property
    def peer(self) -> str | None:
        return self._peer

    @property
    def _pairing(self) -> Pairing | None:
        return self._pairer.pairing if self._pairer is not None else None

    @property
    def _muc(self) -> PeerChannel | None:
        """The room path: the channel to the authenticated peer, and only to it."""
        return self._pairer.channel(self._peer) if self._pairer is not None else None

    @property
    def remote_descriptors(self) -> dict[int, wire.StreamDescriptor]:
        return dict(self._remote)

    async def start(self) -> None:
        """Begin pairing in the background (the room must be joined). Pairing starts at
        once; STUN/TURN discovery runs beside it (only the data channel offer needs it)."""
        if self._tasks:
            raise SessionError("start() called twice")
        self._started_at = time.monotonic()
        self._joined_at = getattr(self.room, "joined_at", None) or self._started_at
        self._local_id = self.carrier.local_id
        if self.config.use_p2p:
            from aiortc import RTCCertificate

            self._certificate = RTCCertificate.generateCertificate()
            if self.config.discover_ice_servers:
                self._ice_task = asyncio.ensure_future(self._discover_ice_servers())
        pcfg = dataclasses.replace(self.config.pairer, reoffer_after=self.config.pair_retry)
        self._pairer = Pairer(
            self.carrier,
            self._secret,
            self.role,
            self._local_fingerprints(),
            pcfg,
            on_paired=self._on_paired,
            on_signal=self._on_signal,
            on_record=lambda n, _s, p: self._on_record(PATH_MUC, n, p),
        )
        self.carrier.set_foreign_handler(self._on_foreign)
        self._unhook.append(self.carrier.subscribe(self._on_carrier_event))
        self._pairer.start()
        self._pairer.seek(True)
        self._tasks = [
            asyncio.ensure_future(self._maintain_loop()),
            asyncio.ensure_future(self._probe_loop()),
            asyncio.ensure_future(self._silence_watch()),
            asyncio.ensure_future(self._ack_loop()),
        ]

    async def wait_ice_servers(self) -> list[IceServer]:
        """The STUN/TURN servers once discovery (started by ``start()``) is done."""
        await self._ice_ready()
        return list(self.ice_servers)

    async def _ice_ready(self) -> None:
        """STUN/TURN discovery done (it never raises; at most its own timeout)."""
        if self._ice_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._ice_task)

    async def _discover_ice_servers(self) -> None:
        p2p = self.config.p2p
        if p2p.ice_servers:
            self.ice_servers = list(p2p.ice_servers)
            return
        try:
            found = await self.carrier.ice_servers(timeout=5.0)
        except Exception as e:  # no extdisco: host candidates only
            log.info("no STUN/TURN from the server: %s", e)
            return
        flt = p2p.candidate_filter
        if flt is not None:
            found = [s for s in found if all(flt(_url_host(u)) for u in s.urls)]
        self.ice_servers = found
        self._p2p_config = dataclasses.replace(p2p, ice_servers=found)
        disc = getattr(getattr(self, "room", None), "ice_discovery", None)
        self.ice_problems = list(disc.problems) if disc is not None else []

    async def wait_paired(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._paired.wait(), timeout)

    def publish(self, stream_id: int, cdr: bytes) -> bool:
        """Send one sample. Latest streams: True if it went out now (newest-wins drops are
        counted). Reliable streams: queued until acknowledged, resent across path switches;
        raises :class:`SessionBusy` when ``max_unacked`` frames are outstanding."""
        d = self.descriptors.get(stream_id)
        if d is None:
            raise SessionError(f"stream id {stream_id} is not one of this end's descriptors")
        if not isinstance(cdr, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes")
        reliable = d.delivery == "reliable"
        key = (False, stream_id)
        flags = wire.Flags.RELIABLE if reliable else wire.Flags.NONE
        if reliable:
            pending = self._unacked.setdefault(key, {})
            if sum(len(v) for v in self._unacked.values()) >= self.config.max_unacked:
                self._writable.clear()
                raise SessionBusy(f"{self.config.max_unacked} reliable frames await an ack")
        seq = self._tx_seq.get(key, 0)
        self._tx_seq[key] = (seq + 1) % wire.SEQ_MODULUS
        frame = wire.Frame(stream_id, seq, _now_us(), bytes(cdr), flags)
        if reliable:
            pending[seq] = _Unacked(frame)
            self._send_frame(frame, pending[seq])
            return True
        return self._send_frame(frame)

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def set_receive_callback(self, callback: ReceiveCallback | None) -> None:
        self.on_receive = callback

    def stats(self) -> SessionSnapshot:
        now = _now_us()
        est = self.clock.estimate(now)
        paths = {}
        for name, ps in self._stats.items():
            if est is not None:
                ps.on_clock(self._rtt[name] or 0.0, est.offset_us, est.error_us)
            ps.rtt_us = self._rtt[name]
            paths[name] = ps.snapshot(now)
        fails = [e for e in self.path_events if e.detection_s is not None]
        first_fail = self.path_events.index(fails[0]) if fails else len(self.path_events)
        failbacks = sum(1 for e in self.path_events[first_fail:] if e.new == PATH_P2P)
        return SessionSnapshot(
            self._path,
            self.paired,
            self._peer,
            self._keys.session_id.hex() if self._keys else None,
            dict(self._rtt),
            est.offset_us if est else None,
            est.error_us if est else None,
            len(fails),
            failbacks,
            fails[-1].detection_s if fails else None,
            self.config.failover_bound,
            sum(len(v) for v in self._unacked.values()),
            dict(self.counters),
            self._pairing.counters.as_dict() if self._pairing else {},
            self._cipher.counters.as_dict() if self._cipher else {},
            [p.message for p in self.problems],
            list(self.peer_refusals),
            paths,
            self.timings(),
            self.refusals(),
            self._ice_report(),
        )

    def _ice_report(self) -> dict[str, Any]:
        link = self._p2p
        report: dict[str, Any] = link.ice_report() if link is not None else {}
        sel = link.selected_pair if link is not None else None
        report["path"] = sel.kind if sel is not None and link is not None and link.ready else None
        report["selected"] = sel.as_dict() if sel is not None else None
        report["servers_announced"] = [u for s in self.ice_servers for u in s.urls]
        report["discovery_problems"] = list(self.ice_problems)
        return report

    def timings(self) -> dict[str, float | None]:
        """Seconds from the room join to paired and to the fast path; after the peer left (or
        we were kicked), from that moment to the next pairing."""

        def since(t: float | None, t0: float | None) -> float | None:
            return None if t is None or t0 is None else round(t - t0, 4)

        return {
            "join_to_paired_s": since(self._paired_at, self._joined_at),
            "join_to_fast_path_s": since(self._fast_at, self._joined_at),
            "start_to_paired_s": since(self._paired_at, self._started_at),
            "paired_to_fast_path_s": since(self._fast_at, self._paired_at),
        }

    def refusals(self) -> dict[str, int]:
        """What we refused from the room, by reason (handshakes, rate limits, frames and
        signals from occupants that are not the peer), and ``unproven_claimants``."""
        out: dict[str, int] = {}
        if self._pairer is not None:
            out.update(self._pairer.snapshot())
        for k in ("foreign_frames", "foreign_signals", "signal_refused", "signal_invalid"):
            if self.counters.get(k):
                out[k] = out.get(k, 0) + self.counters[k]
        datagrams = getattr(self._p2p, "foreign_dropped", 0)
        if datagrams:
            out["foreign_datagrams"] = datagrams
        return out

    async def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        if self._background:  # links being closed in the background: let them finish
            await asyncio.wait(list(self._background), timeout=2.0)
        for t in self._background:
            t.cancel()
        for u in self._unhook:
            u()
        if self._ice_task is not None:
            self._ice_task.cancel()
        await self._lock.close()
        if self._p2p is not None:
            with contextlib.suppress(Exception):
                await self._p2p.close()
        if self._pairer is not None:
            with contextlib.suppress(Exception):
                await self._pairer.close()
        detach = getattr(self.carrier, "detach", None)
        if detach is not None and self.room is not None:
            detach()  # the RoomCarrier we made for this session
        self._path = PATH_NONE

    # ------------------------------------------------------------ pairing ---------------
    def _local_fingerprints(self) -> tuple[str, ...]:
        if self._certificate is None:
            return ()
        return tuple(f"{f.algorithm} {f.value}" for f in self._certificate.getFingerprints())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    async def _maintain_loop(self) -> None:
        """Keep the data channel up while paired; look for the peer again when it left the
        room while its data channel lived on (the room path needs its new nick)."""
        while not self._closed:
            try:
                await asyncio.sleep(self.config.probe_interval)
                if self._cipher is None or self._pairer is None:
                    continue
                if self._peer_left and self.carrier.online and not self._pairer.seeking:
                    self._pairer.seek(True, self._peer)
                self._mend_room_channel()
                await self._maintain_p2p()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session maintenance")
                await asyncio.sleep(0.5)

    def _mend_room_channel(self) -> None:
        """The peer is in the room but we hold no channel to it: open one. Events keep the
        channel right (the peer leaves, comes back); this catches any order of them that
        does not, since without a channel the room path is silently gone for good (our
        frames go nowhere, the peer's are refused as foreign) and the next fast-path cut
        has nothing to fail over to."""
        peer = self._peer
        if (
            peer is None
            or self._pairer is None
            or self._peer_left
            or self._pairer.channel(peer) is not None
            or not self.carrier.is_present(peer)
        ):
            return
        self._pairer.refresh()
        if self._pairer.channel(peer) is not None:
            self._count("room_channel_reopened")
            log.warning("no room channel to peer %s although it is in the room: reopened", peer)

    def _on_carrier_event(self, event: CarrierEvent) -> None:
        """The authenticated peer left the room: forget the pairing and look for it again
        (a restarted peer comes back under a new nick and must prove the secret again).

        Unless its data channel is still alive: when the room server restarts or drops our
        connection, the peer "leaves" the room while the peer-to-peer path, which does not go
        through the server, carries on. Then the pairing is kept until that path goes quiet
        too, or the peer pairs again after rejoining.

        Kicked ourselves: the carrier rejoins by itself; then we offer the peer a new
        handshake (it saw us leave), and the follower holds meanwhile (no fresh commands)."""
        if isinstance(event, MemberLeft) and event.peer_id == self._peer:
            if self._p2p_alive():
                log.info("peer %s left the room; its data channel is alive: keeping it", self._peer)
                self._peer_left = True
                return
            self._forget_peer()
        elif (
            isinstance(event, MemberJoined)
            and self._peer_left
            and event.claim.peer_id == self._peer
            and self._pairer is not None
        ):
            # Back at the same address while its data channel lived on (the server restarted,
            # or its connection to it did): the room path works again and the pairing stands,
            # since every record still has to authenticate with its keys. No new handshake:
            # a re-pair restarts reliable delivery, and frames the peer got but had not
            # acknowledged yet would be delivered twice. (Had the peer itself restarted, it
            # offers a handshake, which is answered as always.)
            log.info("peer %s is back in the room; keeping the pairing", self._peer)
            self._peer_left = False
            if self._pairer.seeking:
                self._pairer.seek(False, self._peer)
            # the pairer closed the old channel to this address when it left; once that close
            # has run (it is scheduled already), open the new one
            asyncio.get_running_loop().call_soon(self._pairer.refresh)
        elif isinstance(event, CarrierDown):
            if event.removed:
                self._removed = True
                self._count("kicked")
                log.warning("removed from the room: rejoining, then pairing again")
        elif isinstance(event, CarrierUp) and event.rejoin and self._pairer is not None:
            removed, self._removed = self._removed, False
            # back under another address (our old occupant lingers as a ghost after a
            # connection that died silently, so the nick was taken): the peer cannot know the
            # newcomer is us until we prove it, so we offer a handshake as after a kick
            moved, self._local_id = event.local_id != self._local_id, event.local_id
            if removed:  # timings of the pairing that follows count from the rejoin
                self._restart_timings(getattr(self.room, "joined_at", None))
            if self._peer is not None and not self.carrier.is_present(self._peer):
                if not self._p2p_alive():
                    self._forget_peer()
                    return
                self._peer_left = True
            if (removed or moved) and self._cipher is not None:
                self._pairer.seek(True, self._peer)  # the peer saw us leave: pair again

    def _p2p_alive(self) -> bool:
        link = self._p2p
        last = self._last_rx.get(PATH_P2P)
        return (
            link is not None
            and link.ready
            and last is not None
            and time.monotonic() - last < self.config.failover_after
        )

    def _restart_timings(self, since: float | None = None) -> None:
        """The next pairing is timed from ``since`` (a rejoin, or the peer leaving)."""
        self._joined_at = since or time.monotonic()
        self._paired_at = None
        self._fast_at = None

    def _forget_peer(self) -> None:
        if self._peer is not None:
            self._restart_timings()
            log.info("peer %s left the room: pairing again", self._peer)
            self._peer_left = False
            self._cipher = None
            self._keys = None
            self._peer = None
            self._paired.clear()
            if self._p2p is not None:
                self._spawn(self._p2p.close())
                self._p2p = None
            self._set_path(PATH_NONE, "peer left", None)
            self._lock.on_unpaired()
        if self._pairer is not None:
            self._pairer.seek(True)

    def _on_signal(self, nick: str, msg: dict[str, Any]) -> None:
        """Signals other than the handshake (the pairer handles those)."""
        kind = msg.get("t")
        if kind in ("offer", "answer"):
            self._spawn(self._on_description(nick, kind, msg))
        elif kind == "cand":
            self._spawn(self._on_candidates(nick, msg))
        else:
            self._count("signal_invalid")

    def _on_foreign(self, nick: str, kind: str) -> None:
        """Teleop messages from an occupant we have no channel to (it claims no role, or
        more claim one than we talk to): refused and counted."""
        if kind == "frame":
            self._stats[PATH_MUC].on_drop("foreign_sender")
            self._count("foreign_frames")
        else:
            self._count("foreign_signals")

    def _on_paired(self, keys: SessionKeys) -> None:
        now = time.monotonic()
        self._peer_left = False
        if self._cipher is not None:
            self._old_cipher = (self._cipher, now + self.config.old_keys_grace)
        self._keys = keys
        self._cipher = SessionCipher.from_session(keys)
        self._peer = keys.peer_id
        assert self._pairer is not None
        self._pairer.seek(False, keys.peer_id)
        # a new pairing is a new session: both ends restart sequence and delivery state
        self._rx_rel.clear()
        self._rx_latest.clear()
        self._reassembler = wire.Reassembler()
        self._renumber_unacked()
        self._send_descriptors()
        self._last_rx[PATH_MUC] = now
        if self._path == PATH_NONE:
            self._set_path(PATH_MUC, "paired", None)
        self._resend_all()
        if self._paired_at is None:  # not for a rekey with the same peer
            self._paired_at = now
            self._fast_at = None
        self._paired.set()
        took = (
            ""
            if self._joined_at is None
            else f", {(now - self._joined_at) * 1e3:.0f} ms after joining"
        )
        refused = self._pairer.snapshot().get("unproven_claimants", 0)
        log.info(
            "paired with %s (session %s%s; %d impostor claimant(s) refused)",
            keys.peer_id,
            keys.session_id.hex()[:12],
            took,
            refused,
        )
        # the data channel offer goes out now, not at the next maintenance tick
        if self.role is Role.LEADER and self.config.use_p2p and self._p2p is None:
            self._spawn(self._offer())
        self._lock.on_paired()

    def _renumber_unacked(self) -> None:
        for key, pending in self._unacked.items():
            frames = [pending[s].frame for s in sorted(pending, key=lambda s: pending[s].frame.seq)]
            pending.clear()
            for i, f in enumerate(frames):
                nf = wire.Frame(f.stream_id, i, f.timestamp_us, f.payload, f.flags)
                pending[i] = _Unacked(nf)
            self._tx_seq[key] = len(frames)
        for key in list(self._tx_seq):
            if key not in self._unacked or not self._unacked[key]:
                self._tx_seq[key] = 0

    def _send_descriptors(self) -> None:
        payload = self._epoch + wire.encode_descriptors(self.descriptors.values())
        self._send_control(CTRL_DESCRIPTORS, payload, reliable=True)

    # ------------------------------------------------------------ the data channel ------
    async def _maintain_p2p(self) -> None:
        """Leader: (re)build the data channel when there is none or it is dead; offers are
        at least ``reconnect_after`` apart."""
        if not self.config.use_p2p or self.role is not Role.LEADER or self._muc is None:
            return
        if self._offering:
            return
        link = self._p2p
        now = time.monotonic()
        since = now - self._p2p_started
        if link is not None:
            if link.state in ("new", "connecting"):
                wait = self._p2p_config.connect_timeout + 2.0
                if link.servers_unanswered:
                    # Built while the network was down (a cut longer than reconnect_after):
                    # host candidates only, so it cannot connect across NATs even once the
                    # network is back. Offer again soon rather than after connect_timeout.
                    wait = self.config.reconnect_after + self._p2p_config.gather_timeout + 1.0
                if since < wait:
                    return
            elif link.state == "open":
                silent = now - self._last_rx.get(PATH_P2P, now)
                if silent < self.config.reconnect_after:
                    return
            elif since < self.config.reconnect_after:
                return
        await self._offer()

    async def _offer(self) -> None:
        if self._offering:
            return
        self._offering = True
        try:
            await self._ice_ready()
            muc = self._muc
            if muc is None or self._cipher is None or self._closed:
                return
            self._p2p_started = time.monotonic()
            self._p2p_gen += 1
            link = self._new_p2p()
            desc = await link.describe(trickle=True)
            muc.send_signal({"t": "offer", "g": self._p2p_gen, "d": desc.to_dict()})
            link.trickle(self._candidate_sender(self._p2p_gen))
        except LinkError as e:
            log.info("data channel offer failed: %s", e)
        finally:
            self._offering = False

    def _new_p2p(self) -> P2PLink:
        old = self._p2p
        if old is not None:
            self._spawn(old.close())
        link = P2PLink(
            self._peer or "",
            self._p2p_config,
            self._certificate,
            controlling=self.role is Role.LEADER,
        )
        # the link is the paired peer's (DTLS with the fingerprints it proved; records sealed
        # with the session's keys), whatever nick it has now: after it rejoined under a new
        # nick and paired again, its data channel carries on
        link.set_receive_callback(lambda _n, s, p: self._on_record(PATH_P2P, self._peer or "", p))
        link.set_state_callback(lambda st, lk=link: self._on_p2p_state(lk, st))
        self._p2p = link
        self._p2p_ok_probes = 0
        return link

    async def _on_description(self, nick: str, kind: str, msg: dict[str, Any]) -> None:
        if nick != self._peer or self._pairing is None or not self.config.use_p2p:
            self._count("signal_refused")
            return
        try:
            desc = P2PDescription.from_dict(msg.get("d"))
            gen = msg.get("g")
            if isinstance(gen, bool) or not isinstance(gen, int):
                raise ValueError("generation must be an integer")
            # the DTLS fingerprints must be those the peer proved in the handshake
            self._pairing.check_peer_fingerprints(desc.fingerprints)
        except HandshakeError as e:
            log.warning("WebRTC %s from %s refused: %s", kind, nick, e)
            self._count("signal_refused")
            return
        except ValueError as e:
            log.warning("WebRTC %s from %s is malformed: %s", kind, nick, e)
            self._count("signal_invalid")
            return
        controlling = self.role is Role.LEADER
        if kind == "offer":
            if controlling:
                self._count("signal_invalid")
                return
            self._p2p_gen = gen
            link = self._new_p2p()
            try:
                mine = await link.describe(trickle=True)
                assert self._muc is not None
                self._muc.send_signal({"t": "answer", "g": gen, "d": mine.to_dict()})
                link.trickle(self._candidate_sender(gen))
            except LinkError as e:
                log.info("cannot answer the offer: %s", e)
                return
        else:
            link = self._p2p  # type: ignore[assignment]
            if not controlling or link is None or gen != self._p2p_gen or link.state != "new":
                self._count("signal_stale")
                return
        with contextlib.suppress(LinkError):
            await link.connect(desc)

    def _candidate_sender(self, gen: int) -> Callable[[str, list[str], bool], None]:
        """Trickle: one "cand" signal per gathered candidate, and one at the end."""

        def send(connection: str, lines: list[str], end: bool) -> None:
            muc = self._muc
            if muc is not None and gen == self._p2p_gen and not self._closed:
                with contextlib.suppress(Exception):
                    muc.send_signal({"t": "cand", "g": gen, "c": connection, "l": lines, "e": end})

        return send

    async def _on_candidates(self, nick: str, msg: dict[str, Any]) -> None:
        link = self._p2p
        gen, conn, lines, end = msg.get("g"), msg.get("c"), msg.get("l"), msg.get("e")
        if nick != self._peer or self._pairing is None or link is None:
            self._count("signal_refused")
            return
        if gen != self._p2p_gen:
            self._count("signal_stale")
            return
        if (
            not isinstance(conn, str)
            or not isinstance(lines, list)
            or not isinstance(end, bool)
            or not all(isinstance(x, str) for x in lines)
        ):
            self._count("signal_invalid")
            return
        try:
            await link.add_remote_candidates(conn, lines, end)
        except ValueError as e:
            log.warning("ICE candidates from %s refused: %s", nick, e)
            self._count("signal_invalid")

    def _on_p2p_state(self, link: P2PLink, state: str) -> None:
        if link is not self._p2p:
            return
        now = time.monotonic()
        if state == "open":
            self._p2p_down_since = None
            self._last_rx[PATH_P2P] = now
            self._p2p_ok_probes = 0
            if self._cipher is not None:
                self._ping(PATH_P2P)  # now, not at the next probe tick
        elif state in ("failed", "closed"):
            self._p2p_down_since = now
            if self._path == PATH_P2P:
                last = self._last_rx.get(PATH_P2P, now)
                self._set_path(PATH_MUC, f"data channel {state}", now - last)

    # ------------------------------------------------------------ path choice -----------
    def _set_path(self, new: str, reason: str, detection: float | None) -> None:
        old = self._path
        if old == new:
            return
        self._path = new
        now = time.monotonic()
        self.path_events.append(PathEvent(now, old, new, reason, detection))
        took = "" if detection is None else f", detected after {detection * 1e3:.0f} ms"
        if old == PATH_P2P and new == PATH_MUC:
            self._p2p_failed = True
        if new == PATH_P2P and self._fast_at is None and self._paired_at is not None:
            self._fast_at = now
            if self._joined_at is not None:
                took += f", {(now - self._joined_at) * 1e3:.0f} ms after joining"
        log.info("path %s -> %s with %s (%s%s)", old, new, self._peer, reason, took)
        if old != PATH_NONE:
            self._resend_all()

    def _check_health(self) -> None:
        if self._cipher is None:
            return
        if self._peer_left and not self._p2p_alive():  # gone from the room and now silent
            self._forget_peer()
            return
        now = time.monotonic()
        link = self._p2p
        if self._path == PATH_P2P:
            last = self._last_rx.get(PATH_P2P, now)
            if link is None or not link.ready:
                self._set_path(PATH_MUC, "data channel closed", now - last)
                self._p2p_down_since = now
            elif now - last > self.config.failover_after:
                self._set_path(PATH_MUC, "data channel silent", now - last)
                self._p2p_down_since = now
                self._p2p_ok_probes = 0
        elif (
            link is not None
            and link.ready
            and self._p2p_ok_probes >= (self.config.failback_probes if self._p2p_failed else 1)
            and now - self._last_rx.get(PATH_P2P, 0.0) < self.config.failover_after
        ):
            self._p2p_down_since = None
            self._set_path(PATH_P2P, "data channel healthy", None)

    async def _probe_loop(self) -> None:
        next_muc = 0.0
        while not self._closed:
            await asyncio.sleep(self.config.probe_interval)
            try:
                if self._cipher is None:
                    continue
                now = time.monotonic()
                if self._p2p is not None and self._p2p.ready:
                    self._ping(PATH_P2P)
                if now >= next_muc:
                    next_muc = now + self.config.muc_probe_interval
                    self._ping(PATH_MUC)
                self._check_health()
                self._resend_due()
                if self._old_cipher is not None and now > self._old_cipher[1]:
                    self._old_cipher = None
            except Exception:
                log.exception("probe loop")

    async def _silence_watch(self) -> None:
        """Wake when the data channel's silence would reach ``failover_after`` (its last
        authenticated frame + the threshold) and check health then. Sleeping to the deadline
        and re-reading it costs one wake-up per threshold while frames flow, instead of a timer
        re-armed on every frame."""
        while not self._closed:
            wait = self.config.probe_interval
            try:
                last = self._last_rx.get(PATH_P2P)
                if self._cipher is not None and self._path == PATH_P2P and last is not None:
                    due = last + self.config.failover_after
                    left = due - time.monotonic()
                    if left < 0:
                        self._check_health()
                    else:  # just past the deadline, so the check sees the silence exceeded
                        wait = left + 0.001
            except Exception:
                log.exception("silence watch")
            await asyncio.sleep(wait)

    def _ping(self, path: str) -> None:
        ping = self._probers[path].ping(_now_us())
        self._send_control(CTRL_PING, ping, path=path)

    # ------------------------------------------------------------ sending ---------------
    def _link(self, path: str) -> Link | None:
        if path == PATH_P2P:
            return self._p2p if self._p2p is not None and self._p2p.ready else None
        if path == PATH_MUC:
            return self._muc
        return None

    def _route(self, frame: wire.Frame, path: str) -> Link | None:
        """The link that carries ``frame`` on ``path``. The single seam for a faster
        latest-only link (sealed datagrams straight over ICE, no SCTP congestion window):
        latest frames would go there and reliable ones stay on the ordered channel, with no
        change to sealing, acks or failover, since every link only moves opaque records."""
        return self._link(path)

    def _send_control(
        self, kind: int, payload: bytes, *, reliable: bool = False, path: str | None = None
    ) -> None:
        flags = wire.Flags.CONTROL | (wire.Flags.RELIABLE if reliable else wire.Flags.NONE)
        key = (True, kind)
        seq = self._tx_seq.get(key, 0)
        self._tx_seq[key] = (seq + 1) % wire.SEQ_MODULUS
        frame = wire.Frame(kind, seq, _now_us(), payload, flags)
        if reliable:
            entry = _Unacked(frame)
            self._unacked.setdefault(key, {})[seq] = entry
            self._send_frame(frame, entry)
        else:
            self._send_frame(frame, path=path)

    def _send_frame(
        self, frame: wire.Frame, entry: _Unacked | None = None, path: str | None = None
    ) -> bool:
        """Seal and send over ``path`` (default: the path in use). False when nothing went."""
        cipher = self._cipher
        link = self._route(frame, path or self._path)
        if cipher is None or link is None:
            self._count("held" if entry is not None else "dropped_no_path")
            return False
        link_sid = _LINK_CTRL + (frame.stream_id & 0xF) if frame.is_control else frame.stream_id
        try:
            for part in self._fragmenter.split(frame):
                link.send(link_sid, cipher.seal(part), latest=not frame.reliable)
        except LinkBusy:
            self._count("link_busy")
            return False
        except LinkClosed:
            self._count("link_closed")
            return False
        except (FrameTooLarge, wire.Oversized):
            if entry is not None:
                self._drop_unacked(frame)
            raise
        if entry is not None:
            if entry.sent_at:
                self._count("resent")
            entry.sent_at = time.monotonic()
            entry.link = link
        return True

    def _drop_unacked(self, frame: wire.Frame) -> None:
        key = (frame.is_control, frame.stream_id)
        self._unacked.get(key, {}).pop(frame.seq, None)

    def _resend_all(self) -> None:
        for pending in list(self._unacked.values()):
            for entry in sorted(pending.values(), key=lambda e: e.frame.seq):
                self._send_frame(entry.frame, entry)

    def _resend_due(self) -> None:
        now = time.monotonic()
        after = self.config.resend_after
        muc = self._muc if self._path == PATH_MUC else None
        if muc is not None:  # the room link retransmits itself; do not flood it
            after = max(after, 3.0)

        def due_now(e: _Unacked) -> bool:
            if muc is not None and e.link is muc:
                # accepted by the room link, which resends it itself until acked: a resend
                # now would queue a duplicate behind the original and, at the room's ~9 kB/s,
                # push the rest further back until the backlog only grows (the cut campaign
                # left 765 frames undelivered); only a long silence warrants one
                return now - e.sent_at > self.config.room_resend_after
            return now - e.sent_at > after

        for pending in list(self._unacked.values()):
            due = [e for e in pending.values() if due_now(e)]
            for entry in sorted(due, key=lambda e: e.frame.seq):
                self._send_frame(entry.frame, entry)

    async def _ack_loop(self) -> None:
        last_full = 0.0
        while not self._closed:
            await asyncio.sleep(self.config.ack_interval)
            now = time.monotonic()
            if self._cipher is None or not self._rx_rel:
                continue
            if self._ack_due or now - last_full > 0.5:
                self._ack_due = False
                last_full = now
                items = b"".join(
                    _ACK_ITEM.pack(int(ctrl), sid, (st.next_seq - 1) % wire.SEQ_MODULUS)
                    for (ctrl, sid), st in list(self._rx_rel.items())[:2000]
                    if st.next_seq > 0
                )
                if items:
                    self._send_control(CTRL_ACK, items)

    def _on_ack(self, payload: bytes) -> None:
        if len(payload) % _ACK_ITEM.size:
            self._count("control_invalid")
            return
        for off in range(0, len(payload), _ACK_ITEM.size):
            ctrl, sid, upto = _ACK_ITEM.unpack_from(payload, off)
            pending = self._unacked.get((bool(ctrl), sid))
            if not pending:
                continue
            for seq in [s for s in pending if not wire.seq_newer(s, upto)]:
                del pending[seq]
        if sum(len(v) for v in self._unacked.values()) < self.config.max_unacked:
            self._writable.set()

    # ------------------------------------------------------------ receiving -------------
    def _open(self, path: str, record: bytes) -> wire.Frame | None:
        cipher = self._cipher
        if cipher is None:
            self._stats[path].on_drop("not_paired")
            return None
        try:
            return cipher.open(record)
        except ProtectError as e:
            if e.reason == "wrong_session" and self._old_cipher is not None:
                with contextlib.suppress(ProtectError):
                    frame = self._old_cipher[0].open(record)
                    # The previous session's clock probes still help; its data and its acks
                    # do not: the new session restarted sequence numbers (an old latest frame
                    # would make the new ones look superseded, and an old cumulative ack would
                    # acknowledge renumbered frames the peer never got: they were lost, and
                    # the peer then waited for them forever) and resends what was unacked.
                    if frame.is_control and frame.stream_id in (CTRL_PING, CTRL_PONG):
                        return frame
                    self._stats[path].on_drop("old_session")
                    return None
            self._stats[path].on_drop(_refinement(e, record))
            return None

    def _on_record(self, path: str, nick: str, record: bytes) -> None:
        if nick != self._peer:
            self._stats[path].on_drop("foreign_sender")
            self._count("foreign_frames")
            return
        frame = self._open(path, record)
        if frame is None:
            return
        now = time.monotonic()
        self._last_rx[path] = now
        if frame.is_fragment:
            done = self._reassembler.push(frame, now)
            if done is None:
                return
            frame = done
        try:
            if frame.is_control:
                self._on_control(path, frame)
            else:
                self._on_data(path, frame)
        except Exception:
            log.exception("frame handling failed")
            self._count("handler_errors")

    def _on_control(self, path: str, frame: wire.Frame) -> None:
        kind = frame.stream_id
        if kind == CTRL_PING:
            t2 = _now_us()
            try:
                pong = answer_ping(frame.payload, t2, _now_us())
            except ClockError:
                self._count("control_invalid")
                return
            self._send_control(CTRL_PONG, pong, path=path)
        elif kind == CTRL_PONG:
            try:
                sample = self._probers[path].on_pong(frame.payload, _now_us())
            except ClockError:
                self._count("control_invalid")
                return
            self.clock.add(sample)
            self._rtt[path] = float(sample.rtt_us)
            if path == PATH_P2P:
                self._p2p_ok_probes += 1
                if self._path != PATH_P2P:
                    self._check_health()  # move now, not at the next probe tick
        elif kind == CTRL_ACK:
            self._on_ack(frame.payload)
        elif kind in (CTRL_DESCRIPTORS, CTRL_REFUSAL, CTRL_ROOM_LOCK) and frame.reliable:
            st = self._rx_rel.setdefault((True, kind), _RxReliable())
            self._ack_due = True
            if wire.seq_newer(st.next_seq, frame.seq):
                self._count("duplicates")
                return
            st.next_seq = (frame.seq + 1) % wire.SEQ_MODULUS
            if kind == CTRL_DESCRIPTORS:
                self._on_descriptors(frame.payload)
            elif kind == CTRL_ROOM_LOCK:
                self._lock.on_password(frame.payload)
            else:
                self._on_refusal(frame.payload)
        else:
            self._count("control_invalid")

    def _on_descriptors(self, payload: bytes) -> None:
        try:
            remote = wire.decode_descriptors(payload[8:])
        except wire.WireError as e:
            self.problems = [wire.DescriptorProblem("*", "malformed", f"peer descriptors: {e}")]
            self._report_refusals()
            return
        if self.expected is not None:
            problems = wire.match_descriptors(
                self.expected, remote, known_types=self.config.known_types
            )
        else:
            problems = []
            known = self.config.known_types
            for r in remote:
                if known is not None and r.ros_type not in known:
                    problems.append(
                        wire.DescriptorProblem(
                            r.topic,
                            "unknown_type",
                            f"topic {r.topic}: peer sends type {r.ros_type}, which this end "
                            "cannot handle",
                        )
                    )
        bad_topics = {p.topic for p in problems if p.fatal}
        self._remote = {r.stream_id: r for r in remote}
        self._refused = {r.stream_id for r in remote if r.topic in bad_topics}
        self.problems = problems
        for p in problems:
            (log.warning if p.fatal else log.info)("%s", p.message)
        if any(p.fatal for p in problems):
            self._report_refusals()

    def _report_refusals(self) -> None:
        text = json.dumps([p.message for p in self.problems if p.fatal])
        self._send_control(CTRL_REFUSAL, text.encode(), reliable=True)

    def _on_refusal(self, payload: bytes) -> None:
        try:
            items = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
            self._count("control_invalid")
            return
        if isinstance(items, list):
            self.peer_refusals = [str(i)[:500] for i in items[:1024]]
            for i in self.peer_refusals:
                log.warning("peer refused: %s", i)

    def _on_data(self, path: str, frame: wire.Frame) -> None:
        ps = self._stats[path]
        d = self._remote.get(frame.stream_id)
        if d is None:
            ps.on_drop("unknown_stream")
            return
        if frame.stream_id in self._refused:
            ps.stream(frame.stream_id).on_drop("refused")
            return
        if frame.reliable != (d.delivery == "reliable"):
            ps.stream(frame.stream_id).on_drop("malformed")
            return
        now_us = _now_us()
        est = self.clock.estimate(now_us)
        latency = est.one_way_latency_us(frame.timestamp_us, now_us) if est else None
        st = ps.stream(frame.stream_id)
        if not frame.reliable:
            newest = self._rx_latest.get(frame.stream_id)
            if newest is not None and not wire.seq_newer(frame.seq, newest):
                st.on_drop("superseded")
                return
            max_age = self._max_age(d)
            # the age is known to within the clock estimate's error bound (half the best
            # probe's round trip): drop what may be too old, so that nothing delivered is
            # (the cut campaign saw samples 9-11 ms past their max age under load otherwise)
            if latency is not None and est is not None and latency + est.error_us > max_age * 1e6:
                st.on_drop("stale")
                return
            self._rx_latest[frame.stream_id] = frame.seq
            st.on_frame(frame.seq, frame.timestamp_us, now_us, len(frame.payload), latency)
            self._deliver(d, frame, path, latency)
            return
        rx = self._rx_rel.setdefault((False, frame.stream_id), _RxReliable())
        self._ack_due = True
        if frame.seq != rx.next_seq:
            if wire.seq_newer(rx.next_seq, frame.seq) or frame.seq in rx.held:
                st.on_drop("duplicate")
            elif len(rx.held) < self.config.max_reorder:
                rx.held[frame.seq] = (frame, path)
            else:
                st.on_drop("reorder_overflow")
            return
        st.on_frame(frame.seq, frame.timestamp_us, now_us, len(frame.payload), latency)
        self._deliver(d, frame, path, latency)
        rx.next_seq = (rx.next_seq + 1) % wire.SEQ_MODULUS
        while rx.next_seq in rx.held:
            f, p = rx.held.pop(rx.next_seq)
            self._stats[p].stream(f.stream_id).on_frame(
                f.seq, f.timestamp_us, now_us, len(f.payload), None
            )
            self._deliver(d, f, p, None)
            rx.next_seq = (rx.next_seq + 1) % wire.SEQ_MODULUS

    def _max_age(self, remote: wire.StreamDescriptor) -> float:
        if self.expected is not None:
            for e in self.expected:
                if e.topic == remote.topic:
                    return min(e.max_age_s, remote.max_age_s)
        return remote.max_age_s

    def _deliver(
        self, d: wire.StreamDescriptor, frame: wire.Frame, path: str, latency: float | None
    ) -> None:
        if self.on_receive is None:
            return
        age = None if latency is None else latency
        info = ReceiveInfo(path, frame.seq, frame.timestamp_us, latency, age)
        try:
            self.on_receive(d, frame.payload, info)
        except Exception:
            log.exception("receive callback failed")
