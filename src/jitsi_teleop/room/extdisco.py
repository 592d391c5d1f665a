"""XEP-0215 external service discovery -> ICE server settings for a WebRTC stack.

The types are plain dataclasses so that this layer does not import aiortc; a fast-path link
converts them with ``RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from slixmpp import Iq
from slixmpp.exceptions import IqError, IqTimeout

from .stanzas import ExtDiscoServices, ExtDiscoServicesV1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalService:
    """One ``<service/>`` as the server sent it."""

    type: str
    host: str
    port: int | None = None
    transport: str | None = None
    username: str | None = None
    password: str | None = None
    expires: str | None = None
    restricted: bool = False


@dataclass(frozen=True)
class IceServer:
    """RTCIceServer-shaped: ``urls`` like ``turn:host:3478?transport=udp``."""

    urls: list[str] = field(default_factory=list)
    username: str | None = None
    credential: str | None = None


def service_to_ice(svc: ExternalService) -> IceServer | None:
    """Map one service to an ICE server (None for types WebRTC cannot use)."""
    if svc.type not in ("stun", "stuns", "turn", "turns") or not svc.host:
        return None
    host = f"[{svc.host}]" if ":" in svc.host else svc.host
    url = f"{svc.type}:{host}"
    if svc.port:
        url += f":{svc.port}"
    if svc.type.startswith("turn") and svc.transport in ("udp", "tcp"):
        url += f"?transport={svc.transport}"
    if svc.type.startswith("stun"):
        return IceServer(urls=[url])
    return IceServer(urls=[url], username=svc.username, credential=svc.password)


def parse_services(iq: Iq) -> list[ExternalService]:
    """Read the services from a v2 or v1 reply, skipping malformed entries."""
    out: list[ExternalService] = []
    for plugin in ("extdisco", "extdisco1"):
        if iq.xml.find(f"{{{_ns(plugin)}}}services") is None:
            continue
        for svc in iq[plugin]["service_list"]:
            port_text = svc["port"]
            try:
                port = int(port_text) if port_text else None
            except ValueError:
                log.warning("ignoring extdisco service with bad port %r", port_text)
                continue
            out.append(
                ExternalService(
                    type=svc["type"],
                    host=svc["host"],
                    port=port,
                    transport=svc["transport"] or None,
                    username=svc["username"] or None,
                    password=svc["password"] or None,
                    expires=svc["expires"] or None,
                    restricted=svc["restricted"] in ("1", "true"),
                )
            )
    return out


def _ns(plugin: str) -> str:
    return ExtDiscoServices.namespace if plugin == "extdisco" else ExtDiscoServicesV1.namespace


async def discover_services(xmpp, domain: str, timeout: float = 5.0) -> list[ExternalService]:
    """Ask the server (``hosts.domain``) for its services: v2 first, then v1 like LJM."""
    for plugin in ("extdisco", "extdisco1"):
        iq = xmpp.make_iq_get(ito=domain)
        iq.enable(plugin)
        try:
            reply = await iq.send(timeout=timeout)
        except IqError as e:
            log.debug("extdisco %s refused: %s", plugin, e.iq["error"]["condition"])
            continue
        except IqTimeout:
            log.debug("extdisco %s timed out", plugin)
            continue
        return parse_services(reply)
    return []


def ice_servers(services: list[ExternalService]) -> list[IceServer]:
    return [ice for ice in (service_to_ice(s) for s in services) if ice is not None]
