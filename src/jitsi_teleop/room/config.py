"""Connection and room settings, and the errors the room layer raises."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from .account import Account

_NICK_RE = re.compile(r"[0-9a-f]{8}")
_ROOM_RE = re.compile(r"[^\s@/\"&'<>:]{1,256}")
_KEY_RE = re.compile(r"[0-9a-f]{0,64}")
_ROBOT_RE = re.compile(r"[A-Za-z0-9_.\-]{0,64}")


def new_nick() -> str:
    """An 8-hex-digit nick: Jitsi uses the nick as endpoint id and validates its form."""
    return secrets.token_hex(4)


class RoomError(Exception):
    """Joining or staying in the room failed; ``reason`` is one short human-readable line."""

    kind = "error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectError(RoomError):
    """The server could not be reached or the stream could not be set up."""

    kind = "unreachable"


class TlsError(ConnectError):
    kind = "tls"


class AuthError(RoomError):
    kind = "auth"


class JoinError(RoomError):
    """The MUC refused the join; ``condition`` is the XMPP error condition."""

    kind = "join"

    def __init__(self, reason: str, condition: str = "") -> None:
        super().__init__(reason)
        self.condition = condition


class FocusError(RoomError):
    kind = "focus"

    def __init__(self, reason: str, condition: str = "") -> None:
        super().__init__(reason)
        self.condition = condition

    @property
    def focus_absent(self) -> bool:
        """The server has no such focus component (plain Prosody), as opposed to a refusal."""
        if self.condition == "not-allowed":  # Prosody without s2s: "remote domains"
            return "remote domain" in self.reason
        return self.condition in (
            "remote-server-not-found",
            "remote-server-timeout",
            "service-unavailable",
            "item-not-found",
            "feature-not-implemented",
            "recipient-unavailable",
        )


@dataclass
class RoomConfig:
    """Everything needed to join one room; all values explicit (see ``discovery`` to fill it
    from a meeting URL).

    ``tcp_host``, or ``websocket_url`` and/or ``bosh_url``, selects the transport: with both
    HTTP URLs the WebSocket is tried first and BOSH is the fallback; ``bosh_url`` alone forces
    BOSH (``bosh_wait``: how long the server may hold a long poll, s). ``focus`` is the
    focus component JID (``focus.<domain>`` on Jitsi); None skips the conference IQ (plain
    Prosody); a focus that does not exist on the server is skipped unless
    ``focus_required``.
    """

    room: str
    domain: str
    muc_domain: str = ""
    websocket_url: str | None = None
    bosh_url: str | None = None
    bosh_wait: int = 60
    tcp_host: str | None = None
    tcp_port: int = 5222
    focus: str | None = None
    focus_required: bool = False
    password: str | None = None
    token: str | None = None
    #: log in with this account (SASL) instead of anonymously; the XMPP domain is its domain
    account: Account | None = None
    #: no MUC: pair one-to-one with these accounts (bare JIDs); ``room`` is then only the
    #: pairing namespace both sites agree on (see room.direct)
    direct_peers: tuple[str, ...] = ()
    insecure: bool = False
    nick: str = field(default_factory=new_nick)
    display_name: str = "jitsi-teleop"
    # what we announce in presence
    teleop_role: str | None = "leader"
    robot: str = ""
    key_id: str = ""
    # timing
    connect_timeout: float = 10.0
    join_timeout: float = 10.0
    focus_timeout: float = 30.0
    #: keepalive (XEP-0199 ping to the server) every ``ping_interval`` s while the stream is
    #: up; a ping that gets no answer, and no other byte from the server, within
    #: ``ping_timeout`` s is a failure, and ``ping_failures`` in a row drop the stream (then
    #: the room reconnects and rejoins). A connection that died silently (a NAT reboot: no
    #: FIN, no reset) is found within ping_interval + ping_timeout of dying, plus the time
    #: the ping's answer takes (ping_failures = 1; each further failure adds as much again).
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    ping_failures: int = 1
    reconnect: bool = True
    #: occupants that vanished for technical reasons (missing from the roster after our
    #: rejoin, or removed with MUC status 332/333: server shutdown, connection lost) are kept
    #: this long before they are reported as left, so a restart does not churn the peer list
    rejoin_grace: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # The server's per-client rate limit (mod_limits, 10 kB/s on stock Jitsi) and stanza size
    # limit. Prosody 0.12 on epoll enforces the rate without any burst: after reading N bytes
    # it stops reading for N/rate seconds, so a burst of ours would only queue at the server
    # and add latency. Hence a rate a bit under the limit and a burst of about one frame.
    rate_bytes_per_s: float = 9000.0
    burst_bytes: float = 600.0
    max_stanza_bytes: int = 256 * 1024 - 16 * 1024
    # answers to IQs routed from other occupants (hostile floods must not eat the budget)
    iq_replies_per_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0: {value!r}")
        if (
            isinstance(self.ping_failures, bool)
            or not isinstance(self.ping_failures, int)
            or self.ping_failures < 1
        ):
            raise ValueError(f"ping_failures must be an integer >= 1: {self.ping_failures!r}")
        self.room = self.room.strip().lower()
        if not _ROOM_RE.fullmatch(self.room):
            raise ValueError(f"invalid room name {self.room!r}")
        if self.account is not None:
            if not self.domain:
                self.domain = self.account.domain
            elif self.domain.lower() != self.account.domain.lower():
                raise ValueError(
                    f"account {self.account.jid} is not on the server's domain {self.domain}"
                )
        if self.direct_peers and self.account is None:
            raise ValueError("one-to-one (peer_jid) needs an account login (jid and password)")
        if not self.domain:
            raise ValueError("domain is required")
        if not self.muc_domain:
            self.muc_domain = f"conference.{self.domain}"
        self.muc_domain = self.muc_domain.lower()
        if bool(self.websocket_url or self.bosh_url) == bool(self.tcp_host):
            raise ValueError("give tcp_host, or websocket_url and/or bosh_url")
        if self.bosh_url and not self.bosh_url.startswith(("http://", "https://")):
            raise ValueError(f"bosh_url must be http:// or https://: {self.bosh_url!r}")
        if not 1 <= self.bosh_wait <= 3600:
            raise ValueError(f"bosh_wait must be 1..3600 s: {self.bosh_wait!r}")
        if self.websocket_url and not self.websocket_url.startswith(("ws://", "wss://")):
            raise ValueError(f"websocket_url must be ws:// or wss://: {self.websocket_url!r}")
        if not _NICK_RE.fullmatch(self.nick):
            raise ValueError(f"nick must be 8 lower-case hex digits: {self.nick!r}")
        if self.teleop_role is not None and self.teleop_role not in ("leader", "follower"):
            raise ValueError(f"teleop_role must be leader, follower or None: {self.teleop_role!r}")
        # the same rules peers apply to our presence (stanzas.TeleopPresence.validate)
        if not _KEY_RE.fullmatch(self.key_id):
            raise ValueError(f"key_id must be up to 64 lower-case hex digits: {self.key_id!r}")
        if not _ROBOT_RE.fullmatch(self.robot):
            raise ValueError(f"robot must be up to 64 of [A-Za-z0-9_.-]: {self.robot!r}")

    @property
    def room_jid(self) -> str:
        return f"{self.room}@{self.muc_domain}"
