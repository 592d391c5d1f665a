"""One-to-one between two accounts, no MUC: the rendezvous for a chat service without rooms.

Why: many XMPP services (and some company servers) have accounts but no multi-user chat. Two
sites that each have an account there pair and carry the slow path by one-to-one messages:
the same signals and sealed frames the room carries as private messages, addressed to the
peer's full JID instead of an occupant JID.

How: a :class:`DirectRoom` is a :class:`~jitsi_teleop.room.room.Room` whose "occupants" are
the available resources of the peer accounts we were told about (``direct_peers``). Presence
is directed (no roster subscription needed): at (re)connect we send our teleop presence to each
peer account; a peer resource we had not seen gets ours back, so whichever site comes second
still finds the first; the server sends "unavailable" for us when our stream ends. Presence
and messages from any other JID are never taken as a peer (a stranger cannot even start a
handshake); they pass on to slixmpp (the console answers one-to-one chat). Everything else
(connect, login, reconnect, budget, handlers, replay of an early handshake) is the Room's, so
the carrier seen by the session (:class:`~jitsi_teleop.carriers.room.RoomCarrier`) is the same
and pairing, sealing and safety are unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence

from slixmpp import JID, Iq, Message, Presence
from slixmpp.xmlstream import StanzaBase

from .config import RoomConfig, RoomError
from .occupants import (
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    RoomJoined,
    TeleopInfo,
)
from .room import Room
from .stanzas import NS_TELEOP

log = logging.getLogger(__name__)


class DirectRoom(Room):
    """Two accounts (or more resources of them) talking one-to-one. ``config.room`` is the
    pairing namespace both sites must agree on (it is bound into the handshake)."""

    def __init__(self, config: RoomConfig, peers: Sequence[str] | None = None) -> None:
        if config.account is None:
            raise ValueError("one-to-one needs an account login (jid and password)")
        peers = list(config.direct_peers if peers is None else peers)
        allowed = {JID(p).bare.lower() for p in peers}
        if not allowed or "" in allowed:
            raise ValueError("one-to-one needs the peer account's JID (peer_jid)")
        super().__init__(config)
        self.allowed = frozenset(allowed)

    # ------------------------------------------------------------------ addressing -------
    @property
    def room_jid(self) -> str:
        return ""  # no room: nothing is ever addressed to or from a room JID

    def occupant_jid(self, nick: str) -> str:
        return nick  # a peer "nick" is its full JID

    async def set_password(self, password: str | None, timeout: float = 5.0) -> None:
        raise RoomError("a one-to-one chat has no room to lock")

    def announce(self) -> None:
        if self.online:
            for bare in sorted(self.allowed):
                self._send_charged(self._own_presence(bare))

    # ------------------------------------------------------------------ (re)join ---------
    def _own_presence(self, to: str | None) -> Presence:
        pres = self.xmpp.make_presence(pto=to) if to else self.xmpp.make_presence()
        return self._describe(pres)

    async def _enter(self, rejoin: bool) -> Occupant:
        cfg = self.config
        self.nick = self.xmpp.boundjid.full
        teleop = (
            TeleopInfo(role=cfg.teleop_role, robot=cfg.robot, key_id=cfg.key_id, version="0")
            if cfg.teleop_role is not None
            else None
        )
        me = Occupant(nick=self.nick, jid=self.nick, teleop=teleop, is_self=True)
        before, self._occupants = self._occupants, {self.nick: me}
        for old in before.values():
            if not old.is_self:  # they answer our new presence if they are still there
                self._emit(OccupantLeft(old))
        self._send_charged(self._own_presence(None))  # available: one-to-one chat reaches us
        for bare in sorted(self.allowed):
            self._send_charged(self._own_presence(bare))
        if rejoin:
            self.stats.rejoins += 1
        self.joined_at = time.monotonic()
        self._online.set()
        self._emit(RoomJoined(self.nick, rejoin))
        return me

    # ------------------------------------------------------------------ incoming ---------
    def _in_filter(self, stanza: StanzaBase) -> StanzaBase | None:
        if not isinstance(stanza, (Presence, Message)) or isinstance(stanza, Iq):
            return stanza
        frm = stanza["from"]
        if not isinstance(frm, JID) or frm.bare.lower() not in self.allowed:
            return stanza  # not a peer account: slixmpp (and the console) see it
        if frm.full == self.nick or not frm.resource:
            return None
        try:
            if isinstance(stanza, Presence):
                self._on_peer_presence(stanza)
                return None
            if _is_teleop(stanza):
                self._on_room_message_direct(stanza)
                return None
        except Exception:
            log.exception("dropping a stanza from a peer that we failed to handle")
            self.stats.ignored_messages += 1
            return None
        return stanza

    def _on_peer_presence(self, pres: Presence) -> None:
        full = pres["from"].full
        ptype = pres["type"]
        if ptype == "unavailable":
            old = self._occupants.pop(full, None)
            if old is not None:
                self._emit(OccupantLeft(old))
            return
        if ptype not in ("", "available", None):
            return  # errors (the peer was offline), subscription requests, probes
        occ = dataclasses.replace(self._parse_occupant(pres, full, False), jid=full)
        old = self._occupants.get(full)
        self._occupants[full] = occ
        if old is None:
            self._emit(OccupantJoined(occ))
            if self.online:  # it may have come after our announcement: tell it about us
                self._send_charged(self._own_presence(full))
        elif old != occ:
            self._emit(OccupantChanged(old, occ))

    def _on_room_message_direct(self, msg: Message) -> None:
        if msg["type"] not in ("chat", "normal", ""):
            return
        self._deliver_private(msg["from"].full, msg)


def _is_teleop(msg: Message) -> bool:
    return any(child.tag.startswith(f"{{{NS_TELEOP}}}") for child in msg.xml)


def open_room(config: RoomConfig) -> Room:
    """A MUC room, or one-to-one with ``config.direct_peers`` when there is no room."""
    return DirectRoom(config) if config.direct_peers else Room(config)
