"""XEP-0215 external service discovery -> ICE server settings for a WebRTC stack.

The types are plain dataclasses so that this layer does not import aiortc or aioice.

Jitsi deployments announce their TURN server with time-limited credentials made from a secret
they share with coturn (the "TURN REST API": user name ``<expiry>[:<user>]``, password
``base64(HMAC-SHA1(secret, user name))``; Prosody's ``mod_external_services`` and Jitsi's
``mod_turncredentials``). Such a service may also be announced ``restricted`` without
credentials, which the client then asks for with a ``<credentials/>`` request (XEP-0215 §3.2).
Every entry is checked; a malformed one is skipped with a reason (``Discovery.problems``)
instead of failing the discovery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import time
from dataclasses import dataclass, field

from slixmpp import Iq
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

from .stanzas import NS_EXTDISCO_2, ExtDiscoService, ExtDiscoServices, ExtDiscoServicesV1

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


@dataclass
class Discovery:
    """What the server announced, what was usable, and why the rest was not."""

    services: list[ExternalService] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: services whose credentials came from a <credentials/> request
    credentials_requested: int = 0

    @property
    def ice_servers(self) -> list[IceServer]:
        return ice_servers(self.services)


class ExtDiscoCredentials(ElementBase):
    """XEP-0215 ``<credentials/>`` request/answer (v2)."""

    name = "credentials"
    namespace = NS_EXTDISCO_2
    plugin_attrib = "extdisco_credentials"
    interfaces: set[str] = set()


_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?")
ICE_TYPES = ("stun", "stuns", "turn", "turns")
MAX_SERVICES = 16


def turn_rest_credentials(
    secret: str, ttl: int = 86400, user: str | None = None, now: float | None = None
) -> tuple[str, str]:
    """(user name, password) as coturn's ``use-auth-secret`` checks them: the user name is the
    expiry time (Unix seconds, optionally ``:user``), the password the base64 HMAC-SHA1 of it."""
    expiry = int(now if now is not None else time.time()) + int(ttl)
    username = f"{expiry}:{user}" if user else str(expiry)
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _check_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_RE.fullmatch(host))


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


def parse_services(iq: Iq, problems: list[str] | None = None) -> list[ExternalService]:
    """Read the services from a v2 or v1 reply (or a credentials answer); a malformed entry
    is skipped and its reason appended to ``problems``."""
    problems = problems if problems is not None else []
    out: list[ExternalService] = []
    containers = []
    for plugin in ("extdisco", "extdisco1"):
        if iq.xml.find(f"{{{_ns(plugin)}}}services") is not None:
            containers.append(iq[plugin])
    cred = iq.xml.find(f"{{{NS_EXTDISCO_2}}}credentials")
    if cred is not None:
        containers.append(ExtDiscoCredentials(xml=cred))
    for container in containers:
        for el in container.xml.findall(f"{{{container.namespace}}}service"):
            svc = ExtDiscoService(xml=el)
            try:
                out.append(_service(svc))
            except ValueError as e:
                msg = f"ignoring extdisco service {_describe(el.attrib)}: {e}"
                log.warning("%s", msg)
                problems.append(msg)
            if len(out) >= MAX_SERVICES:
                problems.append(f"more than {MAX_SERVICES} services announced; the rest ignored")
                return out
    return out


def _describe(attrib: dict[str, str]) -> str:
    shown = {k: v for k, v in attrib.items() if k not in ("password", "username")}
    return " ".join(f"{k}={v[:64]!r}" for k, v in sorted(shown.items()))[:200] or "(empty)"


def _service(svc: ExternalService | ElementBase) -> ExternalService:
    kind = svc["type"]
    host = svc["host"]
    if not kind:
        raise ValueError("no type")
    if not _check_host(host):
        raise ValueError(f"bad or missing host {host[:64]!r}")
    port_text = svc["port"]
    port = None
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"bad port {port_text[:16]!r}")
        port = int(port_text)
    transport = svc["transport"] or None
    if kind in ICE_TYPES and transport not in (None, "udp", "tcp"):
        raise ValueError(f"bad transport {transport[:16]!r}")
    username = svc["username"] or None
    password = svc["password"] or None
    for name, value in (("username", username), ("password", password)):
        if value is not None and (len(value) > 512 or any(ord(ch) < 32 for ch in value)):
            raise ValueError(f"bad {name}")
    return ExternalService(
        type=kind,
        host=host,
        port=port,
        transport=transport,
        username=username,
        password=password,
        expires=svc["expires"] or None,
        restricted=svc["restricted"] in ("1", "true"),
    )


def _ns(plugin: str) -> str:
    return ExtDiscoServices.namespace if plugin == "extdisco" else ExtDiscoServicesV1.namespace


async def discover_services(xmpp, domain: str, timeout: float = 5.0) -> list[ExternalService]:
    """Ask the server (``hosts.domain``) for its services: v2 first, then v1 like LJM."""
    return (await discover(xmpp, domain, timeout)).services


async def discover(xmpp, domain: str, timeout: float = 5.0) -> Discovery:
    """Services (v2, then v1), then a credentials request for each TURN service announced
    ``restricted`` or without credentials; every step bounded by ``timeout``."""
    result = Discovery()
    for plugin in ("extdisco", "extdisco1"):
        iq = xmpp.make_iq_get(ito=domain)
        iq.enable(plugin)
        try:
            reply = await iq.send(timeout=timeout)
        except IqError as e:
            log.debug("extdisco %s refused: %s", plugin, e.iq["error"]["condition"])
            continue
        except IqTimeout:
            result.problems.append(f"extdisco ({plugin}) got no answer within {timeout:g} s")
            continue
        result.services = parse_services(reply, result.problems)
        break
    else:
        if not result.problems:
            result.problems.append("the server offers no external services (XEP-0215)")
        return result
    out = []
    for svc in result.services:
        if svc.type in ("turn", "turns") and (svc.restricted or not svc.username):
            if svc.username and svc.password:
                out.append(svc)
                continue
            got = await request_credentials(xmpp, domain, svc, timeout, result.problems)
            if got is not None:
                result.credentials_requested += 1
                out.append(got)
            continue
        out.append(svc)
    result.services = out
    return result


async def request_credentials(
    xmpp, domain: str, svc: ExternalService, timeout: float, problems: list[str]
) -> ExternalService | None:
    """XEP-0215 credentials request for one service; None (and a problem) if refused."""
    register_stanza_plugin(Iq, ExtDiscoCredentials)
    register_stanza_plugin(ExtDiscoCredentials, ExtDiscoService, iterable=True)
    iq = xmpp.make_iq_get(ito=domain)
    q = iq["extdisco_credentials"]
    item = ExtDiscoService()
    item["type"] = svc.type
    item["host"] = svc.host
    if svc.port:
        item["port"] = str(svc.port)
    q.append(item)
    where = f"{svc.type}:{svc.host}" + (f":{svc.port}" if svc.port else "")
    try:
        reply = await iq.send(timeout=timeout)
    except IqError as e:
        problems.append(f"{where}: credentials request refused ({e.iq['error']['condition']})")
        return None
    except IqTimeout:
        problems.append(f"{where}: credentials request got no answer within {timeout:g} s")
        return None
    for got in parse_services(reply, problems):
        if got.type == svc.type and got.host == svc.host and got.username and got.password:
            return ExternalService(
                svc.type,
                svc.host,
                got.port or svc.port,
                got.transport or svc.transport,
                got.username,
                got.password,
                got.expires,
                svc.restricted,
            )
    problems.append(f"{where}: the credentials answer has no credentials for it")
    return None


def ice_servers(services: list[ExternalService]) -> list[IceServer]:
    return [ice for ice in (service_to_ice(s) for s in services) if ice is not None]
