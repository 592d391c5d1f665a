"""The room over BOSH (XEP-0124/0206) against Debian Prosody's mod_bosh: join, the (fake) focus,
XEP-0215, pairing and failover; the automatic fallback when a proxy blocks the WebSocket
upgrade; and the faults of real HTTP paths, injected by a small aiohttp reverse proxy in front
of the server (test/http_proxy.py): answers out of order, long polls ended early, an answer
lost after the server acted, terminal conditions, captive-portal pages, oversized bodies, and
a server restart. Messages are counted at the other end: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import struct

import pytest

from http_proxy import BoshProxy
from jitsi_teleop.links.muc import MucLink
from jitsi_teleop.room.config import ConnectError
from jitsi_teleop.room.discovery import discover
from jitsi_teleop.room.transport_bosh import TERMINATE_CONDITIONS, BoshTerminated, BoshTransport
from prosody_server import eventually, room_config, run_doctor

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]


@pytest.fixture
async def proxy(prosody):
    p = BoshProxy(prosody)
    await p.start()
    yield p
    await p.stop()


def via(proxy: BoshProxy, srv, room: str, **kw):
    """A room config that reaches the server's BOSH only through the proxy."""
    return room_config(srv, room, "bosh", bosh_url=proxy.bosh_url, **kw)


class Inbox:
    """Private message bodies one room receives, in arrival order."""

    def __init__(self, room) -> None:
        self.bodies: list[str] = []
        room.add_message_handler(self._on)

    def _on(self, _nick: str, msg) -> bool:
        if msg["body"]:
            self.bodies.append(msg["body"])
            return True
        return False


def send_text(room, nick: str, text: str) -> None:
    msg = room.make_private_message(nick)
    msg["body"] = text
    room.send(msg)


async def two_rooms(srv, rooms, name, first, second=None):
    a = rooms(first)
    b = rooms(second or room_config(srv, name, teleop_role="follower"))
    await a.join()
    await b.join()
    await a.wait_for_peer(b.config.teleop_role)
    await b.wait_for_peer(a.config.teleop_role)
    return a, b


# ---- Done when: join, focus, XEP-0215, pair and fail over, over BOSH -------------------
async def test_join_focus_and_extdisco_over_bosh(prosody, rooms, room_name):
    from test_room_focus import FakeFocus  # NOT Jicofo: its XMPP contract only

    focus = FakeFocus(prosody, not_ready=1)
    focus.connect()
    await asyncio.wait_for(focus.ready, 10)
    try:
        room = rooms(room_config(prosody, room_name, "bosh", focus=prosody.focus_domain))
        await room.join()
        choice = room.xmpp.connector.choice
        assert choice.kind == "bosh" and "no WebSocket URL" in choice.reason
        assert isinstance(room.xmpp.transport, BoshTransport)
        assert room.focus_reply is not None and room.focus_reply.ready
        assert len(focus.requests) == 2  # retried past ready="false"
        info = await focus.disco(room.occupant_jid(room.nick))
        assert "urn:jitsi-teleop:0" in info["disco_info"]["features"]
        result = await focus.offer_session(room.occupant_jid(room.nick))
        assert result["type"] == "result"
        await eventually(lambda: room.stats.jingle_declined == 1, what="jingle declined")
        servers = await room.ice_servers()
        turn = [s for s in servers if any(u.startswith("turn:") for u in s.urls)]
        assert turn and turn[0].username and turn[0].credential
        assert await room.ping() > 0
        # the session is a real XEP-0206 one: SASL, restart, bind, stream management
        assert room.xmpp.plugin["xep_0198"].enabled_out
        assert room.xmpp.transport.params.requests == 2 and room.xmpp.transport.params.hold == 1
    finally:
        focus.disconnect(wait=0.5)


