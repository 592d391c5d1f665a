"""Drop-down: a Jitsi room with the LAN underneath, as one :class:`~jitsi_teleop.carrier.Carrier`.

Two sites that pair through a room may also sit on one LAN (a demo day, a factory cell). Each
then also announces itself link-locally (XEP-0174) in a LAN room derived from the Jitsi room's
name, with its room nick (``jt.muc``) and key id. The session keeps the room's identity
(nicks, namespace, pairing) and its channel to the peer becomes a :class:`DualChannel`: the
signalling and the slow path go over the direct LAN stream whenever the peer is there, and
over the room otherwise. When the room server goes away, the peer does not "leave": it is
still on the LAN, so the pairing, the data channel's signalling and the slow path carry on
without the server, and the follower holds only as long as the session's failover bound.

Trust is unchanged: everything on the channel is sealed with the session's keys or checked
against the pairing, so a LAN host that claims our peer's nick learns nothing and cannot
pair; while two LAN hosts claim one nick, the LAN is not used for it (counted).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from ..carrier import (
    CarrierEvent,
    CarrierListener,
    CarrierUp,
    Claim,
    ForeignHandler,
    MemberJoined,
    MemberLeft,
    PeerChannel,
)
from ..linklocal.carrier import LanRoom
from ..links.base import LinkStats, ReceiveCallback
from ..links.muc import MucLink
from ..room.extdisco import IceServer
from ..room.room import Room
from .room import REPLAY_S, RoomCarrier

log = logging.getLogger(__name__)

SignalCallback = Callable[[str, dict[str, Any]], None]


def dropdown_lan_name(namespace: str) -> str:
    """The LAN room of a Jitsi room: a hash, so the LAN does not learn the room's name
    outright (a guessable room name can still be confirmed by hashing guesses)."""
    return "dd-" + hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:16]


class DualChannel:
    """The channel to one peer over the LAN when it is there, over the room otherwise.
    Receives from both; sends on one (each side's records are sealed and numbered by the
    session, so nothing depends on which carried them)."""

    def __init__(self, peer_id: str, room: PeerChannel) -> None:
        self._peer_id = peer_id
        self.room_channel = room
        self.lan_channel: MucLink | None = None
        self._rx: ReceiveCallback | None = None
        self._sig: SignalCallback | None = None

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def via(self) -> str:
        """``lan`` or ``room``: where sends go now."""
        return "lan" if self.lan_channel is not None and self.lan_channel.ready else "room"

    def _pick(self) -> PeerChannel:
        lan = self.lan_channel
        return lan if lan is not None and lan.ready else self.room_channel

    @property
    def ready(self) -> bool:
        return self._pick().ready

    @property
    def stats(self) -> LinkStats:
        total = LinkStats()
        for ch in (self.room_channel, self.lan_channel):
            if ch is not None:
                for k, v in ch.stats.as_dict().items():
                    setattr(total, k, getattr(total, k) + v)
        return total

    def send(self, stream_id: int, payload: bytes, latest: bool) -> None:
        self._pick().send(stream_id, payload, latest)

    def send_signal(self, message: dict[str, Any]) -> None:
        self._pick().send_signal(message)

    def set_receive_callback(self, callback: ReceiveCallback | None) -> None:
        self._rx = callback
        for ch in (self.room_channel, self.lan_channel):
            if ch is not None:
                ch.set_receive_callback(self._on_record if callback else None)

    def set_signal_callback(self, callback: SignalCallback | None) -> None:
        self._sig = callback
        for ch in (self.room_channel, self.lan_channel):
            if ch is not None:
                ch.set_signal_callback(self._on_signal if callback else None)

    def _on_record(self, _nick: str, stream_id: int, payload: bytes) -> None:
        if self._rx is not None:
            self._rx(self._peer_id, stream_id, payload)

    def _on_signal(self, _nick: str, message: dict[str, Any]) -> None:
        if self._sig is not None:
            self._sig(self._peer_id, message)

    def attach_lan(self, link: MucLink) -> None:
        self.lan_channel = link
        link.set_receive_callback(self._on_record if self._rx else None)
        link.set_signal_callback(self._on_signal if self._sig else None)

    async def wait_writable(self) -> None:
        await self._pick().wait_writable()

    async def close(self) -> None:
        lan, self.lan_channel = self.lan_channel, None
        if lan is not None:
            await lan.close()
        await self.room_channel.close()


class DropDownCarrier:
    """A joined :class:`Room` and a :class:`LanRoom` (joined, in :func:`dropdown_lan_name`'s
    LAN room) seen as one carrier with the room's identity."""

    def __init__(self, room: Room, lan: LanRoom) -> None:
        self.room = room
        self.lan = lan
        self.room_carrier = RoomCarrier(room)
        self.counters: dict[str, int] = {}
        self._duals: dict[str, DualChannel] = {}
        self._listeners: list[CarrierListener] = []
        self._on_lan_claims: set[str] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._unsub = [
            self.room_carrier.subscribe(self._on_room_event),
            # the directory, not the LAN room's events: a changed jt.muc changes no occupant
            lan.directory.subscribe(self._on_lan_change),
        ]
        lan.set_muc_nick(room.nick)
        self._on_lan_change()

    # -- identity (the room's) ------------------------------------------------------------
    @property
    def local_id(self) -> str:
        return self.room_carrier.local_id

    @property
    def namespace(self) -> str:
        return self.room_carrier.namespace

    @property
    def online(self) -> bool:
        return self.room.online or self.lan.online

    async def wait_online(self, timeout: float | None = None) -> None:
        if not self.online:
            await self.room.wait_online(timeout)

    # -- members --------------------------------------------------------------------------
    def _lan_instances(self, peer_id: str) -> list[str]:
        """LAN occupants announcing ``peer_id`` as their room nick."""
        out = []
        for occ in self.lan.peers:
            pr = self.lan.presence_of(occ.nick)
            if pr is not None and pr.muc == peer_id:
                out.append(occ.nick)
        return out

    def _lan_claims(self) -> dict[str, Claim]:
        claims: dict[str, Claim] = {}
        for occ in self.lan.peers:
            pr = self.lan.presence_of(occ.nick)
            if pr is not None and pr.muc and pr.muc != self.local_id:
                claims[pr.muc] = Claim(pr.muc, pr.role, pr.key_id, pr.robot)
        return claims

    def claimants(self, role: str) -> list[Claim]:
        room = self.room_carrier.claimants(role) if self.room.online else []
        seen = {c.peer_id for c in room}
        lan = [c for c in self._lan_claims().values() if c.role == role and c.peer_id not in seen]
        return room + lan

    def is_present(self, peer_id: str) -> bool:
        return self.room_carrier.is_present(peer_id) or bool(self._lan_instances(peer_id))

    def open_channel(self, peer_id: str) -> DualChannel:
        if peer_id in self._duals:
            raise ValueError(f"a channel to {peer_id} is already open")
        dual = DualChannel(peer_id, self.room_carrier.open_channel(peer_id))
        self._duals[peer_id] = dual
        close = dual.close

        async def closing() -> None:
            if self._duals.get(peer_id) is dual:
                del self._duals[peer_id]
            await close()

        dual.close = closing  # type: ignore[method-assign]
        self._bind_lan(dual)
        return dual

    def subscribe(self, listener: CarrierListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def set_foreign_handler(self, handler: ForeignHandler | None) -> None:
        self.room_carrier.set_foreign_handler(handler)

    def channel_via(self, peer_id: str) -> str | None:
        dual = self._duals.get(peer_id)
        return dual.via if dual is not None else None

    # -- deployment (the room's) ----------------------------------------------------------
    async def ice_servers(self, timeout: float = 5.0) -> list[IceServer]:
        return await self.room_carrier.ice_servers(timeout)

    @property
    def can_lock(self) -> bool:
        return self.room_carrier.can_lock

    async def set_locked(self, password: str | None) -> None:
        await self.room_carrier.set_locked(password)

    def use_password(self, password: str | None) -> None:
        self.room_carrier.use_password(password)

    def detach(self) -> None:
        for u in self._unsub:
            u()
        self.room_carrier.detach()

    # -- plumbing -------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _emit(self, event: CarrierEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _bind_lan(self, dual: DualChannel) -> None:
        """Give ``dual`` a LAN link to the one LAN site announcing its nick (none while two
        do: then the room alone carries it)."""
        found = self._lan_instances(dual.peer_id)
        if len(found) > 1:
            self._count("ambiguous_lan_claims")
            found = []
        cur = dual.lan_channel
        if cur is not None and (not found or cur.peer_nick != found[0]):
            dual.lan_channel = None
            self._spawn_close(cur)
            cur = None
        if found and cur is None:
            link = MucLink(self.lan, found[0], follow_key=False, replay=REPLAY_S)  # type: ignore[arg-type]
            dual.attach_lan(link)
            log.info("drop-down: %s is also on the LAN as %s", dual.peer_id, found[0])

    def _spawn_close(self, link: MucLink) -> None:
        task = asyncio.ensure_future(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _on_lan_change(self) -> None:
        for dual in list(self._duals.values()):
            self._bind_lan(dual)
        claims = self._lan_claims()
        now = set(claims)
        for pid in now - self._on_lan_claims:
            if not self.room_carrier.is_present(pid):
                self._emit(MemberJoined(claims[pid]))
        for pid in self._on_lan_claims - now:
            if not self.room_carrier.is_present(pid):
                self._emit(MemberLeft(pid))
        self._on_lan_claims = now

    def _on_room_event(self, event: CarrierEvent) -> None:
        if isinstance(event, MemberLeft) and self._lan_instances(event.peer_id):
            self._count("left_room_still_on_lan")
            return  # the room lost it; the LAN still has it
        if isinstance(event, CarrierUp):
            self.lan.set_muc_nick(event.local_id)
        self._emit(event)
