"""Wire format: frames, fragmentation/reassembly, stream descriptors, and every bad input."""

from __future__ import annotations

import contextlib
import json
import random
import struct

import pytest

from jitsi_teleop import wire
from jitsi_teleop.wire import (
    HEADER_SIZE,
    BadDescriptor,
    BadFlags,
    BadLength,
    Flags,
    Fragmenter,
    Frame,
    Oversized,
    Reassembler,
    StreamDescriptor,
    Truncated,
    WireError,
    WrongVersion,
)

HASH_A = "RIHS01_" + "a" * 64
HASH_B = "RIHS01_" + "b" * 64


def frame(**kw: object) -> Frame:
    base: dict[str, object] = dict(
        stream_id=7,
        seq=42,
        timestamp_us=1_700_000_000_123_456,
        payload=b"\x00\x01\x00\x00cdr-bytes",
    )
    base.update(kw)
    return Frame(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Frame encode/decode


def test_header_is_24_bytes_big_endian_in_documented_order() -> None:
    data = wire.encode(frame(flags=Flags.RELIABLE | Flags.CONTROL))
    assert HEADER_SIZE == 24
    assert data[0] == 1  # version
    assert data[1] == 0x05
    assert data[2:4] == (7).to_bytes(2, "big")
    assert data[4:8] == (42).to_bytes(4, "big")
    assert data[8:16] == (1_700_000_000_123_456).to_bytes(8, "big")
    assert data[16:18] == b"\x00\x00" and data[18:20] == b"\x00\x01"
    assert data[20:24] == (13).to_bytes(4, "big")
    assert data[24:] == b"\x00\x01\x00\x00cdr-bytes"


def test_roundtrip_random_frames() -> None:
    rng = random.Random(1)
    for _ in range(500):
        count = rng.choice([1, 1, 2, 3, 65535])
        flags = Flags(rng.choice([0, 1, 4, 5])) | (Flags.FRAGMENT if count > 1 else Flags.NONE)
        f = Frame(
            rng.randrange(0, 1 << 16),
            rng.randrange(0, 1 << 32),
            rng.randrange(0, 1 << 64),
            rng.randbytes(rng.randrange(0, 600)),
            flags,
            rng.randrange(0, count),
            count,
        )
        assert wire.decode(wire.encode(f)) == f


def test_roundtrip_extremes() -> None:
    for f in (
        frame(stream_id=0, seq=0, timestamp_us=0, payload=b""),
        frame(stream_id=0xFFFF, seq=0xFFFFFFFF, timestamp_us=(1 << 64) - 1),
    ):
        assert wire.decode(wire.encode(f)) == f


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = wire.encode(frame())
    assert wire.decode(bytearray(data)) == frame()
    assert wire.decode(memoryview(data)) == frame()


@pytest.mark.parametrize("payload", [b"", b"x", b"y" * 300])
def test_truncation_at_every_byte_position_raises_truncated(payload: bytes) -> None:
    data = wire.encode(frame(payload=payload))
    for n in range(len(data)):
        with pytest.raises(Truncated):
            wire.decode(data[:n])


def test_trailing_bytes_refused() -> None:
    with pytest.raises(BadLength, match="trailing"):
        wire.decode(wire.encode(frame()) + b"\x00")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_refused_even_if_rest_garbage(version: int) -> None:
    data = bytearray(wire.encode(frame()))
    data[0] = version
    with pytest.raises(WrongVersion, match=f"version {version}"):
        wire.decode(bytes(data))
    with pytest.raises(WrongVersion):
        wire.decode(bytes([version]) + b"\xff" * 40)


@pytest.mark.parametrize("bit", [0x08, 0x10, 0x20, 0x40, 0x80])
def test_reserved_flag_bits_refused(bit: int) -> None:
    data = bytearray(wire.encode(frame()))
    data[1] |= bit
    with pytest.raises(BadFlags, match="reserved"):
        wire.decode(bytes(data))


def test_oversized_payload_length_refused_without_allocation() -> None:
    hdr = struct.pack(">BBHIQHHI", 1, 0, 1, 1, 1, 0, 1, 0xFFFFFFFF)
    with pytest.raises(Oversized):
        wire.decode(hdr + b"x" * 10)
    with pytest.raises(Oversized):
        wire.decode_header(hdr)


def test_oversized_buffer_refused_by_configured_limit() -> None:
    data = wire.encode(frame(payload=b"z" * 2000))
    with pytest.raises(Oversized):
        wire.decode(data, max_payload=1000)
    with pytest.raises(Oversized):
        wire.encode(frame(payload=b"z" * 2000), max_payload=1000)


@pytest.mark.parametrize(
    ("flags", "index", "count", "err"),
    [
        (0, 0, 0, BadLength),  # count 0
        (Flags.FRAGMENT, 3, 3, BadLength),  # index == count
        (0, 0, 2, BadFlags),  # fragment fields without the flag
        (0, 1, 1, BadLength),
        (Flags.FRAGMENT, 0, 1, BadFlags),  # flag with count 1
    ],
)
def test_inconsistent_fragment_fields_refused(
    flags: int, index: int, count: int, err: type[WireError]
) -> None:
    hdr = struct.pack(">BBHIQHHI", 1, flags, 1, 1, 1, index, count, 3)
    with pytest.raises(err):
        wire.decode(hdr + b"abc")
    with pytest.raises(WireError):
        wire.encode(Frame(1, 1, 1, b"abc", Flags(flags), index, count))


@pytest.mark.parametrize(
    "kw",
    [
        dict(stream_id=-1),
        dict(stream_id=1 << 16),
        dict(seq=-1),
        dict(seq=1 << 32),
        dict(timestamp_us=-5),
        dict(timestamp_us=1 << 64),
    ],
)
def test_encode_refuses_out_of_range_fields(kw: dict[str, int]) -> None:
    with pytest.raises(BadLength):
        wire.encode(frame(**kw))


def test_random_garbage_never_escapes_as_other_exception() -> None:
    rng = random.Random(2)
    good = wire.encode(frame(payload=b"p" * 40))
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randrange(len(data) + 1)] if rng.random() < 0.3 else data
        with contextlib.suppress(WireError):
            assert isinstance(wire.decode(bytes(data)), Frame)


