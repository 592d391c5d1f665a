"""Frame protection: AEAD per frame, a per-direction counter nonce and a sliding replay window.

Pure logic, no I/O. Why: anyone in the room can send us stanzas and the server operator sees
(and could rewrite) all signalling, so a frame is acted on only if it was sealed with the
session key of this direction, was not seen before, and is not too far behind the newest one.

Sealed record (big-endian, see docs/wire-format.md)::

    0   24  frame header (wire.py), in clear, authenticated as associated data
    24  4   session tag (from the handshake; tells old-session frames apart), associated data
    28  8   counter u64 (per direction, never reused), associated data; nonce = 0^4 || counter
    36  n   ChaCha20-Poly1305 ciphertext of the payload (n = header payload length)
    36+n 16 Poly1305 tag

The tag is checked before the window, so a forgery is always counted as unauthenticated and
only authentic records move the window (forged counters cannot push genuine frames out).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import wire

KEY_SIZE = 32
SESSION_TAG_SIZE = 4
TAG_SIZE = 16
_TRAILER = struct.Struct(">4sQ")
PREFIX_SIZE = wire.HEADER_SIZE + _TRAILER.size  # 36 bytes before the ciphertext
#: Bytes a sealed record adds to a plain wire frame (session tag, counter, AEAD tag).
SEAL_OVERHEAD = _TRAILER.size + TAG_SIZE  # 28
MAX_COUNTER = (1 << 64) - 1
DEFAULT_WINDOW = 2048
#: Default largest record accepted: a 256 KiB channel message (Jitsi's SCTP max-message-size).
DEFAULT_MAX_RECORD = 256 * 1024


class ProtectError(Exception):
    """Base class of every refusal; ``reason`` names the counter it was counted under."""

    reason = "malformed"


class Malformed(ProtectError):
    """Not a well-formed record (truncated, oversized, wrong version, bad lengths)."""

    reason = "malformed"


class WrongSession(ProtectError):
    """Sealed for another session (typically the one before a re-pair)."""

    reason = "wrong_session"


class Unauthenticated(ProtectError):
    """The AEAD tag did not verify: wrong key, tampered header or payload."""

    reason = "unauthenticated"


class Replayed(ProtectError):
    """This counter was already accepted."""

    reason = "replayed"


class TooOld(ProtectError):
    """Counter fell behind the replay window; we cannot tell whether it is a replay."""

    reason = "too_old"


class CounterExhausted(Exception):
    """2^64 records sealed with one key: re-pair. (Unreachable in practice, checked anyway.)"""


@dataclass
class OpenerCounters:
    """Per-reason refusal counts, plus ``opened`` for accepted records."""

    opened: int = 0
    malformed: int = 0
    wrong_session: int = 0
    unauthenticated: int = 0
    replayed: int = 0
    too_old: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def refused(self) -> int:
        return (
            self.malformed
            + self.wrong_session
            + self.unauthenticated
            + self.replayed
            + self.too_old
        )


def _check_key(key: bytes, session_tag: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes")
    if not isinstance(session_tag, (bytes, bytearray)) or len(session_tag) != SESSION_TAG_SIZE:
        raise ValueError(f"session tag must be {SESSION_TAG_SIZE} bytes")


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


class FrameSealer:
    """Seals frames for one direction. Keys are per direction, so counters never collide."""

    def __init__(
        self,
        key: bytes,
        session_tag: bytes,
        *,
        start_counter: int = 0,
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> None:
        _check_key(key, session_tag)
        self._aead = ChaCha20Poly1305(bytes(key))
        self.max_record = max_record
        self.session_tag = bytes(session_tag)
        self._counter = start_counter

    @property
    def counter(self) -> int:
        """The counter the next record will use."""
        return self._counter

    def seal(self, frame: wire.Frame) -> bytes:
        """Encode the header, then encrypt the payload with header+tag+counter as AD."""
        if self._counter > MAX_COUNTER:
            raise CounterExhausted("sealing counter exhausted; a new handshake is needed")
        size = PREFIX_SIZE + len(frame.payload) + TAG_SIZE
        if size > self.max_record:
            raise wire.Oversized(
                f"sealed record of {size} bytes exceeds {self.max_record}; fragment first"
            )
        header = wire.encode_header(frame.header(), max_payload=self.max_record)
        prefix = header + _TRAILER.pack(self.session_tag, self._counter)
        ct = self._aead.encrypt(_nonce(self._counter), bytes(frame.payload), prefix)
        self._counter += 1
        return prefix + ct


class FrameOpener:
    """Opens records from one direction; refuses and counts everything else.

    ``window`` is how far (in records) behind the newest accepted one a record may arrive and
    still be accepted once; the data channel is unordered, so reordering is normal.
    """

    def __init__(
        self,
        key: bytes,
        session_tag: bytes,
        *,
        window: int = DEFAULT_WINDOW,
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> None:
        _check_key(key, session_tag)
        if window < 1:
            raise ValueError("window must be at least 1")
        self._aead = ChaCha20Poly1305(bytes(key))
        self.session_tag = bytes(session_tag)
        self.window = window
        self.max_record = max_record
        self.counters = OpenerCounters()
        self._top = -1  # highest accepted counter
        self._seen = 0  # bit i set: counter (top - i) accepted

    @property
    def highest(self) -> int:
        return self._top

    def open(self, record: bytes | bytearray | memoryview) -> wire.Frame:
        """The authenticated frame, or a :class:`ProtectError` (already counted)."""
        try:
            return self._open(record)
        except ProtectError as e:
            setattr(self.counters, e.reason, getattr(self.counters, e.reason) + 1)
            raise

    def try_open(self, record: bytes | bytearray | memoryview) -> wire.Frame | None:
        """Like :meth:`open` but returns None on refusal (the counters say why)."""
        try:
            return self.open(record)
        except ProtectError:
            return None

    def _open(self, record: bytes | bytearray | memoryview) -> wire.Frame:
        if len(record) > self.max_record:
            raise Malformed(f"record of {len(record)} bytes exceeds {self.max_record}")
        try:
            h = wire.decode_header(record, max_payload=self.max_record)
        except wire.WireError as e:
            raise Malformed(str(e)) from None
        want = PREFIX_SIZE + h.payload_len + TAG_SIZE
        if len(record) != want:
            raise Malformed(f"record of {len(record)} bytes, header implies {want}")
        tag, counter = _TRAILER.unpack_from(record, wire.HEADER_SIZE)
        if tag != self.session_tag:
            raise WrongSession(f"session tag {tag.hex()} is not ours ({self.session_tag.hex()})")
        prefix = bytes(record[:PREFIX_SIZE])
        try:
            payload = self._aead.decrypt(_nonce(counter), bytes(record[PREFIX_SIZE:]), prefix)
        except InvalidTag:
            raise Unauthenticated("authentication failed (wrong key or tampered)") from None
        # Window after authentication: a forgery is always counted as unauthenticated, and only
        # genuine records can move the window.
        self._check_window(counter)
        self._accept(counter)
        self.counters.opened += 1
        return wire.Frame(
            h.stream_id, h.seq, h.timestamp_us, payload, h.flags, h.frag_index, h.frag_count
        )

    def _check_window(self, counter: int) -> None:
        if counter > self._top:
            return
        behind = self._top - counter
        if behind >= self.window:
            raise TooOld(f"counter {counter} is {behind} behind the newest ({self._top})")
        if self._seen >> behind & 1:
            raise Replayed(f"counter {counter} already accepted")

    def _accept(self, counter: int) -> None:
        mask = (1 << self.window) - 1
        if counter > self._top:
            shift = counter - self._top
            self._seen = ((self._seen << shift) | 1) & mask if shift < self.window else 1
            self._top = counter
        else:
            self._seen |= 1 << (self._top - counter)


class SessionKeysLike(Protocol):
    """What :class:`SessionCipher` needs from a completed handshake (pairing.SessionKeys)."""

    @property
    def send_key(self) -> bytes: ...

    @property
    def recv_key(self) -> bytes: ...

    @property
    def session_tag(self) -> bytes: ...


class SessionCipher:
    """Both directions of one session: seal what we send, open what the peer sends."""

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        session_tag: bytes,
        *,
        window: int = DEFAULT_WINDOW,
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> None:
        if send_key == recv_key:
            raise ValueError("send and receive keys must differ (one key per direction)")
        self.sealer = FrameSealer(send_key, session_tag, max_record=max_record)
        self.opener = FrameOpener(recv_key, session_tag, window=window, max_record=max_record)

    @classmethod
    def from_session(cls, keys: SessionKeysLike, **kwargs: int) -> SessionCipher:
        return cls(keys.send_key, keys.recv_key, keys.session_tag, **kwargs)

    def seal(self, frame: wire.Frame) -> bytes:
        return self.sealer.seal(frame)

    def open(self, record: bytes | bytearray | memoryview) -> wire.Frame:
        return self.opener.open(record)

    def try_open(self, record: bytes | bytearray | memoryview) -> wire.Frame | None:
        return self.opener.try_open(record)

    @property
    def counters(self) -> OpenerCounters:
        return self.opener.counters
