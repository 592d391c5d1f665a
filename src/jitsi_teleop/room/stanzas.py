"""Stanza classes for every XML payload we send or parse (no string building elsewhere).

Our own elements live in ``urn:jitsi-teleop:0`` so that Jitsi clients, Jicofo and the server
ignore them, and so that a peer can be told apart from humans by its presence alone.
"""

from __future__ import annotations

import re

from slixmpp import Iq, Message, Presence
from slixmpp.plugins.xep_0030.stanza import DiscoInfo
from slixmpp.plugins.xep_0045.stanza import MUCHistory, MUCJoin, MUCPresence
from slixmpp.plugins.xep_0172.stanza import UserNick
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

NS_TELEOP = "urn:jitsi-teleop:0"
NS_FOCUS = "http://jitsi.org/protocol/focus"
NS_JINGLE = "urn:xmpp:jingle:1"
NS_EXTDISCO_2 = "urn:xmpp:extdisco:2"
NS_EXTDISCO_1 = "urn:xmpp:extdisco:1"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PING = "urn:xmpp:ping"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_DATA = "jabber:x:data"

TELEOP_ROLES = ("leader", "follower")
_ROBOT_RE = re.compile(r"[A-Za-z0-9_.\-]{0,64}")
_KEY_RE = re.compile(r"[0-9a-f]{0,64}")


class TeleopPresence(ElementBase):
    """``<teleop xmlns="urn:jitsi-teleop:0" v="0" role="leader" robot="dexter-a" key="..."/>``.

    Marks an occupant as a jitsi_teleop endpoint. Anyone may put it in their presence, so it
    is only a hint for pairing; authentication happens at a higher layer (key id).
    """

    name = "teleop"
    namespace = NS_TELEOP
    plugin_attrib = "teleop"
    interfaces = {"v", "role", "robot", "key"}

    def validate(self) -> str | None:
        """Return None when well-formed, else a short reason (used to count hostile input)."""
        if self["v"] != "0":
            return f"unsupported version {self['v']!r}"
        if self["role"] not in TELEOP_ROLES:
            return f"bad role {self['role'][:20]!r}"
        if not _ROBOT_RE.fullmatch(self["robot"]):
            return "bad robot name"
        if not _KEY_RE.fullmatch(self["key"]):
            return "bad key id"
        return None


class TeleopFrame(ElementBase):
    """A binary frame on the slow path: ``<frame s= n= t= k= e=>base64</frame>``.

    ``s`` stream id, ``n`` sequence per stream, ``t`` sender wall clock in microseconds (for
    one-way latency), ``k`` ``l`` (latest-only) or ``r`` (reliable), ``e`` sender epoch (a
    random tag per link instance so that a restarted sender's sequence numbers are not stale).
    """

    name = "frame"
    namespace = NS_TELEOP
    plugin_attrib = "teleop_frame"
    interfaces = {"s", "n", "t", "k", "e", "data"}

    def get_data(self) -> str:
        return self.xml.text or ""

    def set_data(self, value: str) -> None:
        self.xml.text = value

    def del_data(self) -> None:
        self.xml.text = None


class TeleopSignal(ElementBase):
    """A JSON signalling message to one peer (WebRTC offer/answer, pairing): text content."""

    name = "signal"
    namespace = NS_TELEOP
    plugin_attrib = "teleop_signal"
    interfaces = {"e", "n", "json"}

    def get_json(self) -> str:
        return self.xml.text or ""

    def set_json(self, value: str) -> None:
        self.xml.text = value

    def del_json(self) -> None:
        self.xml.text = None


class TeleopAck(ElementBase):
    """Cumulative acknowledgement of reliable frames/signals: ``<ack e= s= n=/>`` = all
    reliable items of channel ``s`` (a stream id, or ``sig`` for signals) of the sender's
    epoch ``e`` up to sequence ``n`` arrived. Lets the sender resend what a dead session
    swallowed."""

    name = "ack"
    namespace = NS_TELEOP
    plugin_attrib = "teleop_ack"
    plugin_multi_attrib = "teleop_acks"
    interfaces = {"e", "s", "n"}