async def test_pair_and_fail_over_to_the_room_over_bosh(prosody, rooms, room_name):
    """Two sessions whose rooms both ride on BOSH pair, stream over the data channel, fail
    over to the room path when it dies, and lose no reliable frame."""
    from jitsi_teleop.session import PATH_MUC, PATH_P2P, Session
    from test_session import FOLLOWER_OUT, LEADER_OUT, SECRET, Sink, fast_config, sample

    lroom = rooms(room_config(prosody, room_name, "bosh", teleop_role="leader", key_id="ab12"))
    froom = rooms(room_config(prosody, room_name, "bosh", teleop_role="follower", key_id="ab12"))
    await lroom.join()
    await froom.join()
    cfg = fast_config(reconnect_after=30.0)  # stay on the room once there
    lsink, fsink = Sink(), Sink()
    leader = Session(
        lroom, cfg, SECRET, "leader", LEADER_OUT, expected=FOLLOWER_OUT, on_receive=lsink
    )
    follower = Session(
        froom, cfg, SECRET, "follower", FOLLOWER_OUT, expected=LEADER_OUT, on_receive=fsink
    )
    await leader.start()
    await follower.start()
    try:
        await leader.wait_paired(30)
        await follower.wait_paired(30)
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=30,
            what="both ends on the data channel",
        )
        sent: list[int] = []
        for i in range(30):
            leader.publish(1, sample(i))
            if i % 5 == 0:
                leader.publish(2, struct.pack("<I", i))
                sent.append(i)
            await asyncio.sleep(0.01)
        assert follower._p2p is not None
        await follower._p2p.close()
        await eventually(
            lambda: leader.path == PATH_MUC and follower.path == PATH_MUC,
            timeout=20,
            what="both ends failed over to the room",
        )
        mark = len(fsink.items)
        for i in range(30, 400):
            leader.publish(1, sample(i))
            if i % 10 == 0:
                leader.publish(2, struct.pack("<I", i))
                sent.append(i)
            await asyncio.sleep(0.02)
            if PATH_MUC in fsink.paths_since(mark, "/joint_states") and i > 60:
                break
        assert PATH_MUC in fsink.paths_since(mark, "/joint_states"), "stream not over the room"
        await eventually(
            lambda: fsink.values("/mode") == sent, timeout=30, what="every reliable frame"
        )
        js = fsink.values("/joint_states")
        assert js == sorted(js) and len(set(js)) == len(js)
        assert isinstance(lroom.xmpp.transport, BoshTransport)
        assert isinstance(froom.xmpp.transport, BoshTransport)
    finally:
        await leader.close()
        await follower.close()


async def test_budget_pays_for_bosh_requests_and_polls(prosody, rooms, room_name):
    """500 Hz of JointState-sized frames between two BOSH rooms under the 10 kB/s limit: the
    newest frame and every reliable one arrive, and the budget is charged the HTTP headers,
    body wrappers and long polls too, so what goes on the wire stays within it."""
    leader, follower = await two_rooms(
        prosody,
        rooms,
        room_name,
        room_config(prosody, room_name, "bosh", teleop_role="leader"),
        room_config(prosody, room_name, "bosh", teleop_role="follower"),
    )
    link = MucLink(leader, follower.nick)
    back = MucLink(follower, leader.nick)
    got: list[tuple[int, int]] = []
    back.set_receive_callback(lambda n, s, p: got.append((s, struct.unpack_from("<I", p)[0])))
    transport = leader.xmpp.transport
    wire0, charged0, frames0 = transport.bytes_sent, leader.stats.bytes_sent, link.stats.bytes_sent
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(1000):  # 2 s at 500 Hz
        link.send(5, struct.pack("<I", i) + bytes(272), latest=True)
        if i % 100 == 0:
            link.send(9, struct.pack("<I", i) + b"cmd", latest=False)
        await asyncio.sleep(0.002)
    await eventually(lambda: (5, 999) in got, timeout=15, what="newest frame delivered")
    await eventually(
        lambda: [v for s, v in got if s == 9] == list(range(0, 1000, 100)),
        timeout=15,
        what="reliable frames delivered in order",
    )
    elapsed = loop.time() - t0
    wire = transport.bytes_sent - wire0
    charged = leader.stats.bytes_sent - charged0
    frames = link.stats.bytes_sent - frames0
    assert link.stats.thinned > 0 and leader.stats.disconnects == 0
    assert charged > 1.3 * frames  # headers, wrappers and polls are charged, not just stanzas
    assert charged >= 0.9 * wire  # nearly all the wire bytes (SM acks and pings are not)
    budget = leader.config.rate_bytes_per_s
    assert wire <= 1.2 * budget * elapsed + 2000  # the budget, not the server, is the limit


