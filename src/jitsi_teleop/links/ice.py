"""The fast path's ICE agent: aioice's ``Connection`` with the policies teleoperation needs.

Why a subclass rather than aioice as is:

- **Direct before relay.** aioice nominates aggressively: the controlling agent puts
  USE-CANDIDATE on every check, so the first pair whose check succeeds is selected for good,
  and with a TURN server offered that is sometimes a relay pair although a direct pair works.
  Here the controlling agent holds every check of a relayed pair back while a direct pair can
  still succeed, for at most ``relay_grace`` seconds (or until every direct pair has failed);
  it never nominates a relayed pair once a direct one is selected; and while a relayed pair is
  selected both agents re-check the direct pairs with a backing-off period, so the link moves
  to a direct pair as soon as one answers (the controlled agent's checks make the controlling
  agent run triggered checks, which nominate; aioice's controlled agent takes a later
  nomination as its new selected pair).
- **Typed, staged gathering with diagnostics.** Host candidates are bound first (so checks on a
  LAN or loopback pair can start at once); server-reflexive and relayed candidates follow, each
  server with its own timeout and a one-line outcome (``gather_reports``: refused credentials,
  no answer, ...), where aioice drops such failures silently.
- **The receive path.** Non-STUN datagrams are taken straight from the socket's protocol:
  anything from a source other than the selected pair's remote address (or, for two seconds
  after a switch, the previous pair's) is dropped and counted before it is queued or opened;
  the datagram link gets each one by a plain callback (no queue, no task switch) and the
  DTLS/SCTP connection through a bounded queue.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aioice
import aioice.ice
import aioice.stun
import aioice.turn
import ifaddr
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority

from ..room.extdisco import IceServer

log = logging.getLogger(__name__)

_COOKIE = b"\x21\x12\xa4\x42"
_State = aioice.ice.CandidatePair.State
#: source addresses of the previously selected pair stay accepted this long after a switch
#: (the peer moves to the new pair one round trip after us)
SWITCH_GRACE_S = 2.0

AddressFilter = Callable[[str], bool]


def all_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """Every interface address (loopback included; link-local scoped IPv6 excluded)."""
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if use_ipv4:
                    out.append(ip.ip)
            elif use_ipv6 and ip.ip[2] == 0:
                out.append(ip.ip[0])
    return out


def _not_loopback(address: str) -> bool:
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerChoice:
    """The STUN and TURN server one agent uses (aioice takes one of each)."""

    stun: tuple[str, int] | None = None
    turn: tuple[str, int] | None = None
    turn_url: str | None = None
    turn_transport: str = "udp"
    turn_ssl: bool = False
    turn_username: str | None = None
    turn_password: str | None = None


def parse_ice_url(url: str) -> tuple[str, str, int, str] | None:
    """``turn:host:3478?transport=tcp`` -> (scheme, host, port, transport); None if unusable."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns"):
        return None
    rest, _, query = rest.partition("?")
    transport = "tcp" if scheme == "turns" else "udp"
    if query:
        key, _, value = query.partition("=")
        if key != "transport" or value not in ("udp", "tcp"):
            return None
        transport = value
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host, port_text = rest, ""
    try:
        port = int(port_text) if port_text else (5349 if scheme.endswith("s") else 3478)
    except ValueError:
        return None
    if not host or not 1 <= port <= 65535:
        return None
    return scheme, host, port, transport


def choose_servers(servers: Sequence[IceServer]) -> ServerChoice:
    """One STUN server (or the TURN server's host, which answers STUN too) and one TURN server,
    preferring TURN over UDP, then over TCP, then TLS (turns:) for the lowest relay latency."""
    stun: tuple[str, int] | None = None
    turns: list[tuple[int, str, tuple[str, str, int, str], IceServer]] = []
    for s in servers:
        for url in s.urls:
            p = parse_ice_url(url)
            if p is None:
                continue
            scheme, host, port, transport = p
            if scheme == "stun" and stun is None:
                stun = (host, port)
            elif scheme.startswith("turn") and s.username is not None and s.credential:
                rank = 0 if scheme == "turn" and transport == "udp" else 1
                rank += 1 if scheme == "turns" else 0
                turns.append((rank, url, p, s))
    if not turns:
        return ServerChoice(stun=stun)
    turns.sort(key=lambda t: t[0])
    _, url, (scheme, host, port, transport), s = turns[0]
    if stun is None and scheme == "turn":
        stun = (host, port)
    return ServerChoice(
        stun=stun,
        turn=(host, port),
        turn_url=url,
        turn_transport=transport,
        turn_ssl=scheme == "turns",
        turn_username=s.username,
        turn_password=s.credential,
    )


