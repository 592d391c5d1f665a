"""Announce this site and browse others as XEP-0174 ``_presence._tcp`` services (DNS-SD over
multicast DNS, python-zeroconf).

Why a directory of its own: multicast DNS is open to anyone on the LAN, so the browse side is
an input filter first. Each browsed name is resolved (all SRV/TXT/A records the cache holds,
so a second host announcing the same name is seen as such, not silently merged), its TXT
record parsed strictly (:mod:`.txt`), and the result kept in a bounded table. Resolves are
rate-limited and the table is capped, so a flood of announcements costs bounded work and
memory; every refusal is counted (``counters``) and every unusable peer keeps the reason
(``LanPeer.problem``) for diagnostics and ``jitsi-teleop doctor lan:NAME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zeroconf import IPVersion, ServiceStateChange, Zeroconf, get_all_addresses
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..links.budget import TokenBucket
from .txt import SERVICE_TYPE, LanPresence, TxtError, parse_presence

log = logging.getLogger(__name__)

_TYPE_A, _TYPE_SRV, _TYPE_TXT, _CLASS_IN = 1, 33, 16, 1


@dataclass
class LanPeer:
    """A browsed ``_presence._tcp`` service. ``endpoints``: (address, port) of every host
    that announces this name (more than one: a name conflict). ``presence`` is None when the
    service is unusable; ``problem`` says why."""

    instance: str
    endpoints: list[tuple[str, int]] = field(default_factory=list)
    presence: LanPresence | None = None
    problem: str | None = None
    seen_at: float = 0.0

    @property
    def addresses(self) -> set[str]:
        return {a for a, _ in self.endpoints}


@dataclass
class DirectoryConfig:
    #: IPv4 addresses to announce and listen on (None: every non-loopback interface)
    addresses: Sequence[str] | None = None
    max_peers: int = 256
    #: services one address may hold in the table: a flood from one host cannot crowd out
    #: the real peer
    max_per_address: int = 16
    resolves_per_s: float = 20.0
    resolve_burst: float = 40.0
    resolve_timeout_ms: int = 1500
    #: how long the addresses of a name stay known after it was last resolved there
    conflict_memory: float = 30.0
    #: probe the LAN for our name before announcing (mDNS). Only tests turn this off, to
    #: play a host that takes a name in use without asking.
    probe: bool = True


Listener = Callable[[], None]


def local_addresses() -> list[str]:
    return [a for a in get_all_addresses() if not a.startswith("127.")]


def split_name(name: str) -> str:
    """``juliet@pronto._presence._tcp.local.`` -> ``juliet@pronto``."""
    return name[: -len(SERVICE_TYPE) - 1] if name.endswith("." + SERVICE_TYPE) else name


class LanDirectory:
    """Our announcement plus the table of everyone else's. ``await start(presence)``,
    then ``peers`` / ``subscribe(listener)``; ``await close()`` says goodbye (TTL 0)."""

    def __init__(self, config: DirectoryConfig | None = None) -> None:
        self.config = config or DirectoryConfig()
        self.peers: dict[str, LanPeer] = {}
        self.counters: dict[str, int] = {}
        self.presence: LanPresence | None = None
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._listeners: list[Listener] = []
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._bucket = TokenBucket(self.config.resolves_per_s, self.config.resolve_burst)
        self._closed = False

    @property
    def instance(self) -> str | None:
        return self.presence.instance if self.presence else None

    def count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    async def start(self, presence: LanPresence | None) -> LanPresence | None:
        """Announce ``presence`` (None: browse only, as ``doctor`` does) and start browsing.
        A name another host already holds is changed (``user@machine-2``), as mDNS asks;
        the returned presence carries the name actually announced."""
        addrs = list(self.config.addresses or local_addresses())
        if not addrs:
            raise OSError("no IPv4 interface to announce on")
        self._azc = AsyncZeroconf(interfaces=addrs, ip_version=IPVersion.V4Only)
        if presence is not None:
            # the SRV target: a host name of this announcement's own, so that two machines
            # with one host name (it happens) never merge their addresses
            host = presence.instance.replace("@", "-").replace(".", "-")
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{presence.instance}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton(a) for a in addrs],
                port=presence.port,
                properties=presence.to_txt(),
                server=f"{host}.local.",
            )
            await self._azc.async_register_service(
                info, allow_name_change=True, cooperating_responders=not self.config.probe
            )
            name = split_name(info.name)
            if name != presence.instance:
                log.warning("LAN name %s is taken; announcing as %s", presence.instance, name)
                self.count("own_name_taken")
                presence = LanPresence(**{**presence.__dict__, "instance": name})
            self._info = info
        self.presence = presence
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )
        return presence

    async def update(self, presence: LanPresence) -> None:
        """Announce changed TXT keys (same name and port), e.g. a new room nick."""
        if self._azc is None or self._info is None or self.presence is None:
            return
        presence = LanPresence(**{**presence.__dict__, "instance": self.presence.instance})
        old = self._info
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            old.name,
            addresses=old.addresses,
            port=old.port,
            properties=presence.to_txt(),
            server=old.server,
        )
        await self._azc.async_update_service(info)
        self._info = info
        self.presence = presence

    async def close(self) -> None:
        self._closed = True
        for t in list(self._tasks):
            t.cancel()
        if self._azc is not None:
            with contextlib.suppress(Exception):
                if self._browser is not None:
                    await self._browser.async_cancel()
            with contextlib.suppress(Exception):
                if self._info is not None:
                    await self._azc.async_unregister_service(self._info)
            with contextlib.suppress(Exception):
                await self._azc.async_close()
            self._azc = None

    # ------------------------------------------------------------------ browsing ---------
    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if self._closed:
            return
        instance = split_name(name)
        if self.presence is not None and instance == self.presence.instance:
            return  # our own announcement (a same-name impostor shows up on resolve)
        if state_change is ServiceStateChange.Removed:
            if self.peers.pop(instance, None) is not None:
                self._notify()
            return
        if instance not in self.peers and len(self.peers) >= self.config.max_peers:
            self.count("flood_dropped")
            return
        self._schedule(name)

    def _schedule(self, name: str) -> None:
        if name in self._pending:
            return
        # an announcement carries its SRV/TXT/A records: reading them from the cache costs
        # no traffic, so only network queries are rate-limited
        if not self._cached(name) and not self._bucket.try_consume(1):
            self.count("resolve_limited")
            # try once more later: a real peer announcing in a flood must still be seen
            loop = asyncio.get_running_loop()
            loop.call_later(1.0 / self.config.resolves_per_s * 10, self._retry, name)
            return
        self._pending.add(name)
        task = asyncio.ensure_future(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retry(self, name: str) -> None:
        if not self._closed and len(self._pending) < self.config.max_peers:
            self._schedule(name)

    def _cached(self, name: str) -> bool:
        assert self._azc is not None
        cache = self._azc.zeroconf.cache
        lname = name.lower()
        return bool(cache.get_all_by_details(lname, _TYPE_SRV, _CLASS_IN)) and bool(
            cache.get_all_by_details(lname, _TYPE_TXT, _CLASS_IN)
        )

    async def _resolve(self, name: str) -> None:
        try:
            await self._resolve_now(name)
        except Exception:
            log.exception("resolving %s", name)
        finally:
            self._pending.discard(name)

    async def _resolve_now(self, name: str) -> None:
        assert self._azc is not None
        zc = self._azc.zeroconf
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not self._cached(name):
            await info.async_request(zc, self.config.resolve_timeout_ms)
        instance = split_name(name)
        lname = name.lower()
        srvs = [r for r in zc.cache.get_all_by_details(lname, _TYPE_SRV, _CLASS_IN)]
        txts = [r for r in zc.cache.get_all_by_details(lname, _TYPE_TXT, _CLASS_IN)]
        endpoints: list[tuple[str, int]] = []
        for srv in srvs:
            for rec in zc.cache.get_all_by_details(srv.server_key, _TYPE_A, _CLASS_IN):
                with contextlib.suppress(OSError):
                    ep = (socket.inet_ntoa(rec.address), srv.port)
                    if ep not in endpoints:
                        endpoints.append(ep)
        if not endpoints and info.port:
            endpoints = [(a, info.port) for a in info.parsed_addresses(IPVersion.V4Only)]
        now = time.monotonic()
        old = self.peers.get(instance)
        if old is not None and now - old.seen_at < self.config.conflict_memory:
            # mDNS cache-flush lets the last announcer of a name win for a while, so two hosts
            # claiming one name alternate in the cache: remember both, for a while
            endpoints += [ep for ep in old.endpoints if ep not in endpoints]
        peer = LanPeer(instance, endpoints[:8], seen_at=now)
        own = self.presence.instance if self.presence else None
        problem: str | None = None
        presence: LanPresence | None = None
        ports = {port for _, port in endpoints}
        if not endpoints:
            problem = "unresolved"
        else:
            # every TXT record the name carries must parse: with two hosts behind one name
            # we cannot tell which TXT is whose, so the strictest reading wins
            records = [t.text for t in txts] or ([info.text] if info.text else [])
            for raw in records:
                try:
                    props = _decode_txt(raw)
                    p2pj = props.get(b"port.p2pj") or b""
                    port = int(p2pj) if p2pj.isdigit() and int(p2pj) in ports else endpoints[0][1]
                    presence = parse_presence(instance, port, props)
                except TxtError as e:
                    problem = e.reason
                    presence = None
                    break
            if presence is None and problem is None:
                problem = "no_txt"
        if instance == own:
            problem = "name_conflict"  # someone else announces our own name
        elif (len(peer.addresses) > 1 or len(ports) > 1) and (
            old is None or len(old.addresses) < len(peer.addresses)
        ):
            self.count("name_conflict")
        if problem is not None:
            peer.problem = problem
            self.count(problem)
        peer.presence = presence if problem is None else None
        if problem is None and presence is not None:
            self._check_key_conflict(peer)
        if old is None and self._crowded(peer):
            self.count("flood_dropped")
            return
        self.peers[instance] = peer
        if old != peer:
            self._notify()

    def _crowded(self, peer: LanPeer) -> bool:
        if len(self.peers) >= self.config.max_peers:
            return True
        for addr in peer.addresses:
            n = sum(1 for p in self.peers.values() if addr in p.addresses)
            if n >= self.config.max_per_address:
                return True
        return False

    def _check_key_conflict(self, peer: LanPeer) -> None:
        """Two hosts claiming the same key id and role: both stay candidates (the
        handshake tells them apart); the conflict is counted and reported."""
        assert peer.presence is not None
        for other in self.peers.values():
            p = other.presence
            if (
                other.instance != peer.instance
                and p is not None
                and p.key_id == peer.presence.key_id
                and p.role == peer.presence.role
                and p.room == peer.presence.room
            ):
                self.count("key_conflict")
                return

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("LAN directory listener failed")


def _decode_txt(raw: bytes) -> dict[bytes, bytes | None]:
    """DNS TXT wire format (length-prefixed strings) -> {key: value}; the first occurrence
    of a key wins (RFC 6763 §6.4)."""
    out: dict[bytes, bytes | None] = {}
    i = 0
    while i < len(raw):
        n = raw[i]
        s = raw[i + 1 : i + 1 + n]
        i += 1 + n
        if not s:
            continue
        k, eq, v = s.partition(b"=")
        if not k:
            continue
        key = k.lower()
        if key not in out:
            out[key] = v if eq else None
    return out
