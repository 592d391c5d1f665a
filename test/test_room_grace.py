"""The rejoin grace, stanza by stanza: which occupants a rejoin keeps, and for how long.

The stanzas are the ones Prosody sends when it stops cleanly (recorded in a real restart,
see ``test_room_restart``); feeding them in a fixed order makes the race that a real
restart hits only sometimes happen every time."""

from __future__ import annotations

import asyncio

from slixmpp import Presence

from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.room.occupants import OccupantJoined, OccupantLeft
from jitsi_teleop.room.room import Room
from jitsi_teleop.room.stanzas import register_stanzas

ROOM = "r@conference.meet.test"
ME, PEER = "0000aaaa", "0000bbbb"

register_stanzas()


def presence(nick: str, jid: str, *codes: int, unavailable: bool = False) -> Presence:
    p = Presence()
    p["from"] = f"{ROOM}/{nick}"
    if unavailable:
        p["type"] = "unavailable"
    x = p.xml.makeelement("{http://jabber.org/protocol/muc#user}x", {})
    x.append(x.makeelement("{http://jabber.org/protocol/muc#user}item", {"jid": jid}))
    for code in codes:
        x.append(x.makeelement("{http://jabber.org/protocol/muc#user}status", {"code": str(code)}))
    p.xml.append(x)
    if not unavailable and nick == PEER:
        tp = p["teleop"]
        tp["v"], tp["role"], tp["robot"], tp["key"] = "0", "follower", "r", "bb"
    return p


async def joined_room(grace: float) -> tuple[Room, list[object]]:
    room = Room(
        RoomConfig(room="r", domain="meet.test", tcp_host="127.0.0.1", nick=ME, rejoin_grace=grace)
    )
    room.config.reconnect = False
    room._building = {}
    room._join_future = asyncio.get_running_loop().create_future()
    room._on_room_presence(presence(PEER, "peer@meet.test/1"))
    room._on_room_presence(presence(ME, "me@meet.test/1", 110))
    room._online.set()
    events: list[object] = []
    room.subscribe(events.append)
    return room, events


async def rejoin(room: Room, *peers: Presence) -> None:
    """Our stream ended; we come back: the others' presences, then our own."""
    room._online.clear()
    room._building = {}
    room._join_future = asyncio.get_running_loop().create_future()
    for p in peers:
        room._on_room_presence(p)
    room._on_room_presence(presence(ME, "me@meet.test/2", 110))
    room._online.set()


async def test_a_peer_back_before_us_outlives_the_grace_begun_while_we_were_away() -> None:
    room, events = await joined_room(grace=0.2)
    # the server stops: the peer "lost for technical reasons" (333) reaches us before our
    # own stream ends, so it is kept for the grace
    room._on_room_presence(presence(PEER, "peer@meet.test/1", 333, unavailable=True))
    assert PEER in room.occupants
    # the peer was quicker than us: it is in the room when we rejoin
    await rejoin(room, presence(PEER, "peer@meet.test/2"))
    await asyncio.sleep(0.5)  # past the grace
    assert PEER in room.occupants  # was removed by the grace's expiry: room path gone
    assert not [e for e in events if isinstance(e, OccupantLeft)]
    await room.close()


async def test_a_peer_not_back_after_our_rejoin_leaves_when_the_grace_ends() -> None:
    room, events = await joined_room(grace=0.2)
    room._on_room_presence(presence(PEER, "peer@meet.test/1", 333, unavailable=True))
    await rejoin(room)  # the peer is not there (yet)
    assert PEER in room.occupants  # kept meanwhile: no churn if it comes back in time
    await asyncio.sleep(0.5)
    assert PEER not in room.occupants
    assert [e.occupant.nick for e in events if isinstance(e, OccupantLeft)] == [PEER]
    await room.close()


async def test_a_peer_back_within_the_grace_is_kept() -> None:
    room, events = await joined_room(grace=0.3)
    room._on_room_presence(presence(PEER, "peer@meet.test/1", 333, unavailable=True))
    await rejoin(room)
    room._on_room_presence(presence(PEER, "peer@meet.test/2"))  # after us, in time
    await asyncio.sleep(0.6)
    assert PEER in room.occupants
    assert not [e for e in events if isinstance(e, OccupantLeft)]
    assert not [e for e in events if isinstance(e, OccupantJoined)]  # never "left"
    await room.close()
