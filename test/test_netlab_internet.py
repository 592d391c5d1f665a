"""The simulated internet itself: NAT kinds map and filter as their names promise, unsolicited
inbound UDP is dropped, the switches cut what they say, and the NFQUEUE delay delays without
changing addresses. Plain UDP sockets in the namespaces, no product code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jitsi_teleop.netlab import delay, netns
from jitsi_teleop.netlab.internet import SERVER_IP, Impairment, Internet

REASON = netns.available()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(120)]

# A UDP server on two ports that answers each datagram with the source address it saw; on
# request it sends from a third port the site never sent to (unsolicited for the NAT).
ECHO = """
import json, selectors, socket, sys
sel = selectors.DefaultSelector()
socks = []
for port in (5001, 5002, 5003):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        data, addr = key.fileobj.recvfrom(200)
        req = json.loads(data)
        if req.get("poke"):
            socks[2].sendto(b"poke", tuple(req["poke"]))
        key.fileobj.sendto(json.dumps({"seen": list(addr)}).encode(), addr)
"""

# From one socket: ask both server ports, then ask port 5001 to poke us from 5003.
CLIENT = """
import json, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))
s.settimeout(TIMEOUT)
out = {}
for port in (5001, 5002):
    t = time.monotonic()
    s.sendto(json.dumps({}).encode(), (SERVER, port))
    out[port] = json.loads(s.recv(200))["seen"]
    out["rtt_ms_" + str(port)] = (time.monotonic() - t) * 1e3
s.sendto(json.dumps({"poke": out[5001]}).encode(), (SERVER, 5001))
got = []
s.settimeout(1.0)
try:
    while True:
        got.append(s.recv(200).decode())
except socket.timeout:
    pass
out["poked"] = "poke" in got
print(json.dumps(out))
""".replace("SERVER", repr(SERVER_IP))


def _probe(net: Internet, side: str = "a", timeout: float = 10.0) -> dict:
    """Generous timeouts: two shared cores can be very busy; a cut is probed with a short one."""
    code = CLIENT.replace("TIMEOUT", repr(timeout))
    return json.loads(net.host(side).run(sys.executable, "-c", code, timeout=60))


@pytest.fixture
def echo_server():
    def start(net: Internet) -> subprocess.Popen:
        p = net.server.popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        return p

    return start


@pytest.mark.parametrize(
    ("kind", "same_port", "poke_reaches"),
    [("port-restricted", True, False), ("symmetric", False, False), ("full-cone", True, True)],
)
def test_nat_kinds_map_and_filter_as_named(kind, same_port, poke_reaches, echo_server):
    with Internet(kind, "cone") as net:
        echo_server(net)
        out = _probe(net)
        a_pub = net.sites["a"].public_ip
        assert out["5001"][0] == a_pub and out["5002"][0] == a_pub  # the LAN address never leaks
        # endpoint-independent mapping keeps one public port for both destinations
        assert (out["5001"][1] == out["5002"][1]) is same_port, out
        # a datagram from a port the site never sent to: only a full cone lets it in
        assert out["poked"] is poke_reaches, out


def test_switches_cut_udp_keep_tcp_and_delay_keeps_addresses(echo_server):
    with Internet("cone", "cone") as net:
        echo_server(net)
        base = _probe(net)
        net.cut(True)
        with pytest.raises(netns.NetnsError, match=r"timed out|timeout"):
            _probe(net, timeout=2.0)
        # TCP (the room's transport) still crosses the router during a UDP cut
        tcp = (
            "import socket;l=socket.socket();l.bind(('0.0.0.0',5222));l.listen();print('ok')"
            ";c,_=l.accept();c.sendall(b'hi')"
        )
        srv = net.server.popen([sys.executable, "-c", tcp], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ok"
        got = net.host("a").run(
            sys.executable,
            "-c",
            f"import socket;print(socket.create_connection(('{SERVER_IP}',5222),3).recv(2))",
        )
        assert "hi" in got
        net.cut(False)
        assert _probe(net)["5001"] == base["5001"]
        net.block_direct_udp(True)
        assert _probe(net)["5001"][0] == net.sites["a"].public_ip  # the server stays reachable
        net.block_direct_udp(False)
        if delay.available() is None:
            net.impair(Impairment(delay_ms=30, jitter_ms=0))
            slow = _probe(net)
            # one traversal of the router each way: at least twice the one-way delay
            assert slow["rtt_ms_5001"] >= 60 and slow["rtt_ms_5002"] >= 60, slow
            assert slow["5001"] == base["5001"]  # same NAT mapping: delay changes no address
            net.impair(None)
            assert "NFQUEUE" not in net.router.iptables("-t", "mangle", "-S", "FORWARD")
            assert _probe(net)["5001"] == base["5001"]


def test_unknown_nat_kind_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown NAT kind 'carrier-grade'.*full-cone"):
        Internet("carrier-grade", "cone")
