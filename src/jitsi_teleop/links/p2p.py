"""The fast path: a peer-to-peer WebRTC data channel (aiortc), one ``Link`` to one peer.

Why aiortc's ORTC objects (ICE gatherer/transport, DTLS, SCTP, negotiated data channels) rather
than ``RTCPeerConnection`` and SDP: the link keeps one DTLS certificate for its whole life, so a
re-established connection has the same fingerprint and needs no new pairing handshake; the
description exchanged through the room is a small JSON object (ICE parameters, candidates, DTLS
fingerprints, SCTP port) that is validated field by field instead of SDP text; and candidate
addresses are filtered on both sides (tests gather and accept loopback only, never sending to the
machine's other addresses).

Two negotiated channels (no in-band DCEP round trip): id 0 ``latest`` is unordered with no
retransmissions, id 1 ``reliable`` is ordered and reliable. The sender never lets the latest
channel queue: while its buffer is not empty, newer frames replace older ones per stream in one
slot, flushed when the buffer drains (aiortc's delivery collapses when that buffer fills).

Each message is ``u16 stream id || payload``; the payload is opaque here (the session seals it).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import ipaddress
import logging
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice
from aiortc import (
    RTCCertificate,
    RTCDataChannel,
    RTCDataChannelParameters,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
    RTCSctpCapabilities,
    RTCSctpTransport,
)

from ..room.extdisco import IceServer
from .base import (
    FrameTooLarge,
    Link,
    LinkBusy,
    LinkClosed,
    LinkError,
    LinkStats,
    ReceiveCallback,
    check_stream_id,
)
from .budget import LatestSlots
from .ice import IceAgent, SelectedPair

log = logging.getLogger(__name__)

_SID = struct.Struct(">H")
LATEST_CHANNEL_ID = 0
RELIABLE_CHANNEL_ID = 1
#: 2: candidates as SDP ``a=candidate`` values (type, priority, related address); version 1
#: descriptions (bare "address port" host candidates) are still accepted
DESCRIPTION_VERSION = 2
ACCEPTED_VERSIONS = (1, 2)
MAX_CANDIDATES = 32
MAX_CANDIDATE_TEXT = 160
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
_FOUNDATION_RE = re.compile(r"[A-Za-z0-9+/]{1,32}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9+/=_\-]{1,256}")

#: (host, port) -> (host, port) to advertise; tests point candidates through the relay
AddressMap = Callable[[str, int], tuple[str, int]]
StateCallback = Callable[[str], None]


class DescriptionError(LinkError, ValueError):
    """A remote connection description that is malformed or unusable; nothing was applied."""


def loopback_only(address: str) -> bool:
    """Candidate filter for tests: gather on and talk to 127.0.0.0/8 and ::1 only."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def no_loopback(address: str) -> bool:
    """aioice's own choice (every interface but loopback), made explicit."""
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass
class P2PConfig:
    """How the fast path is set up.

    ``ice_servers``: STUN/TURN from the room's extdisco (``Room.ice_servers()``); empty means no
    server is contacted at all (offline, tests). ``candidate_filter``: which local addresses to
    gather and which remote candidate addresses to accept (None: aioice's default, every
    interface but loopback; tests use :func:`loopback_only`). ``advertise``: rewrite our
    candidates before they are signalled (tests route the path through an impairment relay).
    """

    ice_servers: Sequence[IceServer] = field(default_factory=list)
    candidate_filter: Callable[[str], bool] | None = None
    advertise: AddressMap | None = None
    max_message_size: int = 65536
    #: carry latest-only frames as plain datagrams over an ICE connection of their own
    #: instead of the unordered SCTP channel. Why (``jitsi-teleop bench``): half the latency
    #: and CPU of the channel on loopback, and no congestion window, which under 5 % loss at
    #: 80 ms RTT caps the channel near 185 msg/s. Records are sealed by the session, so DTLS
    #: adds nothing for them. Used only when both ends offer it; else the unordered channel.
    latest_datagrams: bool = True
    #: reliable channel: refuse (LinkBusy) above this many buffered bytes
    reliable_buffer_limit: int = 512 * 1024
    connect_timeout: float = 15.0
    #: how long a relayed pair waits for a direct pair to succeed before it may be nominated
    relay_grace: float = 1.0
    #: while relayed: first re-check of the direct pairs after this, doubling up to 8 s
    upgrade_interval: float = 1.0
    #: each STUN/TURN server gets this long to answer during gathering
    gather_timeout: float = 2.0


