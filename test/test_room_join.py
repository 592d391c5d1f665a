"""Two teleop endpoints and a plain occupant in one room on a real Prosody, over WS and TCP."""

from __future__ import annotations

import asyncio

import pytest

from jitsi_teleop.links.muc import MucLink
from jitsi_teleop.room.config import JoinError, RoomConfig
from jitsi_teleop.room.occupants import OccupantJoined, OccupantLeft
from prosody_server import eventually, room_config

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(60)]


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_endpoints_and_plain_occupant_see_each_other(prosody, rooms, room_name, transport):
    leader = rooms(
        room_config(
            prosody, room_name, transport, teleop_role="leader", robot="dexter-a", key_id="aa11"
        )
    )
    follower = rooms(
        room_config(
            prosody, room_name, transport, teleop_role="follower", robot="dexter-b", key_id="bb22"
        )
    )
    human = rooms(room_config(prosody, room_name, transport, teleop_role=None))
    events = []
    me = await leader.join()
    leader.subscribe(events.append)
    assert me.is_self and me.teleop is not None and me.teleop.role == "leader"
    assert len(me.nick) == 8 and int(me.nick, 16) >= 0
    await follower.join()
    await human.join()

    peer = await leader.wait_for_peer("follower", timeout=10)
    assert peer.nick == follower.nick
    assert peer.teleop.robot == "dexter-b" and peer.teleop.key_id == "bb22"
    back = await follower.wait_for_peer("leader", timeout=10)
    assert back.nick == leader.nick and back.teleop.robot == "dexter-a"
    await eventually(lambda: human.nick in leader.occupants, what="human seen")
    # the human is an occupant but not a peer
    assert [p.nick for p in leader.peers] == [follower.nick]
    assert not leader.occupants[human.nick].is_endpoint
    assert {p.teleop.role for p in human.peers} == {"leader", "follower"}
    joined = [e.occupant.nick for e in events if isinstance(e, OccupantJoined)]
    assert follower.nick in joined and human.nick in joined

    # frames both ways on the slow path
    got_f, got_l = [], []
    to_f = MucLink(leader, follower.nick)
    to_l = MucLink(follower, leader.nick)
    to_f.set_receive_callback(lambda *a: None)
    to_l.set_receive_callback(lambda nick, s, p: got_f.append((nick, s, p)))
    to_f.set_receive_callback(lambda nick, s, p: got_l.append((nick, s, p)))
    for i in range(5):
        to_f.send(7, b"cmd%d" % i, latest=False)
    to_l.send(3, b"\x00\xffstate", latest=True)
    await eventually(lambda: len(got_f) == 5 and len(got_l) == 1, what="frames delivered")
    assert got_f == [(leader.nick, 7, b"cmd%d" % i) for i in range(5)]  # ordered
    assert got_l == [(follower.nick, 3, b"\x00\xffstate")]
    assert to_f.stats.sent == 5 and to_l.stats.delivered == 5

    # JSON signalling (the fast path's offer/answer travels this way)
    sigs = []
    to_l.set_signal_callback(lambda nick, obj: sigs.append((nick, obj)))
    to_f.send_signal({"type": "offer", "sdp": "v=0\r\n"})
    await eventually(lambda: sigs, what="signal delivered")
    assert sigs == [(leader.nick, {"type": "offer", "sdp": "v=0\r\n"})]

    # leaving is seen
    await human.close()
    await eventually(
        lambda: any(isinstance(e, OccupantLeft) and e.occupant.nick == human.nick for e in events),
        what="human left",
    )
    assert human.nick not in leader.occupants
    await to_f.close()
    await to_l.close()


async def test_wrong_room_password(prosody, rooms, room_name):
    owner = rooms(room_config(prosody, room_name, teleop_role="leader"))
    await owner.join()
    await owner.set_password("s3cret")
    wrong = rooms(room_config(prosody, room_name, teleop_role="follower", password="nope"))
    with pytest.raises(JoinError) as info:
        await wrong.join()
    assert info.value.condition == "not-authorized"
    assert "password" in info.value.reason
    missing = rooms(room_config(prosody, room_name, teleop_role="follower", tcp_host=None))
    with pytest.raises(JoinError):
        await missing.join()
    right = rooms(room_config(prosody, room_name, "tcp", teleop_role="follower", password="s3cret"))
    await right.join()
    assert (await owner.wait_for_peer("follower")).nick == right.nick


async def test_room_creation_refused(rooms, room_name):
    """Like Jitsi without its focus: only admins may create rooms."""
    from prosody_server import ProsodyServer, prosody_available

    if not prosody_available():
        pytest.skip("prosody not installed")
    with ProsodyServer(restrict_room_creation=True) as srv:
        room = rooms(room_config(srv, room_name))
        with pytest.raises(JoinError) as info:
            await room.join()
        assert info.value.condition == "not-allowed"
        assert "creation" in info.value.reason


async def test_ice_servers_from_extdisco(prosody, rooms, room_name):
    room = rooms(room_config(prosody, room_name))
    await room.join()
    servers = await room.ice_servers()
    urls = [u for s in servers for u in s.urls]
    assert "stun:127.0.0.1:3478" in urls
    assert "turn:127.0.0.1:3478?transport=udp" in urls
    assert "turns:127.0.0.1:5349?transport=tcp" in urls
    turn = next(s for s in servers if s.urls[0].startswith("turn:"))
    # TURN REST credentials: username = expiry, password = base64(HMAC-SHA1(secret, username))
    import base64
    import hashlib
    import hmac

    assert turn.username and turn.username.isdigit()
    expected = base64.b64encode(
        hmac.new(prosody.turn_secret.encode(), turn.username.encode(), hashlib.sha1).digest()
    ).decode()
    assert turn.credential == expected
    rtt = await room.ping()
    assert rtt >= 0


def test_config_validation():
    with pytest.raises(ValueError):
        RoomConfig(room="r", domain="d")  # no transport
    with pytest.raises(ValueError):
        RoomConfig(room="r", domain="d", websocket_url="http://x/xmpp-websocket")
    with pytest.raises(ValueError):
        RoomConfig(room="r", domain="d", tcp_host="h", nick="NOTHEX!!")
    with pytest.raises(ValueError):
        RoomConfig(room="bad room", domain="d", tcp_host="h")
    with pytest.raises(ValueError):
        RoomConfig(room="r", domain="d", tcp_host="h", key_id="NOT-HEX")
    with pytest.raises(ValueError):
        RoomConfig(room="r", domain="d", tcp_host="h", robot="<robot>")
    cfg = RoomConfig(room="MyRoom", domain="meet.test", tcp_host="127.0.0.1")
    assert cfg.room_jid == "myroom@conference.meet.test"


async def test_unreachable_server(rooms):
    from conftest import free_tcp_port
    from jitsi_teleop.room.config import ConnectError

    port = free_tcp_port()
    for cfg in (
        RoomConfig(
            room="r",
            domain="meet.test",
            websocket_url=f"ws://127.0.0.1:{port}/ws",
            connect_timeout=2,
        ),
        RoomConfig(
            room="r", domain="meet.test", tcp_host="127.0.0.1", tcp_port=port, connect_timeout=2
        ),
    ):
        room = rooms(cfg)
        with pytest.raises(ConnectError):
            await asyncio.wait_for(room.join(), 15)
