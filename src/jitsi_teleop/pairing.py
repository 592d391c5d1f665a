"""Pairing: prove both ends hold the shared secret and derive per-direction session keys.

A pure state machine: :meth:`Pairing.initiate` and :meth:`Pairing.handle` take and return bytes;
the caller carries them as private MUC messages and passes the sender's occupant nick, which
the server sets (other occupants cannot forge ``from``). Why this shape: the server operator
sees and can rewrite every stanza, and anyone can join the room, so nothing the room says is
trusted until it is authenticated with the secret only the two ends hold.

Flow (I = initiator, R = responder; either role may initiate)::

    I -> R  INIT      role, room, nicks, key id, nonce_I, X25519 e_I, DTLS fingerprints_I,
                      MAC under a key derived from the secret (refuses outsiders at once)
    R -> I  RESPONSE  role, room, nicks, key id, nonce_R, e_R, fingerprints_R, echo nonce_I,
                      MAC over the transcript hash, keyed from secret + DH(e_I, e_R)
    I -> R  CONFIRM   nonce_I, nonce_R, MAC over the transcript hash (key confirmation)

Session keys come from HKDF(salt = room key, ikm = DH, info = label || transcript hash): one for
leader->follower, one for follower->leader. Ephemeral DH gives forward secrecy: a secret leaked
later does not open recorded sessions.

Security note: this is a pre-shared-key protocol, not a PAKE. Someone who records one handshake
(the server operator can) may test passphrase guesses offline; scrypt makes each guess slow,
but a generated key file (:func:`generate_key_file`, 256 random bits) is the strong option.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTOCOL_VERSION = 1
MAGIC = b"JTP"
SECRET_SIZE = 32
NONCE_SIZE = 32
KEY_ID_SIZE = 6
MAC_SIZE = 32
MAX_STR = 1024
#: scrypt cost for passphrases: 2^15 x 8 x 128 B = 32 MiB and ~0.1 s per guess.
SCRYPT_N = 1 << 15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSPHRASE = 8
KEY_FILE_HEADER = "jitsi-teleop-key-v1"


class Role(str, enum.Enum):
    """Which arm this end drives; the directional keys are named after roles."""

    LEADER = "leader"
    FOLLOWER = "follower"

    @property
    def other(self) -> Role:
        return Role.FOLLOWER if self is Role.LEADER else Role.LEADER


_ROLE_CODE = {Role.LEADER: 1, Role.FOLLOWER: 2}
_CODE_ROLE = {v: k for k, v in _ROLE_CODE.items()}


class MsgType(enum.IntEnum):
    INIT = 1
    RESPONSE = 2
    CONFIRM = 3


# ---------------------------------------------------------------------------------------------
# Errors: every refusal is typed; ``reason`` is the counter it is counted under.


class HandshakeError(Exception):
    reason = "malformed"


class MalformedMessage(HandshakeError):
    """Not a well-formed handshake message (truncated, oversized, bad fields)."""

    reason = "malformed"


class WrongVersion(MalformedMessage):
    reason = "wrong_version"


class AuthenticationFailed(HandshakeError):
    """The MAC did not verify: wrong secret, or the message was tampered with."""

    reason = "unauthenticated"


class KeyMismatch(AuthenticationFailed):
    """The peer announces a different key id: the two ends are configured with different secrets."""

    reason = "key_mismatch"


class IdentityMismatch(HandshakeError):
    """Room, sender or receiver in the message do not match who sent it and to whom."""

    reason = "identity"


class RoleConflict(HandshakeError):
    """Both ends claim the same role (two leaders or two followers)."""

    reason = "role_conflict"


class ReplayedMessage(HandshakeError):
    """A handshake message seen before."""

    reason = "replayed"


class UnexpectedMessage(HandshakeError):
    """A message that belongs to no handshake in progress (stale, or out of order)."""

    reason = "unexpected"


class FingerprintMismatch(HandshakeError):
    """The DTLS fingerprints signalled for WebRTC differ from those bound by the handshake."""

    reason = "fingerprint"


@dataclass
class PairingCounters:
    initiated: int = 0
    responded: int = 0
    completed: int = 0
    crossed: int = 0  # both initiated at once; the leader's handshake went on (counted at both)
    malformed: int = 0
    wrong_version: int = 0
    key_mismatch: int = 0
    unauthenticated: int = 0
    identity: int = 0
    role_conflict: int = 0
    replayed: int = 0
    unexpected: int = 0
    fingerprint: int = 0

    def count(self, reason: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------------
# Secrets


@dataclass(frozen=True, repr=False)
class Secret:
    """The pre-shared 32-byte key, never printed. ``source`` is "passphrase" or "key_file"."""

    key: bytes
    source: str = "key_file"

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != SECRET_SIZE:
            raise ValueError(f"secret must be {SECRET_SIZE} bytes")

    @property
    def key_id(self) -> str:
        """12 hex digits to show in presence/diagnostics: equal ids = same secret (a PRF output,
        so it reveals nothing about the key itself). For a passphrase secret it does let an
        observer test guesses offline, one scrypt each, like a recorded handshake would."""
        return _key_id(self.key).hex()

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r}, key_id={self.key_id!r})"


def _key_id(key: bytes) -> bytes:
    return hmac.new(key, b"jitsi-teleop/v1 key id", hashlib.sha256).digest()[:KEY_ID_SIZE]


def normalize_room(room: str) -> str:
    """Room names are case-insensitive in Jitsi (LJM lower-cases them)."""
    r = unicodedata.normalize("NFKC", room).strip().lower()
    if not r:
        raise ValueError("room name must not be empty")
    return r


def secret_from_passphrase(passphrase: str, room: str, *, n: int = SCRYPT_N) -> Secret:
    """Stretch a passphrase with scrypt, salted with the room name, so guessing is slow and a
    guess table for one room is useless for another."""
    p = unicodedata.normalize("NFKC", passphrase)
    if len(p) < MIN_PASSPHRASE:
        raise ValueError(f"passphrase must have at least {MIN_PASSPHRASE} characters")
    salt = b"jitsi-teleop/v1 passphrase\x00" + normalize_room(room).encode("utf-8")
    key = Scrypt(salt=salt, length=SECRET_SIZE, n=n, r=SCRYPT_R, p=SCRYPT_P).derive(
        p.encode("utf-8")
    )
    return Secret(key, "passphrase")


def format_key_file(key: bytes) -> str:
    return f"{KEY_FILE_HEADER} {base64.urlsafe_b64encode(key).decode('ascii')}\n"


def parse_key_file(text: str) -> Secret:
    """Strict: the header word, one base64url 32-byte key, nothing else."""
    parts = text.split()
    if len(parts) != 2 or parts[0] != KEY_FILE_HEADER:
        raise ValueError(f"not a key file: expected '{KEY_FILE_HEADER} <base64url key>'")
    try:
        key = base64.b64decode(parts[1].encode("ascii"), altchars=b"-_", validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError("key file: key is not valid base64url") from None
    if len(key) != SECRET_SIZE:
        raise ValueError(f"key file: key must be {SECRET_SIZE} bytes, got {len(key)}")
    return Secret(key, "key_file")


def generate_key_file(path: str | os.PathLike[str]) -> Secret:
    """Write a new random key, readable by the owner only; never overwrites an existing file."""
    key = os.urandom(SECRET_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(format_key_file(key))
    return Secret(key, "key_file")


def load_secret(
    *,
    key_file: str | os.PathLike[str] | None = None,
    passphrase: str | None = None,
    room: str | None = None,
) -> Secret:
    """Exactly one of ``key_file`` or ``passphrase`` (which needs ``room``)."""
    if (key_file is None) == (passphrase is None):
        raise ValueError("give exactly one of key_file or passphrase")
    if key_file is not None:
        with open(key_file, encoding="ascii") as f:
            return parse_key_file(f.read(4096))
    if room is None:
        raise ValueError("a passphrase needs the room name (it is the salt)")
    assert passphrase is not None
    return secret_from_passphrase(passphrase, room)


# ---------------------------------------------------------------------------------------------
# DTLS fingerprints

_FP_ALGS = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}
_FP_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2})*")


def normalize_fingerprint(fp: str) -> str:
    """``"sha-256 AB:CD:..."`` (SDP ``a=fingerprint`` value) -> ``"sha-256 ab:cd:..."``."""
    parts = fp.split()
    if len(parts) != 2:
        raise ValueError(f"fingerprint must be '<algorithm> <hex:hex:...>': {fp!r}")
    alg, value = parts[0].lower(), parts[1].lower()
    if alg not in _FP_ALGS:
        raise ValueError(f"unsupported fingerprint algorithm {alg!r}")
    if not _FP_RE.fullmatch(value) or len(value.split(":")) != _FP_ALGS[alg]:
        raise ValueError(f"malformed {alg} fingerprint {value!r}")
    return f"{alg} {value}"


def normalize_fingerprints(fps: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({normalize_fingerprint(f) for f in fps}))


# ---------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True)
class Hello:
    """INIT or RESPONSE. ``body`` is the encoded message without the MAC (for the transcript)."""

    type: MsgType
    role: Role
    room: str
    sender: str
    receiver: str
    key_id: bytes
    nonce: bytes
    ephemeral: bytes
    fingerprints: tuple[str, ...]
    echo: bytes | None  # RESPONSE only: the initiator's nonce
    mac: bytes
    body: bytes


@dataclass(frozen=True)
class Confirm:
    init_nonce: bytes
    resp_nonce: bytes
    mac: bytes
    body: bytes


class _Writer:
    def __init__(self, t: MsgType) -> None:
        self.buf = bytearray(MAGIC + bytes([PROTOCOL_VERSION, int(t)]))

    def raw(self, b: bytes) -> _Writer:
        self.buf += b
        return self

    def str(self, s: str) -> _Writer:
        b = s.encode("utf-8")
        if len(b) > MAX_STR:
            raise ValueError(f"string field longer than {MAX_STR} bytes")
        self.buf += struct.pack(">H", len(b)) + b
        return self


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedMessage("handshake message truncated")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def str(self) -> str:
        (n,) = struct.unpack(">H", self.raw(2))
        if n > MAX_STR:
            raise MalformedMessage("string field too long")
        try:
            return self.raw(n).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedMessage("string field is not UTF-8") from None


MAX_MESSAGE = 8 * 1024


def _encode_hello(
    t: MsgType,
    role: Role,
    room: str,
    sender: str,
    receiver: str,
    key_id: bytes,
    nonce: bytes,
    ephemeral: bytes,
    fingerprints: tuple[str, ...],
    echo: bytes | None,
) -> bytes:
    w = _Writer(t).raw(bytes([_ROLE_CODE[role]])).str(room).str(sender).str(receiver)
    w.raw(key_id).raw(nonce).raw(ephemeral).str(",".join(fingerprints))
    if t is MsgType.RESPONSE:
        assert echo is not None
        w.raw(echo)
    return bytes(w.buf)


def decode_message(data: bytes) -> Hello | Confirm:
    """Parse one handshake message strictly; raises :class:`MalformedMessage`/`WrongVersion`."""
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMessage("handshake message must be bytes")
    data = bytes(data)
    if len(data) > MAX_MESSAGE:
        raise MalformedMessage(f"handshake message of {len(data)} bytes is too large")
    r = _Reader(data)
    if r.raw(len(MAGIC)) != MAGIC:
        raise MalformedMessage("not a jitsi-teleop handshake message")
    version, code = r.raw(2)
    if version != PROTOCOL_VERSION:
        raise WrongVersion(f"handshake version {version}, this end speaks {PROTOCOL_VERSION}")
    try:
        t = MsgType(code)
    except ValueError:
        raise MalformedMessage(f"unknown handshake message type {code}") from None
    msg: Hello | Confirm
    if t is MsgType.CONFIRM:
        a, b = r.raw(NONCE_SIZE), r.raw(NONCE_SIZE)
        body = data[: r.pos]
        msg = Confirm(a, b, r.raw(MAC_SIZE), body)
    else:
        msg = _decode_hello(t, r, data)
    if r.pos != len(data):
        raise MalformedMessage(f"{len(data) - r.pos} trailing bytes in handshake message")
    return msg


def _decode_hello(t: MsgType, r: _Reader, data: bytes) -> Hello:
    code = r.raw(1)[0]
    if code not in _CODE_ROLE:
        raise MalformedMessage(f"unknown role code {code}")
    room, sender, receiver = r.str(), r.str(), r.str()
    key_id, nonce, eph = r.raw(KEY_ID_SIZE), r.raw(NONCE_SIZE), r.raw(32)
    fp_text = r.str()
    try:
        fps = normalize_fingerprints(fp_text.split(",")) if fp_text else ()
    except ValueError as e:
        raise MalformedMessage(str(e)) from None
    if ",".join(fps) != fp_text:
        raise MalformedMessage("fingerprints not in canonical form")
    echo = r.raw(NONCE_SIZE) if t is MsgType.RESPONSE else None
    body = data[: r.pos]
    return Hello(
        t,
        _CODE_ROLE[code],
        room,
        sender,
        receiver,
        key_id,
        nonce,
        eph,
        fps,
        echo,
        r.raw(MAC_SIZE),
        body,
    )


# ---------------------------------------------------------------------------------------------
# Key schedule


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@dataclass(frozen=True, repr=False)
class SessionKeys:
    """Result of a completed handshake: what protect.SessionCipher and the signalling need."""

    role: Role
    local_id: str
    peer_id: str
    session_id: bytes
    send_key: bytes
    recv_key: bytes
    local_fingerprints: tuple[str, ...]
    peer_fingerprints: tuple[str, ...]
    initiator: bool

    @property
    def session_tag(self) -> bytes:
        """4 bytes in every sealed record: tells frames of an older session apart."""
        return self.session_id[:4]

    def check_peer_fingerprints(self, fingerprints: Iterable[str]) -> None:
        """Refuse a WebRTC answer/offer whose DTLS fingerprints are not the ones the peer bound
        in the handshake: that is how a server in the middle would show up."""
        try:
            got = normalize_fingerprints(fingerprints)
        except ValueError as e:
            raise FingerprintMismatch(
                f"unparseable DTLS fingerprint from {self.peer_id}: {e}"
            ) from None
        if not got or got != self.peer_fingerprints:
            raise FingerprintMismatch(
                f"DTLS fingerprints signalled by {self.peer_id} {list(got)} differ from those "
                f"authenticated in the handshake {list(self.peer_fingerprints)}"
            )

    def __repr__(self) -> str:
        return (
            f"SessionKeys(role={self.role.value}, peer={self.peer_id!r}, "
            f"session={self.session_id.hex()})"
        )


def _session(
    role: Role,
    local_id: str,
    peer_id: str,
    prk_salt: bytes,
    dh: bytes,
    th: bytes,
    local_fps: tuple[str, ...],
    peer_fps: tuple[str, ...],
    initiator: bool,
) -> SessionKeys:
    l2f = _hkdf(dh, prk_salt, b"leader->follower" + th)
    f2l = _hkdf(dh, prk_salt, b"follower->leader" + th)
    sid = _hkdf(dh, prk_salt, b"session id" + th, 16)
    send, recv = (l2f, f2l) if role is Role.LEADER else (f2l, l2f)
    return SessionKeys(role, local_id, peer_id, sid, send, recv, local_fps, peer_fps, initiator)


@dataclass
class _Pending:
    peer_id: str
    nonce: bytes
    private: X25519PrivateKey
    ephemeral: bytes
    init: Hello | None = None  # initiator: our INIT; responder: the INIT we answered
    th: bytes = b""
    dh: bytes = b""


@dataclass(frozen=True)
class HandshakeResult:
    """What to send back (if anything) and the new session when one just completed."""

    reply: bytes | None = None
    session: SessionKeys | None = None


@dataclass
class _Seen:
    """Bounded memory of nonces already used, to refuse replays."""

    limit: int
    items: OrderedDict[bytes, None] = field(default_factory=OrderedDict)

    def __contains__(self, nonce: bytes) -> bool:
        return nonce in self.items

    def add(self, nonce: bytes) -> None:
        self.items[nonce] = None
        while len(self.items) > self.limit:
            self.items.popitem(last=False)


class Pairing:
    """One end's handshake state. Never yields keys unless the peer proved the secret.

    ``local_id`` is our occupant nick; ``from_id`` passed to :meth:`handle` is the nick the
    server says the message came from. ``random_bytes`` is injectable for deterministic tests.
    A completed handshake replaces the previous session (re-pair after a restart, or rekey).
    """

    def __init__(
        self,
        secret: Secret,
        role: Role,
        room: str,
        local_id: str,
        local_fingerprints: Iterable[str] = (),
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        replay_memory: int = 1024,
        max_pending: int = 4,
        max_initiated: int = 16,
    ) -> None:
        self.role = Role(role)
        self.room = normalize_room(room)
        if not local_id:
            raise ValueError("local_id must not be empty")
        self.local_id = local_id
        self.local_fingerprints = normalize_fingerprints(local_fingerprints)
        self.counters = PairingCounters()
        self.session: SessionKeys | None = None
        self._random = random_bytes
        self._key_id = _key_id(secret.key)
        self._room_key = _hkdf(secret.key, b"jitsi-teleop/v1 room", self.room.encode("utf-8"))
        self._init_key = _hkdf(self._room_key, b"", b"init mac")
        self._seen = _Seen(replay_memory)
        self._completed = _Seen(replay_memory)
        #: handshakes we started, one per occupant (several role claimants are tried at
        #: once, so an impostor that never answers cannot hold up the real peer)
        self._initiated: OrderedDict[str, _Pending] = OrderedDict()
        self._responding: OrderedDict[str, _Pending] = OrderedDict()
        self._max_pending = max_pending
        self._max_initiated = max_initiated

    @property
    def key_id(self) -> str:
        return self._key_id.hex()

    def set_local_id(self, local_id: str) -> None:
        """Our address changed (a rejoin under another nick): handshakes in flight were bound
        to the old one and are dropped."""
        if not local_id:
            raise ValueError("local_id must not be empty")
        if local_id != self.local_id:
            self.local_id = local_id
            self._initiated.clear()
            self._responding.clear()

    def in_progress(self, peer_id: str) -> bool:
        """A handshake with ``peer_id`` is under way (either direction)."""
        return peer_id in self._initiated or peer_id in self._responding

    def abandon(self, peer_id: str | None = None) -> None:
        """Forget handshakes in flight with ``peer_id`` (all when None): it left, or another
        occupant proved the secret first."""
        if peer_id is None:
            self._initiated.clear()
            self._responding.clear()
        else:
            self._initiated.pop(peer_id, None)
            self._responding.pop(peer_id, None)

    def set_local_fingerprints(self, fingerprints: Iterable[str]) -> None:
        """New DTLS certificate (new peer connection): later handshakes bind these."""
        self.local_fingerprints = normalize_fingerprints(fingerprints)

    # -- initiator ------------------------------------------------------------------------

    def initiate(self, peer_id: str) -> bytes:
        """Start a handshake with ``peer_id``; replaces the one we started with it before
        (handshakes with other occupants go on; the oldest beyond ``max_initiated`` is
        dropped)."""
        if not peer_id or peer_id == self.local_id:
            raise ValueError("peer_id must be another occupant's nick")
        p = self._new_pending(peer_id)
        body = _encode_hello(
            MsgType.INIT,
            self.role,
            self.room,
            self.local_id,
            peer_id,
            self._key_id,
            p.nonce,
            p.ephemeral,
            self.local_fingerprints,
            None,
        )
        msg = body + _mac(self._init_key, body)
        init = decode_message(msg)
        assert isinstance(init, Hello)
        p.init = init
        self._initiated.pop(peer_id, None)
        self._initiated[peer_id] = p
        while len(self._initiated) > self._max_initiated:
            self._initiated.popitem(last=False)
        self._seen.add(p.nonce)
        self.counters.initiated += 1
        return msg

    def _new_pending(self, peer_id: str) -> _Pending:
        priv = X25519PrivateKey.from_private_bytes(self._random(32))
        eph = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _Pending(peer_id, self._random(NONCE_SIZE), priv, eph)

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, message: bytes, from_id: str) -> HandshakeResult:
        """Process one message from occupant ``from_id``. Raises a counted HandshakeError."""
        try:
            msg = decode_message(message)
            if isinstance(msg, Confirm):
                return self._on_confirm(msg, from_id)
            if msg.type is MsgType.INIT:
                return self._on_init(msg, from_id)
            return self._on_response(msg, from_id)
        except HandshakeError as e:
            self.counters.count(e.reason)
            raise

    def check_peer_fingerprints(self, fingerprints: Iterable[str]) -> None:
        """Counted check of signalled DTLS fingerprints against the current session."""
        try:
            if self.session is None:
                raise FingerprintMismatch("no paired session: refusing WebRTC signalling")
            self.session.check_peer_fingerprints(fingerprints)
        except FingerprintMismatch:
            self.counters.fingerprint += 1
            raise

    def _check_room_and_key(self, m: Hello, from_id: str) -> None:
        """Clear-text fields first, for clear errors; the MAC check follows and decides."""
        if m.room != self.room:
            raise IdentityMismatch(
                f"handshake from {from_id} is for room {m.room!r}, this is {self.room!r}"
            )
        if m.key_id != self._key_id:
            raise KeyMismatch(
                f"{from_id} uses key id {m.key_id.hex()}, this end "
                f"{self._key_id.hex()}: the two ends have different secrets"
            )

    def _check_identity(self, m: Hello, from_id: str, expected_peer: str | None) -> None:
        if m.sender != from_id or (expected_peer is not None and from_id != expected_peer):
            raise IdentityMismatch(
                f"handshake claims sender {m.sender!r} but came from {from_id!r}"
            )
        if m.receiver != self.local_id:
            raise IdentityMismatch(
                f"handshake addressed to {m.receiver!r}, not to us ({self.local_id!r})"
            )

    # -- responder ------------------------------------------------------------------------

    def _on_init(self, m: Hello, from_id: str) -> HandshakeResult:
        self._check_room_and_key(m, from_id)
        if not hmac.compare_digest(m.mac, _mac(self._init_key, m.body)):
            raise AuthenticationFailed(
                f"INIT from {from_id} failed authentication (wrong secret or tampered)"
            )
        self._check_identity(m, from_id, None)
        if m.role is self.role:
            raise RoleConflict(
                f"{from_id} also claims the {m.role.value} role; exactly one "
                "leader and one follower may pair"
            )
        if m.nonce in self._seen:
            raise ReplayedMessage(f"INIT from {from_id} was seen before (replay)")
        self._seen.add(m.nonce)
        if from_id in self._initiated:
            # crossed (both started at once): resolved the same way at both ends, without a
            # timeout: the leader's handshake goes on and the follower answers it. Roles
            # always differ between ends that hold the secret (RoleConflict otherwise).
            self.counters.crossed += 1
            if self.role is Role.LEADER:
                return HandshakeResult()
            del self._initiated[from_id]
        return HandshakeResult(reply=self._respond(m, from_id))

    def _respond(self, m: Hello, from_id: str) -> bytes:
        p = self._new_pending(from_id)
        dh = _exchange(p.private, m.ephemeral)
        body = _encode_hello(
            MsgType.RESPONSE,
            self.role,
            self.room,
            self.local_id,
            from_id,
            self._key_id,
            p.nonce,
            p.ephemeral,
            self.local_fingerprints,
            m.nonce,
        )
        th = hashlib.sha256(m.body + m.mac + body).digest()
        mac = _mac(_hkdf(dh, self._room_key, b"response mac" + th), th)
        p.init, p.th, p.dh = m, th, dh
        self._seen.add(p.nonce)
        self._responding.pop(from_id, None)
        self._responding[from_id] = p
        while len(self._responding) > self._max_pending:
            self._responding.popitem(last=False)
        self.counters.responded += 1
        return body + mac

    def _on_confirm(self, m: Confirm, from_id: str) -> HandshakeResult:
        p = self._responding.get(from_id)
        if p is None or p.init is None or (m.init_nonce, m.resp_nonce) != (p.init.nonce, p.nonce):
            if m.resp_nonce in self._completed:
                raise ReplayedMessage(f"CONFIRM from {from_id} for a completed handshake")
            raise UnexpectedMessage(f"CONFIRM from {from_id} matches no handshake in progress")
        key = _hkdf(p.dh, self._room_key, b"confirm mac" + p.th)
        if not hmac.compare_digest(m.mac, _mac(key, m.body + p.th)):
            raise AuthenticationFailed(f"CONFIRM from {from_id} failed authentication")
        self._initiated.clear()
        self._responding.clear()
        self._completed.add(p.nonce)
        init = p.init
        self.session = _session(
            self.role,
            self.local_id,
            from_id,
            self._room_key,
            p.dh,
            p.th,
            self.local_fingerprints,
            init.fingerprints,
            False,
        )
        self.counters.completed += 1
        return HandshakeResult(session=self.session)

    # -- initiator ------------------------------------------------------------------------

    def _on_response(self, m: Hello, from_id: str) -> HandshakeResult:
        p = self._initiated.get(from_id)
        if p is None or m.echo != p.nonce:
            for other in self._initiated.values():
                if m.echo == other.nonce:  # a real answer, relayed by someone else
                    raise IdentityMismatch(
                        f"RESPONSE to our handshake with {other.peer_id!r} came from {from_id!r}"
                    )
            if m.echo is not None and m.echo in self._completed:
                raise ReplayedMessage(f"RESPONSE from {from_id} for a completed handshake")
            raise UnexpectedMessage(f"RESPONSE from {from_id} answers no handshake we started")
        self._check_room_and_key(m, from_id)
        self._check_identity(m, from_id, p.peer_id)
        assert p.init is not None
        dh = _exchange(p.private, m.ephemeral)
        th = hashlib.sha256(p.init.body + p.init.mac + m.body).digest()
        if not hmac.compare_digest(
            m.mac, _mac(_hkdf(dh, self._room_key, b"response mac" + th), th)
        ):
            raise AuthenticationFailed(
                f"RESPONSE from {from_id} failed authentication (wrong secret or tampered)"
            )
        if m.role is self.role:
            raise RoleConflict(
                f"{from_id} also claims the {m.role.value} role; exactly one "
                "leader and one follower may pair"
            )
        body = bytes(_Writer(MsgType.CONFIRM).raw(p.nonce).raw(m.nonce).buf)
        mac = _mac(_hkdf(dh, self._room_key, b"confirm mac" + th), body + th)
        # another occupant proved the secret first: whatever else is in flight is moot
        self._initiated.clear()
        self._responding.clear()
        self._completed.add(p.nonce)
        self.session = _session(
            self.role,
            self.local_id,
            from_id,
            self._room_key,
            dh,
            th,
            self.local_fingerprints,
            m.fingerprints,
            True,
        )
        self.counters.completed += 1
        return HandshakeResult(reply=body + mac, session=self.session)


def _exchange(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:  # low-order point: all-zero shared secret
        raise AuthenticationFailed("invalid ephemeral public key") from None
