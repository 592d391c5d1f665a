"""The LAN with no server (XEP-0174 link-local) as a :class:`~jitsi_teleop.carrier.Carrier`.

Addresses are link-local instance names (``user@machine``); the namespace bound into the
handshake is ``lan:NAME``, so a LAN pairing never matches a Jitsi room's. Channels are the
same :class:`~jitsi_teleop.links.muc.MucLink` as in a room, their stanzas carried over direct
XML streams by :class:`~jitsi_teleop.linklocal.carrier.LanRoom` instead of a MUC service.
There is no moderator and no lock on a LAN: anyone there can announce anything, and only
the pairing handshake says who the peer is.
"""

from __future__ import annotations

from ..carrier import Carrier
from ..linklocal.carrier import LanConfig, LanRoom
from ..room.config import RoomConfig, RoomError
from ..room.direct import open_room
from ..room.extdisco import IceServer
from ..room.room import Room
from .room import RoomCarrier


class LanCarrier(RoomCarrier):
    """A joined :class:`LanRoom` seen through the carrier interface."""

    def __init__(self, lan: LanRoom) -> None:
        super().__init__(lan)  # type: ignore[arg-type]  # LanRoom offers what RoomCarrier uses
        self.lan = lan

    async def ice_servers(self, timeout: float = 5.0) -> list[IceServer]:
        raise RoomError("no server on the LAN: host candidates only")

    @property
    def can_lock(self) -> bool:
        return False

    async def set_locked(self, password: str | None) -> None:
        raise RoomError("a LAN room cannot be locked (there is no server to enforce it)")

    def use_password(self, password: str | None) -> None:
        """Nothing to present on a LAN."""


def make_room(config: RoomConfig | LanConfig) -> Room | LanRoom:
    """The rendezvous for a site's config: a Jitsi/XMPP room, one-to-one between two accounts
    (``direct_peers``: room.direct), or a LAN room (``lan:NAME``)."""
    if isinstance(config, LanConfig):
        return LanRoom(config)
    return open_room(config)


def session_carrier(room: Room | LanRoom) -> Room | Carrier:
    """What :class:`~jitsi_teleop.session.Session` takes for that rendezvous."""
    return LanCarrier(room) if isinstance(room, LanRoom) else room
