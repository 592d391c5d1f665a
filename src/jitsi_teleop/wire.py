"""Wire format: the binary frame every path carries, fragmentation, and stream descriptors.

Pure logic, no I/O. Why a hand-made struct header rather than a serialisation library: it is
24 bytes, fixed, versioned, cheap to parse at 500 Hz, and its exact bytes serve as the AEAD
associated data in :mod:`jitsi_teleop.protect`, so it must be canonical.

Layout (big-endian, see docs/wire-format.md)::

    0  u8   version (1)
    1  u8   flags (RELIABLE, FRAGMENT, CONTROL; other bits must be 0)
    2  u16  stream id
    4  u32  sequence number (per stream, wraps)
    8  u64  sender timestamp, microseconds on the sender's monotonic clock
    16 u16  fragment index
    18 u16  fragment count (1 when not fragmented)
    20 u32  payload length
    24 ...  payload (CDR bytes exactly as ROS produced them)

Every decode failure raises a :class:`WireError` subclass; nothing half-parsed escapes.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

VERSION = 1
HEADER = struct.Struct(">BBHIQHHI")
HEADER_SIZE = HEADER.size  # 24
MAX_STREAM_ID = 0xFFFF
SEQ_MODULUS = 1 << 32
MAX_SEQ = SEQ_MODULUS - 1
MAX_TIMESTAMP_US = (1 << 64) - 1
MAX_FRAGMENTS = 0xFFFF
#: Largest reassembled payload we accept at all. Far above any teleop message; bounds memory.
MAX_PAYLOAD = 16 * 1024 * 1024


class Flags(enum.IntFlag):
    """Frame flags. A frame without RELIABLE belongs to a ``latest`` (newest-wins) stream."""

    NONE = 0
    RELIABLE = 0x01
    FRAGMENT = 0x02
    CONTROL = 0x04


KNOWN_FLAGS = int(Flags.RELIABLE | Flags.FRAGMENT | Flags.CONTROL)


# ---------------------------------------------------------------------------------------------
# Errors


class WireError(ValueError):
    """Base class of every decode/validation failure of the wire format."""


class Truncated(WireError):
    """Fewer bytes than the header or the declared payload length needs."""


class Oversized(WireError):
    """More bytes than the configured limit (or than the format can express)."""


class WrongVersion(WireError):
    """A frame from a different (future or garbage) format version."""


class BadLength(WireError):
    """Declared lengths, fragment index/count or trailing bytes are inconsistent."""


class BadFlags(WireError):
    """Reserved flag bits set, or flags inconsistent with the fragment fields."""


class BadDescriptor(WireError):
    """A stream descriptor (or a descriptor set) that is not well-formed."""


# ---------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class FrameHeader:
    """The decoded fixed header; ``payload_len`` is the length of this frame's own payload."""

    version: int
    flags: Flags
    stream_id: int
    seq: int
    timestamp_us: int
    frag_index: int
    frag_count: int
    payload_len: int

    def pack(self) -> bytes:
        return HEADER.pack(
            self.version,
            int(self.flags),
            self.stream_id,
            self.seq,
            self.timestamp_us,
            self.frag_index,
            self.frag_count,
            self.payload_len,
        )


@dataclass(frozen=True)
class Frame:
    """One frame (or one fragment of a frame) on one stream."""

    stream_id: int
    seq: int
    timestamp_us: int
    payload: bytes
    flags: Flags = Flags.NONE
    frag_index: int = 0
    frag_count: int = 1

    @property
    def reliable(self) -> bool:
        return bool(self.flags & Flags.RELIABLE)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & Flags.FRAGMENT)

    @property
    def is_control(self) -> bool:
        return bool(self.flags & Flags.CONTROL)

    def header(self) -> FrameHeader:
        return FrameHeader(
            VERSION,
            Flags(self.flags),
            self.stream_id,
            self.seq,
            self.timestamp_us,
            self.frag_index,
            self.frag_count,
            len(self.payload),
        )


