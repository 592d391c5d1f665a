"""Frame protection: AEAD, header binding, replay window, refusal counters, and the cost."""

from __future__ import annotations

import os
import random
import time

import pytest

from jitsi_teleop import wire
from jitsi_teleop.protect import (
    PREFIX_SIZE,
    SEAL_OVERHEAD,
    TAG_SIZE,
    FrameOpener,
    FrameSealer,
    Malformed,
    ProtectError,
    Replayed,
    SessionCipher,
    TooOld,
    Unauthenticated,
    WrongSession,
)
from jitsi_teleop.wire import Flags, Frame

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
TAG = b"\x01\x02\x03\x04"


def f(
    seq: int = 1, payload: bytes = b"cdr" * 100, flags: Flags = Flags.NONE, stream_id: int = 3
) -> Frame:
    return Frame(stream_id, seq, 123_456_789, payload, flags)


def pair(window: int = 2048) -> tuple[FrameSealer, FrameOpener]:
    return FrameSealer(KEY, TAG), FrameOpener(KEY, TAG, window=window)


def test_roundtrip_and_layout() -> None:
    s, o = pair()
    fr = f(flags=Flags.RELIABLE)
    rec = s.seal(fr)
    assert len(rec) == wire.HEADER_SIZE + SEAL_OVERHEAD + len(fr.payload)
    assert rec[: wire.HEADER_SIZE] == wire.encode(fr)[: wire.HEADER_SIZE]  # header in clear
    assert rec[24:28] == TAG and rec[28:36] == (0).to_bytes(8, "big")
    assert fr.payload not in rec  # payload encrypted
    assert o.open(rec) == fr
    assert o.counters.opened == 1 and o.counters.refused == 0


def test_counter_increments_and_nonces_differ() -> None:
    s, _ = pair()
    a, b = s.seal(f()), s.seal(f())
    assert s.counter == 2
    assert a[28:36] != b[28:36] and a[36:] != b[36:]


def test_fragments_and_empty_payload_roundtrip() -> None:
    s, o = pair()
    for part in wire.Fragmenter(400, overhead=SEAL_OVERHEAD).split(f(payload=os.urandom(2000))):
        rec = s.seal(part)
        assert len(rec) <= 400
        assert o.open(rec) == part
    assert o.open(s.seal(f(payload=b""))) == f(payload=b"")


def test_wrong_key_refused_and_counted() -> None:
    attacker = FrameSealer(OTHER_KEY, TAG)
    _, o = pair()
    for i in range(5):
        with pytest.raises(Unauthenticated):
            o.open(attacker.seal(f(seq=i)))
    assert o.counters.unauthenticated == 5 and o.counters.opened == 0
    # the forged counters did not move the window: a genuine record 0 still opens
    assert o.highest == -1
    s = FrameSealer(KEY, TAG)
    assert o.open(s.seal(f())) == f()


def test_every_single_bit_flip_is_refused() -> None:
    s, _ = pair()
    rec = s.seal(f(payload=b"abcdefgh"))
    for i in range(len(rec)):
        for bit in (0x01, 0x80):
            o = FrameOpener(KEY, TAG)
            bad = bytearray(rec)
            bad[i] ^= bit
            with pytest.raises(ProtectError):
                o.open(bytes(bad))
            assert o.counters.refused == 1 and o.counters.opened == 0


@pytest.mark.parametrize("field_slice", [slice(2, 4), slice(4, 8), slice(8, 16), slice(28, 36)])
def test_header_fields_are_authenticated(field_slice: slice) -> None:
    """Rewriting stream id, sequence, timestamp or counter fails the tag."""
    s, o = pair()
    rec = bytearray(s.seal(f()))
    rec[field_slice.stop - 1] ^= 0x01
    with pytest.raises(Unauthenticated):
        o.open(bytes(rec))


def test_truncation_at_every_byte_position() -> None:
    s, _ = pair()
    rec = s.seal(f(payload=b"x" * 50))
    o = FrameOpener(KEY, TAG)
    for n in range(len(rec)):
        with pytest.raises(Malformed):
            o.open(rec[:n])
    assert o.counters.malformed == len(rec) and o.counters.opened == 0
    with pytest.raises(Malformed):
        o.open(rec + b"\x00")
    assert o.open(rec).payload == b"x" * 50


def test_wrong_version_and_oversized_are_malformed() -> None:
    s, o = pair()
    rec = bytearray(s.seal(f()))
    rec[0] = 2
    with pytest.raises(Malformed, match="version"):
        o.open(bytes(rec))
    small = FrameOpener(KEY, TAG, max_record=200)
    with pytest.raises(Malformed, match="exceeds"):
        small.open(s.seal(f(payload=b"y" * 300)))
    assert o.counters.malformed == 1 and small.counters.malformed == 1
    with pytest.raises(wire.Oversized):
        FrameSealer(KEY, TAG, max_record=100).seal(f(payload=b"z" * 100))


