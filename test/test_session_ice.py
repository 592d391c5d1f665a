"""Sessions taking STUN/TURN from a real Prosody's XEP-0215 (TURN REST credentials from the
secret it shares with a real coturn on loopback): direct pair chosen and reported in
``session.stats().ice``; credentials requests; a TURN server refusing the credentials or not
running; malformed XEP-0215 entries; a NAT re-mapping mid-session (the link goes silent, the
room carries the traffic, the link is rebuilt)."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from slixmpp import Iq

from coturn_server import LoopbackCoturn, coturn_missing
from jitsi_teleop.links.ice import IceAgent
from jitsi_teleop.links.p2p import P2PConfig
from jitsi_teleop.relay import UdpRelay
from jitsi_teleop.room import extdisco
from jitsi_teleop.room.stanzas import register_stanzas
from jitsi_teleop.session import PATH_MUC, PATH_P2P
from prosody_server import ProsodyServer, eventually, prosody_available
from test_session import close_all, fast_config, make_pair, sample

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(150)]


def ipv4_loopback(address: str) -> bool:
    return address == "127.0.0.1"


@pytest.fixture(scope="module")
def turn_site():
    """coturn and a Prosody announcing it with the same shared secret."""
    if coturn_missing():
        pytest.skip(coturn_missing())
    if not prosody_available():
        pytest.skip("prosody not installed")
    secret = secrets.token_hex(16)
    turn = LoopbackCoturn(secret=secret).start()
    srv = ProsodyServer(turn_port=turn.port, turn_secret=secret)
    try:
        srv.start()
        yield srv, turn
    finally:
        srv.cleanup()
        turn.cleanup()


def ice_config(**kw):
    return fast_config(
        p2p=P2PConfig(candidate_filter=ipv4_loopback, relay_grace=1.0),
        discover_ice_servers=True,
        **kw,
    )


async def test_sessions_use_the_rooms_turn_server_and_report_a_direct_pair(turn_site, rooms):
    srv, turn = turn_site
    room_name = "room" + secrets.token_hex(4)
    leader, follower, _ls, fsink, *_ = await make_pair(
        srv, rooms, room_name, ice_config(), ice_config()
    )
    try:
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=30,
            what="fast path",
        )
        for s in (leader, follower):  # candidates are trickled: server outcomes come later
            await eventually(
                lambda s=s: any(r["kind"] == "turn" for r in s.stats().ice["servers"]),
                timeout=20,
                what="the TURN server's outcome",
            )
        for s in (leader, follower):
            ice = s.stats().ice
            assert ice["path"] == "direct", ice
            assert ice["selected"]["local_type"] in ("host", "prflx")
            assert ice["selected"]["turn_server"] is None
            assert f"turn:127.0.0.1:{turn.port}?transport=udp" in ice["servers_announced"]
            # the credentials Prosody made from the shared secret were accepted by coturn
            turn_reports = [r for r in ice["servers"] if r["kind"] == "turn"]
            assert turn_reports and turn_reports[0]["ok"], ice["servers"]
            assert ice["discovery_problems"] == []
        for i in range(20):
            leader.publish(1, sample(i))
            await asyncio.sleep(0.005)
        await eventually(lambda: 19 in fsink.values("/joint_states"), what="stream")
    finally:
        await close_all(leader, follower)


async def test_credentials_request_to_prosody_gives_credentials_coturn_accepts(turn_site, rooms):
    srv, turn = turn_site
    room = rooms(__import__("prosody_server").room_config(srv, "r" + secrets.token_hex(4)))
    await room.join()
    problems: list[str] = []
    svc = extdisco.ExternalService("turn", "127.0.0.1", turn.port, "udp", restricted=True)
    got = await extdisco.request_credentials(room.xmpp, srv.domain, svc, 5.0, problems)
    assert got is not None, problems
    assert got.username and got.password and got.username.split(":")[0].isdigit()
    agent = IceAgent(
        controlling=True,
        servers=extdisco.ice_servers([got]),
        address_filter=ipv4_loopback,
        gather_timeout=5.0,
    )
    try:
        await agent.gather()
        assert [r.ok for r in agent.gather_reports if r.kind == "turn"] == [True]
        assert any(c.type == "relay" for c in agent.local_candidates)
    finally:
        await agent.close()


async def test_turn_refusing_the_credentials_is_in_the_stats_and_the_link_stays_direct(rooms):
    if coturn_missing() or not prosody_available():
        pytest.skip("needs coturn and prosody")
    turn = LoopbackCoturn(secret="coturn-secret").start()
    srv = ProsodyServer(turn_port=turn.port, turn_secret="a-different-secret")
    srv.start()
    try:
        leader, follower, *_ = await make_pair(
            srv, rooms, "room" + secrets.token_hex(4), ice_config(), ice_config()
        )
        try:
            await eventually(lambda: leader.path == PATH_P2P, timeout=30, what="fast path")
            await eventually(
                lambda: any(r["kind"] == "turn" for r in leader.stats().ice["servers"]),
                timeout=20,
                what="the TURN server's outcome",
            )
            ice = leader.stats().ice
            turn_reports = [r for r in ice["servers"] if r["kind"] == "turn"]
            assert "refused the credentials (401" in turn_reports[0]["detail"], ice["servers"]
            assert ice["path"] == "direct"
        finally:
            await close_all(leader, follower)
    finally:
        srv.cleanup()
        turn.cleanup()


async def test_announced_turn_server_not_running_is_reported_and_sessions_go_direct(
    prosody, rooms, room_name
):
    """The shared test Prosody announces 127.0.0.1:3478, where no TURN server runs."""
    cfg = fast_config(
        p2p=P2PConfig(candidate_filter=ipv4_loopback, gather_timeout=1.0),
        discover_ice_servers=True,
    )
    leader, follower, *_ = await make_pair(prosody, rooms, room_name, cfg, cfg)
    try:
        await eventually(lambda: leader.path == PATH_P2P, timeout=30, what="fast path")
        assert leader.stats().ice["path"] == "direct"
        # trickled: the servers' outcomes come after the link is up
        await eventually(
            lambda: len(leader.stats().ice["servers"]) >= 2, timeout=20, what="server reports"
        )
        ice = leader.stats().ice
        assert not any(r["ok"] for r in ice["servers"])
    finally:
        await close_all(leader, follower)


def _iq(xml: str) -> Iq:
    register_stanzas()
    from slixmpp.xmlstream import ET

    return Iq(xml=ET.fromstring(xml))


def test_malformed_and_missing_extdisco_entries_are_skipped_with_a_reason():
    ns = "urn:xmpp:extdisco:2"
    iq = _iq(
        f"<iq xmlns='jabber:client' type='result'><services xmlns='{ns}'>"
        "<service type='turn' host='turn.example.org' port='3478' transport='udp' "
        "username='1700000000' password='pw' restricted='1'/>"
        "<service type='stun' host='stun.example.org' port='99999'/>"
        "<service type='turn' port='3478'/>"
        "<service host='x.example.org'/>"
        "<service type='turn' host='bad host' port='3478'/>"
        "<service type='turn' host='t2.example.org' transport='sctp'/>"
        "<service type='stun' host='stun.example.org' port='3478'/>"
        "</services></iq>"
    )
    problems: list[str] = []
    got = extdisco.parse_services(iq, problems)
    assert [(s.type, s.host) for s in got] == [
        ("turn", "turn.example.org"),
        ("stun", "stun.example.org"),
    ]
    assert len(problems) == 5
    assert any("bad port" in p for p in problems)
    assert any("missing host" in p for p in problems)
    assert any("no type" in p for p in problems)
    assert any("bad transport" in p for p in problems)
    assert all("pw" not in p for p in problems)  # credentials never end up in a message
    servers = extdisco.ice_servers(got)
    assert servers[0].urls == ["turn:turn.example.org:3478?transport=udp"]
    assert servers[0].username == "1700000000"


def test_turn_rest_credentials_are_the_hmac_coturn_checks():
    user, password = extdisco.turn_rest_credentials("s3cret", ttl=600, user="leader", now=1000)
    assert user == "1600:leader"
    # base64(HMAC-SHA1("s3cret", "1600:leader")), computed independently
    import base64
    import hashlib
    import hmac

    want = base64.b64encode(hmac.new(b"s3cret", b"1600:leader", hashlib.sha1).digest()).decode()
    assert password == want


async def test_nat_remapping_mid_session_fails_over_to_the_room_and_rebuilds(
    prosody, rooms, room_name
):
    """The leader's NAT gives its sockets new public ports: the follower drops what arrives
    from the new source (not the selected pair's) and hears nothing from the old one, so the
    link goes silent; traffic moves to the room, the leader rebuilds the link, back to p2p."""
    relay = UdpRelay(seed=3)
    await relay.start()

    def cfg(side: str):
        p2p = P2PConfig(
            candidate_filter=ipv4_loopback, advertise=relay.advertise(side), latest_datagrams=True
        )
        return fast_config(p2p=p2p)

    leader, follower, _ls, fsink, *_ = await make_pair(
        prosody, rooms, room_name, cfg("a"), cfg("b")
    )
    try:
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=30,
            what="fast path",
        )
        first_session = follower._p2p
        # past the controlling agent's re-nominations of its pair (links.ice._confirm): one
        # arriving through the new mapping would let ICE itself follow the re-mapping
        await asyncio.sleep(3.0)
        assert relay.remap("a") >= 1
        i = 0
        while follower.path != PATH_MUC and i < 3000:
            leader.publish(1, sample(i))
            i += 1
            await asyncio.sleep(0.01)
        assert follower.path == PATH_MUC or leader.path == PATH_MUC, (
            follower.path_events,
            leader.path_events,
            follower.stats().ice,
            relay.stats,
        )
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=45,
            what="back on a rebuilt fast path",
        )
        assert follower._p2p is not first_session  # rebuilt, not revived
        assert any(e.new == PATH_MUC for e in follower.path_events)
        mark = len(fsink.items)
        for _ in range(20):
            leader.publish(1, sample(i))
            i += 1
            await asyncio.sleep(0.005)
        await eventually(
            lambda: PATH_P2P in fsink.paths_since(mark, "/joint_states"), what="p2p stream"
        )
    finally:
        await close_all(leader, follower)
        relay.close()


async def test_doctor_reports_the_turn_server_and_a_working_relay_path(turn_site):
    from jitsi_teleop.room.doctor import DoctorOptions, run_doctor

    srv, _turn = turn_site
    opts = DoctorOptions(
        websocket=srv.websocket_url,
        domain=srv.domain,
        muc=srv.muc_domain,
        room="doc" + secrets.token_hex(4),
        no_focus=True,
        pings=1,
    )
    report = await run_doctor(opts)
    assert report.ok, report.human()
    check = report.ice_check
    turn_rep = [r for r in check["servers"] if r["kind"] == "turn"]
    assert turn_rep and turn_rep[0]["ok"], check
    assert "relay" in check["candidate_types"]
    rp = check["relay_path"]
    assert rp["ok"] and rp["selected"]["local_type"] == "relay", rp
    assert "relay path ok: relay" in report.human()
