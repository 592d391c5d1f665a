"""Drop-down: two sites paired through a room (a real Prosody on a third host of the LAN)
that also see each other on the LAN keep their stream when the room server is stopped, and
still when the peer-to-peer path is then cut too: signalling and the slow path go over the
direct LAN stream. The session's failover detection stays within its bound."""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
import time

import pytest

from jitsi_teleop.carriers.dropdown import DropDownCarrier, dropdown_lan_name
from jitsi_teleop.linklocal import LanConfig, LanRoom
from jitsi_teleop.links.p2p import P2PConfig
from jitsi_teleop.local_prosody import ProsodyServer, prosody_available
from jitsi_teleop.pairing import Secret
from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.room.room import Room
from jitsi_teleop.session import PATH_MUC, PATH_P2P, Session, SessionConfig
from jitsi_teleop.wire import StreamDescriptor
from lan_net import Lan, skip_reason, start_in_netns

pytestmark = [
    pytest.mark.prosody,
    pytest.mark.slow,
    pytest.mark.timeout(400),
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
    pytest.mark.skipif(not prosody_available(), reason="prosody not installed"),
]

H = "RIHS01_" + "a" * 64
CMD = [StreamDescriptor(1, "/cmd", "sensor_msgs/msg/JointState", H, "latest", 100, 0.5)]
WR = [StreamDescriptor(7, "/wr", "geometry_msgs/msg/WrenchStamped", H, "latest", 100, 0.5)]
SECRET = Secret(bytes(range(32)))
ROOM = "dropdown"


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()


def server_host(addr: str, info: dict, stop: threading.Event, done: threading.Event):
    """Prosody on the server host's loopback, reachable on the LAN through a TCP forwarder
    (the local Prosody binds 127.0.0.1 only)."""

    async def main():
        srv = ProsodyServer()
        await asyncio.to_thread(srv.start)

        async def forward(r, w):
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", srv.http_port)
            except OSError:
                w.close()
                return
            await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

        fwd = await asyncio.start_server(forward, addr, 0)
        info["ws"] = f"ws://{addr}:{fwd.sockets[0].getsockname()[1]}/xmpp-websocket"
        info["domain"] = srv.domain
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await asyncio.to_thread(srv.stop)  # the room server goes away
            info["stopped_at"] = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.05)
        finally:
            fwd.close()
            srv.cleanup()

    return main


def site(role: str, addr: str, info: dict, marks: dict, done: threading.Event):
    async def main():
        room = Room(
            RoomConfig(
                room=ROOM,
                domain=info["domain"],
                websocket_url=info["ws"],
                teleop_role=role,
                key_id=SECRET.key_id,
                ping_interval=1.0,
                ping_timeout=1.0,
                connect_timeout=30.0,  # generous: the machine may be loaded
                join_timeout=30.0,
                backoff_initial=0.2,
                backoff_max=1.0,
            )
        )
        await room.join()
        lan = LanRoom(
            LanConfig(
                dropdown_lan_name(ROOM),
                role,
                key_id=SECRET.key_id,
                nick=f"{role}@dd",
                addresses=[addr],
            )
        )
        await lan.join()
        carrier = DropDownCarrier(room, lan)
        arrivals: list[tuple[float, str]] = []
        out, exp = (CMD, WR) if role == "leader" else (WR, CMD)
        s = Session(
            carrier,
            SessionConfig(p2p=P2PConfig(), discover_ice_servers=False),
            SECRET,
            role,
            out,
            expected=exp,
            on_receive=lambda d, p, i: arrivals.append((time.monotonic(), i.path)),
        )
        await s.start()
        try:
            await s.wait_paired(120)
            deadline = time.monotonic() + 120
            while s.path != PATH_P2P or carrier.channel_via(s.peer) != "lan":
                assert time.monotonic() < deadline, (s.path, carrier.channel_via(s.peer))
                await asyncio.sleep(0.05)
            marks[f"{role}_ready"] = time.monotonic()
            i = 0
            while not done.is_set():
                s.publish(out[0].stream_id, struct.pack("<I", i) + bytes(60))
                i += 1
                await asyncio.sleep(0.01)
            st = s.stats()
            return {
                "arrivals": arrivals,
                "events": [(e.at, e.old, e.new, e.reason, e.detection_s) for e in s.path_events],
                "bound": st.failover_bound_s,
                "paired": s.paired,
                "peer": s.peer,
                "room_online": room.online,
                "via": carrier.channel_via(s.peer),
                "counters": dict(carrier.counters),
            }
        finally:
            await s.close()
            await lan.close()
            await room.close()

    return main


def test_sites_paired_in_a_room_keep_streaming_over_the_lan_when_the_server_goes(tmp_path):
    net = Lan(3, "dd")
    stop, done = threading.Event(), threading.Event()
    info: dict = {}
    marks: dict = {}
    try:
        h, a = net.hosts, net.addresses
        server = start_in_netns(h[2], server_host(a[2], info, stop, done))
        deadline = time.monotonic() + 30
        while "ws" not in info:
            assert time.monotonic() < deadline and not server.done(), "server did not start"
            time.sleep(0.05)
        leader = start_in_netns(h[0], site("leader", a[0], info, marks, done))
        follower = start_in_netns(h[1], site("follower", a[1], info, marks, done))
        deadline = time.monotonic() + 200
        while not ("leader_ready" in marks and "follower_ready" in marks):
            assert time.monotonic() < deadline, "sites did not pair and reach p2p + LAN"
            assert not leader.done() and not follower.done()
            time.sleep(0.1)
        time.sleep(2.0)
        stop.set()  # 1. the room server goes away
        while "stopped_at" not in info:
            time.sleep(0.05)
        time.sleep(4.0)
        # 2. then the peer-to-peer path is cut as well (all UDP but mDNS, at the leader)
        cut_at = time.monotonic()
        for chain, port in (("INPUT", "--sport"), ("OUTPUT", "--dport")):
            h[0].iptables("-A", chain, "-p", "udp", "!", port, "5353", "-j", "DROP")
        time.sleep(5.0)
        done.set()
        lr, fr = leader.result(120), follower.result(120)
        server.result(30)
    finally:
        done.set()
        stop.set()
        net.delete()
    stopped = info["stopped_at"]
    assert lr["paired"] and fr["paired"] and not fr["room_online"]
    # the follower's commands kept coming: after the server stopped, and after the P2P cut
    times = [t for t, _ in fr["arrivals"]]
    after_stop = [(t, p) for t, p in fr["arrivals"] if t > stopped + 0.5]
    after_cut = [(t, p) for t, p in fr["arrivals"] if t > cut_at + 2.0]
    # (counts, not rates: a loaded machine publishes well under 100 Hz)
    assert len(after_stop) > 20 and len(after_cut) > 20
    assert {p for _, p in after_cut} == {PATH_MUC}  # the slow path, now over the LAN stream
    assert fr["via"] == "lan" and lr["via"] == "lan"
    # every switch the session detected, within its bound
    for side in (lr, fr):
        for _at, _old, _new, _reason, detection in side["events"]:
            if detection is not None:
                assert detection <= side["bound"], side["events"]
    # report the longest hold the follower saw (not asserted as a timing: printed)
    window = [t for t in times if t > stopped - 1.0]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    print(
        f"drop-down: follower's longest gap {max(gaps) * 1e3:.0f} ms "
        f"(bound {fr['bound'] * 1e3:.0f} ms)"
    )
