"""Garbage and hostile stanzas from another occupant are ignored and counted, never acted on
and never answered with message errors (Prosody would kick us for those)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError, IqTimeout

from jitsi_teleop.links.muc import MucLink
from jitsi_teleop.room.stanzas import NS_TELEOP
from prosody_server import eventually, room_config

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]


def raw_message(room, to_nick: str, *elements: str, body: str | None = None):
    msg = room.xmpp.make_message(mto=room.occupant_jid(to_nick), mtype="chat", mbody=body)
    for text in elements:
        msg.xml.append(ET.fromstring(text))
    return msg


async def setup(prosody, rooms, room_name):
    leader = rooms(room_config(prosody, room_name, teleop_role="leader", key_id="aa"))
    follower = rooms(room_config(prosody, room_name, "tcp", teleop_role="follower", key_id="bb"))
    # the hostile occupant gets a generous IQ budget of its own; it is the victim we test
    mallory = rooms(room_config(prosody, room_name, teleop_role=None))
    for r in (leader, follower, mallory):
        await r.join()
    await leader.wait_for_peer("follower")
    await follower.wait_for_peer("leader")
    await eventually(lambda: mallory.nick in leader.occupants, what="mallory seen")
    to_f = MucLink(leader, follower.nick)
    to_l = MucLink(follower, leader.nick)
    got: list[bytes] = []
    to_f.set_receive_callback(lambda n, s, p: got.append(p))  # leader receives
    return leader, follower, mallory, to_f, to_l, got


async def test_garbage_messages_are_ignored_and_counted(prosody, rooms, room_name):
    leader, follower, mallory, to_f, to_l, got = await setup(prosody, rooms, room_name)
    frame = f'<frame xmlns="{NS_TELEOP}" s="1" n="99" t="0" k="l" e="abcd">aGVsbG8=</frame>'
    hostile = [
        raw_message(mallory, leader.nick, frame),  # well-formed, but not from the peer
        raw_message(mallory, leader.nick, '<foo xmlns="urn:example:evil">x</foo>'),
        raw_message(mallory, leader.nick, body="hello robot"),
        raw_message(mallory, leader.nick, f'<signal xmlns="{NS_TELEOP}" e="1" n="1">{{</signal>'),
        raw_message(mallory, leader.nick, '<x xmlns="urn:x">' + "A" * 20000 + "</x>"),
    ]
    for msg in hostile:
        msg.send()
    await eventually(
        lambda: leader.stats.ignored_messages >= len(hostile),
        timeout=15,
        what="hostile messages counted",
    )
    assert got == []

    # garbage that does come from the peer's occupant JID is rejected by the link itself
    bad_frames = [
        f'<frame xmlns="{NS_TELEOP}" s="1" n="1" t="0" k="l" e="abcd">!!notbase64!!</frame>',
        f'<frame xmlns="{NS_TELEOP}" s="70000" n="1" t="0" k="l" e="abcd">aGk=</frame>',
        f'<frame xmlns="{NS_TELEOP}" s="1" n="-1" t="0" k="x" e="abcd">aGk=</frame>',
        f'<frame xmlns="{NS_TELEOP}" s="1" n="1" t="0" k="l" e="NOT HEX">aGk=</frame>',
        f'<signal xmlns="{NS_TELEOP}" e="abcd" n="1">[1, 2]</signal>',
        f'<signal xmlns="{NS_TELEOP}" e="abcd" n="2">{{not json</signal>',
        f'<ack xmlns="{NS_TELEOP}" e="NOT HEX" s="1" n="x"/>',
    ]
    for text in bad_frames:
        raw_message(follower, leader.nick, text).send()
    await eventually(lambda: to_f.stats.invalid == len(bad_frames), what="invalid counted")
    assert got == [] and to_f.stats.delivered == 0

    # and the real peer's frames still arrive: nothing was lost
    to_l.send(1, b"real", latest=False)
    await eventually(lambda: got == [b"real"], what="real frame after garbage")
    for room in (leader, follower):
        assert room.online and room.stats.disconnects == 0
    assert mallory.online  # errors were never sent back (those get senders kicked... or us)


async def test_spoofed_presence(prosody, rooms, room_name):
    leader, follower, mallory, to_f, to_l, _got = await setup(prosody, rooms, room_name)
    before = follower.stats.invalid_presences

    def presence(**attrs):
        pres = mallory.xmpp.make_presence(pto=mallory.occupant_jid(mallory.nick))
        el = ET.SubElement(pres.xml, f"{{{NS_TELEOP}}}teleop")
        for k, v in attrs.items():
            el.set(k, v)
        return pres

    presence(v="0", role="admin", robot="x", key="aa").send()
    await eventually(lambda: follower.stats.invalid_presences > before, what="bad role")
    presence(v="0", role="leader", robot="r" * 500, key="aa").send()
    presence(v="9", role="leader", robot="x", key="aa").send()
    await eventually(lambda: follower.stats.invalid_presences >= before + 3, what="3 invalid")
    assert mallory.nick not in [p.nick for p in follower.peers]

    # a well-formed claim to be the leader with the leader's key id is visible but flagged
    presence(v="0", role="leader", robot="dexter-a", key="aa").send()
    await eventually(lambda: follower.stats.key_conflicts >= 1, what="key conflict counted")
    assert {p.nick for p in follower.peers} == {leader.nick, mallory.nick}
    # a link pinned to the real leader (as the pairing layer does once it authenticated
    # the peer) never delivers the impostor's frames
    to_l.pin(leader.nick)
    got_f = []
    to_l.set_receive_callback(lambda n, s, p: got_f.append((n, p)))
    frame = f'<frame xmlns="{NS_TELEOP}" s="1" n="5" t="0" k="r" e="abcd">ZXZpbA==</frame>'
    raw_message(mallory, follower.nick, frame).send()
    to_f.send(1, b"good", latest=False)
    await eventually(lambda: got_f, what="leader frame")
    await asyncio.sleep(0.3)
    assert got_f == [(leader.nick, b"good")]


async def test_iq_flood_is_rate_limited(prosody, rooms, room_name):
    leader, _follower, mallory, _to_f, to_l, got = await setup(prosody, rooms, room_name)
    answered = []

    async def query(kind: str, to: str | None = None) -> None:
        iq = mallory.xmpp.make_iq_get(ito=to or mallory.occupant_jid(leader.nick))
        if kind == "disco":
            iq.xml.append(ET.Element("{http://jabber.org/protocol/disco#info}query"))
        else:
            iq.xml.append(ET.Element("{urn:example:unknown}query"))
        try:
            reply = await iq.send(timeout=2)
            answered.append(reply)
        except IqError as e:  # a proper error reply
            answered.append(e.iq)
        except IqTimeout:  # dropped by the flood limit
            pass

    await query("disco")
    assert answered and "urn:jitsi-teleop:0" in answered[0]["disco_info"]["features"]
    await query("unknown")
    assert answered[-1]["type"] == "error"
    assert answered[-1]["error"]["condition"] == "feature-not-implemented"
    n = 60
    await asyncio.gather(*(query("disco") for _ in range(n)))
    assert leader.stats.iq_dropped > 0
    assert len(answered) < n + 2  # not all of the flood got answers
    # real JIDs are public: the same flood sent straight to the leader's full JID is
    # limited the same way
    dropped = leader.stats.iq_dropped
    real_jid = mallory.occupants[leader.nick].jid
    assert real_jid and "/" in real_jid
    await asyncio.gather(*(query("disco", real_jid) for _ in range(n)))
    assert leader.stats.iq_dropped > dropped
    # the slow path keeps working for the real peer and nobody was disconnected
    to_l.send(3, b"after flood", latest=False)
    await eventually(lambda: b"after flood" in got, what="frame after flood")
    assert leader.online and leader.stats.disconnects == 0


async def test_live_peer_not_displaced_by_impostor(prosody, rooms, room_name):
    """A link follows its peer's identity (role + key id) to a new nick only when the current
    nick is gone or silent; an impostor copying the presence cannot take over a live peer."""
    leader, follower, mallory, to_f, to_l, _got = await setup(prosody, rooms, room_name)
    await to_l.close()  # one link per peer: the first handler claims the peer's frames
    watch = MucLink(follower, leader.nick, peer_silence=0.5)
    seen = []
    watch.set_receive_callback(lambda n, s, p: seen.append(n))
    running = True

    async def heartbeat() -> None:
        while running:
            to_f.send(1, b"hb", latest=True)
            await asyncio.sleep(0.05)

    hb = asyncio.ensure_future(heartbeat())
    try:
        pres = mallory.xmpp.make_presence(pto=mallory.occupant_jid(mallory.nick))
        el = ET.SubElement(pres.xml, f"{{{NS_TELEOP}}}teleop")
        for k, v in {"v": "0", "role": "leader", "robot": "x", "key": "aa"}.items():
            el.set(k, v)
        pres.send()
        await eventually(lambda: follower.stats.key_conflicts >= 1, what="claim seen")
        await asyncio.sleep(1.5)  # three silence windows: a live peer keeps the link
        assert watch.peer_nick == leader.nick and watch.rebinds == 0
        assert set(seen) == {leader.nick}
    finally:
        running = False
        await hb
    # once the real peer is gone, the link moves to the remaining claimant; telling a real
    # peer from an impostor is the pairing layer's job (authenticated frames), not presence's
    await leader.close()
    await eventually(lambda: watch.peer_nick == mallory.nick, what="link follows claimant")
    await watch.close()
