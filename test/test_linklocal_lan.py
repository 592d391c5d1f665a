"""Two sites on one LAN with no XMPP server: they find each other over multicast DNS
(XEP-0174 ``_presence._tcp``), pair over a direct XML stream, and stream both ways on the
peer-to-peer path; a second pair in another LAN room on the same network stays apart.

Each site runs on its own thread inside its own network namespace, on a bridge in a third:
multicast and TCP stay on that segment."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jitsi_teleop.carriers.lan import LanCarrier
from jitsi_teleop.linklocal import LanConfig, LanRoom
from jitsi_teleop.links.p2p import P2PConfig
from jitsi_teleop.pairing import Secret, format_key_file
from jitsi_teleop.session import PATH_P2P, Session, SessionConfig
from jitsi_teleop.wire import StreamDescriptor
from lan_net import Lan, skip_reason, start_in_netns

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]

H = "RIHS01_" + "a" * 64
LEADER_OUT = [
    StreamDescriptor(1, "/joint_states", "sensor_msgs/msg/JointState", H, "latest", 500, 0.5),
    StreamDescriptor(2, "/mode", "std_msgs/msg/String", H, "reliable", 10, 5.0),
]
FOLLOWER_OUT = [
    StreamDescriptor(7, "/wrench", "geometry_msgs/msg/WrenchStamped", H, "latest", 500, 0.5),
]


def session_config() -> SessionConfig:
    return SessionConfig(
        p2p=P2PConfig(), discover_ice_servers=False, pair_retry=1.0, resend_after=0.5
    )


async def eventually(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def site(role: str, room: str, secret: Secret, address: str, n: int = 300, linger: float = 4.0):
    """A site: announce, pair, reach the data channel, send ``n`` samples (and 10 reliable
    commands from the leader), keep receiving for ``linger`` s; return what happened."""

    async def main() -> dict:
        lan = LanRoom(
            LanConfig(
                room,
                role,
                key_id=secret.key_id,
                nick=f"{role}@h{address.split('.')[-1]}",
                addresses=[address],
            )
        )
        got: dict[str, list[int]] = {}

        def on_receive(d, payload, info):
            got.setdefault(d.topic, []).append(struct.unpack_from("<I", payload)[0])
            got.setdefault("paths", []).append(info.path == PATH_P2P)

        out, expect = (LEADER_OUT, FOLLOWER_OUT) if role == "leader" else (FOLLOWER_OUT, LEADER_OUT)
        session = Session(
            LanCarrier(lan),
            session_config(),
            secret,
            role,
            out,
            expected=expect,
            on_receive=on_receive,
        )
        await lan.join()
        await session.start()
        try:
            await session.wait_paired(60)
            await eventually(lambda: session.path == PATH_P2P, 60, "the data channel")
            t0 = time.monotonic()
            for i in range(n):
                if role == "leader":
                    session.publish(1, struct.pack("<I", i) + bytes(272))
                    if i % 30 == 0:
                        session.publish(2, struct.pack("<I", i // 30))
                else:
                    session.publish(7, struct.pack("<I", i) + bytes(40))
                await asyncio.sleep(0.005)
            path_while_sending = session.path
            streams_while_sending = lan.diagnostics()["streams"]
            st = session.stats()
            await asyncio.sleep(max(0.0, linger - (time.monotonic() - t0)))
            return {
                "peer": session.peer,
                "nick": lan.nick,
                "path": path_while_sending,
                "failovers": st.failovers,
                "streams": streams_while_sending,
                "got": got,
                "peers": [o.nick for o in lan.peers],
                "diag": lan.diagnostics(),
                "pairing": st.pairing,
            }
        finally:
            await session.close()
            await lan.close()

    return main


@pytest.fixture
def lan4():
    net = Lan(4, "ll")
    try:
        yield net
    finally:
        net.delete()


def test_two_sites_pair_and_stream_over_the_lan_and_a_second_pair_stays_apart(lan4):
    """Two pairs on one LAN, in LAN rooms ``lab-a`` and ``lab-b``, with different keys: each
    site pairs with its own partner only and streams over the P2P path both ways."""
    key_a = Secret(bytes(range(32)))
    key_b = Secret(bytes(range(1, 33)))
    h = lan4.hosts
    a = lan4.addresses
    futs = [
        start_in_netns(h[0], site("leader", "lab-a", key_a, a[0])),
        start_in_netns(h[1], site("follower", "lab-a", key_a, a[1])),
        start_in_netns(h[2], site("leader", "lab-b", key_b, a[2])),
        start_in_netns(h[3], site("follower", "lab-b", key_b, a[3])),
    ]
    la, fa, lb, fb = (f.result(150) for f in futs)
    assert la["peer"] == fa["nick"] and fa["peer"] == la["nick"]
    assert lb["peer"] == fb["nick"] and fb["peer"] == lb["nick"]
    # the other pair is on the LAN (browsed) but never an occupant of this LAN room
    assert la["peers"] == [fa["nick"]]
    other_rooms = {p["instance"]: p["problem"] for p in la["diag"]["peers"]}
    assert other_rooms[lb["nick"]] == "other_room" and other_rooms[fb["nick"]] == "other_room"
    for leader, follower in ((la, fa), (lb, fb)):
        # both ends offer STARTTLS, so their XML streams run inside TLS
        assert leader["streams"] and all(s["tls"] for s in leader["streams"])
        assert leader["path"] == PATH_P2P and follower["path"] == PATH_P2P
        # the reliable commands arrive all and in order; the latest stream mostly
        assert follower["got"]["/mode"] == list(range(10))
        js = follower["got"]["/joint_states"]
        assert len(js) > 200 and js == sorted(js)
        wr = leader["got"]["/wrench"]
        assert len(wr) > 200 and wr == sorted(wr)
        assert leader["failovers"] == 0 and follower["failovers"] == 0
        assert sum(follower["got"]["paths"]) > 200  # frames that came over the P2P path


def test_doctor_lan_lists_link_local_peers_and_says_why_one_cannot_be_used(lan4, tmp_path):
    """``jitsi-teleop doctor lan:lab --role leader --secret-file KEY`` in one namespace, with
    sites announcing in the others: the right follower is usable, and each other one comes
    with its reason (same role, another key, another LAN room)."""
    key = Secret(bytes(range(32)))
    other = Secret(bytes(range(7, 39)))
    key_file = tmp_path / "lab.key"
    key_file.write_text(format_key_file(key.key))
    h, a = lan4.hosts, lan4.addresses

    finished = threading.Event()

    def announce(sites):
        async def main():
            lans = [
                LanRoom(LanConfig(room, role, key_id=k, nick=nick, addresses=[addr]))
                for nick, role, room, k, addr in sites
            ]
            for lan in lans:
                await lan.join()
            deadline = time.monotonic() + 120
            while not finished.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for lan in lans:
                await lan.close()

        return main

    bg = [
        start_in_netns(
            h[1],
            announce(
                [
                    ("good@h1", "follower", "lab", key.key_id, a[1]),
                    ("otherkey@h1", "follower", "lab", other.key_id, a[1]),
                ]
            ),
        ),
        start_in_netns(h[2], announce([("lead2@h2", "leader", "lab", key.key_id, a[2])])),
        start_in_netns(h[3], announce([("far@h3", "follower", "elsewhere", key.key_id, a[3])])),
    ]
    time.sleep(2)
    cmd = [sys.executable, "-m", "jitsi_teleop.cli", "doctor", "lan:lab", "--role", "leader"]
    cmd += ["--secret-file", str(key_file), "--lan-address", a[0], "--browse", "4", "--json"]
    out = subprocess.run(h[0].argv(cmd), capture_output=True, text=True, timeout=60)
    human = subprocess.run(h[0].argv(cmd[:-1]), capture_output=True, text=True, timeout=60)
    finished.set()
    for f in bg:
        f.result(30)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    by = {p["instance"]: p for p in report["peers"]}
    assert by["good@h1"]["usable"] and by["good@h1"]["role"] == "follower"
    assert by["good@h1"]["key_id"] == key.key_id
    assert by["good@h1"]["addresses"][0].startswith(a[1] + ":")
    assert by["otherkey@h1"]["problem"] == "key_mismatch"
    assert by["lead2@h2"]["problem"] == "same_role"
    assert by["far@h3"]["problem"] == "other_room"
    assert "good@h1" in human.stdout and "same role" in human.stdout
    assert "another pairing key" in human.stdout and "another LAN room" in human.stdout


def test_the_transport_bridge_carries_topics_over_a_lan_room(lan4):
    """What the transport node runs for ``room:=lan:NAME``: the bridge with a LanConfig makes
    a LanRoom, pairs and carries the configured topics (the package's topic file) both ways."""
    from jitsi_teleop.bridge.core import Bridge, Incoming, Outgoing
    from jitsi_teleop.bridge.topics import load_topics

    topics = load_topics(Path(__file__).resolve().parent.parent / "config" / "teleop_topics.yaml")
    key = Secret(bytes(range(32)))
    h, a = lan4.hosts, lan4.addresses
    # each site keeps sending until both have everything: a site whose peer's topics all
    # arrived with the handshake (before wait_paired returns) must still send its own
    done = {"leader": threading.Event(), "follower": threading.Event()}

    def bridge_site(role: str, addr: str):
        async def main():
            outgoing = [Outgoing(t, H, i + 1) for i, t in enumerate(topics.outgoing(role))]
            incoming = [Incoming(t, H, "/peer/" + t.remote) for t in topics.incoming(role)]
            got: dict[str, int] = {}

            def deliver(inc, payload, info):
                got[inc.spec.remote] = got.get(inc.spec.remote, 0) + 1

            cfg = LanConfig("bridged", role, key_id=key.key_id, nick=f"{role}@br", addresses=[addr])
            b = Bridge(cfg, session_config(), key, role, outgoing, incoming, deliver)
            await b.connect()
            try:
                assert b.session is not None
                await b.session.wait_paired(60)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(e.is_set() for e in done.values()):
                    for i in range(len(outgoing)):
                        b.send(i, bytes(64))
                    await asyncio.sleep(0.05)
                    if len(got) == len(incoming):
                        done[role].set()
                st = b.status()
                ss = b.session.stats()
                return {
                    "got": got,
                    "room": b.room.room_jid,
                    "connected": st.room_connected,
                    "why": (ss.path, ss.problems, ss.counters, ss.ice, ss.timings),
                }
            finally:
                await b.close()

        return main

    lead = start_in_netns(h[0], bridge_site("leader", a[0]))
    foll = start_in_netns(h[1], bridge_site("follower", a[1]))
    lr, fr = lead.result(120), foll.result(120)
    assert lr["room"] == "lan:bridged" and lr["connected"] and fr["connected"]
    assert set(fr["got"]) == {t.remote for t in topics.outgoing("leader")}, (fr["why"], lr["why"])
    assert set(lr["got"]) == {t.remote for t in topics.outgoing("follower")}, (lr["why"], fr["why"])