@dataclass(frozen=True)
class GatherReport:
    """What one STUN or TURN server did for this agent's gathering."""

    server: str
    kind: str  # "stun" | "turn"
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class SelectedPair:
    """The pair that carries data: candidate types, addresses, and the TURN server if relayed."""

    local_type: str
    local: str
    remote_type: str
    remote: str
    turn_server: str | None = None
    #: monotonic time it was selected
    since: float = 0.0

    @property
    def relayed(self) -> bool:
        return self.local_type == "relay" or self.remote_type == "relay"

    @property
    def kind(self) -> str:
        """``direct`` or ``relay``."""
        return "relay" if self.relayed else "direct"

    def describe(self) -> str:
        via = f" via TURN {self.turn_server}" if self.turn_server else ""
        pair = f"{self.local_type} {self.local} -> {self.remote_type} {self.remote}"
        return f"{self.kind} {pair}{via}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


def _check_abandoned(pair: aioice.ice.CandidatePair) -> bool:
    """In progress with no check running: aioice cancels the checks still running when the
    connection completes and leaves their pairs "in progress" for good. These are the direct
    pairs that were still trying when the relay won (a direct path dead or slow at first),
    the very ones an upgrade must probe again."""
    return pair.task is None or pair.task.done()


def _relayed(pair: aioice.ice.CandidatePair) -> bool:
    return pair.local_candidate.type == "relay" or pair.remote_candidate.type == "relay"


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Protocol(aioice.ice.StunProtocol):
    """A candidate's socket: STUN goes to aioice, everything else to the agent's filter."""

    receiver: IceAgent

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if len(data) < 20 or data[4:8] != _COOKIE:
            self.receiver._on_data(self, data, addr)  # type: ignore[arg-type]
            return
        super().datagram_received(data, addr)


DataCallback = Callable[[bytes], None]
SelectedCallback = Callable[[SelectedPair], None]


