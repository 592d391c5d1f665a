"""Serverless mode (XEP-0174 link-local messaging): sites on one LAN find each other with
DNS-SD over multicast DNS and talk over direct XML streams, with no XMPP server.

Modules, one concern each: ``txt`` (the announcement and strict parsing of others'),
``dnssd`` (announce and browse with python-zeroconf, bounded and counted), ``stream`` (the
XEP-0174 XML stream over TCP), ``carrier`` (:class:`LanRoom`, the room-shaped carrier the
session runs on unchanged).
"""

from .carrier import LAN_PREFIX, LanConfig, LanRoom, is_lan_room, lan_room_name
from .txt import LanPresence, TxtError

__all__ = [
    "LAN_PREFIX",
    "LanConfig",
    "LanPresence",
    "LanRoom",
    "TxtError",
    "is_lan_room",
    "lan_room_name",
]
