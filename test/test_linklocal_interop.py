"""Interop with standard link-local software, on a namespace LAN:

- the site's announcement is a valid DNS-SD service that Debian's ``avahi-browse -rpt
  _presence._tcp`` lists and resolves (avahi-daemon running inside the test's namespace);
- an XEP-0174 peer written here from the XEP's examples (announced with ``avahi-publish``,
  speaking raw XML on a socket) exchanges stanzas with the site in both directions.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest

from avahi_ns import Avahi, avahi_missing
from jitsi_teleop.linklocal import LanConfig, LanRoom
from lan_net import Lan, skip_reason, start_in_netns

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.skipif(avahi_missing() is not None, reason=str(avahi_missing())),
]

KEY_ID = "0123456789ab"
SITE = "leader@pronto"
PEER = "romeo@forza"  # the XEP's example entity
PEER_PORT = 5562  # the XEP's example port
STREAMS = "http://etherx.jabber.org/streams"


@pytest.fixture
def lan2():
    net = Lan(2, "av")
    avahi = None
    try:
        avahi = Avahi(net.hosts[1])
        yield net, avahi
    finally:
        net.delete()
        if avahi is not None:
            avahi.close()


class XepPeer:
    """Just enough of XEP-0174 §5 to talk to a site: raw XML on a socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.header: ET.Element | None = None
        self.stanzas: list[ET.Element] = []

    def send(self, text: str) -> None:
        self.w.write(text.encode())

    async def next_stanza(self, timeout: float = 10.0) -> ET.Element:
        deadline = time.monotonic() + timeout
        while not self.stanzas:
            data = await asyncio.wait_for(self.r.read(4096), deadline - time.monotonic())
            assert data, "the site closed the stream"
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.header = el
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.stanzas.append(el)
        return self.stanzas.pop(0)

    async def wait_header(self, timeout: float = 10.0) -> ET.Element:
        deadline = time.monotonic() + timeout
        while self.header is None:
            data = await asyncio.wait_for(self.r.read(4096), deadline - time.monotonic())
            assert data, "the site closed the stream"
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.header = el
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.stanzas.append(el)
        return self.header


def header(frm: str, to: str) -> str:
    # XEP-0174 Example 5/6 (stream header with from and to, version 1.0)
    return (
        "<?xml version='1.0'?>"
        "<stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{STREAMS}' from='{frm}' to='{to}' version='1.0'>"
    )


def test_avahi_browse_lists_the_site_and_an_xep0174_peer_exchanges_stanzas(lan2):
    net, avahi = lan2
    site_addr, peer_addr = net.addresses
    published = avahi.publish(
        PEER, PEER_PORT, ["txtvers=1", "1st=Romeo", f"port.p2pj={PEER_PORT}", "status=avail"]
    )
    assert published.poll() is None

    async def site_main() -> dict:
        lan = LanRoom(LanConfig("lab", "leader", key_id=KEY_ID, nick=SITE, addresses=[site_addr]))
        await lan.join()
        try:
            deadline = time.monotonic() + 30
            while PEER not in lan.directory.peers or not lan.directory.peers[PEER].endpoints:
                assert time.monotonic() < deadline, "the avahi-published peer was not browsed"
                await asyncio.sleep(0.1)
            # the site as initiator: a stanza to the XEP peer (not in our LAN room, so the
            # session would never do this; the carrier's stream works with any XEP-0174 entity)
            ep = lan._endpoints_for(PEER)
            assert ep, lan.diagnostics()
            msg = lan.make_private_message(PEER)
            msg["body"] = "Art thou not Romeo, and a Montague?"
            lan.send(msg)
            await asyncio.sleep(12)  # the peer's turn (below) happens meanwhile
            return lan.diagnostics()
        finally:
            await lan.close()

    site = start_in_netns(net.hosts[0], site_main)

    # 1. a standard DNS-SD browser lists and resolves the site's service
    deadline = time.monotonic() + 30
    row = None
    while row is None:
        for cols in avahi.browse():
            if cols[3] == SITE:
                row = cols
        if row is None:
            assert time.monotonic() < deadline, (
                f"avahi-browse never listed the site: {avahi.tail()}"
            )
            time.sleep(0.5)
    # =;eth0;IPv4;leader@pronto;_presence._tcp;local;host.local;10.77.0.2;PORT;"k=v" ...
    assert row[4] == "_presence._tcp" and row[7] == site_addr
    port = int(row[8])
    txt = dict(t.strip('"').split("=", 1) for t in row[9].split('" "'))
    assert txt["txtvers"] == "1" and txt["port.p2pj"] == str(port) and txt["status"] == "avail"
    assert txt["jt.room"] == "lab" and txt["jt.role"] == "leader" and txt["jt.key"] == KEY_ID

    # 2. the XEP peer, both as recipient (the site's message) and initiator (an IQ)
    async def peer_main() -> dict:
        got: dict = {}
        inbound: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_conn(r, w):
            p = XepPeer(r, w)
            h = await p.wait_header()
            got["in_header"] = dict(h.attrib)
            p.send(header(PEER, h.get("from", "")) + "<stream:features/>")
            inbound.set_result(await p.next_stanza())
            w.close()

        server = await asyncio.start_server(on_conn, peer_addr, PEER_PORT)
        try:
            msg = await asyncio.wait_for(inbound, 20)
            got["message"] = (msg.tag, dict(msg.attrib), msg.findtext("{jabber:client}body"))
            r, w = await asyncio.open_connection(site_addr, port)
            p = XepPeer(r, w)
            p.send(header(PEER, SITE))
            h = await p.wait_header()
            got["out_header"] = dict(h.attrib)
            p.send(
                f"<iq from='{PEER}' to='{SITE}' type='get' id='info1'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            )
            reply = await p.next_stanza()
            while reply.tag.endswith("features"):
                reply = await p.next_stanza()
            got["iq"] = (reply.get("type"), reply.get("id"), reply.get("from"), reply.get("to"))
            got["features"] = [
                f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")
            ]
            p.send(
                f"<iq from='{PEER}' to='{SITE}' type='get' id='p1'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>"
            )
            pong = await p.next_stanza()
            got["ping"] = (pong.get("type"), pong.get("id"))
            p.send("</stream:stream>")
            w.close()
        finally:
            server.close()
        return got

    got = start_in_netns(net.hosts[1], peer_main).result(60)
    diag = site.result(60)
    assert got["in_header"]["from"] == SITE and got["in_header"]["to"] == PEER
    assert got["in_header"]["version"] == "1.0"
    tag, attrs, body = got["message"]
    assert tag == "{jabber:client}message" and attrs["from"] == SITE and attrs["to"] == PEER
    assert body == "Art thou not Romeo, and a Montague?"
    assert got["out_header"]["from"] == SITE and got["out_header"]["to"] == PEER
    assert got["iq"] == ("result", "info1", SITE, PEER)
    assert "urn:xmpp:ping" in got["features"]
    assert got["ping"] == ("result", "p1")
    # the XEP peer is browsed but not a teleop site: listed, with the reason
    peer = next(p for p in diag["peers"] if p["instance"] == PEER)
    assert peer["problem"] == "not_teleop" and not peer["usable"]
