"""Two sites behind NATs on a simulated internet, all in network namespaces.

::

    site A 10.1.0.2 -- 10.1.0.1 NAT A 198.18.1.2 --+
                                                 198.18.1.1
                                        router ("internet") 198.18.0.1 -- 198.18.0.2 server
                                                 198.18.2.1                 (Prosody, coturn)
    site B 192.168.2.2 -- 192.168.2.1 NAT B 198.18.2.2 --+

The public side is 198.18.0.0/15 (benchmarking range), each LAN a private range of its own;
nothing is connected to the root namespace. NAT kinds (RFC 4787 terms):

- ``full-cone``: port-preserving MASQUERADE plus a DNAT of every inbound UDP port to the site
  host (endpoint-independent mapping and filtering);
- ``port-restricted`` (alias ``cone``): port-preserving MASQUERADE; conntrack admits only replies
  from the exact address and port the site sent to (endpoint-independent mapping,
  address-and-port-dependent filtering) - most home routers;
- ``symmetric``: ``MASQUERADE --random-fully``, a new public port per destination - many
  corporate NATs and carrier-grade NATs.

Every NAT drops unsolicited inbound UDP on its public side (``ctstate NEW``) as real routers do:
a NAT that accepted it would let the peer's early ICE check create a conntrack entry that makes
it re-map the site's outgoing port, and hole punching would fail even between two cone NATs.

Switches on the router: :meth:`Internet.block_direct_udp` (UDP between the two NATs dropped,
the server still reachable), :meth:`Internet.cut` (every UDP packet across the router dropped:
the fast path dies whether direct or relayed, the room's TCP stays), :meth:`Internet.unplug`
(a site's uplink down), and :meth:`Internet.impair` (one-way delay, jitter and loss on every
packet the router forwards, from an NFQUEUE program: :mod:`jitsi_teleop.netlab.delay`).
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import netns
from .netns import Netns, veth

NAT_KINDS = ("full-cone", "port-restricted", "symmetric")
_ALIASES = {"cone": "port-restricted", "restricted": "port-restricted", "full": "full-cone"}

SERVER_IP = "198.18.0.2"
_instances = itertools.count(1)
ROUTER_IP = "198.18.0.1"


def nat_kind(name: str) -> str:
    """Normalise a NAT kind name; ValueError names the valid ones."""
    kind = _ALIASES.get(name, name)
    if kind not in NAT_KINDS:
        raise ValueError(f"unknown NAT kind {name!r}: use one of {', '.join(NAT_KINDS)} or 'cone'")
    return kind


@dataclass
class Site:
    """One site: its host namespace and its NAT box."""

    side: str  # "a" or "b"
    host: Netns
    nat: Netns
    kind: str
    lan_ip: str
    lan_gw: str
    public_ip: str
    router_ip: str
    #: interface names: in the NAT (lan, public) and on the router
    router_if: str = ""


@dataclass
class Impairment:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # 0..1, per packet, on every forwarded packet

    def describe(self) -> str:
        parts = []
        if self.delay_ms or self.jitter_ms:
            parts.append(f"{self.delay_ms:g} ± {self.jitter_ms:g} ms one-way")
        if self.loss:
            parts.append(f"{self.loss * 100:g} % loss")
        return ", ".join(parts) or "none"


@dataclass
class Internet:
    """Build with :meth:`up`, tear down with :meth:`down` (or use as a context manager)."""

    nat_a: str = "port-restricted"
    nat_b: str = "port-restricted"
    tag: str = ""
    router: Netns | None = None
    server: Netns | None = None
    sites: dict[str, Site] = field(default_factory=dict)
    impairment: Impairment = field(default_factory=Impairment)
    _delay_proc: subprocess.Popen | None = None
    _spaces: list[Netns] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nat_a = nat_kind(self.nat_a)
        self.nat_b = nat_kind(self.nat_b)
        if not self.tag:  # two internets of one process never share a namespace name
            self.tag = f"i{next(_instances)}"

    # --- build ---------------------------------------------------------------------------
    def _ns(self, role: str) -> Netns:
        ns = Netns(f"{self.tag}{role}").create()
        self._spaces.append(ns)
        return ns

    def up(self) -> Internet:
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        self.router = r = self._ns("inet")
        self.server = s = self._ns("srv")
        r.forwarding()
        veth(r, "srv0", s, "eth0", f"{ROUTER_IP}/24", f"{SERVER_IP}/24")
        s.ip("route", "add", "default", "via", ROUTER_IP)
        plan = [
            ("a", self.nat_a, "10.1.0", "198.18.1"),
            ("b", self.nat_b, "192.168.2", "198.18.2"),
        ]
        for side, kind, lan, pub in plan:
            nat, host = self._ns(f"nat{side}"), self._ns(f"site{side}")
            nat.forwarding()
            veth(r, f"nat{side}0", nat, "wan0", f"{pub}.1/24", f"{pub}.2/24")
            veth(nat, "lan0", host, "eth0", f"{lan}.1/24", f"{lan}.2/24")
            nat.ip("route", "add", "default", "via", f"{pub}.1")
            host.ip("route", "add", "default", "via", f"{lan}.1")
            site = Site(side, host, nat, kind, f"{lan}.2", f"{lan}.1", f"{pub}.2", f"{pub}.1")
            site.router_if = f"nat{side}0"
            self.sites[side] = site
            self._nat_rules(site)
        # The router's own filter chain: a chain per switch so each can be flipped alone.
        for chain in ("JT_BLOCK", "JT_CUT"):
            r.iptables("-N", chain)
            r.iptables("-A", "FORWARD", "-j", chain)

    @staticmethod
    def _nat_rules(site: Site) -> None:
        nat = site.nat
        masq = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"]
        if site.kind == "symmetric":
            masq.append("--random-fully")
        nat.iptables(*masq)
        if site.kind == "full-cone":
            # Any inbound UDP to public port P goes to the site host's port P: with the port-
            # preserving MASQUERADE above, that is endpoint-independent filtering.
            nat.iptables(
                "-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-p", "udp",
                "-j", "DNAT", "--to-destination", site.lan_ip,
            )  # fmt: skip
        # Unsolicited inbound UDP is dropped, as real routers do (see module docstring).
        for chain in ("INPUT", "FORWARD"):
            nat.iptables(
                "-A", chain, "-i", "wan0", "-p", "udp",
                "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP",
            )  # fmt: skip
        # A packet of a connection the NAT does not know (after a reboot: conntrack flushed) is
        # dropped, not picked up mid-stream, as home routers' firewalls do (OpenWrt's
        # drop_invalid): the room's TCP connection then dies silently, nobody sends a reset.
        nat.sysctl("net.netfilter.nf_conntrack_tcp_loose", 0)
        for chain in ("INPUT", "FORWARD"):
            nat.iptables("-A", chain, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
        # A full cone NAT's DNAT turns NEW inbound packets into forwarded ones: admit those.
        if site.kind == "full-cone":
            nat.iptables(
                "-I", "FORWARD", "1", "-i", "wan0", "-p", "udp",
                "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT",
            )  # fmt: skip

    def down(self) -> None:
        self.impair(None)
        for ns in reversed(self._spaces):
            ns.delete()
        self._spaces.clear()

    def __enter__(self) -> Internet:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- switches ------------------------------------------------------------------------
    def _router(self) -> Netns:
        if self.router is None:
            raise RuntimeError("the internet is not up")
        return self.router

    def block_direct_udp(self, on: bool = True) -> None:
        """Drop UDP between the two NATs (both ways); the server stays reachable."""
        r = self._router()
        r.iptables("-F", "JT_BLOCK")
        if on:
            a, b = self.sites["a"].router_if, self.sites["b"].router_if
            for i, o in ((a, b), (b, a)):
                r.iptables("-A", "JT_BLOCK", "-i", i, "-o", o, "-p", "udp", "-j", "DROP")

    def cut(self, on: bool = True) -> None:
        """Drop every UDP packet the router forwards: the fast path (direct or through TURN)
        goes silent, the room's TCP connections stay up."""
        r = self._router()
        r.iptables("-F", "JT_CUT")
        if on:
            r.iptables("-A", "JT_CUT", "-p", "udp", "-j", "DROP")

    def unplug(self, side: str, on: bool = True) -> None:
        """Take a site's uplink down (room and fast path both)."""
        self._router().link_up(self.sites[side].router_if, not on)

    def flush_conntrack(self, side: str, proto: str | None = None) -> None:
        """Forget a NAT's mappings: all of them (a NAT reboot: the room's TCP connection dies
        too, silently: the NAT drops its packets as invalid both ways, nobody sends a reset),
        or one protocol's (``"udp"``: the fast path's public ports change)."""
        nat = self.sites[side].nat
        if proto is None:
            nat.run("conntrack", "-F", check=False)
        else:
            nat.run("conntrack", "-D", "-p", proto, check=False)

    def impair(self, imp: Impairment | None) -> None:
        """Set one-way delay/jitter (per packet, both directions) and loss on the router;
        None or a zero impairment removes them."""
        r = self.router
        if self._delay_proc is not None:
            with contextlib.suppress(netns.NetnsError):
                r.iptables("-t", "mangle", "-F", "FORWARD")
            netns._stop(self._delay_proc)
            self._delay_proc = None
        self.impairment = imp or Impairment()
        if imp is None or r is None or not r.alive:
            return
        if imp.loss > 0:
            r.iptables(
                "-t", "mangle", "-A", "FORWARD", "-m", "statistic", "--mode", "random",
                "--probability", f"{imp.loss:.4f}", "-j", "DROP",
            )  # fmt: skip
        if imp.delay_ms > 0 or imp.jitter_ms > 0:
            from .delay import QUEUE_NUM

            self._delay_proc = r.popen(
                [
                    sys.executable, "-m", "jitsi_teleop.netlab.delay",
                    "--queue", str(QUEUE_NUM), "--delay-ms", str(imp.delay_ms),
                    "--jitter-ms", str(imp.jitter_ms),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            line = self._delay_proc.stdout.readline().strip()
            if line != "ready":
                netns._stop(self._delay_proc)
                self._delay_proc = None
                raise netns.NetnsError(f"delay program did not start: {line!r}")
            r.iptables(
                "-t", "mangle", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM),
            )  # fmt: skip
        # On so that the rules are in before the caller sends anything.
        time.sleep(0.01)

    # --- for callers ---------------------------------------------------------------------
    def host(self, side: str) -> Netns:
        return self.sites[side].host

    def describe(self) -> dict[str, object]:
        return {
            "nat_a": self.nat_a,
            "nat_b": self.nat_b,
            "server": SERVER_IP,
            "sites": {
                s: {"lan": x.lan_ip, "public": x.public_ip, "nat": x.kind}
                for s, x in self.sites.items()
            },
            "impairment": self.impairment.describe(),
        }
