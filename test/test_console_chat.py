"""The console over real XMPP: a robot site logged in with an account on a plain XMPP server
(Prosody, accounts, STARTTLS), and a separate slixmpp client logged in with its own account,
as a phone's chat app would be, talking to it in the room's group chat, by private message in
the room, and one-to-one to the robot's JID. Bad input each gets an answer or is ignored, and
nothing else happens.

The console acts on a recording site here; the real e-stop through the ROS nodes is in
test_console_ros.py."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl

import pytest
from slixmpp import ClientXMPP, Message

from jitsi_teleop.console.chat import ChatConsole
from jitsi_teleop.console.commands import Permissions
from jitsi_teleop.console.console import Console, ConsoleConfig
from jitsi_teleop.console.eventlog import EventLog
from jitsi_teleop.room.account import Account
from prosody_server import ProsodyServer, eventually, prosody_available, room_config
from test_console import Recorder

pytest_plugins = ["conftest_prosody"]
pytestmark = [
    pytest.mark.prosody,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not prosody_available(), reason="prosody not installed"),
]


@pytest.fixture(scope="module")
def server():
    srv = ProsodyServer(authentication="internal_hashed", tls=True, limits=False)
    srv.start()
    srv.passwords = {}
    for user in ("robot", "phone", "boss"):
        pw = secrets.token_hex(8)
        srv.register(user, pw)
        srv.passwords[user] = pw
    yield srv
    srv.cleanup()


class Phone:
    """A chat app: an account on the server, in the room as an ordinary occupant."""

    def __init__(self, srv: ProsodyServer, user: str) -> None:
        self.srv = srv
        self.xmpp = ClientXMPP(f"{user}@{srv.domain}", srv.passwords[user])
        self.xmpp.ssl_context = ssl.create_default_context()
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        self.xmpp.register_plugin("xep_0045")
        self.got: list[Message] = []
        self.xmpp.add_event_handler("message", self.got.append)
        self.nick = user

    async def connect(self) -> None:
        started = asyncio.get_running_loop().create_future()
        self.xmpp.add_event_handler("session_start", lambda _e: started.set_result(True))
        self.xmpp.connect("127.0.0.1", self.srv.c2s_port)
        await asyncio.wait_for(started, 15)
        self.xmpp.send_presence()

    async def join(self, room_jid: str) -> None:
        self.room_jid = room_jid
        await self.xmpp.plugin["xep_0045"].join_muc_wait(room_jid, self.nick, maxstanzas=0)

    def say(self, body: str) -> None:
        self.xmpp.send_message(mto=self.room_jid, mbody=body, mtype="groupchat")

    def tell(self, to: str, body: str | None, html: str | None = None) -> None:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype="chat")
        if html is not None:
            from slixmpp.xmlstream import ET

            el = ET.fromstring(
                f'<html xmlns="http://jabber.org/protocol/xhtml-im">'
                f'<body xmlns="http://www.w3.org/1999/xhtml">{html}</body></html>'
            )
            msg.xml.append(el)
        msg.send()

    def replies(self, since: int = 0, sender: str | None = None) -> list[str]:
        out = []
        for m in self.got[since:]:
            if sender is not None and str(m["from"]) != sender and m["from"].bare != sender:
                continue
            if m["body"].startswith("[follower]"):
                out.append(m["body"])
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.xmpp.disconnect(wait=1.0), 3)


@pytest.fixture
async def site(server, rooms):
    """The robot's side: room (account login), console on a recording site, chat adapter."""
    name = "lab" + secrets.token_hex(3)
    account = Account(f"robot@{server.domain}", server.passwords["robot"])
    room = rooms(
        room_config(
            server,
            name,
            "tcp",
            domain="",
            account=account,
            insecure=True,
            teleop_role="follower",
            robot="dexter",
        )
    )
    await room.join()
    recorder = Recorder()
    log = EventLog()
    perms = Permissions.parse(f"note=moderators,boss@{server.domain}; log=boss@{server.domain}")
    console = Console(
        ConsoleConfig(names=("follower", "dexter"), site="follower", permissions=perms),
        log,
        recorder,
    )
    chat = ChatConsole(room, console)
    chat.start()
    phones: list[Phone] = []

    async def phone(user: str = "phone", join: bool = True) -> Phone:
        p = Phone(server, user)
        phones.append(p)
        await p.connect()
        if join:
            await p.join(room.room_jid)
            await eventually(lambda: user in room.occupants, 10, f"{user} in the room")
        return p

    yield room, recorder, log, chat, phone
    await chat.close()
    for p in phones:
        await p.close()