def _check_header_fields(h: FrameHeader, max_payload: int) -> None:
    if h.version != VERSION:
        raise WrongVersion(f"wire version {h.version}, this end speaks {VERSION}")
    if int(h.flags) & ~KNOWN_FLAGS:
        raise BadFlags(f"reserved flag bits set: 0x{int(h.flags):02x}")
    if not 0 <= h.stream_id <= MAX_STREAM_ID:
        raise BadLength(f"stream id {h.stream_id} out of range")
    if not 0 <= h.seq <= MAX_SEQ:
        raise BadLength(f"sequence {h.seq} out of range")
    if not 0 <= h.timestamp_us <= MAX_TIMESTAMP_US:
        raise BadLength(f"timestamp {h.timestamp_us} out of range")
    if not 1 <= h.frag_count <= MAX_FRAGMENTS:
        raise BadLength(f"fragment count {h.frag_count} out of range 1..{MAX_FRAGMENTS}")
    if not 0 <= h.frag_index < h.frag_count:
        raise BadLength(f"fragment index {h.frag_index} not below count {h.frag_count}")
    fragmented = bool(h.flags & Flags.FRAGMENT)
    if not fragmented and (h.frag_count != 1 or h.frag_index != 0):
        raise BadFlags("fragment fields set on a frame without the FRAGMENT flag")
    if fragmented and h.frag_count < 2:
        raise BadFlags("FRAGMENT flag on a frame with fragment count 1")
    if h.payload_len < 0:
        raise BadLength("negative payload length")
    if h.payload_len > max_payload:
        raise Oversized(f"payload of {h.payload_len} bytes exceeds the limit of {max_payload}")


