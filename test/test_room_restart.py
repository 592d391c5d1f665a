"""Server restart mid-session: both ends reconnect, rejoin, keep their peers, frames flow again."""

from __future__ import annotations

import asyncio

import pytest

from jitsi_teleop.links.muc import MucLink
from jitsi_teleop.room.occupants import OccupantLeft, RoomJoined, RoomLeft
from prosody_server import eventually, room_config

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]


async def test_server_restart_rejoin(fresh_prosody, rooms, room_name):
    srv = fresh_prosody
    leader = rooms(room_config(srv, room_name, teleop_role="leader", key_id="aa"))
    follower = rooms(room_config(srv, room_name, "tcp", teleop_role="follower", key_id="bb"))
    await leader.join()
    await follower.join()
    await leader.wait_for_peer("follower")
    await follower.wait_for_peer("leader")
    events = []
    leader.subscribe(events.append)
    to_f = MucLink(leader, follower.nick)
    to_l = MucLink(follower, leader.nick)
    got = []
    to_l.set_receive_callback(lambda n, s, p: got.append(p))
    to_f.send(1, b"before", latest=False)
    await eventually(lambda: got == [b"before"], what="frame before restart")

    peer_counts: list[int] = []

    async def sample() -> None:
        while True:
            peer_counts.append(len(leader.peers))
            await asyncio.sleep(0.01)

    sampler = asyncio.ensure_future(sample())
    await asyncio.get_running_loop().run_in_executor(None, srv.restart)

    await eventually(
        lambda: (
            leader.stats.rejoins >= 1
            and follower.stats.rejoins >= 1
            and leader.online
            and follower.online
        ),
        timeout=30,
        what="both rejoined",
    )
    await eventually(
        lambda: [p.nick for p in leader.peers] == [follower.nick],
        timeout=15,
        what="peer list reconciled",
    )
    sampler.cancel()
    # the peer list was kept through the outage and the rejoin (never emptied, no leave)
    assert peer_counts and min(peer_counts) == 1
    assert not [e for e in events if isinstance(e, OccupantLeft)]
    assert any(isinstance(e, RoomLeft) for e in events)
    # a server that shuts down (Prosody's own-presence status 332/333) is not a kick: a kick
    # makes the session pair again, which a restart must not
    assert not [e for e in events if isinstance(e, RoomLeft) and e.removed]
    assert leader.stats.kicked == 0 and follower.stats.kicked == 0
    assert any(isinstance(e, RoomJoined) and e.rejoin for e in events)
    # the peer list survived (the peer is there again under its nick)
    await eventually(
        lambda: [p.nick for p in leader.peers] == [follower.nick],
        timeout=15,
        what="peer back in leader's list",
    )
    await eventually(
        lambda: [p.nick for p in follower.peers] == [leader.nick],
        timeout=15,
        what="peer back in follower's list",
    )
    # frames flow again, latest-only and reliable
    to_f.send(1, b"after", latest=False)
    to_f.send(2, b"state", latest=True)
    await eventually(
        lambda: b"after" in got and b"state" in got, timeout=15, what="frames after restart"
    )


async def test_kicked_peer_reconciled_after_rejoin(fresh_prosody, rooms, room_name):
    """A peer that vanished while we were away is reported as left after our rejoin."""
    srv = fresh_prosody
    leader = rooms(room_config(srv, room_name, teleop_role="leader"))
    follower = rooms(room_config(srv, room_name, teleop_role="follower", reconnect=False))
    leader.config.rejoin_grace = 1.0  # how long a missing peer is kept after our rejoin
    await leader.join()
    await follower.join()
    await leader.wait_for_peer("follower")
    left = []
    leader.subscribe(lambda e: left.append(e) if type(e).__name__ == "OccupantLeft" else None)
    await asyncio.get_running_loop().run_in_executor(None, srv.restart)
    await eventually(
        lambda: leader.stats.rejoins >= 1 and leader.online, timeout=30, what="leader rejoined"
    )
    await eventually(
        lambda: [e.occupant.nick for e in left] == [follower.nick], what="follower reported as left"
    )
    assert leader.peers == []


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_network_cut(fresh_prosody, rooms, room_name, transport):
    """A dropped connection (no stream close) comes back; frames flow both ways again.

    Stock Prosody cannot resume anonymous sessions (it keys them by the random username;
    Jitsi's mod_jitsi_session restores it from ``?previd=``, which we send). So here the
    first cut ends in a rejoin under a new nick while the old session hibernates as a ghost;
    the peer's link follows us by key id. Resumption is then switched off, so the next cut
    frees the nick at once and we come back under the same nick.
    """
    srv = fresh_prosody
    leader = rooms(room_config(srv, room_name, transport, teleop_role="leader", key_id="a1"))
    follower = rooms(room_config(srv, room_name, teleop_role="follower", key_id="b2"))
    await leader.join()
    await follower.join()
    await follower.wait_for_peer("leader")
    await leader.wait_for_peer("follower")
    to_f = MucLink(leader, follower.nick)
    to_l = MucLink(follower, leader.nick)
    got_f, got_l = [], []
    to_l.set_receive_callback(lambda n, s, p: got_f.append(p))
    to_f.set_receive_callback(lambda n, s, p: got_l.append(p))

    for cut in (1, 2):
        leader.xmpp.abort()  # like a cable pulled: no </stream>, no unavailable presence
        await eventually(
            lambda c=cut: leader.stats.resumes + leader.stats.rejoins >= c and leader.online,
            timeout=20,
            what=f"back after cut {cut}",
        )
        await eventually(lambda: to_l.peer_nick == leader.nick, what="peer link follows")
        to_f.send(4, b"to follower %d" % cut, latest=False)
        to_l.send(4, b"to leader %d" % cut, latest=False)
        await eventually(
            lambda c=cut: b"to follower %d" % c in got_f and b"to leader %d" % c in got_l,
            what=f"frames after cut {cut}",
        )
        if cut == 1:
            nick_after_first = leader.nick
            if leader.stats.resumes == 0:  # stock Prosody: resumption is now off
                assert leader.xmpp.plugin["xep_0198"].allow_resume is False
    if leader.stats.resumes == 0:
        assert leader.nick == nick_after_first  # no ghost the second time
    assert leader.stats.disconnects == 2