def test_wrong_session_tag_refused() -> None:
    old = FrameSealer(KEY, b"\x00\x00\x00\x00")
    _, o = pair()
    with pytest.raises(WrongSession):
        o.open(old.seal(f()))
    assert o.counters.wrong_session == 1


def test_rewritten_session_tag_is_unauthenticated_when_it_matches() -> None:
    s = FrameSealer(KEY, b"\x00\x00\x00\x00")
    rec = bytearray(s.seal(f()))
    rec[24:28] = TAG
    _, o = pair()
    with pytest.raises(Unauthenticated):
        o.open(bytes(rec))


def test_replay_refused_and_counted() -> None:
    s, o = pair()
    recs = [s.seal(f(seq=i)) for i in range(10)]
    for r in recs:
        o.open(r)
    for r in recs:
        with pytest.raises(Replayed):
            o.open(r)
    assert o.counters.replayed == 10 and o.counters.opened == 10


def test_reordering_within_window_accepted_once() -> None:
    s, o = pair(window=64)
    recs = [s.seal(f(seq=i)) for i in range(200)]
    rng = random.Random(5)
    order = list(range(200))
    # shuffle locally (displacement < 32) so everything stays inside the window
    for start in range(0, 200, 32):
        block = order[start : start + 32]
        rng.shuffle(block)
        order[start : start + 32] = block
    got = [o.open(recs[i]).seq for i in order]
    assert sorted(got) == list(range(200))
    for i in rng.sample(range(200), 20):
        with pytest.raises((Replayed, TooOld)):
            o.open(recs[i])


def test_too_old_outside_window() -> None:
    s, o = pair(window=16)
    recs = [s.seal(f(seq=i)) for i in range(40)]
    o.open(recs[39])
    with pytest.raises(TooOld):
        o.open(recs[39 - 16])
    assert o.open(recs[39 - 15]).seq == 24  # just inside
    assert o.counters.too_old == 1


def test_window_after_big_jump_forgets_everything_old() -> None:
    s, o = pair(window=8)
    recs = [s.seal(f(seq=i)) for i in range(100)]
    o.open(recs[0])
    o.open(recs[99])
    with pytest.raises(TooOld):
        o.open(recs[1])
    o.open(recs[95])
    with pytest.raises(Replayed):
        o.open(recs[95])


def test_replay_window_model_check() -> None:
    """Random arrival sequences against a reference set model."""
    rng = random.Random(6)
    s = FrameSealer(KEY, TAG)
    recs = [s.seal(f(seq=i, payload=b"")) for i in range(400)]
    for _ in range(20):
        w = rng.choice([1, 7, 64])
        o = FrameOpener(KEY, TAG, window=w)
        accepted: set[int] = set()
        top = -1
        for _ in range(600):
            c = min(399, max(0, top + rng.randrange(-2 * w, 4)))
            if c > top:
                expect = "ok"
            elif top - c >= w:
                expect = "old"
            elif c in accepted:
                expect = "replay"
            else:
                expect = "ok"
            try:
                o.open(recs[c])
                got = "ok"
            except TooOld:
                got = "old"
            except Replayed:
                got = "replay"
            assert got == expect, (w, c, top)
            if got == "ok":
                accepted.add(c)
                top = max(top, c)


def test_session_cipher_two_directions() -> None:
    a = SessionCipher(KEY, OTHER_KEY, TAG)
    b = SessionCipher(OTHER_KEY, KEY, TAG)
    assert b.open(a.seal(f(seq=1))) == f(seq=1)
    assert a.open(b.seal(f(seq=2))) == f(seq=2)
    # reflecting our own record back at us fails: the other direction has another key
    with pytest.raises(Unauthenticated):
        a.open(a.seal(f(seq=3)))
    assert a.try_open(b"junk") is None
    assert a.counters.malformed == 1 and a.counters.unauthenticated == 1
    with pytest.raises(ValueError):
        SessionCipher(KEY, KEY, TAG)


@pytest.mark.parametrize(("key", "tag"), [(b"short", TAG), (KEY, b"abc"), (KEY * 2, TAG)])
def test_bad_key_material_refused(key: bytes, tag: bytes) -> None:
    with pytest.raises(ValueError):
        FrameSealer(key, tag)
    with pytest.raises(ValueError):
        FrameOpener(key, tag)


def test_counter_exhaustion_refuses_to_reuse_nonces() -> None:
    from jitsi_teleop.protect import MAX_COUNTER, CounterExhausted

    s = FrameSealer(KEY, TAG, start_counter=MAX_COUNTER)
    s.seal(f())
    with pytest.raises(CounterExhausted):
        s.seal(f())


