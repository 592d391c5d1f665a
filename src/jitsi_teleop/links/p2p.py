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
import contextvars
import ipaddress
import logging
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice
import aioice.ice
import ifaddr
from aiortc import (
    RTCCertificate,
    RTCDataChannel,
    RTCDataChannelParameters,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceCandidate,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceServer,
    RTCIceTransport,
    RTCSctpCapabilities,
    RTCSctpTransport,
)
from aiortc.rtcicetransport import connection_kwargs

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

log = logging.getLogger(__name__)

_SID = struct.Struct(">H")
LATEST_CHANNEL_ID = 0
RELIABLE_CHANNEL_ID = 1
DESCRIPTION_VERSION = 1
MAX_CANDIDATES = 32
_TOKEN_RE = re.compile(r"^[A-Za-z0-9+/=_\-]{1,256}$")

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


# aioice gathers host candidates from ``aioice.ice.get_host_addresses`` and hard-codes the
# exclusion of 127.0.0.1. We wrap that one function once; the wrapper applies a filter only
# inside a gather started by a P2PLink (a context variable), so nothing else in the process
# changes behaviour.
_address_filter: contextvars.ContextVar[Callable[[str], bool] | None] = contextvars.ContextVar(
    "jitsi_teleop_candidate_filter", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _all_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if use_ipv4:
                    out.append(ip.ip)
            elif use_ipv6 and ip.ip[2] == 0:  # no link-local scoped addresses
                out.append(ip.ip[0])
    return out


def _filtered_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    flt = _address_filter.get()
    if flt is None:
        return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in _all_addresses(use_ipv4, use_ipv6) if flt(a)]


if getattr(aioice.ice.get_host_addresses, "__name__", "") != "_filtered_host_addresses":
    aioice.ice.get_host_addresses = _filtered_host_addresses


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


@dataclass(frozen=True)
class P2PDescription:
    """What one end signals: ICE credentials and candidates, DTLS fingerprints, SCTP port."""

    ufrag: str
    pwd: str
    candidates: tuple[str, ...]  # "host port" pairs, already filtered and mapped
    fingerprints: tuple[str, ...]  # "sha-256 AB:CD:..."
    sctp_port: int = 5000
    max_message_size: int = 65536
    #: optional second ICE connection for latest-only datagrams: (ufrag, pwd, candidates)
    datagram: tuple[str, str, tuple[str, ...]] | None = None

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
        return d

    @classmethod
    def from_dict(cls, d: object) -> P2PDescription:
        """Strict: every field checked; raises :class:`DescriptionError` naming the field."""
        keys = {"v", "ufrag", "pwd", "candidates", "fingerprints", "sctp_port", "max_message_size"}
        if not isinstance(d, dict) or not keys <= set(d) <= keys | {"datagram"}:
            raise DescriptionError(f"description must have exactly the fields {sorted(keys)}")
        datagram = None
        if "datagram" in d:
            dg = d["datagram"]
            if not isinstance(dg, dict) or set(dg) != {"ufrag", "pwd", "candidates"}:
                raise DescriptionError("datagram must have exactly ufrag, pwd and candidates")
            _check_ice(dg)
            datagram = (dg["ufrag"], dg["pwd"], tuple(dg["candidates"]))
        if d["v"] != DESCRIPTION_VERSION:
            raise DescriptionError(f"description version {d['v']!r} is not {DESCRIPTION_VERSION}")
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
        )


def _check_ice(d: dict[str, Any]) -> None:
    for k in ("ufrag", "pwd"):
        if not isinstance(d[k], str) or not _TOKEN_RE.match(d[k]):
            raise DescriptionError(f"description field {k} is not a valid ICE token")
    cands = d["candidates"]
    if not isinstance(cands, list) or not 1 <= len(cands) <= MAX_CANDIDATES:
        raise DescriptionError(f"description needs 1..{MAX_CANDIDATES} candidates")
    for c in cands:
        _parse_candidate(c)