class FocusProperty(ElementBase):
    name = "property"
    namespace = NS_FOCUS
    plugin_attrib = "property"
    plugin_multi_attrib = "properties"
    interfaces = {"name", "value"}


class FocusConference(ElementBase):
    """Jicofo's ``conference`` IQ payload (request and reply share it)."""

    name = "conference"
    namespace = NS_FOCUS
    plugin_attrib = "focus_conference"
    interfaces = {
        "room",
        "ready",
        "focusjid",
        "machine-uid",
        "session-id",
        "token",
        "identity",
        "vnode",
    }

    def add_property(self, name: str, value: str) -> None:
        prop = FocusProperty()
        prop["name"] = name
        prop["value"] = value
        self.append(prop)

    def property_dict(self) -> dict[str, str]:
        return {p["name"]: p["value"] for p in self["properties"]}


class JingleReason(ElementBase):
    name = "reason"
    namespace = NS_JINGLE
    plugin_attrib = "reason"
    interfaces = {"condition", "text"}
    sub_interfaces = {"text"}
    _conditions = ("decline", "success", "busy", "general-error", "unsupported-applications")

    def get_condition(self) -> str:
        for child in self.xml:
            tag = child.tag.split("}")[-1]
            if tag in self._conditions:
                return tag
        return ""

    def set_condition(self, value: str) -> None:
        self.del_condition()
        self.xml.append(self._make(value))

    def del_condition(self) -> None:
        for child in list(self.xml):
            if child.tag.split("}")[-1] in self._conditions:
                self.xml.remove(child)

    def _make(self, value: str):
        from xml.etree.ElementTree import Element

        return Element(f"{{{NS_JINGLE}}}{value}")


class Jingle(ElementBase):
    """Just enough Jingle to read an action/sid and to send a session-terminate."""

    name = "jingle"
    namespace = NS_JINGLE
    plugin_attrib = "jingle"
    interfaces = {"action", "sid", "initiator", "responder"}


class ExtDiscoService(ElementBase):
    name = "service"
    namespace = NS_EXTDISCO_2
    plugin_attrib = "service"
    plugin_multi_attrib = "service_list"
    interfaces = {
        "type",
        "host",
        "port",
        "transport",
        "username",
        "password",
        "expires",
        "restricted",
        "name",
    }


class ExtDiscoServices(ElementBase):
    """XEP-0215 ``<services/>`` query (v2)."""

    name = "services"
    namespace = NS_EXTDISCO_2
    plugin_attrib = "extdisco"
    interfaces = {"type"}


class ExtDiscoServiceV1(ExtDiscoService):
    namespace = NS_EXTDISCO_1


class ExtDiscoServicesV1(ExtDiscoServices):
    """XEP-0215 v1, the older namespace some servers still answer."""

    namespace = NS_EXTDISCO_1
    plugin_attrib = "extdisco1"


_registered = False


def register_stanzas() -> None:
    """Register all stanza plugins once per process (slixmpp keeps them globally)."""
    global _registered
    if _registered:
        return
    register_stanza_plugin(Presence, TeleopPresence)
    register_stanza_plugin(Presence, UserNick)
    register_stanza_plugin(Iq, DiscoInfo)
    register_stanza_plugin(Presence, MUCPresence)
    register_stanza_plugin(Presence, MUCJoin)
    register_stanza_plugin(MUCJoin, MUCHistory)
    register_stanza_plugin(Message, TeleopFrame)
    register_stanza_plugin(Message, TeleopSignal)
    register_stanza_plugin(Message, TeleopAck, iterable=True)
    register_stanza_plugin(Iq, FocusConference)
    register_stanza_plugin(FocusConference, FocusProperty, iterable=True)
    register_stanza_plugin(Iq, Jingle)
    register_stanza_plugin(Jingle, JingleReason)
    register_stanza_plugin(Iq, ExtDiscoServices)
    register_stanza_plugin(ExtDiscoServices, ExtDiscoService, iterable=True)
    register_stanza_plugin(Iq, ExtDiscoServicesV1)
    register_stanza_plugin(ExtDiscoServicesV1, ExtDiscoServiceV1, iterable=True)
    _registered = True