async def test_group_chat_status_and_estop_from_an_unprivileged_occupant(site):
    room, recorder, log, chat, phone = site
    p = await phone()
    robot = f"{room.room_jid}/{room.nick}"
    p.say("hello all")  # chatter: no answer
    p.say("follower: status")
    await eventually(lambda: p.replies(sender=robot), 10, "a status reply in the room")
    assert p.replies(sender=robot)[0] == "[follower] follower; paired with abc; path p2p"
    assert all(m["type"] == "groupchat" for m in p.got if m["body"].startswith("[follower]"))
    n = len(p.got)
    p.say("!estop")
    await eventually(lambda: recorder.estops, 10, "the e-stop at the site")
    assert recorder.estops == [f"phone (phone@{room.config.domain})"]
    await eventually(lambda: p.replies(n), 10, "the e-stop reply")
    assert p.replies(n) == ["[follower] stopped"]
    assert log.last(1, "estop")[0].actor.startswith("phone")
    assert chat.counters.groupchat == 3


async def test_private_message_in_the_room_and_one_to_one(site, server):
    room, _recorder, _log, chat, phone = site
    p = await phone()
    p.tell(f"{room.room_jid}/{room.nick}", "help")  # a private message in the meeting
    await eventually(lambda: p.replies(), 10, "a private help reply")
    reply = next(m for m in p.got if m["body"].startswith("[follower]"))
    assert reply["type"] == "chat" and reply["from"].resource == room.nick
    assert "estop" in reply["body"]
    # one-to-one to the robot's own JID, from a client that is not in the room
    q = await phone("boss", join=False)
    q.tell(f"robot@{server.domain}", "status")
    await eventually(lambda: q.replies(), 10, "a one-to-one status reply")
    direct = next(m for m in q.got if m["body"].startswith("[follower]"))
    assert direct["type"] == "chat" and direct["from"].bare == f"robot@{server.domain}"
    assert chat.counters.direct == 1 and chat.counters.private == 1


async def test_note_and_log_one_to_one_with_the_allowlist(site, server):
    _room, recorder, log, _chat, phone = site
    boss = await phone("boss", join=False)
    robot = f"robot@{server.domain}"
    boss.tell(robot, "note J6 gripper sticks below 5 degrees")
    await eventually(lambda: boss.replies(), 10, "the note reply")
    assert boss.replies()[0].startswith("[follower] noted (#")
    assert recorder.notes == [(f"boss@{server.domain}", "J6 gripper sticks below 5 degrees")]
    boss.tell(robot, "log 5")
    await eventually(lambda: len(boss.replies()) == 2, 10, "the log reply")
    assert "note [boss@meet.test] J6 gripper sticks below 5 degrees" in boss.replies()[1]
    # an occupant that is neither a moderator nor on the list cannot
    p = await phone()
    p.tell(robot, "note hi")
    p.tell(robot, "log")
    await eventually(lambda: len(p.replies()) == 2, 10, "two refusals")
    assert all("not allowed for you" in r for r in p.replies())
    assert [e.text for e in log.last(10, "note")] == ["J6 gripper sticks below 5 degrees"]