@dataclass(frozen=True)
class P2PDescription:
    """What one end signals: ICE credentials and candidates, DTLS fingerprints, SCTP port."""

    ufrag: str
    pwd: str
    #: SDP candidate values ("foundation 1 udp priority address port typ host"),
    #: already filtered and mapped
    candidates: tuple[str, ...]
    fingerprints: tuple[str, ...]  # "sha-256 AB:CD:..."
    sctp_port: int = 5000
    max_message_size: int = 65536
    #: optional second ICE connection for latest-only datagrams: (ufrag, pwd, candidates)
    datagram: tuple[str, str, tuple[str, ...]] | None = None
    #: more candidates follow in "cand" signals (host candidates came first)
    trickle: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "v": DESCRIPTION_VERSION,
            "ufrag": self.ufrag,
            "pwd": self.pwd,
            "candidates": list(self.candidates),
            "fingerprints": list(self.fingerprints),
            "sctp_port": self.sctp_port,
            "max_message_size": self.max_message_size,
        }
        if self.datagram is not None:
            ufrag, pwd, cands = self.datagram
            d["datagram"] = {"ufrag": ufrag, "pwd": pwd, "candidates": list(cands)}
        if self.trickle:
            d["trickle"] = True
        return d

    @classmethod
    def from_dict(cls, d: object) -> P2PDescription:
        """Strict: every field checked; raises :class:`DescriptionError` naming the field."""
        keys = {"v", "ufrag", "pwd", "candidates", "fingerprints", "sctp_port", "max_message_size"}
        if not isinstance(d, dict) or not keys <= set(d) <= keys | {"datagram", "trickle"}:
            raise DescriptionError(f"description must have exactly the fields {sorted(keys)}")
        datagram = None
        if "datagram" in d:
            dg = d["datagram"]
            if not isinstance(dg, dict) or set(dg) != {"ufrag", "pwd", "candidates"}:
                raise DescriptionError("datagram must have exactly ufrag, pwd and candidates")
            _check_ice(dg)
            datagram = (dg["ufrag"], dg["pwd"], tuple(dg["candidates"]))
        trickle = d.get("trickle", False)
        if trickle is not False and trickle is not True:
            raise DescriptionError("description field trickle must be true or absent")
        if isinstance(d["v"], bool) or d["v"] not in ACCEPTED_VERSIONS:
            raise DescriptionError(f"description version {d['v']!r} is not {ACCEPTED_VERSIONS}")
        _check_ice(d)
        cands = d["candidates"]
        fps = d["fingerprints"]
        if not isinstance(fps, list) or not fps or not all(isinstance(f, str) for f in fps):
            raise DescriptionError("description needs a list of DTLS fingerprints")
        for k, lo, hi in (("sctp_port", 1, 65535), ("max_message_size", 1024, 1 << 30)):
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise DescriptionError(f"description field {k} out of range: {v!r}")
        return cls(
            d["ufrag"],
            d["pwd"],
            tuple(cands),
            tuple(fps),
            d["sctp_port"],
            d["max_message_size"],
            datagram,
            trickle,
        )


def _check_ice(d: dict[str, Any]) -> None:
    for k in ("ufrag", "pwd"):
        if not isinstance(d[k], str) or not _TOKEN_RE.fullmatch(d[k]):
            raise DescriptionError(f"description field {k} is not a valid ICE token")
    cands = d["candidates"]
    if not isinstance(cands, list) or not 1 <= len(cands) <= MAX_CANDIDATES:
        raise DescriptionError(f"description needs 1..{MAX_CANDIDATES} candidates")
    for c in cands:
        parse_candidate(c)


