"""The LAN carrier: a "room" with no server, made of XEP-0174 announcements and XML streams.

It offers what the session and the slow-path link use of a Jitsi room (occupants with their
role and key id, room events, private messages to an occupant, a byte budget), so pairing,
descriptors, ICE offers, the slow path and safety run unchanged; only the rendezvous differs:

- presence: our ``_presence._tcp`` service (:mod:`.dnssd`), with the LAN room name, role and
  key id as extra TXT keys; occupants are the sites announcing the same LAN room;
- a private message to an occupant: a ``<message>`` stanza on a direct XML stream to it
  (:mod:`.stream`), opened on first use or accepted from it;
- the occupant nick is the XEP-0174 instance name (``user@machine``), which the stream's
  ``from`` must carry, checked against the address the peer announced.

Nothing a LAN host says is trusted: a second host announcing a peer's name gets every
message that the name gets (both addresses are tried), and the pairing handshake, which only
the holder of the secret completes, decides who the peer is. Refusals are counted in
:attr:`LanRoom.counters` and listed by :meth:`LanRoom.diagnostics`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from slixmpp import Message
from slixmpp.xmlstream import StanzaBase

from ..links.budget import TokenBucket
from ..room.config import RoomError
from ..room.occupants import (
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    RoomEvent,
    RoomJoined,
    TeleopInfo,
)
from ..room.stanzas import NS_DISCO_INFO, NS_PING, NS_TELEOP, register_stanzas
from ..room.unclaimed import UnclaimedSignals
from .dnssd import DirectoryConfig, LanDirectory, LanPeer
from .stream import NS_CLIENT, StreamError, StreamLimits, XmlStream, accept, connect
from .txt import LanPresence, check_instance, check_lan_room

log = logging.getLogger(__name__)

LAN_PREFIX = "lan:"
#: unclaimed teleop signals kept for replay: per sender, and senders (as the room does)
_MESSAGE = f"{{{NS_CLIENT}}}message"
_IQ = f"{{{NS_CLIENT}}}iq"
_HOST_RE = re.compile(r"[^A-Za-z0-9_.\-]")


def is_lan_room(room: str) -> bool:
    return room.startswith(LAN_PREFIX)


def lan_room_name(room: str) -> str:
    """``lan:mylab`` -> ``mylab`` (validated)."""
    return check_lan_room(room[len(LAN_PREFIX) :] if is_lan_room(room) else room)


def default_instance(nick: str) -> str:
    host = _HOST_RE.sub("-", socket.gethostname())[:40] or "host"
    return f"jt-{nick}@{host}"


@dataclass
class LanConfig:
    """A LAN room. ``name`` keeps two teleoperation pairs on one network apart."""

    name: str
    teleop_role: str | None = "leader"
    key_id: str = ""
    robot: str = ""
    nick: str = ""  #: instance name ``user@machine`` (default: ``jt-<random>@<hostname>``)
    display_name: str = "jitsi-teleop"
    #: drop-down: our nick in the Jitsi room we are also in (announced as ``jt.muc``)
    muc_nick: str = ""
    port: int = 0  #: TCP port of our XML streams (0: any free port)
    addresses: list[str] | None = None  #: interfaces (None: every non-loopback IPv4 one)
    limits: StreamLimits = field(default_factory=StreamLimits)
    #: offer and take STARTTLS on the XML streams (used where both ends offer it)
    tls: bool = True
    #: the LAN has no server rate limit; this only keeps the slow path from flooding it
    rate_bytes_per_s: float = 4_000_000.0
    burst_bytes: float = 256 * 1024
    max_stanza_bytes: int = 200 * 1024
    max_streams: int = 32
    max_streams_per_address: int = 4
    max_pending_per_peer: int = 256
    #: how long an incoming stream may wait for its sender's announcement to be resolved
    identify_wait: float = 3.0
    reconnect_after: float = 1.0
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)

    def __post_init__(self) -> None:
        self.name = lan_room_name(self.name)
        if not self.nick:
            from ..room.config import new_nick

            self.nick = default_instance(new_nick())
        check_instance(self.nick)
        if self.teleop_role is not None and self.teleop_role not in ("leader", "follower"):
            raise ValueError(f"role must be leader or follower: {self.teleop_role!r}")
        if self.addresses is not None:
            self.directory.addresses = list(self.addresses)
        if self.tls and self.limits.tls_server is None:
            from .tls import make_contexts

            self.limits.tls_server, self.limits.tls_client = make_contexts(self.nick)

    @property
    def room_jid(self) -> str:
        """What the site reports as its room (diagnostics, logs)."""
        return self.room

    @property
    def room(self) -> str:
        """The name pairing binds (so a LAN pairing can never be replayed into a Jitsi room)."""
        return LAN_PREFIX + self.name


@dataclass
class _Endpoint:
    """One (name, address) we talk to: its streams and what waits for one."""

    instance: str
    address: str
    port: int
    streams: list[XmlStream] = field(default_factory=list)
    pending: deque[bytes] = field(default_factory=deque)
    connecting: bool = False
    last_attempt: float = 0.0

    def stream(self) -> XmlStream | None:
        """The newest stream we may write to now (ours first: one the peer opened may be in
        the middle of its STARTTLS)."""
        live = sorted((s for s in self.streams if s.writable), key=lambda s: s.outbound)
        return live[-1] if live else None


class LanRoom:
    """Room-shaped LAN carrier. ``await join()``, use as a ``Room`` with the session,
    ``await close()``."""

    def __init__(self, config: LanConfig) -> None:
        register_stanzas()
        self.config = config
        self.nick = config.nick
        self.budget = TokenBucket(config.rate_bytes_per_s, config.burst_bytes)
        self.directory = LanDirectory(config.directory)
        self.counters: dict[str, int] = {}
        self._occupants: dict[str, Occupant] = {}
        self._listeners: list[Callable[[RoomEvent], None]] = []
        self._handlers: list[Callable[[str, Message], bool]] = []
        self._unclaimed = UnclaimedSignals()
        #: monotonic time we were announced (sessions measure pairing from it)
        self.joined_at: float | None = None
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self._incoming: set[XmlStream] = set()
        self._handshaking = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._online = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsub: Callable[[], None] | None = None
        self.port = 0
        self.rtt: float | None = None

    # ------------------------------------------------------------ Room surface ----------
    @property
    def room_jid(self) -> str:
        return self.config.room

    @property
    def online(self) -> bool:
        return self._online.is_set()

    @property
    def occupants(self) -> dict[str, Occupant]:
        return dict(self._occupants)

    @property
    def peers(self) -> list[Occupant]:
        return [o for o in self._occupants.values() if o.is_endpoint and not o.is_self]

    def occupant_jid(self, nick: str) -> str:
        return nick  # XEP-0174: the instance name is the address

    def subscribe(self, listener: Callable[[RoomEvent], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def add_message_handler(
        self, handler: Callable[[str, Message], bool], *, replay: float = 0.0
    ) -> Callable[[], None]:
        """As ``Room.add_message_handler``; ``replay``: first :meth:`replay_unclaimed`."""
        self._handlers.append(handler)
        if replay > 0:
            self.replay_unclaimed(handler, replay)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def replay_unclaimed(self, handler: Callable[[str, Message], bool], within: float) -> None:
        """As ``Room.replay_unclaimed``: the teleop signals nobody claimed in the last
        ``within`` s (a peer's first handshake can arrive before the channel that answers
        it exists), a few per sender so one flooder cannot push out another's."""
        self._unclaimed.replay(handler, within)

    async def wait_online(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._online.wait(), timeout)

    async def wait_for_peer(self, role: str | None = None, timeout: float = 10.0) -> Occupant:
        deadline = time.monotonic() + timeout
        while True:
            for o in self.peers:
                if role is None or (o.teleop is not None and o.teleop.role == role):
                    return o
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError(f"no LAN peer with role {role!r} within {timeout:g} s")
            await asyncio.sleep(0.05)

    def stanza_size(self, stanza: StanzaBase) -> int:
        return len(str(stanza).encode("utf-8"))

    def make_private_message(self, nick: str) -> Message:
        msg = Message()
        msg["to"] = nick
        msg["type"] = "chat"
        return msg

    async def ice_servers(self, timeout: float = 5.0) -> list[Any]:
        raise RoomError("no server on the LAN: host candidates only")

    async def external_services(self, timeout: float = 5.0) -> list[Any]:
        return []

    def announce(self) -> None:
        """Presence is the DNS-SD announcement; nothing to resend."""

    def send(self, stanza: StanzaBase, size: int | None = None) -> int:
        """Send a stanza addressed to an occupant over its XML stream(s)."""
        if not self.online:
            raise RoomError("LAN carrier is not running")
        to = str(stanza["to"])
        stanza["from"] = self.nick
        data = str(stanza).encode("utf-8")
        if len(data) > self.config.max_stanza_bytes:
            raise RoomError(f"stanza of {len(data)} bytes is over the LAN limit")
        size = len(data) if size is None else size
        self.budget.consume(size)
        eps = self._endpoints_for(to)
        if not eps:
            self._count("send_no_route")
            raise RoomError(f"{to} is not on the LAN")
        for ep in eps:
            s = ep.stream()
            if s is not None and s.send(data):
                continue
            if len(ep.pending) >= self.config.max_pending_per_peer:
                ep.pending.popleft()
                self._count("send_queue_dropped")
            ep.pending.append(data)
            self._ensure_stream(ep)
        return size

    # ------------------------------------------------------------ life cycle ------------
    async def join(self) -> Occupant:
        """Listen, announce, browse. Returns our own occupant, like ``Room.join``."""
        cfg = self.config
        addrs = list(cfg.directory.addresses or [])
        if not addrs:
            from .dnssd import local_addresses

            addrs = local_addresses()
            cfg.directory.addresses = addrs
        if not addrs:
            raise RoomError("no IPv4 interface for the LAN carrier")
        first = await asyncio.start_server(self._on_connection, addrs[0], cfg.port)
        self._servers.append(first)
        self.port = first.sockets[0].getsockname()[1]
        for a in addrs[1:]:
            self._servers.append(await asyncio.start_server(self._on_connection, a, self.port))
        presence = None
        if cfg.teleop_role is not None:
            presence = LanPresence(
                instance=self.nick,
                port=self.port,
                room=cfg.name,
                role=cfg.teleop_role,
                key_id=cfg.key_id,
                robot=cfg.robot,
                nick=cfg.display_name[:60] or "jitsi-teleop",
                muc=cfg.muc_nick,
            )
        try:
            got = await self.directory.start(presence)
        except Exception as e:
            await self.close()
            raise RoomError(f"cannot announce on the LAN: {e}") from e
        if got is not None:
            self.nick = got.instance
        self._unsub = self.directory.subscribe(self._on_directory)
        self.joined_at = time.monotonic()
        self._online.set()
        self._emit(RoomJoined(self.nick, False))
        me = Occupant(self.nick, None, teleop=self._own_info(), is_self=True)
        return me

    async def close(self) -> None:
        self._online.clear()
        if self._unsub is not None:
            self._unsub()
        for t in list(self._tasks):
            t.cancel()
        for ep in self._endpoints.values():
            for s in ep.streams:
                await s.close()
        for s in list(self._incoming):
            await s.close()
        for srv in self._servers:
            srv.close()
        await self.directory.close()

    def presence_of(self, instance: str) -> LanPresence | None:
        """The parsed announcement of an occupant (None when unknown or unusable)."""
        p = self.directory.peers.get(instance)
        return p.presence if p is not None else None

    def set_muc_nick(self, nick: str) -> None:
        """Drop-down: announce our (new) nick in the Jitsi room."""
        if nick == self.config.muc_nick:
            return
        self.config.muc_nick = nick
        pr = self.directory.presence
        if pr is not None and self.online:
            self._spawn(self.directory.update(LanPresence(**{**pr.__dict__, "muc": nick})))

    # ------------------------------------------------------------ diagnostics -----------
    def diagnostics(self) -> dict[str, Any]:
        """Peers (usable or not, and why), open streams, refusal counters."""
        peers = []
        for p in self.directory.peers.values():
            pr = p.presence
            problem = p.problem
            if problem is None and pr is not None and pr.room != self.config.name:
                problem = "other_room"
            if problem is None and pr is not None and pr.role == self.config.teleop_role:
                problem = "same_role"
            if problem is None and len({a for a, _ in p.endpoints}) > 1:
                problem = "name_conflict"
            peers.append(
                {
                    "instance": p.instance,
                    "addresses": [f"{a}:{port}" for a, port in p.endpoints],
                    "room": pr.room if pr else None,
                    "role": pr.role if pr else None,
                    "key_id": pr.key_id if pr else None,
                    "robot": pr.robot if pr else None,
                    "usable": problem is None,
                    "problem": problem,
                }
            )
        every = [x for ep in self._endpoints.values() for x in ep.streams] + list(self._incoming)
        streams = [
            {
                "peer": s.peer,
                "address": s.address,
                "outbound": s.outbound,
                "tls": s.tls,
                "in": s.stanzas_in,
            }
            for s in every
            if s.open
        ]
        counters = dict(self.directory.counters)
        for k, v in self.counters.items():
            counters[k] = counters.get(k, 0) + v
        return {
            "instance": self.nick,
            "room": self.config.room,
            "port": self.port,
            "peers": peers,
            "streams": streams,
            "counters": counters,
        }

    def _count(self, reason: str, n: int = 1) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + n

    # ------------------------------------------------------------ occupants -------------
    def _own_info(self) -> TeleopInfo | None:
        c = self.config
        if c.teleop_role is None:
            return None
        return TeleopInfo(c.teleop_role, c.robot, c.key_id)

    def _usable(self, p: LanPeer) -> bool:
        return p.presence is not None and p.presence.room == self.config.name

    def _on_directory(self) -> None:
        new: dict[str, Occupant] = {}
        for p in self.directory.peers.values():
            if not self._usable(p):
                continue
            pr = p.presence
            assert pr is not None
            new[p.instance] = Occupant(
                nick=p.instance,
                jid=p.endpoints[0][0] if p.endpoints else None,
                teleop=TeleopInfo(pr.role, pr.robot, pr.key_id, pr.version),
            )
        old = self._occupants
        self._occupants = new
        for nick, occ in new.items():
            if nick not in old:
                self._emit(OccupantJoined(occ))
            elif old[nick] != occ:
                self._emit(OccupantChanged(old[nick], occ))
        for nick, occ in old.items():
            if nick not in new:
                self._emit(OccupantLeft(occ))
        # endpoints of peers that changed address or left
        for key in [k for k in self._endpoints if k[0] not in self.directory.peers]:
            ep = self._endpoints.pop(key)
            for s in ep.streams:
                self._spawn(s.close())

    def _emit(self, event: RoomEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("LAN room listener failed on %r", event)

    # ------------------------------------------------------------ streams ---------------
    def _endpoints_for(self, instance: str) -> list[_Endpoint]:
        peer = self.directory.peers.get(instance)
        if peer is None:
            return []
        out = []
        for addr, port in peer.endpoints:
            ep = self._endpoints.get((instance, addr))
            if ep is None or ep.port != port:
                ep = _Endpoint(instance, addr, port)
                self._endpoints[(instance, addr)] = ep
            out.append(ep)
        return out

    def _ensure_stream(self, ep: _Endpoint) -> None:
        if ep.connecting or ep.stream() is not None:
            return
        ep.connecting = True
        self._spawn(self._connect(ep))

    async def _connect(self, ep: _Endpoint) -> None:
        try:
            wait = ep.last_attempt + self.config.reconnect_after - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            ep.last_attempt = time.monotonic()
            try:
                s = await connect(ep.address, ep.port, self.nick, ep.instance, self.config.limits)
            except StreamError as e:
                self._count(f"connect_{e.reason}")
                log.info("LAN stream to %s at %s: %s", ep.instance, ep.address, e)
            else:
                self._attach(s)
                ep.streams = [x for x in ep.streams if x.open] + [s]
                self._flush(ep)
        finally:
            ep.connecting = False
        current = self._endpoints.get((ep.instance, ep.address)) is ep
        if current and ep.pending and ep.stream() is None and self.online:
            self._ensure_stream(ep)  # still something to say: retry (rate-limited above)

    def _flush(self, ep: _Endpoint) -> None:
        s = ep.stream()
        while s is not None and ep.pending:
            if not s.send(ep.pending[0]):
                break
            ep.pending.popleft()

    def _attach(self, s: XmlStream) -> None:
        s.on_stanza = self._on_stanza
        s.on_close = self._on_stream_closed
        s.start()

    def _on_stream_closed(self, s: XmlStream, reason: str) -> None:
        self._incoming.discard(s)
        if reason not in ("eof", "closed", "closed_by_peer", "reset"):
            self._count(f"stream_{reason}")
        for ep in self._endpoints.values():
            if s in ep.streams:
                ep.streams.remove(s)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        source = (writer.get_extra_info("peername") or ("?", 0))[0]
        live = [s for s in self._incoming if s.open]
        per_addr = sum(1 for s in live if s.address == source)
        if (
            len(live) + self._handshaking >= self.config.max_streams
            or per_addr >= self.config.max_streams_per_address
        ):
            self._count("streams_refused")
            writer.close()
            return
        self._handshaking += 1
        try:
            s = await accept(reader, writer, self.nick, self._identify, self.config.limits)
        except StreamError as e:
            self._count(f"stream_{e.reason}")
            log.info("LAN stream from %s refused: %s", source, e)
            return
        except Exception:  # never let a connection kill the server
            log.exception("LAN stream from %s", source)
            writer.close()
            return
        finally:
            self._handshaking -= 1
        self._incoming.add(s)
        key = (s.peer, s.address)
        ep = self._endpoints.get(key)
        self._attach(s)
        if ep is not None:
            ep.streams.append(s)
            self._flush(ep)

    async def _identify(self, claimed: str, source: str) -> bool:
        """XEP-0174 §5: the ``from`` must be a service we browsed at that address. The
        announcement may still be in flight when its first stream arrives: wait a little."""
        deadline = time.monotonic() + self.config.identify_wait
        while True:
            p = self.directory.peers.get(claimed)
            if p is not None and source in p.addresses:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)

    def _on_stanza(self, s: XmlStream, el: ET.Element) -> None:
        frm = el.get("from")
        to = el.get("to")
        if frm is not None and frm != s.peer:
            self._count("stanza_from_mismatch")
            return
        if to is not None and to != self.nick:
            self._count("stanza_wrong_to")
            return
        if el.tag == _MESSAGE:
            msg = Message(xml=el)
            msg["from"] = s.peer
            if el.get("type") in ("groupchat", "error"):
                return
            if s.peer not in self._occupants:
                self._count("foreign_messages")  # a LAN host that is not in our LAN room
                return
            for handler in list(self._handlers):
                try:
                    if handler(s.peer, msg):
                        return
                except Exception:
                    log.exception("message handler failed")
                    return
            self._count("ignored_messages")
            if el.find(f"{{{NS_TELEOP}}}signal") is not None:
                self._unclaimed.keep(s.peer, msg)
        elif el.tag == _IQ:
            self._answer_iq(s, el)
        else:
            self._count("ignored_stanzas")

    def _answer_iq(self, s: XmlStream, el: ET.Element) -> None:
        """What every XMPP entity answers: disco#info and ping; anything else gets an
        error, and results/errors are never answered."""
        kind = el.get("type")
        if kind not in ("get", "set"):
            return
        head = (
            f"<iq xmlns='{NS_CLIENT}' from={quoteattr(self.nick)} to={quoteattr(s.peer)} "
            f"id={quoteattr(el.get('id', ''))} type="
        )
        if kind == "get" and el.find(f"{{{NS_DISCO_INFO}}}query") is not None:
            feats = "".join(f"<feature var='{f}'/>" for f in (NS_DISCO_INFO, NS_PING, NS_TELEOP))
            body = (
                f"'result'><query xmlns='{NS_DISCO_INFO}'><identity category='client' "
                f"type='bot' name='jitsi-teleop'/>{feats}</query></iq>"
            )
        elif kind == "get" and el.find(f"{{{NS_PING}}}ping") is not None:
            body = "'result'/>"
        else:
            body = (
                "'error'><error type='cancel'><service-unavailable "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
        self._count("iq_answered")
        s.send((head + body).encode())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