def test_seq_newer_handles_wrap() -> None:
    assert wire.seq_newer(1, 0)
    assert not wire.seq_newer(0, 1)
    assert wire.seq_newer(0, 0xFFFFFFFF)
    assert wire.seq_newer(5, 0xFFFFFFF0)
    assert not wire.seq_newer(7, 7)


# ---------------------------------------------------------------------------------------------
# Fragmentation


def test_small_frame_not_fragmented() -> None:
    f = frame(payload=b"a" * 100)
    assert Fragmenter(1000).split(f) == [f]
    assert Fragmenter(HEADER_SIZE + 100).split(f) == [f]


def test_fragments_fit_and_reassemble_in_any_order() -> None:
    rng = random.Random(3)
    fr = Fragmenter(1200, overhead=28)
    payload = rng.randbytes(10_000)
    f = frame(payload=payload, flags=Flags.RELIABLE)
    parts = fr.split(f)
    assert len(parts) == -(-10_000 // (1200 - 24 - 28))
    assert all(len(wire.encode(p)) + 28 <= 1200 for p in parts)
    assert all(p.is_fragment and p.frag_count == len(parts) for p in parts)
    for _ in range(20):
        rng.shuffle(parts)
        r = Reassembler()
        outs = [r.push(wire.decode(wire.encode(p)), now=0.0) for p in parts]
        assert outs[:-1] == [None] * (len(parts) - 1)
        assert outs[-1] == f
        assert r.pending == 0 and r.buffered_bytes == 0


def test_fragmenter_limits() -> None:
    with pytest.raises(ValueError):
        Fragmenter(HEADER_SIZE)
    with pytest.raises(Oversized):
        Fragmenter(HEADER_SIZE + 1, max_payload=1 << 20).split(frame(payload=b"x" * 70_000))
    with pytest.raises(Oversized):
        Fragmenter(1000, max_payload=100).split(frame(payload=b"x" * 101))
    with pytest.raises(ValueError):
        Fragmenter(1000).split(frame(flags=Flags.FRAGMENT, frag_count=2))


def test_unfragmented_frames_pass_through_reassembler() -> None:
    r = Reassembler()
    f = frame()
    assert r.push(f, 0.0) == f


def test_reassembly_timeout_uses_caller_time() -> None:
    r = Reassembler(timeout_s=1.0)
    parts = Fragmenter(100).split(frame(payload=b"q" * 300, flags=Flags.RELIABLE))
    assert r.push(parts[0], now=10.0) is None
    assert r.expire(10.9) == 0
    assert r.expire(11.1) == 1
    assert r.counters.expired == 1 and r.pending == 0 and r.buffered_bytes == 0
    for p in parts[1:]:  # the rest alone never completes
        assert r.push(p, now=11.2) is None


def test_duplicate_and_inconsistent_fragments() -> None:
    r = Reassembler()
    parts = Fragmenter(100).split(frame(payload=b"q" * 300, flags=Flags.RELIABLE))
    assert r.push(parts[0], 0.0) is None
    assert r.push(parts[0], 0.0) is None
    assert r.counters.duplicate == 1
    bad = Frame(
        parts[1].stream_id,
        parts[1].seq,
        parts[1].timestamp_us + 1,
        parts[1].payload,
        parts[1].flags,
        1,
        parts[1].frag_count,
    )
    assert r.push(bad, 0.0) is None
    assert r.counters.inconsistent == 1 and r.pending == 0


def test_memory_bounds_evict_oldest() -> None:
    r = Reassembler(max_partial=3, max_bytes=10_000)
    for seq in range(5):
        parts = Fragmenter(124).split(frame(seq=seq, payload=b"m" * 250, flags=Flags.RELIABLE))
        r.push(parts[0], now=seq * 0.01)
    assert r.pending == 3 and r.counters.evicted == 2
    r2 = Reassembler(max_partial=100, max_bytes=500)
    for seq in range(10):
        parts = Fragmenter(224).split(frame(seq=seq, payload=b"m" * 600, flags=Flags.RELIABLE))
        r2.push(parts[0], now=seq * 0.01)
        assert r2.buffered_bytes <= 500
    assert r2.counters.evicted > 0


def test_one_huge_claimed_frame_cannot_exceed_memory_bound() -> None:
    r = Reassembler(max_bytes=1000)
    for i in range(50):
        r.push(Frame(1, 1, 1, b"x" * 100, Flags.FRAGMENT | Flags.RELIABLE, i, 65535), 0.0)
        assert r.buffered_bytes <= 1000


def test_reassembled_size_limit() -> None:
    r = Reassembler(max_payload=250)
    parts = Fragmenter(124).split(frame(payload=b"m" * 300, flags=Flags.RELIABLE))
    for p in parts:
        assert r.push(p, 0.0) is None
    assert r.counters.oversized == 1


def test_latest_stream_newest_wins() -> None:
    r = Reassembler()
    old = Fragmenter(100).split(frame(seq=10, payload=b"o" * 200))
    new = Fragmenter(100).split(frame(seq=11, payload=b"n" * 200))
    assert r.push(old[0], 0.0) is None
    assert r.push(new[0], 0.0) is None  # discards the partial seq 10
    assert r.counters.superseded == 1 and r.pending == 1
    assert r.push(old[1], 0.0) is None  # older than the newest: dropped
    assert r.push(frame(seq=9), 0.0) is None
    assert r.counters.superseded == 3
    out = None
    for p in new[1:]:
        out = r.push(p, 0.0)
    assert out is not None and out.payload == b"n" * 200 and out.seq == 11
    assert r.push(frame(seq=12), 0.0) == frame(seq=12)


def test_latest_newest_wins_across_wrap() -> None:
    r = Reassembler()
    assert r.push(frame(seq=0xFFFFFFFF), 0.0) is not None
    assert r.push(frame(seq=0), 0.0) is not None
    assert r.push(frame(seq=0xFFFFFFFE), 0.0) is None


def test_reliable_streams_keep_out_of_order_frames() -> None:
    r = Reassembler()
    a = Fragmenter(100).split(frame(seq=1, payload=b"a" * 200, flags=Flags.RELIABLE))
    b = Fragmenter(100).split(frame(seq=2, payload=b"b" * 200, flags=Flags.RELIABLE))
    r.push(a[0], 0.0)
    r.push(b[0], 0.0)
    assert r.pending == 2
    outs = [r.push(p, 0.0) for p in a[1:] + b[1:]]
    done = [o for o in outs if o is not None]
    assert [o.seq for o in done] == [1, 2]
    assert not done[0].is_fragment and done[0].reliable


# ---------------------------------------------------------------------------------------------
# Stream descriptors


def desc(**kw: object) -> StreamDescriptor:
    base: dict[str, object] = dict(
        stream_id=1,
        topic="/joint_states",
        ros_type="sensor_msgs/msg/JointState",
        type_hash=HASH_A,
        delivery="latest",
        max_rate_hz=500.0,
        max_age_s=0.1,
    )
    base.update(kw)
    return StreamDescriptor(**base)  # type: ignore[arg-type]


def test_descriptor_serialisation_is_stable_and_roundtrips() -> None:
    ds = [
        desc(
            stream_id=2,
            topic="/follower/wrench",
            ros_type="geometry_msgs/msg/WrenchStamped",
            type_hash=HASH_B,
        ),
        desc(),
    ]
    a = wire.encode_descriptors(ds)
    b = wire.encode_descriptors(list(reversed(ds)))
    assert a == b
    assert a.startswith(b'{"streams":[{"delivery":"latest"')
    assert wire.decode_descriptors(a) == sorted(ds, key=lambda d: d.stream_id)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(topic="joint_states"), "topic"),
        (dict(topic="/a//b"), "topic"),
        (dict(topic="/9x"), "topic"),
        (dict(ros_type="JointState"), "ROS type"),
        (dict(ros_type="sensor_msgs/JointState"), "ROS type"),
        (dict(type_hash="RIHS01_abc"), "type hash"),
        (dict(type_hash="RIHS01_" + "A" * 64), "type hash"),
        (dict(delivery="best_effort"), "delivery"),
        (dict(max_rate_hz=0), "max_rate_hz"),
        (dict(max_rate_hz=float("inf")), "max_rate_hz"),
        (dict(max_age_s=-1.0), "max_age_s"),
        (dict(max_age_s=float("nan")), "max_age_s"),
        (dict(max_age_s=True), "max_age_s"),
        (dict(stream_id=70000), "stream id"),
        (dict(stream_id=True), "stream id"),
    ],
)
def test_invalid_descriptor_fields_name_the_topic(kw: dict[str, object], match: str) -> None:
    with pytest.raises(BadDescriptor, match=match):
        desc(**kw)


