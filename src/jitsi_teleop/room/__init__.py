"""Joining a Jitsi (or plain Prosody) room: XMPP transports, discovery, focus, MUC, extdisco.

Modules, one concern each: ``transport_ws`` (RFC 7395 for slixmpp), ``transport_bosh``
(XEP-0124/0206 for slixmpp), ``connect`` (WebSocket, BOSH, or WebSocket falling back to
BOSH), ``client`` (the slixmpp client, WS, BOSH or TCP), ``discovery`` (config.js),
``focus`` (Jicofo's conference IQ),
``stanzas`` (our XML payloads), ``occupants`` (typed roster and events), ``extdisco``
(XEP-0215 -> ICE servers), ``room`` (join, keep alive, rejoin), ``doctor`` (the CLI check).
"""

from .config import (
    AuthError,
    ConnectError,
    FocusError,
    JoinError,
    RoomConfig,
    RoomError,
    TlsError,
    new_nick,
)
from .discovery import DiscoveryError, JitsiSettings, discover, settings_from_config_js
from .extdisco import ExternalService, IceServer
from .occupants import (
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    RoomEvent,
    RoomJoined,
    RoomLeft,
    TeleopInfo,
)
from .room import Room, RoomStats

__all__ = [
    "AuthError",
    "ConnectError",
    "DiscoveryError",
    "ExternalService",
    "FocusError",
    "IceServer",
    "JitsiSettings",
    "JoinError",
    "Occupant",
    "OccupantChanged",
    "OccupantJoined",
    "OccupantLeft",
    "Room",
    "RoomConfig",
    "RoomError",
    "RoomEvent",
    "RoomJoined",
    "RoomLeft",
    "RoomStats",
    "TeleopInfo",
    "TlsError",
    "discover",
    "new_nick",
    "settings_from_config_js",
]
