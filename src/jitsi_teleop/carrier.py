"""The rendezvous a session needs, whatever carries it: a Jitsi room, a plain XMPP account
(MUC or one-to-one chat) or the LAN with no server (XEP-0174 link-local).

Why an interface: the session (pairing, path ranking, reliable delivery) is the same on every
carrier; only how occupants are found and how a message reaches one of them differs. Nothing a
carrier says is trusted: a :class:`Claim` is what someone *announces* (anyone can copy it), and
the session believes only what the pairing handshake proves with the shared secret.

A carrier gives:

- its own address (``local_id``: MUC nick, full JID, link-local service name) and the
  namespace bound into the handshake transcript (``namespace``: the room name);
- who claims a teleop role (``claimants(role)``), with the announced key id;
- a :class:`PeerChannel` per remote address: JSON signals (handshake, WebRTC offer/answer)
  and sealed records (the slow path), both reliable and ordered where the carrier can;
- membership events (:data:`CarrierEvent`) and whether it is online right now;
- STUN/TURN servers for the fast path, when the deployment announces any;
- optionally, locking the rendezvous against newcomers (a room password), where we may.

Every event and callback runs on the asyncio loop the carrier was created in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .links.base import LinkStats, ReceiveCallback
from .room.extdisco import IceServer

#: ``callback(peer_id, message)`` for JSON signals from one peer
SignalCallback = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Claim:
    """An occupant announcing a teleop role (unauthenticated: anyone can copy it)."""

    peer_id: str
    role: str
    key_id: str = ""
    robot: str = ""


@dataclass(frozen=True)
class MemberJoined:
    """Someone new claims a role, or an occupant changed its claim."""

    claim: Claim


@dataclass(frozen=True)
class MemberLeft:
    """An occupant left (or was kicked, or renamed: it may come back as a new ``peer_id``)."""

    peer_id: str


@dataclass(frozen=True)
class CarrierUp:
    """We are (again) reachable. ``rejoin``: after a reconnect or a kick; ``local_id`` may
    have changed (a nick conflict on rejoin)."""

    local_id: str
    rejoin: bool


@dataclass(frozen=True)
class CarrierDown:
    """We are not reachable right now (connection lost, kicked, server restarting); the
    carrier tries to come back by itself. ``removed``: a moderator removed us (kick)."""

    reason: str
    removed: bool = False


CarrierEvent = MemberJoined | MemberLeft | CarrierUp | CarrierDown
CarrierListener = Callable[[CarrierEvent], None]
#: ``handler(peer_id, kind)`` for teleop messages from an address with no open channel;
#: ``kind`` is ``"frame"`` or ``"signal"``. The carrier drops the message either way.
ForeignHandler = Callable[[str, str], None]


@runtime_checkable
class PeerChannel(Protocol):
    """Messages to and from one remote address. Sending never blocks: it queues, within
    bounds, and raises ``LinkBusy``/``FrameTooLarge``/``LinkClosed`` (links.base) when it
    cannot. Matches :class:`jitsi_teleop.links.base.Link` plus signals."""

    @property
    def peer_id(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def stats(self) -> LinkStats: ...

    def send(self, stream_id: int, payload: bytes, latest: bool) -> None:
        """A sealed record on a link stream id (``latest``: newest wins, may be thinned)."""

    def send_signal(self, message: dict[str, Any]) -> None:
        """A JSON object, reliable and in order."""

    def set_receive_callback(self, callback: ReceiveCallback | None) -> None: ...

    def set_signal_callback(self, callback: SignalCallback | None) -> None: ...

    async def wait_writable(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Carrier(Protocol):
    """What the session needs from its rendezvous (see the module docstring)."""

    @property
    def local_id(self) -> str: ...

    @property
    def namespace(self) -> str:
        """The room (or namespace) name; both ends bind it into the handshake."""

    @property
    def online(self) -> bool: ...

    async def wait_online(self, timeout: float | None = None) -> None: ...

    def claimants(self, role: str) -> list[Claim]:
        """Other occupants that announce ``role`` now (never ourselves)."""

    def is_present(self, peer_id: str) -> bool:
        """``peer_id`` is reachable through the carrier right now."""

    def open_channel(self, peer_id: str) -> PeerChannel:
        """A channel to ``peer_id``; messages from that address go to it from now on, until
        it is closed. At most one open channel per address."""

    def subscribe(self, listener: CarrierListener) -> Callable[[], None]:
        """Membership and online events; returns an unsubscribe function."""

    def set_foreign_handler(self, handler: ForeignHandler | None) -> None:
        """Told about teleop messages from addresses with no open channel (for counting)."""

    async def ice_servers(self, timeout: float = 5.0) -> list[IceServer]:
        """STUN/TURN announced by the deployment; raises when the carrier has none."""

    @property
    def can_lock(self) -> bool:
        """We may lock the rendezvous against newcomers (e.g. room owner/moderator)."""

    async def set_locked(self, password: str | None) -> None:
        """Lock with ``password`` (None unlocks); raises when not allowed."""

    def use_password(self, password: str | None) -> None:
        """The password to present when we (re)join, e.g. one the peer set while paired."""
