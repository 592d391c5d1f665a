"""Pure pieces of the room layer: WebSocket framing, extdisco mapping, stanza validation."""

from __future__ import annotations

from slixmpp import Iq, Presence

from jitsi_teleop.room.extdisco import ExternalService, ice_servers, parse_services
from jitsi_teleop.room.stanzas import register_stanzas
from jitsi_teleop.room.transport_ws import incoming_frame, outgoing_frame

register_stanzas()


def test_outgoing_framing():
    header = (
        "<stream:stream to='meet.test' xmlns:stream='http://etherx.jabber.org/streams' "
        "xmlns='jabber:client' xml:lang='en' version='1.0'>"
    )
    assert outgoing_frame(header, "meet.test") == (
        '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="meet.test" version="1.0"/>'
    )
    assert outgoing_frame("</stream:stream>", "d") == (
        '<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>'
    )
    assert outgoing_frame("  ", "d") is None  # whitespace keepalive
    assert outgoing_frame('<iq type="get" id="1"><ping xmlns="urn:xmpp:ping"/></iq>', "d") == (
        '<iq xmlns="jabber:client" type="get" id="1"><ping xmlns="urn:xmpp:ping"/></iq>'
    )
    assert outgoing_frame("<presence/>", "d") == '<presence xmlns="jabber:client"/>'
    # already namespaced elements and non-stanzas pass unchanged
    sm = '<r xmlns="urn:xmpp:sm:3" />'
    assert outgoing_frame(sm, "d") == sm
    assert outgoing_frame('<message xmlns="jabber:client"/>', "d") == (
        '<message xmlns="jabber:client"/>'
    )
    assert outgoing_frame("<stream:error><x/></stream:error>", "d").startswith(
        '<stream:error xmlns:stream="http://etherx.jabber.org/streams">'
    )


def test_incoming_framing():
    opened = incoming_frame(
        '<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" '
        'from="meet.test" id="abc" version="1.0" xml:lang="en"/>'
    )
    assert opened.startswith('<stream:stream xmlns="jabber:client" ')
    assert 'from="meet.test"' in opened and 'id="abc"' in opened and 'xml:lang="en"' in opened
    assert incoming_frame('<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>') == (
        "</stream:stream>"
    )
    assert incoming_frame("<iq/>") == "<iq/>"


def test_extdisco_mapping():
    iq = Iq()
    services = iq["extdisco"]
    for attrs in (
        {"type": "stun", "host": "stun.example.org", "port": "3478", "transport": "udp"},
        {
            "type": "turn",
            "host": "turn.example.org",
            "port": "3478",
            "transport": "udp",
            "username": "1700000000",
            "password": "c2VjcmV0",
            "restricted": "1",
        },
        {
            "type": "turns",
            "host": "2001:db8::1",
            "port": "5349",
            "transport": "tcp",
            "username": "u",
            "password": "p",
        },
        {"type": "turn", "host": "bad.example.org", "port": "notaport"},
        {"type": "ftp", "host": "ignored.example.org", "port": "21"},
    ):
        svc = services.xml.makeelement(f"{{{services.namespace}}}service", attrs)
        services.xml.append(svc)
    parsed = parse_services(Iq(xml=iq.xml))  # as parsed from the wire
    assert [s.type for s in parsed] == ["stun", "turn", "turns", "ftp"]  # bad port skipped
    assert parsed[1].restricted and parsed[1].password == "c2VjcmV0"
    ice = ice_servers(parsed)
    assert [i.urls for i in ice] == [
        ["stun:stun.example.org:3478"],
        ["turn:turn.example.org:3478?transport=udp"],
        ["turns:[2001:db8::1]:5349?transport=tcp"],
    ]
    assert ice[0].username is None and ice[1].credential == "c2VjcmV0"
    assert ice_servers([ExternalService(type="turn", host="")]) == []


def test_teleop_presence_validation():
    p = Presence()
    tp = p["teleop"]
    tp["v"], tp["role"], tp["robot"], tp["key"] = "0", "leader", "dexter-a", "ab12"
    assert tp.validate() is None
    for field, bad in (
        ("role", "admin"),
        ("v", "1"),
        ("robot", "x" * 65),
        ("robot", "<script>"),
        ("key", "XYZ"),
    ):
        q = Presence()
        t = q["teleop"]
        t["v"], t["role"], t["robot"], t["key"] = "0", "follower", "r", "00"
        t[field] = bad
        assert t.validate() is not None, (field, bad)