def _aioice_candidate(i: int, host: str, port: int) -> aioice.Candidate:
    return aioice.Candidate(
        foundation=str(i),
        component=1,
        transport="udp",
        priority=2130706431 - i,
        host=host,
        port=port,
        type="host",
    )


def _parse_candidate(text: object) -> tuple[str, int]:
    if not isinstance(text, str) or len(text) > 64:
        raise DescriptionError(f"candidate {text!r} is not 'address port'")
    parts = text.split(" ")
    try:
        if len(parts) != 2:
            raise ValueError
        addr = str(ipaddress.ip_address(parts[0]))
        port = int(parts[1])
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise DescriptionError(f"candidate {text!r} is not 'address port'") from None
    return addr, port


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
        servers = [
            RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
            for s in self.config.ice_servers
        ]
        self._gatherer = RTCIceGatherer(iceServers=servers)
        self._ice = RTCIceTransport(self._gatherer)
        # The ICE role is fixed before anything is gathered: a peer's checks can arrive before
        # connect(), and an agent still in the default role would start a role conflict whose
        # resolution can leave both DTLS ends in the same role (a handshake that never ends).
        # aiortc itself sets the role this way for RTCPeerConnection (no public setter).
        self.controlling = controlling
        self._ice._connection.ice_controlling = controlling
        self._dtls = RTCDtlsTransport(self._ice, [self.certificate])
        self._sctp = RTCSctpTransport(self._dtls)
        self._dg: aioice.Connection | None = None
        self._dg_ready = False
        self._dg_task: asyncio.Future[None] | None = None
        #: datagrams dropped before the receiver: foreign source, or the queue was full
        self.foreign_dropped = 0
        if self.config.latest_datagrams:
            self._dg = aioice.Connection(ice_controlling=controlling, **connection_kwargs(servers))
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
        self._stage = "candidates"
        self.state = "new"  # new -> connecting -> open -> closed | failed
        self._ice.on("statechange", self._on_transport_state)
        self._dtls.on("statechange", self._on_transport_state)

    # ------------------------------------------------------------ signalling ------------
    @property
    def local_fingerprints(self) -> tuple[str, ...]:
        return tuple(f"{f.algorithm} {f.value}" for f in self.certificate.getFingerprints())

    async def describe(self) -> P2PDescription:
        """Gather candidates (only addresses the filter allows) and describe this end."""
        token = _address_filter.set(self.config.candidate_filter)
        try:
            await self._gatherer.gather()
            if self._dg is not None:
                await self._dg.gather_candidates()
        finally:
            _address_filter.reset(token)
        params = self._gatherer.getLocalParameters()
        mapped = self._advertised((c.ip, c.port) for c in self._gatherer.getLocalCandidates())
        datagram = None
        if self._dg is not None:
            dg = self._advertised((c.host, c.port) for c in self._dg.local_candidates)
            datagram = (self._dg.local_username, self._dg.local_password, dg)
        return P2PDescription(
            params.usernameFragment or "",
            params.password or "",
            mapped,
            self.local_fingerprints,
            self._sctp.port,
            self.config.max_message_size,
            datagram,
        )

    def _advertised(self, addresses: Iterable[tuple[str, int]]) -> tuple[str, ...]:
        flt, adv = self.config.candidate_filter, self.config.advertise
        out = []
        for host, port in addresses:
            if flt is not None and not flt(host):
                continue
            if adv is not None:
                host, port = adv(host, port)
            out.append(f"{host} {port}")
        if not out:
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

    async def _connect_datagrams(self, remote: tuple[str, str, tuple[str, ...]]) -> None:
        assert self._dg is not None
        conn = self._dg
        conn.remote_username, conn.remote_password = remote[0], remote[1]
        for i, text in enumerate(remote[2]):
            host, port = _parse_candidate(text)
            if self.config.candidate_filter is None or self.config.candidate_filter(host):
                await conn.add_remote_candidate(_aioice_candidate(i, host, port))
        await conn.add_remote_candidate(None)
        await conn.connect()
        _guard_receive(conn, self._count_foreign)
        self._dg_ready = True
        self._dg_task = asyncio.ensure_future(self._datagram_reader(conn))

    async def _datagram_reader(self, conn: aioice.Connection) -> None:
        while True:
            try:
                data = await conn.recv()
            except ConnectionError:
                self._dg_ready = False
                self._lost("datagram connection closed")
                return
            self._on_message(data)

    async def _connect_channels(self, remote: P2PDescription) -> None:
        flt = self.config.candidate_filter
        accepted = 0
        for i, text in enumerate(remote.candidates):
            host, port = _parse_candidate(text)
            if flt is not None and not flt(host):
                continue  # never send to an address the filter excludes
            await self._ice.addRemoteCandidate(
                RTCIceCandidate(
                    component=1,
                    foundation=str(i),
                    ip=host,
                    port=port,
                    priority=2130706431 - i,
                    protocol="udp",
                    type="host",
                )
            )
            accepted += 1
        if not accepted:
            raise ConnectionError("no remote candidate passed the address filter")
        await self._ice.addRemoteCandidate(None)
        self._stage = "ICE"
        await self._ice.start(RTCIceParameters(usernameFragment=remote.ufrag, password=remote.pwd))
        if self._ice.state != "completed":
            raise ConnectionError(f"ICE {self._ice.state}")
        _guard_receive(self._ice._connection, self._count_foreign)
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
        msg = _SID.pack(stream_id) + bytes(payload)
        if len(msg) > self.max_message_size:
            self._stats.refused += 1
            raise FrameTooLarge(
                f"{len(msg)}-byte message exceeds the channel's {self.max_message_size} bytes"
            )
        if latest:
            if self._dg_ready and self._dg is not None:
                self._send_datagram(self._dg, msg)
                return
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

    def _send_datagram(self, conn: aioice.Connection, msg: bytes) -> None:
        """One UDP datagram on the nominated pair; the kernel drops rather than queues."""
        task = asyncio.ensure_future(conn.send(msg))
        task.add_done_callback(self._datagram_sent)
        self._stats.sent += 1
        self._stats.bytes_sent += len(msg)

    def _datagram_sent(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._stats.refused += 1

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
        self._slots.clear()
        self._writable.set()
        if self._dg_task is not None:
            self._dg_task.cancel()
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

    # ------------------------------------------------------------ internals -------------
    def _count_foreign(self) -> None:
        self.foreign_dropped += 1

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


#: datagrams waiting for the reader at most; beyond, new ones are dropped
RECEIVE_QUEUE_LIMIT = 256
_STUN_COOKIE = b"\x21\x12\xa4\x42"


def _guard_receive(conn: aioice.Connection, dropped: Callable[[], None]) -> None:
    """Once ICE has selected a pair: non-STUN datagrams from any other source address are
    dropped before they are queued (let alone opened), and the receive queue is bounded.
    A stop-gap on aioice internals (``_protocols``, ``_nominated``, ``_queue``); the
    datagram receive path of links/ice.py (helper ``ice``) replaces it."""

    def guard(proto: Any) -> None:
        inner = proto.datagram_received

        def received(data: bytes | str, addr: tuple[Any, ...]) -> None:
            pair = conn._nominated.get(1)
            if (
                pair is not None
                and (addr[0], addr[1]) != pair.remote_addr
                and not (isinstance(data, bytes) and data[4:8] == _STUN_COOKIE)
            ):
                dropped()  # junk from elsewhere: never queued, never opened
                return
            inner(data, addr)

        proto.datagram_received = received

    for proto in conn._protocols:
        guard(proto)
    queued = conn.data_received

    def bounded(data: bytes, component: int) -> None:
        if conn._queue.qsize() >= RECEIVE_QUEUE_LIMIT:
            dropped()
            return
        queued(data, component)

    conn.data_received = bounded  # type: ignore[method-assign]