class IceAgent(aioice.Connection):
    """One ICE connection (one component). Create inside the loop, then
    ``await gather_host()``, ``await gather_servers()`` (or both through ``gather()``), signal
    ``local_candidates``, add the peer's with ``add_remote_candidate`` and ``await connect()``.
    """

    def __init__(
        self,
        *,
        controlling: bool,
        servers: Sequence[IceServer] = (),
        address_filter: AddressFilter | None = None,
        relay_grace: float = 1.0,
        upgrade_interval: float = 1.0,
        upgrade_max_interval: float = 8.0,
        gather_timeout: float = 2.0,
        queue_limit: int = 256,
        relay_only: bool = False,
    ) -> None:
        self.choice = choose_servers(servers)
        c = self.choice
        super().__init__(
            ice_controlling=controlling,
            components=1,
            stun_server=c.stun,
            turn_server=c.turn,
            turn_username=c.turn_username,
            turn_password=c.turn_password,
            turn_ssl=c.turn_ssl,
            turn_transport=c.turn_transport,
        )
        self.address_filter = address_filter
        self.relay_grace = relay_grace
        self.upgrade_interval = upgrade_interval
        self.upgrade_max_interval = upgrade_max_interval
        self.gather_timeout = gather_timeout
        #: pair remote candidates with the relay candidate only (the doctor's relay test)
        self.relay_only = relay_only
        self.gather_reports: list[GatherReport] = []
        self.selected: SelectedPair | None = None
        #: every selected pair in order (an upgrade from relay to direct appends one)
        self.selections: list[SelectedPair] = []
        self.on_data: DataCallback | None = None
        #: called once when the connection closes on its own (consent expired) or is closed
        self.on_closed: Callable[[], None] | None = None
        self.on_selected: SelectedCallback | None = None
        self.foreign_dropped = 0
        self.queue_dropped = 0
        self._queue_limit = queue_limit
        self._gathering = False
        self._connect_started: float | None = None
        self._sel_protocol: aioice.ice.StunProtocol | None = None
        self._sel_addr: tuple[str, int] | None = None
        self._sel_relayed = False
        self._prev: tuple[aioice.ice.StunProtocol, tuple[str, int], float] | None = None
        self._relay_protocol: aioice.ice.StunProtocol | None = None
        self._upgrade_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------ gathering -------------
    def _host_addresses(self) -> list[str]:
        flt = self.address_filter or _not_loopback
        return [a for a in all_addresses(self._use_ipv4, self._use_ipv6) if flt(a)]

    async def gather_host(self) -> list[Candidate]:
        """Bind one socket per allowed local address; the agent may connect after this."""
        if self._local_candidates_start:
            return self.local_candidates
        self._local_candidates_start = True
        loop = asyncio.get_running_loop()
        for address in self._host_addresses():
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), local_addr=(address, 0)
                )
            except OSError as e:
                log.info("cannot bind an ICE socket on %s: %s", address, e)
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE
                )
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=1,
                transport="udp",
                priority=candidate_priority(1, "host"),
                host=host,
                port=port,
                type="host",
            )
            self._protocols.append(protocol)
            self._local_candidates.append(protocol.local_candidate)
        self._local_candidates_end = True  # connect() may start; more candidates may follow
        self._gathering = True
        return self.local_candidates

    async def gather_servers(self, on_candidate: Callable[[Candidate], None] | None = None) -> None:
        """Server-reflexive and relayed candidates, each server bounded by ``gather_timeout``;
        ``on_candidate`` is called for each new one (trickle)."""
        if not self._gathering:
            await self.gather_host()
        try:
            jobs: list[asyncio.Future[None]] = []
            if self.choice.stun is not None:
                for p in list(self._protocols):
                    if ipaddress.ip_address(p.local_candidate.host).version == 4:
                        jobs.append(asyncio.ensure_future(self._srflx(p, on_candidate)))
            if self.choice.turn is not None:
                jobs.append(asyncio.ensure_future(self._relay(on_candidate)))
            if jobs:
                await asyncio.gather(*jobs)
        finally:
            self._gathering = False
            if self._remote_candidates_end and not self._closing and self._early_checks_done:
                self._end_remote_candidates()

    async def gather(self, on_candidate: Callable[[Candidate], None] | None = None) -> None:
        await self.gather_host()
        await self.gather_servers(on_candidate)

    async def gather_candidates(self) -> None:  # aioice's entry point, kept consistent
        await self.gather()

    async def _srflx(
        self, protocol: aioice.ice.StunProtocol, on_candidate: Callable[[Candidate], None] | None
    ) -> None:
        assert self.choice.stun is not None
        server = f"stun:{_fmt(*self.choice.stun)}"
        t0 = time.monotonic()
        try:
            cand, _ = await asyncio.wait_for(
                aioice.ice.server_reflexive_candidate(protocol, self.choice.stun),
                self.gather_timeout,
            )
        except asyncio.TimeoutError:
            self._report(server, "stun", False, f"no answer within {self.gather_timeout:g} s", t0)
            return
        except (aioice.stun.TransactionError, OSError) as e:
            self._report(server, "stun", False, _why(e), t0)
            return
        if self._closing:
            return
        self._report(server, "stun", True, f"mapped address {_fmt(cand.host, cand.port)}", t0)
        if any(c.host == cand.host and c.port == cand.port for c in self._local_candidates):
            return  # not behind a NAT: the reflexive address is the host candidate itself
        self._local_candidates.append(cand)
        if on_candidate is not None:
            on_candidate(cand)

    async def _relay(self, on_candidate: Callable[[Candidate], None] | None) -> None:
        c = self.choice
        assert c.turn is not None
        server = c.turn_url or f"turn:{_fmt(*c.turn)}"
        t0 = time.monotonic()
        try:
            cand, protocol = await asyncio.wait_for(
                aioice.ice.relayed_candidate(
                    component=1,
                    hide_related_address=False,
                    protocol_factory=lambda: _Protocol(self),
                    turn_server=c.turn,
                    turn_username=c.turn_username,
                    turn_password=c.turn_password,
                    turn_ssl=c.turn_ssl,
                    turn_transport=c.turn_transport,
                ),
                self.gather_timeout,
            )
        except asyncio.TimeoutError:
            self._report(server, "turn", False, f"no answer within {self.gather_timeout:g} s", t0)
            return
        except (aioice.stun.TransactionError, OSError, ConnectionError, ValueError) as e:
            self._report(server, "turn", False, _why(e), t0)
            return
        if self._closing:
            await protocol.close()
            return
        self._report(server, "turn", True, f"relay address {_fmt(cand.host, cand.port)}", t0)
        self._relay_protocol = protocol
        self._protocols.append(protocol)
        self._local_candidates.append(cand)
        for remote in self._remote_candidates:  # pair the late local candidate (trickle)
            if cand.can_pair_with(remote) and not self._find_pair(protocol, remote):
                self._check_list.append(aioice.ice.CandidatePair(protocol, remote))
        self.sort_check_list()
        if on_candidate is not None:
            on_candidate(cand)

    def _report(self, server: str, kind: str, ok: bool, detail: str, t0: float) -> None:
        r = GatherReport(server, kind, ok, detail, round(time.monotonic() - t0, 3))
        self.gather_reports.append(r)
        if ok:
            log.debug("%s %s: %s", kind.upper(), server, detail)
        else:
            log.warning("%s server %s: %s", kind.upper(), server, detail)

    def _pair_remote_candidate(self, remote_candidate: Candidate) -> None:
        if not self.relay_only:
            super()._pair_remote_candidate(remote_candidate)
            return
        for protocol in self._protocols:
            lc = protocol.local_candidate
            if lc.type != "relay" or not lc.can_pair_with(remote_candidate):
                continue
            if not self._find_pair(protocol, remote_candidate):
                self._check_list.append(aioice.ice.CandidatePair(protocol, remote_candidate))

    def _remote_candidates_expected(self) -> bool:
        # our own trickled candidates can still form pairs: do not declare failure yet
        return self._gathering or super()._remote_candidates_expected()

    # ------------------------------------------------------------ nomination ------------
    async def connect(self) -> None:
        self._connect_started = time.monotonic()
        await super().connect()
        self._note_selected()
        sel = self._nominated.get(1)
        if sel is not None and _relayed(sel):
            self._upgrade_task = asyncio.ensure_future(self._upgrade_loop())

    def check_start_task(self, pair: aioice.ice.CandidatePair) -> None:
        if pair.task is not None and pair.task.done():  # cancelled when connect() completed
            pair.task = None
        super().check_start_task(pair)

    async def check_start(self, pair: aioice.ice.CandidatePair) -> None:
        if self.ice_controlling and _relayed(pair) and not await self._relay_may_nominate(pair):
            pair.task = None
            return
        await super().check_start(pair)

    async def _relay_may_nominate(self, pair: aioice.ice.CandidatePair) -> bool:
        """Hold a relayed pair's (nominating) check while a direct pair may still work."""
        held = False
        while not self._closing:
            if self._nominated.get(pair.component) is not None:
                return False  # never replace a selected pair by a relayed one
            started = self._connect_started or time.monotonic()
            if time.monotonic() - started >= self.relay_grace or not self._direct_pending():
                return True
            if not held:
                held = True
                self.check_state(pair, _State.IN_PROGRESS)  # let the pacer move on
            await asyncio.sleep(0.02)
        return False

    def _direct_pending(self) -> bool:
        """Whether some direct pair is unchecked or in progress, or more candidates may come."""
        if self._remote_candidates_expected():
            return True
        return any(
            not _relayed(p) and p.state not in (_State.FAILED, _State.SUCCEEDED)
            for p in self._check_list
        )

    def check_complete(self, pair: aioice.ice.CandidatePair) -> None:
        current = self._nominated.get(pair.component)
        super().check_complete(pair)
        if (
            self.ice_controlling
            and current is not None
            and pair is not current
            and self._nominated.get(pair.component) is pair
            and not (_relayed(current) and not _relayed(pair))
        ):
            # a later nomination that is no better (checks were in flight together): keep the
            # first; _confirm() tells the controlled agent which one stands
            self._nominated[pair.component] = current
        self._note_selected()

    def check_incoming(
        self, message: Any, addr: tuple[str, int], protocol: aioice.ice.StunProtocol
    ) -> None:
        # connect() cancels the checks still running when it completes, which leaves their
        # pairs "in progress" for good, and aioice starts no triggered check on such a pair:
        # a later nomination of it (our upgrade, the controlling agent's confirmation) would
        # be ignored. Such pairs are failed, so the triggered check runs.
        for p in self._check_list:
            stale = p.state == _State.IN_PROGRESS and (p.task is None or p.task.done())
            if stale and p.protocol is protocol and p.remote_addr == (addr[0], addr[1]):
                p.state = _State.FAILED
                p.task = None
        super().check_incoming(message, addr, protocol)

    def _note_selected(self) -> None:
        pair = self._nominated.get(1)
        if pair is None or (
            pair.protocol is self._sel_protocol and pair.remote_addr == self._sel_addr
        ):
            return
        now = time.monotonic()
        if self._sel_protocol is not None and self._sel_addr is not None:
            self._prev = (self._sel_protocol, self._sel_addr, now + SWITCH_GRACE_S)
        self._sel_protocol, self._sel_addr = pair.protocol, pair.remote_addr
        self._sel_relayed = pair.local_candidate.type == "relay"
        lc, rc = pair.local_candidate, pair.remote_candidate
        turn = None
        if lc.type == "relay":
            turn = self.choice.turn_url
        sel = SelectedPair(
            lc.type, _fmt(lc.host, lc.port), rc.type, _fmt(rc.host, rc.port), turn, now
        )
        previous = self.selected
        self.selected = sel
        self.selections.append(sel)
        if previous is None:
            log.info("ICE selected %s", sel.describe())
        else:
            log.info("ICE moved from %s to %s", previous.describe(), sel.describe())
        if self.ice_controlling:
            self._spawn(self._confirm(pair))
        if self.on_selected is not None:
            try:
                self.on_selected(sel)
            except Exception:
                log.exception("selected-pair callback failed")

    async def _confirm(self, pair: aioice.ice.CandidatePair) -> None:
        """Nominate the selected pair again, a few times. Several nominating checks can be in
        flight at once (aggressive nomination; held relay checks released together), and
        aioice's controlled agent keeps the pair of the last nomination it saw, which need not
        be ours: the two ends would then send on different pairs and drop each other's data
        as foreign. The last word is the controlling agent's."""
        for delay in (0.0, 0.5, 2.0):
            await asyncio.sleep(delay)
            if self._closing or self._nominated.get(pair.component) is not pair:
                return
            await self._probe(pair)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upgrade_loop(self) -> None:
        """While a relayed pair is selected, re-check the direct pairs, backing off."""
        interval = self.upgrade_interval
        while not self._closing:
            await asyncio.sleep(interval)
            sel = self._nominated.get(1)
            if sel is None or not _relayed(sel):
                return
            pairs = self._direct_pairs()
            if pairs:
                await asyncio.gather(*(self._probe(p) for p in pairs), return_exceptions=True)
            interval = min(interval * 2, self.upgrade_max_interval)

    def _direct_pairs(self) -> list[aioice.ice.CandidatePair]:
        out = []
        for protocol in self._protocols:
            if protocol.local_candidate.type == "relay":
                continue
            for remote in self._remote_candidates:
                if remote.type == "relay" or not protocol.local_candidate.can_pair_with(remote):
                    continue
                pair = self._find_pair(protocol, remote)
                if pair is None and remote.type == "prflx":
                    # learned from a check that reached another of our sockets, perhaps
                    # through TURN (the peer's address as the TURN server saw it): RFC 8445
                    # pairs it with that socket only, and a probe from elsewhere would go
                    # around the addresses the peer offered
                    continue
                if pair is None:
                    pair = aioice.ice.CandidatePair(protocol, remote)
                    pair.state = _State.FAILED
                    self._check_list.append(pair)
                if pair.state != _State.IN_PROGRESS or _check_abandoned(pair):
                    out.append(pair)
        return out

    async def _probe(self, pair: aioice.ice.CandidatePair) -> None:
        """One check (nominating when controlling) outside aioice's pacer."""
        assert self.remote_password is not None
        request = self.build_request(pair, nominate=self.ice_controlling)
        try:
            _, addr = await pair.protocol.request(
                request,
                pair.remote_addr,
                integrity_key=self.remote_password.encode("utf8"),
                retransmissions=1,
            )
        except (aioice.stun.TransactionError, OSError):
            return
        if addr != pair.remote_addr or self._closing:
            return
        pair.state = _State.SUCCEEDED
        if self.ice_controlling:
            pair.nominated = True
            self._nominated[pair.component] = pair
            self._note_selected()

    # ------------------------------------------------------------ data ------------------
    def _on_data(self, protocol: aioice.ice.StunProtocol, data: bytes, addr: tuple) -> None:
        """Every non-STUN datagram: only the selected pair's source gets past here."""
        src = (addr[0], addr[1])
        if protocol is not self._sel_protocol or src != self._sel_addr:
            prev = self._prev
            if prev is None or protocol is not prev[0] or src != prev[1]:
                self.foreign_dropped += 1
                return
            if time.monotonic() > prev[2]:
                self._prev = None
                self.foreign_dropped += 1
                return
        cb = self.on_data
        if cb is not None:
            cb(data)
            return
        if self._queue.qsize() >= self._queue_limit:
            self.queue_dropped += 1
            return
        self._queue.put_nowait((data, 1))

    def data_received(self, data: bytes, component: int) -> None:
        # reached only for a datagram that looks like STUN but does not parse: never data
        self.foreign_dropped += 1

    def send_now(self, data: bytes | memoryview) -> bool:
        """Send on the selected pair without a task (host sockets: one ``sendto``)."""
        proto, addr = self._sel_protocol, self._sel_addr
        if proto is None or addr is None or self._closing:
            return False
        transport = proto.transport
        # the caller reuses its buffer: whoever keeps the datagram for later must own a copy
        # (TURN sends in a task; a transport with a backlog queues)
        if self._sel_relayed or transport.get_write_buffer_size():
            data = bytes(data)
        transport.sendto(data, addr)
        return True

    async def close(self) -> None:
        if self._upgrade_task is not None:
            self._upgrade_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._gathering = False
        self._sel_protocol = self._sel_addr = None
        self._prev = None
        await super().close()
        cb, self.on_closed = self.on_closed, None
        if cb is not None:
            cb()


