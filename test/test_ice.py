"""The fast path's ICE against a real coturn on loopback: direct pairs preferred over relayed
ones (also when the relay answers first), relay only while no direct pair works and an upgrade
to direct when one starts working, TURN servers that refuse the credentials, do not answer or
answer slowly, typed candidates strictly parsed and filtered, and junk UDP at the datagram
port dropped before it reaches the receiver."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket

import aioice
import aioice.ice
import pytest

from coturn_server import LoopbackCoturn, coturn_missing, delay_proxy, free_udp_port
from jitsi_teleop.links.base import LinkError
from jitsi_teleop.links.ice import IceAgent, choose_servers, parse_ice_url
from jitsi_teleop.links.p2p import (
    DescriptionError,
    P2PConfig,
    P2PDescription,
    P2PLink,
    parse_candidate,
)
from jitsi_teleop.relay import Impairment, UdpRelay
from jitsi_teleop.room.extdisco import IceServer, turn_rest_credentials
from prosody_server import eventually

pytestmark = pytest.mark.timeout(120)
needs_coturn = pytest.mark.skipif(coturn_missing() is not None, reason=str(coturn_missing()))


def ipv4_loopback(address: str) -> bool:
    return address == "127.0.0.1"


@pytest.fixture(scope="module")
def coturn():
    if coturn_missing():
        pytest.skip(coturn_missing())
    srv = LoopbackCoturn(secret=secrets.token_hex(16)).start()
    yield srv
    srv.cleanup()


def servers(port: int, secret: str) -> list[IceServer]:
    """What a Jitsi deployment announces: STUN, and TURN with REST credentials."""
    user, password = turn_rest_credentials(secret, ttl=3600)
    return [
        IceServer([f"stun:127.0.0.1:{port}"]),
        IceServer([f"turn:127.0.0.1:{port}?transport=udp"], user, password),
    ]


def cfg(ice_servers=(), relay: UdpRelay | None = None, side: str = "a", **kw) -> P2PConfig:
    base = dict(
        ice_servers=list(ice_servers),
        candidate_filter=ipv4_loopback,
        advertise=relay.advertise(side) if relay is not None else None,
        connect_timeout=15,
        latest_datagrams=True,
    )
    base.update(kw)
    return P2PConfig(**base)


async def connect(ca: P2PConfig, cb: P2PConfig) -> tuple[P2PLink, P2PLink]:
    a, b = P2PLink("b", ca, controlling=True), P2PLink("a", cb, controlling=False)
    try:
        da, db = await asyncio.gather(a.describe(), b.describe())
        await asyncio.gather(a.connect(db), b.connect(da))
    except BaseException:
        await asyncio.gather(a.close(), b.close())
        raise
    return a, b


def kinds(link: P2PLink) -> dict[str, str]:
    rep = link.ice_report()
    return {c: rep[c]["selected"]["kind"] for c in ("channel", "datagram")}


async def stream(a: P2PLink, b: P2PLink, n: int = 50, sid: int = 5) -> list[bytes]:
    got: list[bytes] = []
    b.set_receive_callback(lambda nick, s, p: got.append(p) if s == sid else None)
    for i in range(n):
        a.send(sid, b"x%d" % i, latest=True)
        await asyncio.sleep(0.002)
    await eventually(lambda: b"x%d" % (n - 1) in got, what="datagrams delivered")
    return got


# ---------------------------------------------------------------- direct before relay ---
@needs_coturn
async def test_direct_pair_is_chosen_in_every_run_with_turn_offered(coturn):
    ice = servers(coturn.port, coturn.secret)
    for run in range(4):
        a, b = await connect(cfg(ice), cfg(ice))
        try:
            desc = a.ice_report()
            assert any(r["kind"] == "turn" and r["ok"] for r in desc["servers"]), desc
            for link in (a, b):
                got = kinds(link)
                assert got == {"channel": "direct", "datagram": "direct"}, (run, got)
                assert link.selected_pair is not None and link.selected_pair.turn_server is None
            await stream(a, b)
        finally:
            await asyncio.gather(a.close(), b.close())


@needs_coturn
async def test_a_relay_pair_that_answers_first_is_not_nominated_while_direct_is_pending(coturn):
    """Direct checks take 200 ms round trips (through the delay relay); the relay through coturn
    answers in about a millisecond. aioice alone nominates the relay pair here."""
    relay = UdpRelay(Impairment(delay_s=0.1))
    await relay.start()
    ice = servers(coturn.port, coturn.secret)
    try:
        a, b = await connect(
            cfg(ice, relay, "a", relay_grace=2.0), cfg(ice, relay, "b", relay_grace=2.0)
        )
        try:
            for link in (a, b):
                assert kinds(link) == {"channel": "direct", "datagram": "direct"}
                assert link.ice_report()["datagram"]["switches"] == 0  # direct from the start
            assert any("typ relay" in c for c in local_lines(a))
            assert relay.stats.forwarded > 0
        finally:
            await asyncio.gather(a.close(), b.close())
    finally:
        relay.close()


def local_lines(link: P2PLink) -> list[str]:
    return [c.to_sdp() for c in link._agent.local_candidates]


@needs_coturn
async def test_relay_only_while_direct_fails_then_upgrade_to_direct(coturn):
    relay = UdpRelay(Impairment(blackout=True))  # the direct path is dead at first
    await relay.start()
    ice = servers(coturn.port, coturn.secret)
    kw = dict(relay_grace=0.5, upgrade_interval=0.5)
    try:
        a, b = await connect(cfg(ice, relay, "a", **kw), cfg(ice, relay, "b", **kw))
        try:
            for link in (a, b):
                assert kinds(link) == {"channel": "relay", "datagram": "relay"}
                rep = link.ice_report()["datagram"]["selected"]
                assert rep["local_type"] == "relay" or rep["remote_type"] == "relay"
            sel = a.selected_pair
            assert sel is not None
            # the end whose relay candidate is in the pair names the TURN server
            assert (
                any(
                    lk.selected_pair.turn_server == f"turn:127.0.0.1:{coturn.port}?transport=udp"
                    for lk in (a, b)
                    if lk.selected_pair is not None and lk.selected_pair.local_type == "relay"
                )
                or sel.remote_type == "relay"
            )
            await stream(a, b)  # data flows through coturn
            # several upgrade rounds while the direct path is still dead: no pair gets around
            # the blackout (probing the peer's address as coturn saw it did, on loopback)
            await asyncio.sleep(2.0)
            assert all(kinds(lk) == {"channel": "relay", "datagram": "relay"} for lk in (a, b))
            relay.impairment = Impairment()  # the direct path starts working
            await eventually(
                lambda: all(
                    kinds(lk) == {"channel": "direct", "datagram": "direct"} for lk in (a, b)
                ),
                timeout=60,
                what="both connections of both ends upgraded to a direct pair",
            )
            assert a.ice_report()["datagram"]["switches"] >= 1
            got = await stream(a, b, sid=6)
            assert got  # datagrams from the new pair's source are accepted
            rel: list[bytes] = []
            a.set_receive_callback(lambda nick, s, p: rel.append(p))
            b.send(9, b"reliable after the upgrade", latest=False)  # DTLS/SCTP moved too
            await eventually(lambda: b"reliable after the upgrade" in rel, what="reliable frame")
        finally:
            await asyncio.gather(a.close(), b.close())
    finally:
        relay.close()


async def test_upgrade_probes_pair_a_learned_address_only_with_the_socket_it_reached():
    """While relayed, the agent re-checks direct pairs: our host sockets against the peer's
    offered addresses. An address learned from a check that came through TURN (peer
    reflexive, as the TURN server saw the peer) is not among them (RFC 8445 pairs it with
    the socket it reached): probing it from a host socket went around the addresses the
    peer offered, and, here on loopback, around the test relay's blackout (a flaky test).
    And a direct check still running when the relay won is probed again."""
    agent = IceAgent(controlling=True, address_filter=ipv4_loopback)
    await agent.gather_host()
    try:
        agent.remote_username, agent.remote_password = "u", "p" * 22
        offered = aioice.Candidate("1", 1, "udp", 100, "127.0.0.1", 40001, "srflx")
        learned = aioice.Candidate("2", 1, "udp", 100, "127.0.0.1", 40002, "prflx")
        relayed = aioice.Candidate("3", 1, "udp", 100, "127.0.0.1", 40003, "relay")
        agent._remote_candidates += [offered, learned, relayed]
        targets = {
            (p.remote_candidate.type, p.remote_candidate.port) for p in agent._direct_pairs()
        }
        assert targets == {("srflx", 40001)}
        # a peer-reflexive address that reached a host socket directly is probed again
        host = agent._protocols[0]
        agent._check_list.append(aioice.ice.CandidatePair(host, learned))
        targets = {
            (p.remote_candidate.type, p.remote_candidate.port) for p in agent._direct_pairs()
        }
        assert targets == {("srflx", 40001), ("prflx", 40002)}
        # a check that aioice cancelled when the connection completed is left "in progress"
        # with no task: probed again (else a direct pair still trying when the relay won is
        # never retried, and the upgrade never happens)
        (pair,) = [p for p in agent._check_list if p.remote_candidate is offered]
        pair.state, pair.task = aioice.ice.CandidatePair.State.IN_PROGRESS, None
        assert pair in agent._direct_pairs()
        running = asyncio.ensure_future(asyncio.sleep(10))
        pair.task = running  # a check really running is left alone
        assert pair not in agent._direct_pairs()
        running.cancel()
        await asyncio.sleep(0)
        assert pair in agent._direct_pairs()
    finally:
        await agent.close()


# ---------------------------------------------------------------- bad TURN servers -----
@needs_coturn
async def test_turn_refusing_the_credentials_is_reported_and_direct_still_works(coturn):
    bad = servers(coturn.port, "not-the-shared-secret")
    a, b = await connect(cfg(bad, gather_timeout=5.0), cfg(bad, gather_timeout=5.0))
    try:
        turn = [r for r in a.ice_report()["servers"] if r["kind"] == "turn"]
        assert turn and not turn[0]["ok"]
        assert "refused the credentials (401" in turn[0]["detail"]
        assert kinds(a) == {"channel": "direct", "datagram": "direct"}
        await stream(a, b)
    finally:
        await asyncio.gather(a.close(), b.close())


@needs_coturn
async def test_refused_turn_and_no_direct_path_fails_with_a_clear_error_not_a_hang(coturn):
    relay = UdpRelay(Impairment(blackout=True))
    await relay.start()
    bad = servers(coturn.port, "not-the-shared-secret")
    ca = cfg(bad, relay, "a", connect_timeout=6, latest_datagrams=False)
    cb = cfg(bad, relay, "b", connect_timeout=6, latest_datagrams=False)
    a, b = P2PLink("b", ca, controlling=True), P2PLink("a", cb, controlling=False)
    try:
        da, db = await asyncio.gather(a.describe(), b.describe())
        res = await asyncio.wait_for(
            asyncio.gather(a.connect(db), b.connect(da), return_exceptions=True), 30
        )
        assert all(isinstance(r, LinkError) for r in res), res
        assert a.state == "failed" and "ICE" in str(res[0])
    finally:
        await asyncio.gather(a.close(), b.close())
        relay.close()


async def test_unreachable_turn_server_is_reported_and_direct_still_works():
    dead = servers(free_udp_port(), "whatever")  # nothing listens there
    a, b = await connect(cfg(dead, gather_timeout=1.0), cfg(dead, gather_timeout=1.0))
    try:
        reports = a.ice_report()["servers"]
        assert {r["kind"] for r in reports} == {"stun", "turn"}
        assert not any(r["ok"] for r in reports)
        assert all(r["detail"] for r in reports)
        assert all(r["seconds"] <= 5.0 for r in reports)  # bounded by gather_timeout
        assert kinds(a) == {"channel": "direct", "datagram": "direct"}
    finally:
        await asyncio.gather(a.close(), b.close())


@needs_coturn
async def test_slow_turn_server_times_out_or_is_used_depending_on_the_wait(coturn):
    slow = await delay_proxy(("127.0.0.1", coturn.port), 2.5)
    late = await delay_proxy(("127.0.0.1", coturn.port), 0.15)
    try:
        too_slow = servers(slow.port, coturn.secret)
        a, b = await connect(cfg(too_slow, gather_timeout=1.0), cfg(too_slow, gather_timeout=1.0))
        try:
            turn = next(r for r in a.ice_report()["servers"] if r["kind"] == "turn")
            assert not turn["ok"] and "no answer within 1 s" in turn["detail"]
            assert kinds(a)["datagram"] == "direct"
        finally:
            await asyncio.gather(a.close(), b.close())
        ok = servers(late.port, coturn.secret)
        link = P2PLink("x", cfg(ok, gather_timeout=5.0), controlling=True)
        try:
            d = await link.describe()
            assert any(" typ relay" in c for c in d.candidates)
            turn = next(r for r in link.ice_report()["servers"] if r["kind"] == "turn")
            assert turn["ok"] and turn["seconds"] >= 0.3  # two round trips through the delay
        finally:
            await link.close()
    finally:
        slow.close()
        late.close()


# ---------------------------------------------------------------- candidates -----------
def test_candidate_lines_are_typed_and_strictly_parsed():
    c = parse_candidate("abc123 1 udp 2130706431 127.0.0.1 5000 typ host")
    assert (c.type, c.host, c.port, c.priority) == ("host", "127.0.0.1", 5000, 2130706431)
    r = parse_candidate("f0 1 udp 16777215 198.18.0.9 49152 typ relay raddr 198.18.1.2 rport 4000")
    assert (r.type, r.related_address, r.related_port) == ("relay", "198.18.1.2", 4000)
    legacy = parse_candidate("127.0.0.1 9", 3)
    assert legacy.type == "host" and legacy.port == 9
    for bad in (
        "abc 1 udp 100 127.0.0.1 5000 typ bogus",
        "abc 2 udp 100 127.0.0.1 5000 typ host",
        "abc 1 tcp 100 127.0.0.1 5000 typ host",
        "abc 1 udp -5 127.0.0.1 5000 typ host",
        "abc 1 udp 100 127.0.0.1 0 typ host",
        "abc 1 udp 100 example.org 5000 typ host",
        "abc 1 udp 100 127.0.0.1 5000 typ relay raddr 1.2.3.4",
        "abc 1 udp 100 127.0.0.1 5000 typ relay raddr 1.2.3.4 rport 70000",
        "ab;c 1 udp 100 127.0.0.1 5000 typ host",
        "abc 1 udp 100 127.0.0.1 5000 typ host " + "x" * 200,
        "abc  1 udp 100 127.0.0.1 5000 typ host",
        7,
        "",
    ):
        with pytest.raises(DescriptionError):
            parse_candidate(bad)


def test_ice_server_urls_and_the_choice_of_one_stun_and_one_turn_server():
    assert parse_ice_url("turn:[::1]:3479?transport=tcp") == ("turn", "::1", 3479, "tcp")
    assert parse_ice_url("turns:meet.example.org") == ("turns", "meet.example.org", 5349, "tcp")
    assert parse_ice_url("turn:h:3478?transport=sctp") is None
    assert parse_ice_url("http://x") is None
    choice = choose_servers(
        [
            IceServer(["turns:t.example:443?transport=tcp"], "u", "p"),
            IceServer(["turn:t.example:3478?transport=udp"], "u", "p"),
            IceServer(["turn:nocreds.example:3478"]),
        ]
    )
    assert choice.turn == ("t.example", 3478) and choice.turn_transport == "udp"
    assert choice.stun == ("t.example", 3478)  # coturn answers STUN on its TURN port


async def test_candidates_outside_the_allowed_addresses_are_refused_and_never_contacted():
    a = P2PLink("b", cfg(latest_datagrams=False), controlling=True)
    b = P2PLink("a", cfg(latest_datagrams=False), controlling=False)
    try:
        da, db = await asyncio.gather(a.describe(), b.describe())
        outside = (
            "x1 1 udp 2130706431 192.0.2.1 9 typ host",
            "x2 1 udp 1694498815 198.51.100.7 4000 typ srflx raddr 10.0.0.2 rport 4000",
        )
        mixed = P2PDescription(db.ufrag, db.pwd, outside + db.candidates, db.fingerprints)
        assert P2PDescription.from_dict(mixed.to_dict()) == mixed
        await asyncio.gather(a.connect(mixed), b.connect(da))
        assert a.ready and a.ice_report()["refused_candidates"] == 2
        assert all(c.host == "127.0.0.1" for c in a._agent.remote_candidates)
    finally:
        await asyncio.gather(a.close(), b.close())


# ---------------------------------------------------------------- receive path ---------
async def test_junk_udp_at_the_datagram_port_is_dropped_before_the_receiver():
    a, b = await connect(cfg(), cfg())
    got: list[bytes] = []
    b.set_receive_callback(lambda nick, s, p: got.append(p))
    target = b._dg.selected.local.rsplit(":", 1)  # type: ignore[union-attr]
    addr = (target[0], int(target[1]))
    dtls_port = b._agent.selected.local.rsplit(":", 1)  # type: ignore[union-attr]
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flooder.setblocking(False)
    try:
        sent = 0
        for i in range(500):  # 500 Hz stream for 1 s, 10 junk datagrams per frame
            a.send(5, b"frame%d" % i, latest=True)
            for _ in range(10):
                with contextlib.suppress(BlockingIOError):
                    flooder.sendto(b"\x00\x05junk-record" + bytes(260), addr)
                    flooder.sendto(b"\x17\xfe\xfdjunk-dtls", ("127.0.0.1", int(dtls_port[1])))
                    sent += 1
            await asyncio.sleep(0.002)
        await eventually(lambda: b"frame499" in got, what="the stream's last frame")
        assert not any(p.startswith(b"junk") or b"junk" in p for p in got)
        frames = [p for p in got if p.startswith(b"frame")]
        assert len(frames) >= 450  # the stream keeps its rate (loopback, nothing else drops)
        rep = b.ice_report()
        assert rep["datagram"]["foreign_dropped"] > 0 and rep["channel"]["foreign_dropped"] > 0
        assert b._agent._queue.qsize() <= 256  # the DTLS queue stays bounded
    finally:
        flooder.close()
        await asyncio.gather(a.close(), b.close())


# ---------------------------------------------------------------- trickle --------------
@needs_coturn
async def test_trickled_candidates_host_first_then_relay_and_a_slow_turn_does_not_delay():
    """With trickle the description carries host candidates only, so the link connects on
    the host pair while a slow TURN server is still being asked; its relay candidate (or its
    failure) arrives later as signals."""
    srv = LoopbackCoturn(secret=secrets.token_hex(8)).start()
    slow = await delay_proxy(("127.0.0.1", srv.port), 0.8)
    try:
        ice = servers(slow.port, srv.secret)
        a = P2PLink("b", cfg(ice, gather_timeout=5.0), controlling=True)
        b = P2PLink("a", cfg(ice, gather_timeout=5.0), controlling=False)
        sent: dict[str, list[tuple[str, list[str], bool]]] = {"a": [], "b": []}
        tasks: list[asyncio.Future[None]] = []
        try:
            da, db = await asyncio.gather(a.describe(trickle=True), b.describe(trickle=True))
            assert da.trickle and all(" typ host" in c for c in da.candidates)
            assert P2PDescription.from_dict(da.to_dict()) == da

            def wire(src: str, dst: P2PLink):
                def send(conn: str, lines: list[str], end: bool) -> None:
                    sent[src].append((conn, lines, end))
                    tasks.append(asyncio.ensure_future(dst.add_remote_candidates(conn, lines, end)))

                return send

            a.trickle(wire("a", b))
            b.trickle(wire("b", a))
            await asyncio.gather(a.connect(db), b.connect(da))
            # connected on the host pair before the relay candidates were even known
            assert not any(lines for _, lines, _ in sent["a"])
            assert kinds(a) == {"channel": "direct", "datagram": "direct"}
            await eventually(
                lambda: {c for c, _, e in sent["a"] if e} == {"channel", "datagram"},
                timeout=20,
                what="end-of-candidates for both connections",
            )
            # the proxy stands in front of the server like a NAT: STUN reports its address
            # (srflx), TURN allocates a relay
            later = [ln for _, lines, _ in sent["a"] for ln in lines]
            assert any(" typ relay" in ln for ln in later)
            assert all(" typ relay" in ln or " typ srflx" in ln for ln in later)
            # each trickled batch reaches the peer in a task of its own: wait for them (the
            # check ran before the last one had been taken in, once in ~20 CI runs)
            await asyncio.gather(*tasks)
            assert any(c.type == "relay" for c in b._agent.remote_candidates)
            await stream(a, b)
        finally:
            await asyncio.gather(a.close(), b.close())
    finally:
        slow.close()
        srv.cleanup()


async def test_trickled_candidates_are_strictly_checked():
    a = P2PLink("b", cfg(connect_timeout=2), controlling=True)
    try:
        with pytest.raises(DescriptionError):
            await a.add_remote_candidates("bogus", ["x"], False)
        with pytest.raises(DescriptionError):
            await a.add_remote_candidates("channel", ["not a candidate"], False)
        with pytest.raises(DescriptionError):
            await a.add_remote_candidates("channel", ["127.0.0.1 9"] * 40, False)
    finally:
        await a.close()