def test_decode_descriptors_refuses_bad_documents() -> None:
    good = json.loads(wire.encode_descriptors([desc()]))
    cases: list[bytes] = [
        b"\xff\xfe",
        b"not json",
        b"[]",
        b'{"v":1}',
        json.dumps({**good, "x": 1}).encode(),
        json.dumps({"v": 1, "streams": {}}).encode(),
        json.dumps({"v": 1, "streams": [1]}).encode(),
        json.dumps({"v": 1, "streams": [{**good["streams"][0], "extra": 1}]}).encode(),
        json.dumps({"v": 1, "streams": [{"topic": "/x"}]}).encode(),
        json.dumps({"v": 1, "streams": [{**good["streams"][0], "stream_id": "1"}]}).encode(),
        json.dumps({"v": 1, "streams": [{**good["streams"][0], "topic": 5}]}).encode(),
        b'{"v":1,"streams":[{"delivery":"latest","max_age_s":NaN,"max_rate_hz":1,'
        b'"ros_type":"a/msg/B","stream_id":1,"topic":"/x","type_hash":"'
        + HASH_A.encode()
        + b'"}]}',
        b"[" * 100_000,
    ]
    for data in cases:
        with pytest.raises(BadDescriptor):
            wire.decode_descriptors(data)
    for v in (2, True, "1"):
        with pytest.raises(WrongVersion):
            wire.decode_descriptors(json.dumps({"v": v, "streams": []}).encode())
    with pytest.raises(Oversized):
        wire.decode_descriptors(b" " * 300_000)


