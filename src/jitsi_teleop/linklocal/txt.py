"""XEP-0174 presence TXT records: what a site announces on the LAN, and strict parsing of what
others announce.

Pure logic, no I/O. Why strict: anything on the LAN can multicast a ``_presence._tcp``
service, so every record is untrusted input (size, keys, values); a bad one is refused with
a reason that is counted, never half-used. The standard keys follow XEP-0174 §6 (``txtvers``
first, ``port.p2pj``, ``nick``, ``status``, ``msg``, ``jid``...); ours ride along as extra
keys (``jt.v``, ``jt.room``, ``jt.role``, ``jt.key``, ``jt.robot``), which XEP-0174 lets
unknown receivers ignore. None of it is a secret, and none of it is trusted: the key id only
says which peers are worth a pairing attempt, the handshake decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVICE_TYPE = "_presence._tcp.local."
TXTVERS = "1"
#: DNS-SD (RFC 6763 §6.2): a TXT record should stay under 1300 bytes; each string <= 255
MAX_TXT_BYTES = 1300
MAX_TXT_KEYS = 32
#: XEP-0174 status values
STATUSES = ("avail", "away", "dnd")
ROLES = ("leader", "follower")
_INSTANCE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}@[A-Za-z0-9_.\-]{1,63}")
_LAN_ROOM_RE = re.compile(r"[a-z0-9_.\-]{1,63}")
_KEY_RE = re.compile(r"[0-9a-f]{12}")
_ROBOT_RE = re.compile(r"[A-Za-z0-9_.\-]{0,64}")
_TEXT_MAX = 128


class TxtError(ValueError):
    """A TXT record we refuse; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_instance(name: str) -> str:
    """XEP-0174 instance names are ``user@machine``; ours are also valid JIDs."""
    if not _INSTANCE_RE.fullmatch(name):
        raise TxtError("bad_name", f"instance name {name!r} is not user@machine")
    return name


def check_lan_room(name: str) -> str:
    """A LAN "room" name: keeps two teleoperation pairs on one network apart."""
    n = name.strip().lower()
    if not _LAN_ROOM_RE.fullmatch(n):
        raise ValueError(f"LAN room name {name!r}: use 1-63 of a-z 0-9 _ . -")
    return n


@dataclass(frozen=True)
class LanPresence:
    """One site's announcement (the TXT record plus the SRV port)."""

    instance: str  #: ``user@machine``: the XEP-0174 instance name, also the stream's from/to
    port: int
    room: str  #: the LAN room (``jt.room``)
    role: str  #: ``leader`` or ``follower``
    key_id: str  #: 12 hex digits: which secret this site holds (not the secret)
    robot: str = ""
    nick: str = "jitsi-teleop"
    status: str = "avail"
    msg: str = ""
    version: str = "0"
    #: drop-down: this site's nick in the Jitsi room it is also in (``jt.muc``)
    muc: str = ""

    def to_txt(self) -> dict[str, str]:
        """Ordered as XEP-0174 asks: ``txtvers`` first."""
        txt = {
            "txtvers": TXTVERS,
            "port.p2pj": str(self.port),
            "nick": self.nick,
            "status": self.status,
            "jid": self.instance,
            "jt.v": self.version,
            "jt.room": self.room,
            "jt.role": self.role,
            "jt.key": self.key_id,
        }
        if self.msg:
            txt["msg"] = self.msg
        if self.robot:
            txt["jt.robot"] = self.robot
        if self.muc:
            txt["jt.muc"] = self.muc
        return txt


def txt_size(props: dict[bytes, bytes | None]) -> int:
    """Wire size of a TXT record: one length byte plus ``key=value`` per entry."""
    return sum(1 + len(k) + (0 if v is None else 1 + len(v)) for k, v in props.items())


def _text(props: dict[str, str], key: str, default: str = "") -> str:
    v = props.get(key, default)
    if len(v) > _TEXT_MAX or any(ord(c) < 32 for c in v):
        raise TxtError("txt_malformed", f"{key} is too long or has control characters")
    return v


def parse_presence(instance: str, port: int, raw: dict[bytes, bytes | None]) -> LanPresence:
    """Parse and validate a browsed service. Raises :class:`TxtError` (reasons:
    ``txt_oversized``, ``txt_malformed``, ``not_teleop``, ``bad_name``)."""
    check_instance(instance)
    if txt_size(raw) > MAX_TXT_BYTES or len(raw) > MAX_TXT_KEYS:
        raise TxtError("txt_oversized", f"{txt_size(raw)} bytes in {len(raw)} keys")
    props: dict[str, str] = {}
    for k, v in raw.items():
        try:
            key = k.decode("ascii").lower()
            props[key] = "" if v is None else v.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TxtError("txt_malformed", "key or value is not text") from e
    if props.get("txtvers") != TXTVERS:
        raise TxtError("txt_malformed", f"txtvers is {props.get('txtvers')!r}, not 1")
    if not 0 < port < 65536:
        raise TxtError("txt_malformed", f"port {port}")
    p2pj = props.get("port.p2pj")
    if p2pj is not None and p2pj != str(port):
        raise TxtError("txt_malformed", f"port.p2pj {p2pj!r} differs from the SRV port {port}")
    status = props.get("status", "avail")
    if status not in STATUSES:
        raise TxtError("txt_malformed", f"status {status!r}")
    if "jt.room" not in props:
        raise TxtError("not_teleop", "no jt.room: an ordinary XEP-0174 client")
    room = props["jt.room"]
    role = props.get("jt.role", "")
    key = props.get("jt.key", "")
    robot = props.get("jt.robot", "")
    if not _LAN_ROOM_RE.fullmatch(room):
        raise TxtError("txt_malformed", f"jt.room {room[:70]!r}")
    if role not in ROLES:
        raise TxtError("txt_malformed", f"jt.role {role[:20]!r}")
    if not _KEY_RE.fullmatch(key):
        raise TxtError("txt_malformed", f"jt.key {key[:20]!r} is not 12 hex digits")
    if not _ROBOT_RE.fullmatch(robot):
        raise TxtError("txt_malformed", f"jt.robot {robot[:70]!r}")
    muc = props.get("jt.muc", "")
    if not _ROBOT_RE.fullmatch(muc):
        raise TxtError("txt_malformed", f"jt.muc {muc[:70]!r}")
    return LanPresence(
        instance=instance,
        port=port,
        room=room,
        role=role,
        key_id=key,
        robot=robot,
        nick=_text(props, "nick", "jitsi-teleop"),
        status=status,
        msg=_text(props, "msg"),
        version=_text(props, "jt.v", "0"),
        muc=muc,
    )