def encode_header(header: FrameHeader, *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """The 24 header bytes, validated like :func:`decode_header` (we never send what we refuse)."""
    _check_header_fields(header, max_payload)
    return header.pack()


def encode(frame: Frame, *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """Header + payload, validated like :func:`decode`."""
    return encode_header(frame.header(), max_payload=max_payload) + bytes(frame.payload)


def decode_header(
    data: bytes | bytearray | memoryview, *, max_payload: int = MAX_PAYLOAD
) -> FrameHeader:
    """Parse and validate the fixed header only (the payload may follow, or be encrypted)."""
    if len(data) < HEADER_SIZE:
        raise Truncated(f"frame of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    version = data[0]
    if version != VERSION:  # checked before anything else: a new version may change the layout
        raise WrongVersion(f"wire version {version}, this end speaks {VERSION}")
    v, flags, sid, seq, ts, fi, fc, plen = HEADER.unpack_from(data, 0)
    if flags & ~KNOWN_FLAGS:
        raise BadFlags(f"reserved flag bits set: 0x{flags:02x}")
    h = FrameHeader(v, Flags(flags), sid, seq, ts, fi, fc, plen)
    _check_header_fields(h, max_payload)
    return h


def decode(data: bytes | bytearray | memoryview, *, max_payload: int = MAX_PAYLOAD) -> Frame:
    """Parse one complete frame; the buffer must hold exactly header + payload."""
    if len(data) > HEADER_SIZE + max_payload:
        raise Oversized(f"frame of {len(data)} bytes exceeds {HEADER_SIZE + max_payload}")
    h = decode_header(data, max_payload=max_payload)
    have = len(data) - HEADER_SIZE
    if have < h.payload_len:
        raise Truncated(f"payload truncated: header says {h.payload_len} bytes, got {have}")
    if have > h.payload_len:
        raise BadLength(f"{have - h.payload_len} trailing bytes after the payload")
    return Frame(
        h.stream_id,
        h.seq,
        h.timestamp_us,
        bytes(data[HEADER_SIZE:]),
        h.flags,
        h.frag_index,
        h.frag_count,
    )


def seq_newer(a: int, b: int) -> bool:
    """True when sequence ``a`` is after ``b`` in 32-bit serial-number arithmetic (RFC 1982)."""
    d = (a - b) % SEQ_MODULUS
    return 0 < d < SEQ_MODULUS // 2


# ---------------------------------------------------------------------------------------------
# Fragmentation


class Fragmenter:
    """Splits a frame whose payload does not fit one channel message.

    ``max_message_size`` is what the channel takes in one message (SCTP: 65536 for aiortc without
    ``max-message-size``); ``overhead`` is what protection adds on top of the plain frame
    (``protect.SEAL_OVERHEAD``), so that sealed fragments still fit.
    """

    def __init__(
        self, max_message_size: int, overhead: int = 0, max_payload: int = MAX_PAYLOAD
    ) -> None:
        room = max_message_size - HEADER_SIZE - overhead
        if room < 1:
            raise ValueError(f"message size {max_message_size} leaves no room for payload")
        self.max_fragment_payload = room
        self.max_payload = max_payload

    def split(self, frame: Frame) -> list[Frame]:
        """The frame itself when it fits, else 2..65535 fragments with the FRAGMENT flag."""
        if frame.is_fragment:
            raise ValueError("frame is already a fragment")
        n = len(frame.payload)
        if n > self.max_payload:
            raise Oversized(f"payload of {n} bytes exceeds the limit of {self.max_payload}")
        if n <= self.max_fragment_payload:
            return [frame]
        size = self.max_fragment_payload
        count = -(-n // size)
        if count > MAX_FRAGMENTS:
            raise Oversized(f"payload of {n} bytes needs {count} fragments (max {MAX_FRAGMENTS})")
        flags = Flags(frame.flags | Flags.FRAGMENT)
        mv = memoryview(frame.payload)
        return [
            Frame(
                frame.stream_id,
                frame.seq,
                frame.timestamp_us,
                bytes(mv[i * size : (i + 1) * size]),
                flags,
                i,
                count,
            )
            for i in range(count)
        ]


@dataclass
class ReassemblyCounters:
    """Why fragments did not become frames."""

    completed: int = 0
    expired: int = 0  # incomplete past the timeout
    superseded: int = 0  # a newer frame of a latest stream won
    evicted: int = 0  # memory bound reached
    duplicate: int = 0
    inconsistent: int = 0  # fragments of one frame disagree (count, flags, timestamp)
    oversized: int = 0


@dataclass
class _Partial:
    first_seen: float
    frag_count: int
    flags: Flags
    timestamp_us: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects fragments back into frames, with bounded memory and caller-supplied time.

    Why caller time: the module does no I/O and tests drive time exactly. Bounds: at most
    ``max_partial`` incomplete frames and ``max_bytes`` buffered; the oldest partial is evicted
    first. On ``latest`` streams newest wins: a fragment of a newer frame discards the older
    partials of that stream, and fragments of frames older than the newest seen are dropped.
    """

    def __init__(
        self,
        *,
        max_partial: int = 32,
        max_bytes: int = 4 * 1024 * 1024,
        timeout_s: float = 2.0,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        self.max_partial = max_partial
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_payload = max_payload
        self.counters = ReassemblyCounters()
        self._partials: dict[tuple[int, int], _Partial] = {}
        self._newest_latest: dict[int, int] = {}  # stream id -> newest seq seen (latest streams)
        self._bytes = 0

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    @property
    def pending(self) -> int:
        return len(self._partials)

    def push(self, frame: Frame, now: float) -> Frame | None:
        """Feed one decoded frame or fragment; returns a complete frame when one is ready."""
        self.expire(now)
        if not frame.reliable and not self._note_latest(frame):
            return None
        if not frame.is_fragment:
            return frame
        return self._add_fragment(frame, now)

    def expire(self, now: float) -> int:
        """Drop incomplete frames older than the timeout; returns how many were dropped."""
        old = [k for k, p in self._partials.items() if now - p.first_seen > self.timeout_s]
        for k in old:
            self._drop(k)
        self.counters.expired += len(old)
        return len(old)

    def _note_latest(self, frame: Frame) -> bool:
        newest = self._newest_latest.get(frame.stream_id)
        if newest is not None and seq_newer(newest, frame.seq):
            self.counters.superseded += 1
            return False
        if newest is None or seq_newer(frame.seq, newest):
            self._newest_latest[frame.stream_id] = frame.seq
            stale = [k for k in self._partials if k[0] == frame.stream_id and k[1] != frame.seq]
            for k in stale:
                self._drop(k)
            self.counters.superseded += len(stale)
        return True

    def _add_fragment(self, frame: Frame, now: float) -> Frame | None:
        key = (frame.stream_id, frame.seq)
        p = self._partials.get(key)
        if p is None:
            p = _Partial(now, frame.frag_count, frame.flags, frame.timestamp_us)
            self._partials[key] = p
        elif (
            p.frag_count != frame.frag_count
            or p.flags != frame.flags
            or p.timestamp_us != frame.timestamp_us
        ):
            self._drop(key)
            self.counters.inconsistent += 1
            return None
        if frame.frag_index in p.parts:
            self.counters.duplicate += 1
            return None
        if p.size + len(frame.payload) > self.max_payload:
            self._drop(key)
            self.counters.oversized += 1
            return None
        p.parts[frame.frag_index] = frame.payload
        p.size += len(frame.payload)
        self._bytes += len(frame.payload)
        if len(p.parts) == p.frag_count:
            self._drop(key)
            self.counters.completed += 1
            payload = b"".join(p.parts[i] for i in range(p.frag_count))
            return Frame(
                frame.stream_id,
                frame.seq,
                p.timestamp_us,
                payload,
                Flags(p.flags & ~Flags.FRAGMENT),
            )
        self._enforce_bounds(keep=key)
        return None

    def _enforce_bounds(self, keep: tuple[int, int]) -> None:
        while len(self._partials) > self.max_partial or self._bytes > self.max_bytes:
            victims = sorted(self._partials, key=lambda k: self._partials[k].first_seen)
            victim = next((k for k in victims if k != keep), keep)
            self._drop(victim)
            self.counters.evicted += 1
            if victim == keep:
                return

    def _drop(self, key: tuple[int, int]) -> None:
        p = self._partials.pop(key, None)
        if p is not None:
            self._bytes -= p.size


# ---------------------------------------------------------------------------------------------
# Stream descriptors

DESCRIPTOR_VERSION = 1
DELIVERY_CLASSES = ("latest", "reliable")
_TOPIC_RE = re.compile(r"/(?:[A-Za-z_][A-Za-z0-9_]*)(?:/[A-Za-z_][A-Za-z0-9_]*)*")
_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/(?:msg|srv|action)/[A-Z][A-Za-z0-9]*")
_HASH_RE = re.compile(r"RIHS01_[0-9a-f]{64}")
_FIELDS = ("stream_id", "topic", "ros_type", "type_hash", "delivery", "max_rate_hz", "max_age_s")
MAX_DESCRIPTORS = 1024


@dataclass(frozen=True)
class StreamDescriptor:
    """What one end announces about a stream it sends: checked once, then bytes pass through.

    ``type_hash`` is the ROS 2 type hash (``RIHS01_`` + 64 hex digits, as ``ros2 topic info -v``
    prints it); ``max_rate_hz`` and ``max_age_s`` are the sender's intent for shaping and
    staleness (the receiver may apply stricter local values).
    """

    stream_id: int
    topic: str
    ros_type: str
    type_hash: str
    delivery: str = "latest"
    max_rate_hz: float = 100.0
    max_age_s: float = 0.5

    def __post_init__(self) -> None:
        validate_descriptor(self)

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in _FIELDS}


def validate_descriptor(d: StreamDescriptor) -> None:
    """Raise :class:`BadDescriptor` naming the topic when a field is not acceptable."""
    topic = d.topic if isinstance(d.topic, str) else repr(d.topic)
    if not isinstance(d.topic, str) or not _TOPIC_RE.fullmatch(d.topic):
        raise BadDescriptor(f"invalid topic name {topic!r}")
    if (
        isinstance(d.stream_id, bool)
        or not isinstance(d.stream_id, int)
        or not 0 <= d.stream_id <= MAX_STREAM_ID
    ):
        raise BadDescriptor(f"topic {topic}: stream id {d.stream_id!r} out of range")
    if not isinstance(d.ros_type, str) or not _TYPE_RE.fullmatch(d.ros_type):
        raise BadDescriptor(f"topic {topic}: invalid ROS type name {d.ros_type!r}")
    if not isinstance(d.type_hash, str) or not _HASH_RE.fullmatch(d.type_hash):
        raise BadDescriptor(
            f"topic {topic}: invalid type hash {d.type_hash!r} "
            "(want RIHS01_ and 64 lower-case hex digits)"
        )
    if d.delivery not in DELIVERY_CLASSES:
        raise BadDescriptor(f"topic {topic}: delivery {d.delivery!r} is not latest or reliable")
    for name in ("max_rate_hz", "max_age_s"):
        v = getattr(d, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise BadDescriptor(f"topic {topic}: {name} must be a positive finite number: {v!r}")


def encode_descriptors(descriptors: Iterable[StreamDescriptor]) -> bytes:
    """Stable serialisation: canonical JSON (sorted keys, no spaces, streams by id), UTF-8."""
    items = sorted(descriptors, key=lambda d: d.stream_id)
    doc = {"v": DESCRIPTOR_VERSION, "streams": [d.to_dict() for d in items]}
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def decode_descriptors(data: bytes, *, max_size: int = 256 * 1024) -> list[StreamDescriptor]:
    """Strict inverse of :func:`encode_descriptors`; unknown keys or versions are refused."""
    if len(data) > max_size:
        raise Oversized(f"descriptor set of {len(data)} bytes exceeds {max_size}")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadDescriptor(f"descriptor set is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or set(doc) != {"v", "streams"}:
        raise BadDescriptor("descriptor set must be an object with exactly 'v' and 'streams'")
    if doc["v"] != DESCRIPTOR_VERSION or isinstance(doc["v"], bool):
        raise WrongVersion(f"descriptor version {doc['v']!r}, this end speaks {DESCRIPTOR_VERSION}")
    streams = doc["streams"]
    if not isinstance(streams, list) or len(streams) > MAX_DESCRIPTORS:
        raise BadDescriptor(f"'streams' must be a list of at most {MAX_DESCRIPTORS} descriptors")
    out = []
    for item in streams:
        if not isinstance(item, dict) or set(item) != set(_FIELDS):
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise BadDescriptor(
                f"descriptor must have exactly the fields {list(_FIELDS)}, got {got}"
            )
        out.append(StreamDescriptor(**item))
    return out


def _refuse_constant(name: str) -> None:
    raise BadDescriptor(f"{name} is not allowed in a descriptor")


@dataclass(frozen=True)
class DescriptorProblem:
    """One reason a remote descriptor set does not fit ours; ``fatal`` ones refuse the stream."""

    topic: str
    kind: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return self.message


def match_descriptors(
    local: Sequence[StreamDescriptor],
    remote: Sequence[StreamDescriptor],
    *,
    known_types: Collection[str] | None = None,
) -> list[DescriptorProblem]:
    """Compare what we expect to receive (``local``) with what the peer announces (``remote``).

    Type name, type hash and delivery class must agree per topic; a remote topic we do not
    expect, a type we cannot handle (``known_types``, when given) or duplicate ids/topics are
    refused. A local topic the peer does not announce is reported as non-fatal (it may come
    later). Rate and age may differ: each end applies its own limits.
    """
    problems: list[DescriptorProblem] = []
    problems += _duplicates(remote)
    mine = {d.topic: d for d in local}
    seen: set[str] = set()
    for r in remote:
        if r.topic in seen:
            continue
        seen.add(r.topic)
        if known_types is not None and r.ros_type not in known_types:
            problems.append(
                DescriptorProblem(
                    r.topic,
                    "unknown_type",
                    f"topic {r.topic}: peer sends type {r.ros_type}, which this end cannot handle",
                )
            )
            continue
        m = mine.get(r.topic)
        if m is None:
            problems.append(
                DescriptorProblem(
                    r.topic,
                    "unknown_topic",
                    f"topic {r.topic}: peer announces it ({r.ros_type}) but it is not configured "
                    "here",
                )
            )
            continue
        problems += _compare(m, r)
    for m in local:
        if m.topic not in seen:
            problems.append(
                DescriptorProblem(
                    m.topic,
                    "missing",
                    f"topic {m.topic}: expected from the peer but not announced",
                    fatal=False,
                )
            )
    return problems


def _duplicates(remote: Sequence[StreamDescriptor]) -> list[DescriptorProblem]:
    out = []
    ids: dict[int, str] = {}
    topics: set[str] = set()
    for r in remote:
        if r.stream_id in ids:
            out.append(
                DescriptorProblem(
                    r.topic,
                    "duplicate_stream_id",
                    f"topic {r.topic}: stream id {r.stream_id} already used by {ids[r.stream_id]}",
                )
            )
        else:
            ids[r.stream_id] = r.topic
        if r.topic in topics:
            out.append(
                DescriptorProblem(r.topic, "duplicate_topic", f"topic {r.topic}: announced twice")
            )
        topics.add(r.topic)
    return out


def _compare(m: StreamDescriptor, r: StreamDescriptor) -> list[DescriptorProblem]:
    out = []
    if m.ros_type != r.ros_type:
        out.append(
            DescriptorProblem(
                r.topic,
                "type_mismatch",
                f"topic {r.topic}: type mismatch: this end expects {m.ros_type}, peer sends "
                f"{r.ros_type}",
            )
        )
    elif m.type_hash != r.type_hash:
        out.append(
            DescriptorProblem(
                r.topic,
                "hash_mismatch",
                f"topic {r.topic}: type hash mismatch for {r.ros_type}: this end has "
                f"{m.type_hash}, peer has {r.type_hash} (different message definitions)",
            )
        )
    if m.delivery != r.delivery:
        out.append(
            DescriptorProblem(
                r.topic,
                "delivery_mismatch",
                f"topic {r.topic}: delivery mismatch: this end expects {m.delivery}, peer sends "
                f"{r.delivery}",
            )
        )
    return out