# ---- automatic fallback ----------------------------------------------------------------
async def test_proxy_blocking_the_websocket_upgrade_falls_back_to_bosh(
    prosody, proxy, rooms, room_name
):
    """A meeting URL on a proxy that strips Upgrade: config.js names both URLs, the WebSocket
    handshake fails, the client joins over BOSH on its own and stays there after a cut."""
    settings = await discover(f"{proxy.base}{room_name}")
    assert settings.websocket_url == proxy.websocket_url and settings.bosh_url == proxy.bosh_url
    config = settings.room_config(teleop_role="leader", backoff_initial=0.2, backoff_max=1.0)
    room, peer = await two_rooms(prosody, rooms, room_name, config)
    choice = room.xmpp.connector.choice
    assert choice.kind == "bosh" and "fell back to BOSH" in choice.reason
    assert room.xmpp.stream_url == choice.url and choice.url.startswith(proxy.bosh_url)
    assert "WebSocket handshake refused" in choice.reason and proxy.ws_refused == 1
    inbox, back = Inbox(room), Inbox(peer)
    send_text(peer, room.nick, "over the proxy")
    send_text(room, peer.nick, "and back")
    await eventually(lambda: inbox.bodies == ["over the proxy"], what="peer -> bosh")
    await eventually(lambda: back.bodies == ["and back"], what="bosh -> peer")
    room.xmpp.abort()  # a cut: the reconnect goes straight to BOSH (no second refusal)
    await eventually(lambda: room.stats.rejoins + room.stats.resumes >= 1 and room.online)
    assert proxy.ws_refused == 1 and "staying on BOSH" in room.xmpp.connector.choice.reason


async def test_websocket_first_when_it_works(prosody, rooms, room_name):
    """Both URLs and a working WebSocket: the WebSocket is used (its <open/> was probed, so
    the stream must still start cleanly) and frames flow."""
    room, peer = await two_rooms(
        prosody,
        rooms,
        room_name,
        room_config(prosody, room_name, "ws", bosh_url=prosody.bosh_url, teleop_role="leader"),
    )
    assert room.xmpp.connector.choice.kind == "websocket"
    assert not isinstance(room.xmpp.transport, BoshTransport)
    inbox = Inbox(room)
    send_text(peer, room.nick, "over the websocket")
    await eventually(lambda: inbox.bodies == ["over the websocket"], what="message")


async def test_websocket_that_passes_no_frames_falls_back(prosody, proxy, rooms, room_name):
    """A proxy completes the upgrade and then passes nothing (buffering): the probe finds no
    XMPP stream, and the client joins over BOSH."""
    proxy.ws_block = "blackhole"
    settings = await discover(f"{proxy.base}{room_name}")
    config = settings.room_config(teleop_role="leader", connect_timeout=4.0)
    room, _peer = await two_rooms(prosody, rooms, room_name, config)
    choice = room.xmpp.connector.choice
    assert choice.kind == "bosh" and "no XMPP stream answered" in choice.reason


async def test_websocket_handshake_that_hangs_falls_back_in_time(prosody, proxy, rooms, room_name):
    """A proxy that never answers the upgrade: the WebSocket gets half the connect time, so
    the join still completes over BOSH within the join's own limit."""
    proxy.ws_block = "hang"
    settings = await discover(f"{proxy.base}{room_name}")
    config = settings.room_config(teleop_role="leader", connect_timeout=4.0)
    room, _peer = await two_rooms(prosody, rooms, room_name, config)
    choice = room.xmpp.connector.choice
    assert choice.kind == "bosh" and "timed out after 2 s" in choice.reason


async def test_config_js_with_bosh_only_joins_over_bosh(prosody, proxy, rooms, room_name):
    """config.js names only bosh (its websocket commented out, as older installs ship it): the
    usual WebSocket path is tried, and the client joins over config.js's BOSH URL."""
    proxy.config_js_websocket = False
    settings = await discover(f"{proxy.base}{room_name}")
    assert settings.websocket_guessed and settings.bosh_url == proxy.bosh_url
    assert "bosh but no websocket" in settings.transport_reason
    room, _peer = await two_rooms(
        prosody, rooms, room_name, settings.room_config(teleop_role="leader")
    )
    assert room.xmpp.connector.choice.kind == "bosh"


async def test_doctor_says_which_transport_and_why(prosody, proxy, room_name):
    code, out, err = await run_doctor(f"{proxy.base}{room_name}", "--no-focus")
    assert code == 0, out + err
    assert f"via bosh {proxy.bosh_url}" in out
    assert "fell back to BOSH" in out and "config.js sets websocket" in out
    code, out, err = await run_doctor(
        "--domain", prosody.domain, "--room", room_name, "--bosh", prosody.bosh_url
    )
    assert code == 0, out + err
    assert "BOSH forced" in out and f"via bosh {prosody.bosh_url}" in out


