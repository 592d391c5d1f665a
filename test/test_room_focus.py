"""The focus (Jicofo) side of a join, against a FAKE focus: an external component we run here.

Jicofo itself cannot run in this sandbox. The fake plays its XMPP role only: it answers the
``conference`` IQ (``ready="false"`` first, like a Jicofo still setting up), joins the room as
nick ``focus``, sends disco#info to the occupant and offers a Jingle session, so we can check
that the client retries, answers disco, and declines Jingle (result, then session-terminate).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from slixmpp import ComponentXMPP, Iq
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from jitsi_teleop.room.config import FocusError
from jitsi_teleop.room.stanzas import NS_FOCUS, NS_JINGLE, register_stanzas
from prosody_server import eventually, room_config

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(60)]


class FakeFocus(ComponentXMPP):
    """A stand-in for Jicofo at ``focus.<domain>`` (NOT Jicofo; only its XMPP contract)."""

    def __init__(self, srv, not_ready: int = 1, refuse: str | None = None) -> None:
        register_stanzas()
        super().__init__(srv.focus_domain, srv.component_secret, "127.0.0.1", srv.component_port)
        self.srv = srv
        self.not_ready = not_ready
        self.refuse = refuse
        self.requests: list[Iq] = []
        self.jingle_from_client: list[Iq] = []
        self.rooms: set[str] = set()
        self.register_handler(
            Callback(
                "conference",
                MatchXPath(f"{{jabber:component:accept}}iq/{{{NS_FOCUS}}}conference"),
                self._on_conference,
            )
        )
        self.register_handler(
            Callback(
                "jingle",
                MatchXPath(f"{{jabber:component:accept}}iq/{{{NS_JINGLE}}}jingle"),
                self._on_jingle,
            )
        )
        self.add_event_handler("session_start", lambda _e: self.ready.set_result(True))
        self.ready: asyncio.Future[bool] = asyncio.get_event_loop().create_future()

    def _on_conference(self, iq: Iq) -> None:
        self.requests.append(iq)
        room = iq["focus_conference"]["room"]
        if self.refuse:
            err = iq.reply(clear=False)
            err["error"]["type"] = "cancel"
            err["error"]["condition"] = self.refuse
            err.send()
            return
        reply = iq.reply(clear=True)
        conf = reply["focus_conference"]
        conf["room"] = room
        if len(self.requests) <= self.not_ready:
            conf["ready"] = "false"
        else:
            if room not in self.rooms:  # Jicofo creates/joins the room before "ready"
                self.rooms.add(room)
                pres = self.make_presence(pto=f"{room}/focus", pfrom=self.focus_jid)
                pres.xml.append(pres.xml.makeelement("{http://jabber.org/protocol/muc}x", {}))
                pres.send()
            conf["ready"] = "true"
            conf["focusjid"] = f"focus@auth.{self.srv.domain}"
        conf.add_property("authentication", "false")
        reply.send()

    @property
    def focus_jid(self) -> str:
        return f"focus@{self.srv.focus_domain}/fake"

    def _on_jingle(self, iq: Iq) -> None:
        self.jingle_from_client.append(iq)
        iq.reply(clear=True).send()

    async def disco(self, occupant: str) -> Iq:
        iq = self.make_iq_get(ito=occupant, ifrom=self.focus_jid)
        iq.xml.append(iq.xml.makeelement("{http://jabber.org/protocol/disco#info}query", {}))
        return await iq.send(timeout=5)

    async def offer_session(self, occupant: str) -> Iq:
        iq = self.make_iq_set(ito=occupant, ifrom=self.focus_jid)
        jingle = iq["jingle"]
        jingle["action"] = "session-initiate"
        jingle["sid"] = "abc123"
        jingle["initiator"] = self.focus_jid
        return await iq.send(timeout=5)


@pytest.fixture
async def focus(prosody):
    fake = FakeFocus(prosody, not_ready=1)
    fake.connect()
    await asyncio.wait_for(fake.ready, 10)
    yield fake
    fake.disconnect(wait=0.5)
    await asyncio.sleep(0.1)


async def test_focus_handshake_disco_and_jingle_decline(prosody, focus, rooms, room_name):
    room = rooms(
        room_config(
            prosody, room_name, teleop_role="follower", focus=prosody.focus_domain, token="jwt-abc"
        )
    )
    await room.join()  # plain Prosody ignores the token in the URL; the focus gets it
    # retried past ready="false", sent the room and the properties lib-jitsi-meet sends
    assert len(focus.requests) == 2
    req = focus.requests[-1]["focus_conference"]
    assert req["room"] == room.room_jid and req["machine-uid"]
    assert req.property_dict()["visitors-version"] == "1"
    assert req["token"] == "jwt-abc"
    assert "token=jwt-abc" in room.xmpp.ws_url and f"room={room_name}" in room.xmpp.ws_url
    assert room.focus_reply is not None and room.focus_reply.ready
    assert room.focus_reply.focus_jid == f"focus@auth.{prosody.domain}"
    await eventually(lambda: "focus" in room.occupants, what="focus occupant seen")
    assert room.occupants["focus"].is_focus and not room.occupants["focus"].is_endpoint
    assert room.peers == []

    info = await focus.disco(room.occupant_jid(room.nick))
    features = info["disco_info"]["features"]
    assert "urn:jitsi-teleop:0" in features
    assert not any(f.startswith("urn:xmpp:jingle:apps:rtp") for f in features)

    result = await focus.offer_session(room.occupant_jid(room.nick))
    assert result["type"] == "result"
    await eventually(lambda: focus.jingle_from_client, what="session-terminate")
    term = focus.jingle_from_client[0]["jingle"]
    assert term["action"] == "session-terminate" and term["sid"] == "abc123"
    assert term["reason"]["condition"] == "decline"
    assert room.stats.jingle_declined == 1 and room.online


async def test_focus_refusal_is_a_clear_error(prosody, rooms, room_name):
    fake = FakeFocus(prosody, refuse="not-authorized")
    fake.connect()
    await asyncio.wait_for(fake.ready, 10)
    try:
        room = rooms(room_config(prosody, room_name, focus=prosody.focus_domain))
        with pytest.raises(FocusError) as info:
            await room.join()
        assert "not-authorized" in info.value.reason
    finally:
        fake.disconnect(wait=0.5)


async def test_missing_focus_is_skipped_unless_required(prosody, rooms, room_name):
    """Plain Prosody has no focus component: join without it, or fail if it is required."""
    room = rooms(room_config(prosody, room_name, focus=f"nofocus.{prosody.domain}"))
    await room.join()
    assert room.online and room.focus_reply is None
    strict = rooms(
        room_config(prosody, room_name, focus=f"nofocus.{prosody.domain}", focus_required=True)
    )
    with pytest.raises(FocusError) as info:
        await strict.join()
    assert info.value.focus_absent


async def test_only_the_real_focus_skips_the_query_rate_limit(prosody, focus, rooms, room_name):
    """The focus component may ask as often as it needs (Jicofo asks every occupant); an
    occupant that calls itself "focus" is limited like anyone else."""
    cfg = room_config(prosody, room_name, teleop_role="follower", focus=prosody.focus_domain)
    room = rooms(cfg)
    await room.join()
    n = 30
    answers = await asyncio.gather(*(focus.disco(room.occupant_jid(room.nick)) for _ in range(n)))
    assert len(answers) == n and room.stats.iq_dropped == 0
    # in another room (no focus: plain Prosody) an occupant takes the nick "focus"
    other = room_name + "-x"
    target = rooms(room_config(prosody, other, teleop_role="follower"))
    await target.join()
    fake = rooms(room_config(prosody, other, teleop_role=None))
    await fake.join()
    fake.change_nick("focus")
    await eventually(lambda: "focus" in target.occupants, what="nick taken")
    assert target.occupants["focus"].is_focus  # by nick, which proves nothing

    async def ask() -> None:
        iq = fake.xmpp.make_iq_get(ito=fake.occupant_jid(target.nick))
        iq.xml.append(iq.xml.makeelement("{http://jabber.org/protocol/disco#info}query", {}))
        with contextlib.suppress(IqTimeout, IqError):
            await iq.send(timeout=2)

    await asyncio.gather(*(ask() for _ in range(n)))
    assert target.stats.iq_dropped > 0