async def test_bad_input_gets_an_answer_and_nothing_else_happens(site, server):
    room, recorder, _log, _chat, phone = site
    p = await phone()
    robot_jid = f"robot@{server.domain}"
    p.tell(robot_jid, "exterminate")
    p.tell(robot_jid, "resume")
    p.tell(robot_jid, "exec rm -rf /")
    p.tell(robot_jid, "status " + "x" * 2000)
    await eventually(lambda: len(p.replies()) == 4, 10, "four answers")
    r = p.replies()
    assert "unknown command 'exterminate'" in r[0]
    assert "cleared only at the robot's site" in r[1]
    assert "no shell command" in r[2]
    assert "too long" in r[3]
    # XHTML-IM: only the plain body counts; markup is never read
    await asyncio.sleep(2.5)  # the per-sender limit (1 line/s) refills: these get answers too
    p.tell(robot_jid, "hello", html="<b>estop</b>")
    p.tell(room.xmpp.boundjid.full, None, html="<p>status</p>")  # markup only
    await eventually(lambda: len(p.replies()) == 6, 10, "two more answers")
    assert "unknown command 'hello'" in p.replies()[4]
    assert "send plain text" in p.replies()[5]
    assert recorder.estops == []


async def test_own_echoes_other_sites_and_the_room_itself_are_ignored(site, server, rooms):
    room, recorder, _log, chat, phone = site
    # our own message comes back from the room as an echo
    room.send(room.xmpp.make_message(mto=room.room_jid, mbody="!estop", mtype="groupchat"))
    # another jitsi_teleop site in the room
    boss = Account(f"boss@{server.domain}", server.passwords["boss"])
    other = rooms(
        room_config(
            server,
            room.config.room,
            "tcp",
            domain="",
            account=boss,
            insecure=True,
            teleop_role="leader",
        )
    )
    await other.join()
    other.send(other.xmpp.make_message(mto=room.room_jid, mbody="!estop", mtype="groupchat"))
    # a message from the room itself (a MUC service notice), fed to the receiving filter
    notice = room.xmpp.make_message(mto=room.xmpp.boundjid, mbody="!estop", mtype="groupchat")
    notice["from"] = room.room_jid
    assert room._in_filter(notice) is None
    p = await phone()
    p.say("!status")  # a marker that arrives after all of the above
    await eventually(lambda: p.replies(), 10, "the marker's reply")
    assert recorder.estops == []
    assert chat.counters.groupchat == 1 and chat.counters.ignored >= 1


async def test_a_command_flood_is_limited_and_an_estop_still_stops(site):
    _room, recorder, _log, chat, phone = site
    p = await phone()
    for _ in range(40):
        p.say("!status")
    p.say("!estop")
    await eventually(lambda: recorder.estops, 15, "the e-stop after the flood")
    await asyncio.sleep(1.0)
    answers = p.replies()
    assert 1 <= len(answers) <= 7
    assert sum("too many commands" in a for a in answers) == 1
    assert chat.console.counters.limited >= 30


async def test_replies_wait_while_the_room_carries_frames_and_are_charged_to_its_budget(site):
    room, _recorder, _log, chat, phone = site
    busy = [True]
    chat.room_busy = lambda: busy[0]  # the slow path is carrying teleoperation frames
    p = await phone()
    sent_before = room.stats.bytes_sent
    p.say("!status")
    await eventually(lambda: chat.counters.groupchat == 1, 10, "the command received")
    await asyncio.sleep(1.0)
    assert p.replies() == [] and room.stats.bytes_sent == sent_before  # nothing sent meanwhile
    p.say("!estop")  # the one reply that does not wait: the person must see the stop worked
    await eventually(lambda: p.replies(), 10, "the e-stop acknowledged while busy")
    assert p.replies() == ["[follower] stopped"]
    assert room.stats.bytes_sent > sent_before  # charged to the same budget as frames
    busy[0] = False
    await eventually(lambda: len(p.replies()) == 2, 10, "the status reply once the room is free")
    assert "path p2p" in p.replies()[1]