# ---- bad input -------------------------------------------------------------------------
async def test_answers_out_of_order_are_delivered_in_rid_order(prosody, proxy, rooms, room_name):
    """The proxy holds back every other answer, so later answers overtake earlier ones; the
    client still hands stanzas to XMPP in rid order."""
    proxy.delay = lambda rid: 0.15 if rid % 2 else 0.0
    room, peer = await two_rooms(
        prosody, rooms, room_name, via(proxy, prosody, room_name, teleop_role="leader")
    )
    inbox = Inbox(room)
    expected = []
    for i in range(30):
        expected.append(f"m{i}")
        send_text(peer, room.nick, f"m{i}")
        send_text(room, peer.nick, f"r{i}")  # our own requests, so several are open at once
        await asyncio.sleep(0.03)
    await eventually(lambda: len(inbox.bodies) >= 30, timeout=30, what="all messages")
    assert inbox.bodies == expected
    assert proxy.inversions() > 0, "the proxy never reordered: the test proved nothing"
    assert room.xmpp.transport.responses_reordered > 0
    assert room.stats.disconnects == 0


@pytest.mark.parametrize("cut_with", ["504", "close"])
async def test_proxy_ending_long_polls_early(prosody, proxy, rooms, room_name, cut_with):
    """A proxy that ends every held request after 0.2 s (504, or dropping the connection):
    the client sends the same rid again, the session lives on, nothing is lost."""
    proxy.cut_polls_after, proxy.cut_with = 0.2, cut_with
    room, peer = await two_rooms(
        prosody, rooms, room_name, via(proxy, prosody, room_name, teleop_role="leader")
    )
    inbox = Inbox(room)
    expected = [f"m{i}" for i in range(8)]
    for text in expected:
        send_text(peer, room.nick, text)
        await asyncio.sleep(0.5)  # longer than the proxy lets a poll live
    await eventually(lambda: len(inbox.bodies) >= 8, timeout=20, what="all messages")
    assert inbox.bodies == expected
    transport = room.xmpp.transport
    assert proxy.early_cuts >= 3 and transport.requests_resent >= 3
    assert room.stats.disconnects == 0 and room.stats.rejoins == 0


async def test_idle_session_behind_a_short_proxy_read_timeout_lives_on(
    prosody, proxy, rooms, room_name
):
    """Nothing to say for a while, and a proxy that ends each held poll after 1.1 s: the same
    long poll is cut again and again, which is not a failing path; the session stays."""
    proxy.cut_polls_after = 1.1
    room, peer = await two_rooms(
        prosody,
        rooms,
        room_name,
        via(proxy, prosody, room_name, teleop_role="leader", ping_interval=60.0),
        room_config(prosody, room_name, teleop_role="follower", ping_interval=60.0),
    )
    inbox = Inbox(room)
    cuts = proxy.early_cuts
    await eventually(lambda: proxy.early_cuts >= cuts + 6, timeout=20, what="six cuts")
    assert room.stats.disconnects == 0 and room.online
    send_text(peer, room.nick, "still there")
    await eventually(lambda: inbox.bodies == ["still there"], what="message after the cuts")


async def test_answer_lost_after_the_server_acted_is_neither_lost_nor_doubled(
    prosody, proxy, rooms, room_name
):
    """The proxy forwards a request, the server acts on it, the answer is lost (502): the
    client sends the same rid and body again, the server does not act twice and replays its
    answer, so the stanzas in both directions arrive exactly once."""
    room, peer = await two_rooms(
        prosody, rooms, room_name, via(proxy, prosody, room_name, teleop_role="leader")
    )
    inbox, back = Inbox(room), Inbox(peer)
    proxy.faults.append("lose")
    send_text(room, peer.nick, "sent once")  # this request's answer will be lost
    await eventually(lambda: back.bodies == ["sent once"], what="request reached the peer")
    send_text(peer, room.nick, "answer")  # carried by the lost answer, then by the replay
    await eventually(lambda: "answer" in inbox.bodies, what="answer replayed")
    assert any(a.fault == "lose" for a in proxy.answered)
    send_text(room, peer.nick, "after")
    await eventually(lambda: back.bodies[-1:] == ["after"], what="session goes on")
    await asyncio.sleep(0.5)
    assert back.bodies == ["sent once", "after"] and inbox.bodies == ["answer"]
    assert room.xmpp.transport.requests_resent >= 1 and room.stats.disconnects == 0