def test_websocket_url_query():
    from jitsi_teleop.room.transport_ws import websocket_url

    url = websocket_url(
        "wss://meet.example.org/xmpp-websocket?x=1&room=old", "myroom", "tok", previd="abc"
    )
    assert url == "wss://meet.example.org/xmpp-websocket?x=1&room=myroom&token=tok&previd=abc"
    with pytest.raises(ValueError):
        websocket_url("https://meet.example.org/xmpp-websocket")


async def test_silent_server_detected_by_ping(fresh_prosody, rooms, room_name):
    """A server that stops answering (no FIN, like a dead NAT) is detected by XEP-0199
    pings; the client reconnects once it answers again."""
    import os
    import signal

    srv = fresh_prosody
    leader = rooms(
        room_config(
            srv,
            room_name,
            "tcp",
            teleop_role="leader",
            key_id="a1",
            ping_interval=0.5,
            ping_timeout=1.0,
            ping_failures=2,
            connect_timeout=2.0,
        )
    )
    follower = rooms(
        room_config(srv, room_name, teleop_role="follower", key_id="b2", ping_interval=30.0)
    )
    await leader.join()
    await follower.join()
    await follower.wait_for_peer("leader")
    to_f = MucLink(leader, follower.nick)
    got = []
    MucLink(follower, leader.nick).set_receive_callback(lambda n, s, p: got.append(p))
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        await eventually(
            lambda: leader.stats.pings_failed >= 2 and not leader.online,
            timeout=15,
            what="dead server detected",
        )
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    await eventually(lambda: leader.online, timeout=20, what="back online")
    to_f.send(1, b"after freeze", latest=False)
    await eventually(lambda: b"after freeze" in got, timeout=10, what="frame after freeze")


async def test_peer_still_listed_after_the_grace_of_repeated_restarts(
    fresh_prosody, rooms, room_name
):
    """Prosody stopping cleanly sometimes tells one end that the other left "for technical
    reasons" (333) just before its own stream ends: that peer is kept for the rejoin grace.
    Whoever is back first, both must still list each other once every grace is over. (Which
    end hears the 333, and who rejoins first, varies from restart to restart: this caught
    the grace removing a peer that came back in one run of four; test_room_grace makes that
    order happen every time.)"""
    srv = fresh_prosody
    leader = rooms(room_config(srv, room_name, teleop_role="leader", key_id="aa"))
    follower = rooms(room_config(srv, room_name, "tcp", teleop_role="follower", key_id="bb"))
    for r in (leader, follower):
        r.config.rejoin_grace = 4.0  # longer than the outage, shorter than the test
    await leader.join()
    await follower.join()
    await leader.wait_for_peer("follower")
    await follower.wait_for_peer("leader")
    for n in range(1, 4):
        await asyncio.get_running_loop().run_in_executor(None, srv.restart)
        await eventually(
            lambda n=n: (
                leader.stats.rejoins >= n
                and follower.stats.rejoins >= n
                and leader.online
                and follower.online
                and [p.nick for p in leader.peers] == [follower.nick]
                and [p.nick for p in follower.peers] == [leader.nick]
            ),
            timeout=30,
            what=f"both back after restart {n}",
        )
        await asyncio.sleep(4.5)  # past the grace of anything kept through the outage
        assert [p.nick for p in leader.peers] == [follower.nick], f"restart {n}"
        assert [p.nick for p in follower.peers] == [leader.nick], f"restart {n}"
