"""Where the room is and what the pairing secret is, from a site's settings.

Kept apart from the ROS node so the demo and tests build the same RoomConfig and Secret the
node does. The secret never comes from a value that ``ros2 param dump`` would print: it is read
from a key file (``secret_file``, or the file named by ``$JITSI_TELEOP_KEY_FILE``) or stretched
from a passphrase in ``$JITSI_TELEOP_PASSPHRASE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..pairing import Secret, load_secret
from ..room.account import Account
from ..room.config import RoomConfig
from ..room.discovery import discover

ENV_KEY_FILE = "JITSI_TELEOP_KEY_FILE"
ENV_PASSPHRASE = "JITSI_TELEOP_PASSPHRASE"


class SiteError(ValueError):
    """A site setting is missing or wrong; the message says which and what to do."""


@dataclass(frozen=True)
class RoomOptions:
    """How to reach the room: a meeting URL (config.js is read), or explicit XMPP settings
    (a plain Prosody, like the local one of the two-site simulation)."""

    meeting_url: str = ""
    websocket_url: str = ""
    bosh_url: str = ""  # forces BOSH (with websocket_url too: the WebSocket's fallback)
    tcp: str = ""  # host:port
    domain: str = ""
    muc_domain: str = ""
    room: str = ""
    focus: str = ""
    password: str = ""
    insecure: bool = False
    account: Account | None = None  #: log in with this account instead of anonymously
    #: no MUC: pair one-to-one with these accounts (``room`` is then the pairing namespace)
    direct_peers: tuple[str, ...] = ()
    #: room keepalive (RoomConfig): a connection that died silently (a NAT reboot) is found
    #: within ping_interval + ping_timeout s
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    ping_failures: int = 1


def meeting_room_name(url: str) -> str:
    """The room of ``https://meet.example.org/MyRoom`` (lower-cased like Jitsi)."""
    path = urlsplit(url).path.strip("/")
    return path.rsplit("/", 1)[-1].lower() if path else ""


async def resolve_room(opts: RoomOptions, role: str, key_id: str, robot: str = "") -> RoomConfig:
    """A RoomConfig announcing ``role`` and the key id; raises SiteError or DiscoveryError."""
    common = dict(
        teleop_role=role,
        key_id=key_id,
        robot=robot,
        password=opts.password or None,
        insecure=opts.insecure,
        display_name=f"jitsi-teleop {role}",
        account=opts.account,
        direct_peers=opts.direct_peers,
        ping_interval=opts.ping_interval,
        ping_timeout=opts.ping_timeout,
        ping_failures=opts.ping_failures,
    )
    tcp_host, tcp_port = None, 5222
    if opts.tcp:
        host, _, port = opts.tcp.rpartition(":")
        if not host or not port.isdigit():
            raise SiteError(f"tcp wants host:port, got {opts.tcp!r}")
        tcp_host, tcp_port = host, int(port)
    domain = opts.domain or (opts.account.domain if opts.account else "")
    explicit = bool(domain and (opts.websocket_url or opts.bosh_url or tcp_host))
    if opts.meeting_url and not explicit:  # read the deployment's config.js
        settings = await discover(
            opts.meeting_url,
            insecure=opts.insecure,
            domain=opts.domain or None,
            muc_domain=opts.muc_domain or None,
            websocket_url=opts.websocket_url or None,
            bosh_url=opts.bosh_url or None,
            focus=opts.focus or None,
        )
        over: dict[str, object] = dict(common)
        if opts.room:
            over["room"] = opts.room
        if tcp_host:
            over.update(tcp_host=tcp_host, tcp_port=tcp_port, websocket_url=None, bosh_url=None)
        if opts.account is not None:  # the account's domain, not the guest domain
            over["domain"] = opts.account.domain
        try:
            return settings.room_config(**over)
        except ValueError as e:
            raise SiteError(f"room settings: {e}") from None
    room = opts.room or (meeting_room_name(opts.meeting_url) if opts.meeting_url else "")
    if not (domain and room and (opts.websocket_url or opts.bosh_url or tcp_host)):
        raise SiteError(
            "no room: give a meeting URL (room), or domain, room_name and websocket_url, "
            "bosh_url or tcp"
        )
    try:
        return RoomConfig(
            room=room,
            domain=domain,
            muc_domain=opts.muc_domain,
            websocket_url=None if tcp_host else (opts.websocket_url or None),
            bosh_url=None if tcp_host else (opts.bosh_url or None),
            tcp_host=tcp_host,
            tcp_port=tcp_port,
            focus=opts.focus or None,
            **common,  # type: ignore[arg-type]
        )
    except ValueError as e:
        raise SiteError(f"room settings: {e}") from None


def load_site_secret(secret_file: str, room: str, env: Mapping[str, str] | None = None) -> Secret:
    """Key file parameter, else ``$JITSI_TELEOP_KEY_FILE``, else ``$JITSI_TELEOP_PASSPHRASE``."""
    env = os.environ if env is None else env
    path = secret_file or env.get(ENV_KEY_FILE, "")
    try:
        if path:
            return load_secret(key_file=os.path.expanduser(path))
        phrase = env.get(ENV_PASSPHRASE, "")
        if phrase:
            return load_secret(passphrase=phrase, room=room)
    except OSError as e:
        raise SiteError(f"secret file {path}: {e.strerror}") from None
    except ValueError as e:
        raise SiteError(f"secret: {e}") from None
    raise SiteError(
        f"no pairing secret: set secret_file (make one with `jitsi-teleop keygen FILE`), "
        f"or ${ENV_KEY_FILE}, or ${ENV_PASSPHRASE}"
    )