async def test_wrong_domain_or_url_is_a_clear_join_error(prosody, rooms, room_name):
    """What Prosody itself answers: a domain it does not serve (improper-addressing at
    session creation) and a path that is not BOSH (HTTP 404)."""
    wrong_domain = rooms(
        room_config(prosody, room_name, "bosh", domain="elsewhere.test", reconnect=False)
    )
    with pytest.raises(ConnectError) as info:
        await wrong_domain.join()
    assert "improper-addressing" in info.value.reason
    assert "does not serve this XMPP domain" in info.value.reason
    wrong_path = rooms(
        room_config(
            prosody,
            room_name,
            "bosh",
            bosh_url=prosody.bosh_url.replace("http-bind", "bosh"),
            reconnect=False,
        )
    )
    with pytest.raises(ConnectError) as info:
        await wrong_path.join()
    assert "BOSH session creation refused: HTTP 404" in info.value.reason


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("condition", sorted(TERMINATE_CONDITIONS))
async def test_each_terminal_condition_is_a_clear_error(prosody, proxy, condition):
    recorder = _Recorder()
    transport = await BoshTransport.open(proxy.bosh_url, recorder, prosody.domain)
    transport.start_reading()
    await eventually(lambda: b"stream:features" in recorder.data, what="features")
    proxy.faults.append(f"terminate:{condition}")
    transport.write(b"<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    exc = await asyncio.wait_for(recorder.lost, 10)
    assert isinstance(exc, BoshTerminated) and exc.condition == condition
    meaning, retryable = TERMINATE_CONDITIONS[condition]
    assert str(exc).startswith("BOSH session terminated by the server") and meaning in str(exc)
    assert exc.retryable == retryable


@pytest.mark.parametrize(
    "fault, words",
    [
        ("terminate:item-not-found", "item-not-found"),
        ("terminate:policy-violation", "policy-violation"),
        ("terminate:remote-connection-failed", "remote-connection-failed"),
        ("huge", "over the 1048576-byte limit"),
        ("html", "not a BOSH <body/>"),
        ("status:404", "item-not-found"),
    ],
)
async def test_session_ends_reconnect_and_reliable_frames_survive(
    prosody, proxy, rooms, room_name, fault, words
):
    """A session the server (or a proxy) ends mid-stream: a clear error, a new session and a
    rejoin, and every reliable frame sent meanwhile arrives once, in order."""
    room, peer = await two_rooms(
        prosody,
        rooms,
        room_name,
        via(proxy, prosody, room_name, teleop_role="leader", key_id="a1"),
        room_config(prosody, room_name, teleop_role="follower", key_id="b2"),
    )
    to_room = MucLink(peer, room.nick)
    at_room = MucLink(room, peer.nick)
    got: list[int] = []
    at_room.set_receive_callback(lambda _n, _s, p: got.append(int(p)))
    for i in range(5):
        to_room.send(2, b"%d" % i, latest=False)
    await eventually(lambda: got == list(range(5)), what="frames before")
    proxy.faults.append(fault)
    for i in range(5, 20):
        to_room.send(2, b"%d" % i, latest=False)
        await asyncio.sleep(0.05)
    await eventually(lambda: got[-1:] == [19], timeout=30, what="last frame")
    assert got == list(range(20))
    assert room.stats.disconnects >= 1 and room.stats.rejoins + room.stats.resumes >= 1
    assert words in (room.xmpp.last_error or "")


async def test_server_restart_over_bosh(fresh_prosody, rooms, room_name):
    srv = fresh_prosody
    room, peer = await two_rooms(
        srv, rooms, room_name, room_config(srv, room_name, "bosh", teleop_role="leader")
    )
    to_room = MucLink(peer, room.nick)
    got: list[bytes] = []
    MucLink(room, peer.nick).set_receive_callback(lambda _n, _s, p: got.append(p))
    await asyncio.get_running_loop().run_in_executor(None, srv.restart)
    await eventually(
        lambda: room.stats.rejoins >= 1 and room.online and peer.online,
        timeout=30,
        what="rejoined over BOSH",
    )
    assert isinstance(room.xmpp.transport, BoshTransport)
    err = room.xmpp.last_error or ""
    assert "item-not-found" in err or "BOSH" in err, err
    await eventually(lambda: to_room.peer_nick == room.nick, what="peer link follows")
    to_room.send(3, b"after restart", latest=False)
    await eventually(lambda: got == [b"after restart"], timeout=15, what="frame after restart")