def test_garbage_never_escapes_as_other_exception() -> None:
    rng = random.Random(7)
    s, o = pair()
    good = s.seal(f(payload=b"g" * 30))
    for _ in range(2000):
        data = bytearray(good) if rng.random() < 0.7 else bytearray(rng.randbytes(80))
        for _ in range(rng.randrange(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        assert o.try_open(bytes(data[: rng.randrange(len(data) + 1)])) is None
    assert o.counters.opened == 0 and o.counters.refused == 2000


def test_overhead_constants() -> None:
    assert PREFIX_SIZE == 36 and TAG_SIZE == 16 and SEAL_OVERHEAD == 28


def test_measure_seal_open_cost_300_bytes(record_property: object) -> None:
    """Reports the per-frame cost (no timing assert: machines differ)."""
    a = SessionCipher(KEY, OTHER_KEY, TAG)
    b = SessionCipher(OTHER_KEY, KEY, TAG)
    fr = f(payload=os.urandom(300))
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        rec = a.seal(fr)
    t1 = time.perf_counter()
    for _ in range(n):
        b.opener._top = -1  # measure open alone, without tripping the replay window
        b.opener._seen = 0
        b.open(rec)
    t2 = time.perf_counter()
    seal_us, open_us = (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6
    record_property("seal_us", round(seal_us, 2))  # type: ignore[operator]
    record_property("open_us", round(open_us, 2))  # type: ignore[operator]
    print(
        f"\n300-byte payload: seal {seal_us:.1f} us, open {open_us:.1f} us, "
        f"seal+open {seal_us + open_us:.1f} us per frame"
    )
    assert b.counters.opened == n


def test_pipeline_only_genuine_frames_reach_the_application() -> None:
    """Pairing -> fragment -> seal -> hostile room -> open -> reassemble -> stats, with an
    attacker injecting, replaying, truncating and replaying an old session's records."""
    from jitsi_teleop.clock import ClockEstimator, ClockSample
    from jitsi_teleop.pairing import Pairing, Role, Secret
    from jitsi_teleop.stats import PathStats

    secret = Secret(bytes(range(32)))
    fp_l = "sha-256 " + ":".join(["aa"] * 32)
    fp_f = "sha-256 " + ":".join(["bb"] * 32)

    def pair_up() -> tuple[SessionCipher, SessionCipher]:
        lp = Pairing(secret, Role.LEADER, "lab", "1eade400", [fp_l])
        fp = Pairing(secret, Role.FOLLOWER, "lab", "f0110e00", [fp_f])
        m2 = fp.handle(lp.initiate("f0110e00"), "1eade400").reply
        assert m2 is not None
        r = lp.handle(m2, "f0110e00")
        assert r.reply is not None and r.session is not None
        fs = fp.handle(r.reply, "1eade400").session
        assert fs is not None
        return SessionCipher.from_session(r.session), SessionCipher.from_session(fs)

    old_leader, _ = pair_up()
    leader, follower = pair_up()  # re-paired: the old session is dead
    attacker = SessionCipher(os.urandom(32), os.urandom(32), leader.sealer.session_tag)
    fragmenter = wire.Fragmenter(256, overhead=SEAL_OVERHEAD)
    rng = random.Random(8)

    genuine: list[bytes] = []
    sent: list[Frame] = []
    for seq in range(50):
        fr = Frame(
            1, seq, 1_000_000 + seq * 2_000, rng.randbytes(rng.randrange(10, 700)), Flags.RELIABLE
        )
        sent.append(fr)
        genuine += [leader.seal(p) for p in fragmenter.split(fr)]
    hostile = (
        [attacker.seal(f(seq=i)) for i in range(20)]
        + [old_leader.seal(f(seq=i)) for i in range(5)]
        + [g[: rng.randrange(len(g))] for g in genuine[:10]]
        + [b"\x01" + os.urandom(60) for _ in range(5)]
        + genuine[:15]
    )  # replays (delivered after the originals below)
    arrivals = list(genuine)
    for i in range(0, len(arrivals) - 1, 3):  # mild reordering
        arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
    arrivals += hostile

    clock = ClockEstimator()
    clock.add(ClockSample(0, 100, 100, 200))  # the two clocks agree here
    path = PathStats("p2p")
    reassembler = wire.Reassembler()
    delivered: list[Frame] = []
    for i, rec in enumerate(arrivals):
        now_us = 1_000_000 + i * 100
        try:
            part = follower.open(rec)
        except ProtectError as e:
            path.on_drop(e.reason)
            continue
        whole = reassembler.push(part, now=now_us / 1e6)
        if whole is not None:
            lat = clock.one_way_latency_us(whole.timestamp_us, now_us)
            path.stream(whole.stream_id).on_frame(
                whole.seq, whole.timestamp_us, now_us, len(whole.payload), lat
            )
            delivered.append(whole)

    assert sorted(delivered, key=lambda x: x.seq) == sent
    c = follower.counters
    assert c.opened == len(genuine)
    assert c.unauthenticated == 20 and c.wrong_session == 5 and c.replayed == 15
    assert c.malformed == 15
    snap = path.snapshot(2_000_000)
    assert snap.drops == {
        "unauthenticated": 20,
        "wrong_session": 5,
        "malformed": 15,
        "replayed": 15,
    }
    assert snap.streams[1].received == 50 and snap.streams[1].lost == 0