def test_decode_descriptors_truncated_everywhere() -> None:
    data = wire.encode_descriptors([desc()])
    for n in range(len(data)):
        with pytest.raises(WireError):
            wire.decode_descriptors(data[:n])


def test_match_identical_sets_has_no_problems() -> None:
    assert wire.match_descriptors([desc()], [desc()]) == []


def test_match_type_mismatch_names_topic() -> None:
    probs = wire.match_descriptors([desc()], [desc(ros_type="sensor_msgs/msg/Imu")])
    assert [p.kind for p in probs] == ["type_mismatch"]
    assert "/joint_states" in str(probs[0]) and "sensor_msgs/msg/Imu" in str(probs[0])
    assert probs[0].fatal


def test_match_hash_mismatch_names_topic() -> None:
    probs = wire.match_descriptors([desc()], [desc(type_hash=HASH_B)])
    assert [p.kind for p in probs] == ["hash_mismatch"]
    assert probs[0].topic == "/joint_states" and HASH_B in probs[0].message


def test_match_delivery_mismatch_and_rate_difference_ok() -> None:
    probs = wire.match_descriptors([desc()], [desc(delivery="reliable", max_rate_hz=1.0)])
    assert [p.kind for p in probs] == ["delivery_mismatch"]


def test_match_unknown_topic_and_unknown_type() -> None:
    remote = [desc(), desc(stream_id=2, topic="/evil", ros_type="evil_msgs/msg/Boom")]
    probs = wire.match_descriptors([desc()], remote)
    assert [(p.kind, p.topic) for p in probs] == [("unknown_topic", "/evil")]
    probs = wire.match_descriptors([desc()], remote, known_types={"sensor_msgs/msg/JointState"})
    assert [(p.kind, p.topic) for p in probs] == [("unknown_type", "/evil")]
    assert "evil_msgs/msg/Boom" in probs[0].message


def test_match_missing_is_not_fatal_and_duplicates_are() -> None:
    probs = wire.match_descriptors([desc()], [])
    assert [(p.kind, p.fatal) for p in probs] == [("missing", False)]
    remote = [desc(), desc(topic="/other"), desc(stream_id=3)]
    kinds = sorted(p.kind for p in wire.match_descriptors([desc()], remote))
    assert kinds == ["duplicate_stream_id", "duplicate_topic", "unknown_topic"]