def _why(e: BaseException) -> str:
    if isinstance(e, aioice.stun.TransactionFailed):
        code = e.response.attributes.get("ERROR-CODE")
        if code and code[0] == 401:
            return f"refused the credentials ({code[0]} {code[1]})"
        if code:
            return f"refused ({code[0]} {code[1]})"
        return "refused"
    if isinstance(e, aioice.stun.TransactionTimeout):
        return "no answer (timed out)"
    return f"{type(e).__name__}: {e}"


def candidate_line(c: Candidate) -> str:
    """The SDP ``a=candidate`` value (without ``candidate:``): what the description carries."""
    return c.to_sdp()


__all__ = [
    "GatherReport",
    "IceAgent",
    "SelectedPair",
    "ServerChoice",
    "all_addresses",
    "candidate_line",
    "choose_servers",
    "ice_summary",
    "parse_ice_url",
]


def ice_summary(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Key/value lines of a session's ICE report (``SessionSnapshot.ice``) for diagnostics."""
    sel = report.get("selected") or {}
    servers = report.get("servers") or []
    dg = report.get("datagram") or {}
    ch = report.get("channel") or {}
    pair = ""
    if sel:
        pair = f"{sel['local_type']} {sel['local']} -> {sel['remote_type']} {sel['remote']}"
    return [
        ("ice_path", report.get("path") or ""),
        ("ice_pair", pair),
        ("ice_turn_server", sel.get("turn_server") or ""),
        ("ice_pair_switches", str(dg.get("switches", ch.get("switches", 0)))),
        ("ice_foreign_dropped", str(dg.get("foreign_dropped", 0) + ch.get("foreign_dropped", 0))),
        (
            "ice_servers",
            "; ".join(f"{r['server']} {'ok' if r['ok'] else r['detail']}" for r in servers),
        ),
        ("ice_problems", "; ".join(report.get("discovery_problems") or [])),
    ]
