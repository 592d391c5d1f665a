"""Two sites with accounts on a plain XMPP server that has no MUC at all pair and carry their
streams by one-to-one messages only (room.direct.DirectRoom under the same session), whichever
site comes first; a stranger's account is never taken as a peer; the console answers
one-to-one there too."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct

import pytest
from slixmpp import ClientXMPP

from jitsi_teleop.console.chat import ChatConsole
from jitsi_teleop.console.console import Console, ConsoleConfig
from jitsi_teleop.console.eventlog import EventLog
from jitsi_teleop.links.p2p import P2PConfig, loopback_only
from jitsi_teleop.pairing import Secret
from jitsi_teleop.room.account import Account
from jitsi_teleop.room.config import RoomError
from jitsi_teleop.room.direct import DirectRoom, open_room
from jitsi_teleop.room.room import Room
from jitsi_teleop.session import PATH_MUC, PATH_P2P, Session, SessionConfig
from jitsi_teleop.wire import StreamDescriptor
from prosody_server import ProsodyServer, eventually, prosody_available, room_config
from test_console import Recorder

pytest_plugins = ["conftest_prosody"]
pytestmark = [
    pytest.mark.prosody,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not prosody_available(), reason="prosody not installed"),
]

H = "RIHS01_" + "e" * 64
LEADER_OUT = [
    StreamDescriptor(1, "/joint_states", "sensor_msgs/msg/JointState", H, "latest", 500, 0.5),
    StreamDescriptor(2, "/teleop/estop", "std_msgs/msg/Bool", H, "reliable", 10, 5.0),
]
FOLLOWER_OUT = [
    StreamDescriptor(7, "/wrench", "geometry_msgs/msg/WrenchStamped", H, "latest", 100, 0.5)
]
SECRET = Secret(bytes(range(32)))


@pytest.fixture(scope="module")
def server():
    """Accounts, no MUC component (a chat service without rooms)."""
    srv = ProsodyServer(authentication="internal_hashed", muc=False, limits=True)
    srv.start()
    srv.passwords = {}
    for user in ("lab-a", "lab-b", "stranger", "phone"):
        srv.passwords[user] = secrets.token_hex(8)
        srv.register(user, srv.passwords[user])
    yield srv
    srv.cleanup()


def account(srv, user: str) -> Account:
    return Account(f"{user}@{srv.domain}", srv.passwords[user])


def direct_config(srv, user: str, peer: str, role: str, transport: str = "ws"):
    return room_config(
        srv,
        "lab-pair",
        transport,
        domain="",
        account=account(srv, user),
        direct_peers=(f"{peer}@{srv.domain}",),
        teleop_role=role,
        key_id="ab12",
    )


@pytest.fixture
async def made():
    items: list = []
    yield items
    for x in reversed(items):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(x.close(), 5)


async def test_the_server_has_no_muc(server, made):
    room = Room(room_config(server, "anyroom", domain="", account=account(server, "stranger")))
    made.append(room)
    with pytest.raises(RoomError):  # the conference domain does not exist
        await room.join()


@pytest.mark.parametrize("first", ["leader", "follower"])
async def test_two_accounts_pair_and_stream_by_one_to_one_messages_only(server, made, first):
    rooms = {
        "leader": open_room(direct_config(server, "lab-a", "lab-b", "leader")),
        "follower": open_room(direct_config(server, "lab-b", "lab-a", "follower", "tcp")),
    }
    assert all(isinstance(r, DirectRoom) for r in rooms.values())
    made.extend(rooms.values())
    cfg = SessionConfig(use_p2p=False, discover_ice_servers=False, pair_retry=1.0)
    got: dict[str, list] = {"leader": [], "follower": []}
    sessions = {
        "leader": Session(
            rooms["leader"],
            cfg,
            SECRET,
            "leader",
            LEADER_OUT,
            expected=FOLLOWER_OUT,
            on_receive=lambda d, p, i: got["leader"].append((d.topic, p, i.path)),
        ),
        "follower": Session(
            rooms["follower"],
            cfg,
            SECRET,
            "follower",
            FOLLOWER_OUT,
            expected=LEADER_OUT,
            on_receive=lambda d, p, i: got["follower"].append((d.topic, p, i.path)),
        ),
    }
    made.extend(sessions.values())
    second = "follower" if first == "leader" else "leader"
    await rooms[first].join()
    await sessions[first].start()
    await asyncio.sleep(0.5)  # the first one's presence to the second is lost: it is offline
    await rooms[second].join()
    await sessions[second].start()
    await sessions["leader"].wait_paired(30)
    await sessions["follower"].wait_paired(30)
    assert sessions["leader"].carrier.namespace == "lab-pair"
    peer = rooms["leader"].peers[0]
    assert peer.jid.startswith(f"lab-b@{server.domain}/") and peer.teleop.role == "follower"

    for i in range(20):
        sessions["leader"].publish(1, struct.pack("<I", i) + bytes(100))
        sessions["follower"].publish(7, struct.pack("<I", i) + bytes(40))
        await asyncio.sleep(0.05)
    for i in range(3):
        sessions["leader"].publish(2, struct.pack("<I", 100 + i))
    await eventually(
        lambda: (
            [p for t, p, _ in got["follower"] if t == "/teleop/estop"]
            == [struct.pack("<I", 100 + i) for i in range(3)]
        ),
        20,
        "the reliable stream complete and in order at the follower",
    )
    await eventually(lambda: got["leader"], 10, "the follower's stream at the leader")
    js = [struct.unpack_from("<I", p)[0] for t, p, _ in got["follower"] if t == "/joint_states"]
    assert js and js == sorted(js)  # latest-only: thinned to the budget, never reordered
    assert {path for _, _, path in got["follower"] + got["leader"]} == {PATH_MUC}


async def test_fast_path_signalled_one_to_one(server, made):
    leader_room = open_room(direct_config(server, "lab-a", "lab-b", "leader"))
    follower_room = open_room(direct_config(server, "lab-b", "lab-a", "follower"))
    made += [leader_room, follower_room]
    cfg = SessionConfig(p2p=P2PConfig(candidate_filter=loopback_only), discover_ice_servers=False)
    leader = Session(leader_room, cfg, SECRET, "leader", LEADER_OUT, expected=FOLLOWER_OUT)
    follower = Session(follower_room, cfg, SECRET, "follower", FOLLOWER_OUT, expected=LEADER_OUT)
    made += [leader, follower]
    await leader_room.join()
    await follower_room.join()
    await leader.start()
    await follower.start()
    await eventually(
        lambda: leader.path == PATH_P2P and follower.path == PATH_P2P, 30, "the data channel"
    )


async def test_a_stranger_is_never_a_peer_and_the_console_answers_one_to_one(server, made):
    room = open_room(direct_config(server, "lab-a", "lab-b", "leader"))
    made.append(room)
    await room.join()
    console = Console(ConsoleConfig(names=("leader",), site="leader"), EventLog(), Recorder())
    chat = ChatConsole(room, console)
    chat.start()
    made.append(chat)

    stranger = ClientXMPP(f"stranger@{server.domain}", server.passwords["stranger"])
    stranger.plugin["feature_mechanisms"].unencrypted_scram = True
    got: list = []
    stranger.add_event_handler("message", got.append)
    up = asyncio.get_running_loop().create_future()
    stranger.add_event_handler("session_start", lambda _e: up.set_result(True))
    stranger.connect("127.0.0.1", server.c2s_port)
    await asyncio.wait_for(up, 15)
    try:
        # it claims the follower role to the leader, and talks teleop at it
        pres = stranger.make_presence(pto=room.nick)
        tp = pres["teleop"]
        tp["v"], tp["role"], tp["key"] = "0", "follower", "ab12"
        pres.send()
        stranger.send_message(mto=room.nick, mbody="status", mtype="chat")
        await eventually(lambda: got, 10, "the console's one-to-one answer")
        assert got[0]["body"].startswith("[leader] ")
        assert room.peers == []  # never an occupant, whatever it claims
        # the peer site's own account is never a console user (two consoles never loop)
        peer = open_room(direct_config(server, "lab-b", "lab-a", "follower"))
        made.append(peer)
        await peer.join()
        await eventually(lambda: len(room.peers) == 1, 10, "the peer site present")
        ignored = chat.counters.ignored
        peer.xmpp.send_message(mto=room.nick, mbody="[follower] unknown command", mtype="chat")
        await eventually(lambda: chat.counters.ignored > ignored, 10, "the peer's chat ignored")
        assert chat.counters.direct == 1 and console.counters.lines == 1
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stranger.disconnect(wait=1.0), 3)


def test_settings_errors():
    srv = ProsodyServer(authentication="internal_hashed")  # not started: config only
    with pytest.raises(ValueError, match="needs an account"):
        DirectRoom(room_config(srv, "p", direct_peers=("x@y",)))
    with pytest.raises(ValueError, match="peer account"):
        DirectRoom(room_config(srv, "p", domain="", account=Account("a@meet.test", "x")))
    assert isinstance(open_room(room_config(srv, "p")), Room)
