"""Bad input on the LAN, each case tested: a second host announcing the real peer's name and
copying its key id; malformed and oversized TXT records; streams that open and never speak,
speak garbage, claim another ``from`` or break the XML rules; a flood of announcements.
The impostor never pairs, the real peer still does, tables stay bounded, and every refusal
is counted in the carrier's diagnostics."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from jitsi_teleop.carriers.lan import LanCarrier
from jitsi_teleop.linklocal import LanConfig, LanRoom
from jitsi_teleop.linklocal.dnssd import DirectoryConfig
from jitsi_teleop.linklocal.stream import StreamLimits
from jitsi_teleop.linklocal.txt import SERVICE_TYPE, LanPresence, TxtError, parse_presence
from jitsi_teleop.links.p2p import P2PConfig
from jitsi_teleop.pairing import Secret
from jitsi_teleop.session import Session, SessionConfig
from jitsi_teleop.wire import StreamDescriptor
from lan_net import Lan, skip_reason, start_in_netns

pytestmark = [pytest.mark.timeout(180)]
needs_netns = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))

H = "RIHS01_" + "a" * 64
LEADER_OUT = [StreamDescriptor(1, "/js", "sensor_msgs/msg/JointState", H, "latest", 100, 0.5)]
FOLLOWER_OUT = [
    StreamDescriptor(7, "/wr", "geometry_msgs/msg/WrenchStamped", H, "latest", 100, 0.5)
]
SECRET = Secret(bytes(range(32)))
WRONG = Secret(bytes(range(100, 132)))
GOOD_TXT = {
    b"txtvers": b"1",
    b"port.p2pj": b"5562",
    b"status": b"avail",
    b"jt.room": b"lab",
    b"jt.role": b"follower",
    b"jt.key": b"0123456789ab",
}


# ------------------------------------------------------------------ TXT records (pure) -------
def test_a_well_formed_record_round_trips():
    p = LanPresence("f@h", 5562, "lab", "follower", "0123456789ab", robot="dexter1")
    raw = {k.encode(): v.encode() for k, v in p.to_txt().items()}
    assert next(iter(p.to_txt())) == "txtvers"  # XEP-0174: txtvers first
    back = parse_presence("f@h", 5562, raw)
    assert back.room == "lab" and back.role == "follower" and back.key_id == "0123456789ab"
    assert back.robot == "dexter1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({b"txtvers": b"2"}, "txt_malformed"),
        ({b"txtvers": None}, "txt_malformed"),
        ({b"port.p2pj": b"9999"}, "txt_malformed"),  # differs from the SRV port
        ({b"status": b"online"}, "txt_malformed"),
        ({b"jt.role": b"admin"}, "txt_malformed"),
        ({b"jt.key": b"xyz"}, "txt_malformed"),
        ({b"jt.room": b"Lab With Spaces"}, "txt_malformed"),
        ({b"nick": b"\xff\xfe"}, "txt_malformed"),
        ({b"msg": b"a\x00b"}, "txt_malformed"),
        ({b"jt.room": None}, "not_teleop"),
        ({f"k{i}".encode(): b"v" * 250 for i in range(6)}, "txt_oversized"),
        ({f"k{i}".encode(): b"" for i in range(40)}, "txt_oversized"),
    ],
)
def test_malformed_or_oversized_records_are_refused_with_a_reason(change, reason):
    raw = dict(GOOD_TXT)
    for k, v in change.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    with pytest.raises(TxtError) as e:
        parse_presence("f@h", 5562, raw)
    assert e.value.reason == reason


def test_instance_names_must_be_user_at_machine():
    with pytest.raises(TxtError):
        parse_presence("no-at-sign", 5562, dict(GOOD_TXT))
    with pytest.raises(TxtError):
        parse_presence("a@b/c", 5562, dict(GOOD_TXT))


# ------------------------------------------------------------------ on a namespace LAN -------
@pytest.fixture
def lan3():
    net = Lan(3, "ho")
    try:
        yield net
    finally:
        net.delete()


def fast() -> SessionConfig:
    return SessionConfig(p2p=P2PConfig(), discover_ice_servers=False, pair_retry=1.0)


def run_site(
    role, secret, addr, nick, *, seconds, probe=True, key_id=None, after=None, limits=None
):
    """A site for ``seconds``; ``after(lan)`` runs (async) once it is announced."""

    async def main():
        cfg = LanConfig(
            "lab",
            role,
            key_id=key_id or secret.key_id,
            nick=nick,
            addresses=[addr],
            directory=DirectoryConfig(probe=probe),
            limits=limits or StreamLimits(),
        )
        lan = LanRoom(cfg)
        got = []
        out = LEADER_OUT if role == "leader" else FOLLOWER_OUT
        s = Session(
            LanCarrier(lan), fast(), secret, role, out, on_receive=lambda d, p, i: got.append(p)
        )
        await lan.join()
        await s.start()
        t_end = time.monotonic() + seconds
        extra = None
        try:
            if after is not None:
                extra = await after(lan)
            i = 0
            while time.monotonic() < t_end:
                if s.paired:
                    s.publish(out[0].stream_id, struct.pack("<I", i) + bytes(16))
                    i += 1
                await asyncio.sleep(0.02)
            st = s.stats()
            return {
                "paired": s.paired,
                "peer": s.peer,
                "nick": lan.nick,
                "received": len(got),
                "pairing": st.pairing,
                "cipher": st.cipher,
                "drops": {k: v.dropped for k, v in st.paths.items()} if st.paths else {},
                "diag": lan.diagnostics(),
                "directory_size": len(lan.directory.peers),
                "incoming": len(lan._incoming),
                "extra": extra,
            }
        finally:
            await s.close()
            await lan.close()

    return main


@needs_netns
def test_an_impostor_with_the_peers_name_and_key_id_never_pairs_and_the_real_peer_does(lan3):
    """Host 2 announces the real follower's own name without probing (a careless or hostile
    host) and a second service copying its key id, and runs a session with the wrong secret.
    The leader pairs with the real follower, data flows, and the conflicts are reported."""
    h, a = lan3.hosts, lan3.addresses
    real = "follower@lab"

    async def second_claim(lan):
        # a second service with the real follower's key id and role, under another name
        zc = AsyncZeroconf(interfaces=[a[2]], ip_version=IPVersion.V4Only)
        p = LanPresence("evil@lab", lan.port, "lab", "follower", SECRET.key_id)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"evil@lab.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a[2])],
            port=lan.port,
            properties=p.to_txt(),
            server="evil-lab.local.",
        )
        await zc.async_register_service(info)
        return zc

    leader = start_in_netns(h[0], run_site("leader", SECRET, a[0], "leader@lab", seconds=20))
    follower = start_in_netns(h[1], run_site("follower", SECRET, a[1], real, seconds=20))
    time.sleep(3)  # the real follower holds the name first; the impostor takes it anyway
    impostor = start_in_netns(
        h[2],
        run_site(
            "follower",
            WRONG,
            a[2],
            real,
            seconds=14,
            probe=False,
            key_id=SECRET.key_id,
            after=second_claim,
        ),
    )
    lr, fr, ir = leader.result(120), follower.result(120), impostor.result(120)
    assert lr["paired"] and lr["peer"] == real and fr["paired"] and fr["peer"] == "leader@lab"
    assert fr["received"] > 20 and lr["received"] > 20  # data flows both ways
    assert not ir["paired"] and ir["received"] == 0
    counters = lr["diag"]["counters"]
    assert counters.get("name_conflict", 0) >= 1, counters
    assert counters.get("key_conflict", 0) >= 1, counters
    by = {p["instance"]: p for p in lr["diag"]["peers"]}
    # both hosts' endpoints are tried (mDNS may mix a name's SRV and A records: more combos)
    assert set(by[real]["addresses"]) >= {
        f"{a[1]}:{fr['diag']['port']}",
        f"{a[2]}:{ir['diag']['port']}",
    }
    assert by[real]["problem"] == "name_conflict"
    # the impostor's handshakes and frames were refused by the key, and counted
    refused = sum(
        v for k, v in lr["pairing"].items() if k not in ("initiated", "completed", "responded")
    )
    assert refused >= 1 or sum(lr["drops"].values()) >= 1, (lr["pairing"], lr["drops"])


@needs_netns
def test_bad_records_and_a_flood_of_announcements_are_refused_counted_and_bounded(lan3):
    """Host 2 announces malformed and oversized records and then 200 services; the leader
    and follower still pair; the table stays within its per-address bound."""
    h, a = lan3.hosts, lan3.addresses
    bad = {
        "badvers@x": {**GOOD_TXT, b"txtvers": b"2"},
        "badkey@x": {**GOOD_TXT, b"jt.key": b"not-hex"},
        "badport@x": {**GOOD_TXT, b"port.p2pj": b"1"},
        "huge@x": {**GOOD_TXT, **{f"pad{i}".encode(): b"x" * 240 for i in range(6)}},
    }

    async def flooder():
        zc = AsyncZeroconf(interfaces=[a[2]], ip_version=IPVersion.V4Only)
        infos = []
        try:
            for name, txt in bad.items():
                txt = {**txt, b"port.p2pj": txt[b"port.p2pj"] if name == "badport@x" else b"5562"}
                infos.append(
                    AsyncServiceInfo(
                        SERVICE_TYPE,
                        f"{name}.{SERVICE_TYPE}",
                        addresses=[socket.inet_aton(a[2])],
                        port=5562,
                        properties=txt,
                        server=f"{name.replace('@', '-')}.local.",
                    )
                )
            for i in range(200):
                infos.append(
                    AsyncServiceInfo(
                        SERVICE_TYPE,
                        f"flood{i}@x.{SERVICE_TYPE}",
                        addresses=[socket.inet_aton(a[2])],
                        port=5562,
                        properties={**GOOD_TXT, b"jt.role": b"follower"},
                        server=f"flood{i}-x.local.",
                    )
                )
            await asyncio.gather(
                *(zc.async_register_service(i, cooperating_responders=True) for i in infos)
            )
            await asyncio.sleep(12)
        finally:
            await zc.async_close()

    fl = start_in_netns(h[2], flooder)
    time.sleep(1.0)
    leader = start_in_netns(h[0], run_site("leader", SECRET, a[0], "leader@lab", seconds=10))
    follower = start_in_netns(h[1], run_site("follower", SECRET, a[1], "follower@lab", seconds=10))
    lr, fr = leader.result(120), follower.result(120)
    fl.result(60)
    assert lr["paired"] and lr["peer"] == "follower@lab" and fr["received"] > 10
    c = lr["diag"]["counters"]
    assert c.get("txt_malformed", 0) >= 3 and c.get("txt_oversized", 0) >= 1, c
    assert c.get("flood_dropped", 0) >= 1, c
    # bounded: at most max_per_address services from the flooding host, plus the follower
    assert lr["directory_size"] <= DirectoryConfig().max_per_address + 1
    assert "follower@lab" in {p["instance"] for p in lr["diag"]["peers"]}


@needs_netns
def test_streams_that_never_speak_speak_garbage_or_lie_are_refused_and_counted(lan3):
    """Raw TCP against a site: silence, garbage, a stolen ``from``, a wrong ``to``, a DTD,
    an oversized stanza, a stanza whose ``from`` differs from the stream's. Each is refused
    with a stream error and counted; no stream is left open; the real pair still works."""
    h, a = lan3.hosts, lan3.addresses
    limits = StreamLimits(open_timeout=1.0, max_stanza_bytes=64 * 1024)
    header = (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' from='{f}' to='{t}' version='1.0'>"
    )

    async def attacker():
        # announced honestly as mallory@x (not a teleop site), so its own name is known
        zc = AsyncZeroconf(interfaces=[a[2]], ip_version=IPVersion.V4Only)
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"mallory@x.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(a[2])],
            port=5562,
            properties={b"txtvers": b"1", b"port.p2pj": b"5562"},
            server="mallory-x.local.",
        )
        await zc.async_register_service(info)
        answers = {}
        try:
            port = None
            deadline = time.monotonic() + 20
            while port is None:
                si = await zc.async_get_service_info(
                    SERVICE_TYPE, f"leader@lab.{SERVICE_TYPE}", 1000
                )
                if si is not None and si.port:
                    port = si.port
                assert time.monotonic() < deadline
            cases = {
                "silent": b"",
                "garbage": b"\x16\x03\x01 hello <<<>>>\x00",
                "stolen_from": header.format(f="follower@lab", t="leader@lab").encode(),
                "wrong_to": header.format(f="mallory@x", t="someone@else").encode(),
                "dtd": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><x/>",
                "oversized": header.format(f="mallory@x", t="leader@lab").encode()
                + b"<message><body>"
                + b"A" * 100_000
                + b"</body></message>",
                "lying_stanza": header.format(f="mallory@x", t="leader@lab").encode()
                + b"<message from='follower@lab' to='leader@lab'><body>x</body></message>",
            }
            for name, data in cases.items():
                r, w = await asyncio.open_connection(a[0], port)
                w.write(data)
                buf = b""
                try:
                    while True:
                        chunk = await asyncio.wait_for(r.read(65536), 8)
                        if not chunk:
                            break
                        buf += chunk
                        if name == "lying_stanza" and b"</stream:features>" in buf:
                            await asyncio.sleep(0.5)
                            w.write(b"</stream:stream>")
                except asyncio.TimeoutError:
                    buf += b"<still open>"
                answers[name] = buf.decode(errors="replace")
                w.close()
            return answers
        finally:
            await zc.async_close()

    leader = start_in_netns(
        h[0], run_site("leader", SECRET, a[0], "leader@lab", seconds=16, limits=limits)
    )
    follower = start_in_netns(h[1], run_site("follower", SECRET, a[1], "follower@lab", seconds=16))
    answers = start_in_netns(h[2], attacker).result(120)
    lr, fr = leader.result(120), follower.result(120)
    assert lr["paired"] and fr["paired"] and fr["received"] > 20
    assert "connection-timeout" not in answers["silent"] and "<still open>" not in answers["silent"]
    assert "not-well-formed" in answers["garbage"] or "invalid-namespace" in answers["garbage"]
    assert "invalid-from" in answers["stolen_from"]
    assert "host-unknown" in answers["wrong_to"]
    assert "restricted-xml" in answers["dtd"]
    assert "policy-violation" in answers["oversized"]
    c = lr["diag"]["counters"]
    for reason in (
        "stream_open_timeout",
        "stream_from_mismatch",
        "stream_wrong_to",
        "stream_restricted_xml",
        "stream_oversized",
        "stanza_from_mismatch",
    ):
        assert c.get(reason, 0) >= 1, (reason, c)
    assert c.get("stream_not_well_formed", 0) + c.get("stream_bad_header", 0) >= 1, c
    # nothing from the attacker is left open (only streams with the real follower)
    assert {s["peer"] for s in lr["diag"]["streams"]} <= {"follower@lab"}