def parse_candidate(text: object, index: int = 0) -> aioice.Candidate:
    """One signalled candidate, strictly: an SDP ``a=candidate`` value (``foundation 1 udp
    priority address port typ TYPE [raddr ADDRESS rport PORT]``, UDP, component 1, IP
    literals only) or a legacy bare ``address port`` (a host candidate)."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_CANDIDATE_TEXT:
        raise DescriptionError(f"candidate {text!r} is not a candidate line")
    parts = text.split(" ")
    try:
        if len(parts) == 2:
            addr, port = _ip(parts[0]), _port(parts[1])
            return aioice.Candidate(str(index), 1, "udp", 2130706431 - index, addr, port, "host")
        if len(parts) not in (8, 12) or parts[1] != "1" or parts[2].lower() != "udp":
            raise ValueError
        if parts[6] != "typ" or parts[7] not in CANDIDATE_TYPES:
            raise ValueError
        if not _FOUNDATION_RE.fullmatch(parts[0]):
            raise ValueError
        priority = int(parts[3])
        if not 1 <= priority <= 0xFFFFFFFF or not parts[3].isdigit():
            raise ValueError
        raddr = rport = None
        if len(parts) == 12:
            if parts[8] != "raddr" or parts[10] != "rport":
                raise ValueError
            raddr, rport = _ip(parts[9]), _port(parts[11], allow_zero=True)
        return aioice.Candidate(
            parts[0], 1, "udp", priority, _ip(parts[4]), _port(parts[5]), parts[7], raddr, rport
        )
    except ValueError:
        raise DescriptionError(f"candidate {text!r} is not a candidate line") from None


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _port(text: str, allow_zero: bool = False) -> int:
    if not text.isdigit():
        raise ValueError
    port = int(text)
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError
    return port


def _parse_candidate(text: object) -> tuple[str, int]:
    c = parse_candidate(text)
    return c.host, c.port


class P2PLink(Link):
    """Data-channel link to ``peer_nick``. Create inside the loop; then::

    link = P2PLink(peer_nick, config, controlling=is_leader)
    mine = await link.describe()                 # signal mine.to_dict() to the peer
    await link.connect(P2PDescription.from_dict(theirs))

    ``certificate`` may be shared by successive links so that the fingerprint bound in the
    pairing handshake stays valid when the connection is re-established.
    """

    def __init__(
        self,
        peer_nick: str,
        config: P2PConfig | None = None,
        certificate: RTCCertificate | None = None,
        *,
        controlling: bool,
    ) -> None:
        self.peer_nick = peer_nick
        self.config = config or P2PConfig()
        self.certificate = certificate or RTCCertificate.generateCertificate()
        cfg = self.config
        # aiortc's gatherer only carries our agent: DTLS reads and writes through the agent's
        # connection object, which RTCIceTransport takes from the gatherer when it is built.
        # The ICE role is fixed before anything is gathered: a peer's checks can arrive before
        # connect(), and an agent still in the default role would start a role conflict whose
        # resolution can leave both DTLS ends in the same role (a handshake that never ends).
        self.controlling = controlling
        self._gatherer = RTCIceGatherer(iceServers=[])
        self._agent = self._new_agent(controlling)
        self._gatherer._connection = self._agent
        self._ice = RTCIceTransport(self._gatherer)
        self._dtls = RTCDtlsTransport(self._ice, [self.certificate])
        self._sctp = RTCSctpTransport(self._dtls)
        self._dg: IceAgent | None = None
        self._dg_ready = False
        if cfg.latest_datagrams:
            self._dg = self._new_agent(controlling)
            self._dg.on_data = self._on_datagram
            self._dg.on_closed = lambda: self._dg_lost("datagram connection closed")
        self._sendbuf = bytearray(_SID.size + cfg.max_message_size)
        self._sendview = memoryview(self._sendbuf)
        self._latest_ch: RTCDataChannel | None = None
        self._reliable_ch: RTCDataChannel | None = None
        self._stats = LinkStats()
        self._on_frame: ReceiveCallback | None = None
        self._on_state: StateCallback | None = None
        self._slots: LatestSlots[bytes] = LatestSlots(1024)
        self._writable = asyncio.Event()
        self._writable.set()
        self.max_message_size = self.config.max_message_size
        self._open = False
        self._closed = False
        self.refused_candidates = 0
        self._remote_trickles = False
        self._remote_count: dict[str, int] = {}
        self._remote_ready: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._stage = "candidates"
        self.state = "new"  # new -> connecting -> open -> closed | failed
        self._ice.on("statechange", self._on_transport_state)
        self._dtls.on("statechange", self._on_transport_state)

    # ------------------------------------------------------------ signalling ------------
    @property
    def local_fingerprints(self) -> tuple[str, ...]:
        return tuple(f"{f.algorithm} {f.value}" for f in self.certificate.getFingerprints())

    def _new_agent(self, controlling: bool) -> IceAgent:
        cfg = self.config
        return IceAgent(
            controlling=controlling,
            servers=cfg.ice_servers,
            address_filter=cfg.candidate_filter,
            relay_grace=cfg.relay_grace,
            upgrade_interval=cfg.upgrade_interval,
            gather_timeout=cfg.gather_timeout,
        )

    def _agents(self) -> dict[str, IceAgent]:
        out = {"channel": self._agent}
        if self._dg is not None:
            out["datagram"] = self._dg
        return out

    async def describe(self, trickle: bool = False) -> P2PDescription:
        """Gather candidates (only addresses the filter allows) and describe this end. With
        ``trickle`` only host candidates are in the description: :meth:`trickle` then sends
        the server-reflexive and relayed ones as they come."""
        agents = list(self._agents().values())
        if trickle:
            await asyncio.gather(*(a.gather_host() for a in agents))
        else:
            await asyncio.gather(*(a.gather() for a in agents))
        params = self._gatherer.getLocalParameters()
        datagram = None
        if self._dg is not None:
            datagram = (
                self._dg.local_username,
                self._dg.local_password,
                self._advertised(self._dg.local_candidates),
            )
        return P2PDescription(
            params.usernameFragment or "",
            params.password or "",
            self._advertised(self._agent.local_candidates),
            self.local_fingerprints,
            self._sctp.port,
            self.config.max_message_size,
            datagram,
            trickle,
        )

    def trickle(self, send: Callable[[str, list[str], bool], None]) -> None:
        """Gather from the STUN/TURN servers in the background; ``send(connection, lines,
        end)`` for each candidate (``connection`` is "channel" or "datagram") and once with
        ``end`` when a connection has all its candidates."""

        async def run(name: str, agent: IceAgent) -> None:
            def found(c: aioice.Candidate) -> None:
                lines = self._advertised([c], allow_empty=True)
                if lines and not self._closed:
                    send(name, list(lines), False)

            await agent.gather_servers(found)
            if not self._closed:
                send(name, [], True)

        for name, agent in self._agents().items():
            task = asyncio.ensure_future(run(name, agent))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def add_remote_candidates(self, connection: str, lines: Sequence[str], end: bool) -> None:
        """Candidates the peer trickled (strictly parsed, filtered like the description's)."""
        agent = self._agents().get(connection)
        if connection == "datagram" and agent is None:
            return  # the peer's datagram connection, which this end does not use
        if agent is None or self._closed:
            raise DescriptionError(f"no ICE connection {connection!r} to add candidates to")
        if len(lines) > MAX_CANDIDATES - self._remote_count.get(connection, 0):
            raise DescriptionError(f"more than {MAX_CANDIDATES} candidates for {connection}")
        cands = [parse_candidate(t, 100 + i) for i, t in enumerate(lines)]
        self._remote_count[connection] = self._remote_count.get(connection, 0) + len(cands)
        # after the description's own candidates (connect() adds them), never before
        ready = self._remote_ready.setdefault(connection, asyncio.Event())
        try:
            await asyncio.wait_for(ready.wait(), self.config.connect_timeout)
        except asyncio.TimeoutError:
            return  # connect() never came: the link is failing anyway
        try:
            for c in cands:
                await self._add_one(agent, c)
            if end:
                await agent.add_remote_candidate(None)
        except ValueError as e:  # after the peer's end-of-candidates
            raise DescriptionError(f"candidate after end-of-candidates: {e}") from None

    async def _add_one(self, agent: IceAgent, cand: aioice.Candidate) -> bool:
        flt = self.config.candidate_filter
        if flt is not None and not flt(cand.host):
            self.refused_candidates += 1
            log.warning(
                "ICE candidate %s from %s refused: outside the allowed addresses",
                cand.to_sdp(),
                self.peer_nick,
            )
            return False
        await agent.add_remote_candidate(cand)
        return True

    def _advertised(
        self, candidates: Sequence[aioice.Candidate], allow_empty: bool = False
    ) -> tuple[str, ...]:
        """Candidate lines to signal; ``advertise`` rewrites host candidates only (it routes
        the direct path through the tests' impairment relay)."""
        flt, adv = self.config.candidate_filter, self.config.advertise
        out = []
        for c in candidates:
            if flt is not None and not flt(c.host):
                continue
            if adv is not None and c.type == "host":
                c = copy.copy(c)
                c.host, c.port = adv(c.host, c.port)
            out.append(c.to_sdp())
        if not out and not allow_empty:
            raise LinkError("no ICE candidate survived the address filter")
        return tuple(out[:MAX_CANDIDATES])

    async def connect(self, remote: P2PDescription) -> None:
        """ICE, DTLS (the peer's certificate must match ``remote.fingerprints``), SCTP, then
        both channels open. Raises LinkError (and the link is closed) on failure/timeout."""
        if self._closed:
            raise LinkClosed("link closed")
        self.state = "connecting"
        try:
            await asyncio.wait_for(self._connect(remote), self.config.connect_timeout)
        except (asyncio.TimeoutError, ConnectionError, OSError, AssertionError) as e:
            await self._fail(f"connect failed: {e!r}")
            raise LinkError(
                f"P2P connection to {self.peer_nick} failed during {self._stage}: {e!r}"
            ) from None
        if self.state != "open":
            await self._fail("transport failed while connecting")
            raise LinkError(f"P2P connection to {self.peer_nick} failed ({self.state})")

    async def _connect(self, remote: P2PDescription) -> None:
        self._remote_trickles = remote.trickle
        dg = None
        if self._dg is not None and remote.datagram is not None:
            dg = asyncio.ensure_future(self._connect_datagrams(remote.datagram))
        try:
            await self._connect_channels(remote)
        except BaseException:
            if dg is not None:
                dg.cancel()
            raise
        if dg is not None:
            try:
                await dg
            except (ConnectionError, OSError) as e:  # the unordered channel carries latest
                log.info("latest-only datagrams unavailable, using the channel: %s", e)

    async def _add_remote(self, agent: IceAgent, lines: Sequence[str], end: bool) -> int:
        """Add the peer's candidates that the address filter allows; the others are refused
        (counted in ``refused_candidates``) and never contacted."""
        accepted = 0
        for i, text in enumerate(lines):
            accepted += await self._add_one(agent, parse_candidate(text, i))
        if end:
            await agent.add_remote_candidate(None)
        return accepted

    async def _connect_datagrams(self, remote: tuple[str, str, tuple[str, ...]]) -> None:
        assert self._dg is not None
        conn = self._dg
        conn.remote_username, conn.remote_password = remote[0], remote[1]
        accepted = await self._add_remote(conn, remote[2], not self._remote_trickles)
        self._remote_ready.setdefault("datagram", asyncio.Event()).set()
        if not accepted and not self._remote_trickles:
            raise ConnectionError("no remote datagram candidate passed the address filter")
        await conn.connect()
        self._dg_ready = True

    def _dg_lost(self, why: str) -> None:
        if self._dg_ready:
            self._dg_ready = False
            self._lost(why)

    async def _connect_channels(self, remote: P2PDescription) -> None:
        accepted = await self._add_remote(self._agent, remote.candidates, not remote.trickle)
        self._remote_ready.setdefault("channel", asyncio.Event()).set()
        if not accepted and not remote.trickle:
            raise ConnectionError("no remote candidate passed the address filter")
        self._stage = "ICE"
        await self._ice.start(RTCIceParameters(usernameFragment=remote.ufrag, password=remote.pwd))
        if self._ice.state != "completed":
            raise ConnectionError(f"ICE {self._ice.state}")
        fps = []
        for f in remote.fingerprints:
            alg, _, value = f.partition(" ")
            fps.append(RTCDtlsFingerprint(algorithm=alg.lower(), value=value.upper()))
        self._stage = "DTLS"
        await self._dtls.start(RTCDtlsParameters(fingerprints=fps))
        if self._dtls.state != "connected":
            raise ConnectionError(f"DTLS {self._dtls.state}")
        size = min(remote.max_message_size, self.config.max_message_size)
        self.max_message_size = size
        self._stage = "SCTP"
        await self._sctp.start(RTCSctpCapabilities(maxMessageSize=size), remote.sctp_port)
        opened = asyncio.get_running_loop().create_future()
        self._latest_ch = self._channel("latest", LATEST_CHANNEL_ID, False, 0)
        self._reliable_ch = self._channel("reliable", RELIABLE_CHANNEL_ID, True, None)
        chans = (self._latest_ch, self._reliable_ch)

        def check_open() -> None:
            if all(c.readyState == "open" for c in chans) and not opened.done():
                opened.set_result(None)

        for ch in chans:
            ch.on("open", check_open)
        check_open()
        self._stage = "channel open"
        await opened
        self._reliable_ch.bufferedAmountLowThreshold = self.config.reliable_buffer_limit // 2
        self._reliable_ch.on("bufferedamountlow", self._writable.set)
        self._latest_ch.on("bufferedamountlow", self._flush_latest)
        self._open = True
        self._set_state("open")

    def _channel(self, label: str, cid: int, ordered: bool, retx: int | None) -> RTCDataChannel:
        ch = RTCDataChannel(
            self._sctp,
            RTCDataChannelParameters(
                label=label, ordered=ordered, maxRetransmits=retx, negotiated=True, id=cid
            ),
        )
        ch.on("message", self._on_message)
        ch.on("close", lambda: self._lost(f"{label} channel closed"))
        return ch

    # ------------------------------------------------------------ Link API --------------
    @property
    def stats(self) -> LinkStats:
        self._stats.pending_latest = len(self._slots)
        ch = self._reliable_ch
        self._stats.queued_reliable = ch.bufferedAmount if ch is not None else 0
        return self._stats

    @property
    def ready(self) -> bool:
        return self._open and not self._closed

    def set_receive_callback(self, callback: ReceiveCallback | None) -> None:
        self._on_frame = callback

    def set_state_callback(self, callback: StateCallback | None) -> None:
        """``callback(state)`` on "open", "closed" and "failed"."""
        self._on_state = callback

    def send(self, stream_id: int, payload: bytes, latest: bool) -> None:
        if self._closed:
            raise LinkClosed("link closed")
        if not self._open or self._latest_ch is None or self._reliable_ch is None:
            raise LinkClosed("link not connected")
        check_stream_id(stream_id)
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes")
        size = _SID.size + len(payload)
        if size > self.max_message_size:
            self._stats.refused += 1
            raise FrameTooLarge(
                f"{size}-byte message exceeds the channel's {self.max_message_size} bytes"
            )
        if latest and self._dg_ready and self._dg is not None:
            self._send_datagram(self._dg, stream_id, payload, size)
            return
        msg = _SID.pack(stream_id) + bytes(payload)
        if latest:
            if self._latest_ch.bufferedAmount > 0:  # never queue in SCTP: newest wins here
                if self._slots.put(stream_id, msg, 0.0):
                    self._stats.thinned += 1
                return
            self._transmit(self._latest_ch, msg)
            return
        if self._reliable_ch.bufferedAmount + len(msg) > self.config.reliable_buffer_limit:
            self._stats.refused += 1
            self._writable.clear()
            raise LinkBusy(f"reliable channel buffer full ({self._reliable_ch.bufferedAmount} B)")
        self._transmit(self._reliable_ch, msg)

    def _transmit(self, ch: RTCDataChannel, msg: bytes) -> None:
        try:
            ch.send(msg)
        except Exception as e:  # aiortc raises InvalidStateError once the channel closed
            self._lost(f"send failed: {e!r}")
            raise LinkClosed(f"data channel closed: {e}") from None
        self._stats.sent += 1
        self._stats.bytes_sent += len(msg)

    def _send_datagram(self, conn: IceAgent, stream_id: int, payload: Any, size: int) -> None:
        """One UDP datagram on the selected pair, assembled in a reused buffer and written
        with one ``sendto`` (no task, no copy of the record); the kernel drops rather than
        queues."""
        buf = self._sendbuf
        _SID.pack_into(buf, 0, stream_id)
        buf[_SID.size : size] = payload
        if not conn.send_now(self._sendview[:size]):
            self._stats.refused += 1
            return
        self._stats.sent += 1
        self._stats.bytes_sent += size

    @property
    def latest_transport(self) -> str:
        """``datagram`` or ``channel``: what carries latest-only frames now."""
        return "datagram" if self._dg_ready else "channel"

    def _flush_latest(self) -> None:
        ch = self._latest_ch
        while ch is not None and self._open and ch.bufferedAmount == 0:
            pending = self._slots.peek()
            if pending is None:
                return
            self._slots.pop(pending.stream_id)
            with contextlib.suppress(LinkClosed):
                self._transmit(ch, pending.item)

    async def wait_writable(self) -> None:
        if self._closed:
            raise LinkClosed("link closed")
        await self._writable.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._open = False
        for task in list(self._tasks):
            task.cancel()
        self._slots.clear()
        self._writable.set()
        if self._dg is not None:
            self._dg_ready = False
            with contextlib.suppress(Exception):
                await self._dg.close()
        with contextlib.suppress(Exception):
            await self._sctp.stop()
        with contextlib.suppress(Exception):
            await self._dtls.stop()
        with contextlib.suppress(Exception):
            await self._ice.stop()
        self._set_state("closed")

    # ------------------------------------------------------------ ICE report ------------
    @property
    def selected_pair(self) -> SelectedPair | None:
        """The pair carrying latest-only frames (the datagram connection's, else the data
        channel's)."""
        if self._dg_ready and self._dg is not None and self._dg.selected is not None:
            return self._dg.selected
        return self._agent.selected

    @property
    def foreign_dropped(self) -> int:
        """Datagrams dropped before the receiver: foreign source, or a full queue."""
        agents = [self._agent] + ([self._dg] if self._dg is not None else [])
        return sum(a.foreign_dropped + a.queue_dropped for a in agents)

    @property
    def servers_unanswered(self) -> bool:
        """Every STUN/TURN server this link asked failed to answer (it gathered while the
        network was down): it has only host candidates, which do not cross a NAT."""
        reports = [r for a in self._agents().values() for r in a.gather_reports]
        return bool(reports) and not any(r.ok for r in reports)

    def ice_report(self) -> dict[str, Any]:
        """Selected pairs, pair switches, per-server gathering outcomes and drop counters."""
        agents = {"channel": self._agent}
        if self._dg is not None:
            agents["datagram"] = self._dg
        out: dict[str, Any] = {}
        for name, a in agents.items():
            out[name] = {
                "selected": a.selected.as_dict() if a.selected is not None else None,
                "switches": max(0, len(a.selections) - 1),
                "foreign_dropped": a.foreign_dropped,
                "queue_dropped": a.queue_dropped,
            }
        out["servers"] = [dataclasses.asdict(r) for r in self._agent.gather_reports]
        out["refused_candidates"] = self.refused_candidates
        return out

    # ------------------------------------------------------------ internals -------------
    def _on_datagram(self, message: bytes) -> None:
        """Straight from the selected pair's socket (sources already checked by the agent)."""
        if len(message) < _SID.size:
            self._stats.invalid += 1
            return
        (sid,) = _SID.unpack_from(message, 0)
        payload = message[_SID.size :]
        self._stats.delivered += 1
        self._stats.bytes_received += len(payload)
        cb = self._on_frame
        if cb is not None:
            try:
                cb(self.peer_nick, sid, payload)
            except Exception:
                log.exception("receive callback failed")

    def _on_message(self, message: bytes | str) -> None:
        if not isinstance(message, bytes) or len(message) < _SID.size:
            self._stats.invalid += 1
            return
        (sid,) = _SID.unpack_from(message, 0)
        payload = message[_SID.size :]
        self._stats.delivered += 1
        self._stats.bytes_received += len(payload)
        if self._on_frame is not None:
            try:
                self._on_frame(self.peer_nick, sid, payload)
            except Exception:
                log.exception("receive callback failed")

    def _on_transport_state(self) -> None:
        if self._ice.state in ("failed", "closed") or self._dtls.state in ("failed", "closed"):
            self._lost(f"transport {self._ice.state}/{self._dtls.state}")

    def _lost(self, why: str) -> None:
        if self.state in ("closed", "failed"):
            return
        log.info("P2P link to %s lost: %s", self.peer_nick, why)
        self._open = False
        self._writable.set()
        self._set_state("failed")

    async def _fail(self, why: str) -> None:
        self._lost(why)
        self.state = "failed"
        await self.close()
        self.state = "failed"

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        if self.state == "failed" and state == "closed":
            return
        self.state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("state callback failed")
