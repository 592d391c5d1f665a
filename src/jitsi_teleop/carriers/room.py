"""The Jitsi (or plain XMPP MUC) room as a :class:`~jitsi_teleop.carrier.Carrier`.

Addresses are occupant nicks; a channel is a :class:`~jitsi_teleop.links.muc.MucLink` bound to
one nick for good (``follow_key=False``): who the peer is, is decided by the pairing handshake,
never by a copied presence.
"""

from __future__ import annotations

from collections.abc import Callable

from slixmpp import Message

from ..carrier import (
    CarrierDown,
    CarrierEvent,
    CarrierListener,
    CarrierUp,
    Claim,
    ForeignHandler,
    MemberJoined,
    MemberLeft,
)
from ..links.muc import MucLink
from ..room.extdisco import IceServer
from ..room.occupants import (
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    RoomEvent,
    RoomJoined,
    RoomLeft,
)
from ..room.room import Room

_TELEOP_ELEMENTS = ("frame", "signal", "ack")
#: how far back a new channel takes over signals nobody claimed (the peer's first handshake)
REPLAY_S = 10.0


def _claim(o: Occupant) -> Claim | None:
    if o.teleop is None or o.is_self:
        return None
    return Claim(o.nick, o.teleop.role, o.teleop.key_id, o.teleop.robot)


class RoomCarrier:
    """A joined :class:`Room` seen through the carrier interface."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self._channels: dict[str, MucLink] = {}
        self._listeners: list[CarrierListener] = []
        self._foreign: ForeignHandler | None = None
        self._unsubscribe = room.subscribe(self._on_room_event)
        self._unhandle = room.add_message_handler(self._on_message)

    # -- identity -------------------------------------------------------------------------
    @property
    def local_id(self) -> str:
        return self.room.nick

    @property
    def namespace(self) -> str:
        return self.room.config.room

    @property
    def online(self) -> bool:
        return self.room.online

    async def wait_online(self, timeout: float | None = None) -> None:
        await self.room.wait_online(timeout)

    # -- members --------------------------------------------------------------------------
    def claimants(self, role: str) -> list[Claim]:
        return [c for o in self.room.peers if (c := _claim(o)) is not None and c.role == role]

    def is_present(self, peer_id: str) -> bool:
        return self.room.online and peer_id in self.room.occupants

    def open_channel(self, peer_id: str) -> MucLink:
        if peer_id in self._channels:
            raise ValueError(f"a channel to {peer_id} is already open")
        link = MucLink(self.room, peer_id, follow_key=False, replay=REPLAY_S)
        self._channels[peer_id] = link
        close = link.close

        async def closing() -> None:
            if self._channels.get(peer_id) is link:
                del self._channels[peer_id]
            await close()

        link.close = closing  # type: ignore[method-assign]
        return link

    def subscribe(self, listener: CarrierListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def set_foreign_handler(self, handler: ForeignHandler | None) -> None:
        self._foreign = handler

    def detach(self) -> None:
        """Stop listening to the room (the channels stay until closed)."""
        self._unsubscribe()
        self._unhandle()

    # -- deployment -----------------------------------------------------------------------
    async def ice_servers(self, timeout: float = 5.0) -> list[IceServer]:
        return await self.room.ice_servers(timeout=timeout)

    @property
    def can_lock(self) -> bool:
        me = self.room.occupants.get(self.room.nick)
        return me is not None and me.affiliation == "owner"

    async def set_locked(self, password: str | None) -> None:
        await self.room.set_password(password)

    def use_password(self, password: str | None) -> None:
        self.room.config.password = password

    # -- plumbing -------------------------------------------------------------------------
    def _emit(self, event: CarrierEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _on_room_event(self, event: RoomEvent) -> None:
        if isinstance(event, OccupantJoined):
            claim = _claim(event.occupant)
            if claim is not None:
                self._emit(MemberJoined(claim))
        elif isinstance(event, OccupantChanged):
            claim = _claim(event.new)
            if claim is not None and (event.old.teleop != event.new.teleop):
                self._emit(MemberJoined(claim))
            elif event.old.jid != event.new.jid:  # the same nick in a new XMPP session
                self._emit(MemberLeft(event.old.nick))
                if claim is not None:
                    self._emit(MemberJoined(claim))
        elif isinstance(event, OccupantLeft):
            self._emit(MemberLeft(event.occupant.nick))
        elif isinstance(event, RoomJoined):
            self._emit(CarrierUp(event.nick, event.rejoin))
        elif isinstance(event, RoomLeft):
            self._emit(CarrierDown(event.reason, event.removed))

    def _on_message(self, nick: str, msg: Message) -> bool:
        """Teleop messages from a nick with no channel: tell the session and drop them, except
        signals, which the room keeps a while in case a channel opens for that nick (the
        peer's handshake may arrive before its presence was processed here)."""
        if nick in self._channels:
            return False
        xml = msg.xml
        for name in _TELEOP_ELEMENTS:
            if xml.find(f"{{urn:jitsi-teleop:0}}{name}") is not None:
                if name == "signal":
                    occ = self.room.occupants.get(nick)
                    if self._foreign is not None and (occ is None or occ.teleop is None):
                        self._foreign(nick, name)  # claims no role: never gets a channel
                    return False
                if self._foreign is not None and name == "frame":
                    self._foreign(nick, name)
                return True
        return False
