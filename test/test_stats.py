"""Per-stream/per-path statistics: rate, loss (reordering, wrap, restart), latency percentiles,
jitter, age and drop counters."""

from __future__ import annotations

import math
import random

import pytest

from jitsi_teleop.stats import LatencyHistogram, PathStats, StreamSnapshot, StreamStats

MS = 1_000


def feed(s: StreamStats, seqs: list[int], t0: int = 0, dt: int = 2 * MS) -> None:
    for i, q in enumerate(seqs):
        s.on_frame(q, sender_ts_us=t0 + i * dt, recv_us=t0 + i * dt + 3 * MS, size=100)


# ---------------------------------------------------------------------------------------------
# Latency histogram


def test_percentiles_match_exact_within_bucket_resolution() -> None:
    rng = random.Random(1)
    h = LatencyHistogram()
    values = [rng.lognormvariate(math.log(20_000), 0.6) for _ in range(5000)]
    for v in values:
        h.add(v)
    values.sort()
    for p in (1, 10, 50, 90, 99, 99.9):
        exact = values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)]
        got = h.percentile(p)
        assert got is not None
        assert abs(got - exact) / exact < 0.05, (p, got, exact)
    assert h.percentile(0) == values[0] and h.percentile(100) == values[-1]
    assert h.mean == pytest.approx(sum(values) / len(values))


def test_histogram_edge_cases() -> None:
    h = LatencyHistogram()
    assert h.percentile(50) is None and h.mean is None
    for v in (-500.0, 0.0, 0.5, float("nan"), float("inf"), 1e15):
        h.add(v)
    assert h.count == 4 and h.negative == 1
    assert h.percentile(0) == -500.0 and h.percentile(100) == 1e15
    assert h.percentile(50) == 0.0
    assert len(h.buckets) == 16 * 37 + 1  # fixed memory


def test_single_value_percentiles_are_exact() -> None:
    h = LatencyHistogram()
    for _ in range(10):
        h.add(12_345.0)
    assert h.percentile(50) == h.percentile(99) == 12_345.0


# ---------------------------------------------------------------------------------------------
# Loss, reordering, duplicates, wrap, restart


def test_no_loss_in_order() -> None:
    s = StreamStats(1)
    feed(s, list(range(100)))
    snap = s.snapshot(200 * MS)
    assert (snap.received, snap.lost, snap.duplicates, snap.reordered) == (100, 0, 0, 0)
    assert snap.loss_ratio == 0.0


def test_gaps_count_as_loss() -> None:
    s = StreamStats(1)
    feed(s, [0, 1, 2, 5, 6, 10])
    assert s.lost == 5
    snap = s.snapshot(0)
    assert snap.loss_ratio == pytest.approx(5 / 11)


def test_reordered_frames_fill_gaps() -> None:
    s = StreamStats(1)
    feed(s, [0, 2, 1, 4, 3, 5])
    assert s.lost == 0 and s.reordered == 2 and s.received == 6


def test_reordered_before_first_frame_extends_base() -> None:
    s = StreamStats(1)
    feed(s, [5, 6, 4, 3])
    assert s.lost == 0 and s.received == 4


def test_duplicates_not_counted_as_received() -> None:
    s = StreamStats(1)
    feed(s, [0, 1, 1, 2, 0, 2])
    assert s.received == 3 and s.duplicates == 3 and s.lost == 0
    assert s.snapshot(0).drops == {"duplicate": 3}


def test_wraparound_without_loss() -> None:
    s = StreamStats(1)
    seqs = [(0xFFFFFFF0 + i) % (1 << 32) for i in range(40)]
    feed(s, seqs)
    assert s.lost == 0 and s.received == 40 and s.late == 0


def test_loss_and_reorder_across_wrap() -> None:
    s = StreamStats(1)
    feed(s, [0xFFFFFFFE, 1, 0xFFFFFFFF, 3])  # 0 and 2 lost, 0xFFFFFFFF reordered
    assert s.lost == 2 and s.reordered == 1


def test_too_late_frames_counted_as_late() -> None:
    s = StreamStats(1, reorder_window=16)
    feed(s, [*range(100), 50])
    assert s.late == 1 and s.received == 100 and s.lost == 0


def test_sender_restart_resynchronises() -> None:
    s = StreamStats(1)
    feed(s, list(range(1000, 1100)))
    feed(s, [0, 1, 2, 3], t0=1_000 * MS)  # new process: sequence starts again
    assert s.resyncs == 1
    assert s.late == 1  # the first frame after the restart could not be placed yet
    assert s.lost == 0 and s.received == 103


def test_huge_forward_jump_alone_is_not_taken_as_loss() -> None:
    s = StreamStats(1, max_dropout=3000)
    feed(s, [*range(10), 1_000_000])
    assert s.lost == 0 and s.late == 1
    feed(s, [1_000_001, 1_000_002], t0=100 * MS)
    assert s.resyncs == 1 and s.lost == 0


def test_moderate_gap_within_dropout_is_loss() -> None:
    s = StreamStats(1, max_dropout=3000)
    feed(s, [0, 2000])
    assert s.lost == 1999


def test_loss_model_check_against_brute_force() -> None:
    """Random drops, local reordering (< window) and duplicates, across the wrap."""
    rng = random.Random(4)
    for trial in range(30):
        start = rng.choice([0, 0xFFFFFF00, rng.randrange(1 << 32)])
        n = 500
        sent = [(start + i) % (1 << 32) for i in range(n)]
        kept = [q for q in sent if rng.random() > 0.1]
        arrivals = list(kept)
        for i in range(len(arrivals) - 1):  # swap neighbours now and then
            if rng.random() < 0.1:
                arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
        for _ in range(10):
            arrivals.insert(rng.randrange(1, len(arrivals)), rng.choice(arrivals[:5]))
        s = StreamStats(1)
        feed(s, arrivals)
        idx = {q: i for i, q in enumerate(sent)}
        positions = sorted(idx[q] for q in set(kept))
        expected_lost = positions[-1] - positions[0] + 1 - len(positions)
        assert s.received == len(kept), trial
        assert s.lost == expected_lost, trial
        assert s.duplicates == 10


# ---------------------------------------------------------------------------------------------
# Rate, jitter, latency, age


def test_rate_over_sliding_window() -> None:
    s = StreamStats(1, rate_window_us=1_000_000)
    for i in range(500):  # 500 Hz for one second
        s.on_frame(i, i * 2 * MS, i * 2 * MS, size=200)
    rate, bps = s.rate(999 * MS)
    assert rate == pytest.approx(500, abs=1) and bps == pytest.approx(100_000, abs=200)
    assert s.rate(1_500 * MS)[0] == pytest.approx(250, abs=1)
    assert s.rate(3_000 * MS) == (0.0, 0.0)


def test_rate_memory_is_bounded() -> None:
    s = StreamStats(1, max_rate_samples=100)
    for i in range(1000):
        s.on_frame(i, i, i)
    assert len(s._arrivals) == 100


def test_jitter_rfc3550() -> None:
    s = StreamStats(1)
    for i in range(200):  # constant transit: no jitter
        s.on_frame(i, i * 10 * MS, i * 10 * MS + 5 * MS)
    assert s.jitter_us == 0.0
    s2 = StreamStats(2)
    for i in range(500):  # transit alternates 5 ms / 7 ms: |D| = 2 ms every frame
        s2.on_frame(i, i * 10 * MS, i * 10 * MS + (5 if i % 2 else 7) * MS)
    assert s2.jitter_us == pytest.approx(2 * MS, rel=0.01)
    s3 = StreamStats(3)
    s3.on_frame(0, 0, 5 * MS)
    s3.on_frame(1, 10 * MS, 17 * MS)  # one 2 ms step: J = 2000/16
    assert s3.jitter_us == pytest.approx(125.0)


def test_latency_percentiles_and_age() -> None:
    s = StreamStats(1)
    for i in range(100):
        s.on_frame(i, 0, i * MS, latency_us=float(1_000 + i * 10))
    snap = s.snapshot(now_us=99 * MS + 2_500)
    assert snap.latency_samples == 100
    assert snap.latency_min_us == 1_000 and snap.latency_max_us == 1_990
    assert snap.latency_p50_us == pytest.approx(1_490, rel=0.05)
    assert snap.latency_p99_us == pytest.approx(1_980, rel=0.05)
    assert snap.since_last_us == 2_500
    assert snap.newest_age_us == pytest.approx(1_990 + 2_500)


def test_age_tracks_newest_not_reordered_or_late() -> None:
    s = StreamStats(1)
    s.on_frame(10, 0, 1_000, latency_us=500.0)
    s.on_frame(9, 0, 2_000, latency_us=9_000.0)  # older sample arriving later
    snap = s.snapshot(3_000)
    assert snap.newest_age_us == 500 + 2_000 and snap.since_last_us == 2_000


def test_age_unknown_without_clock() -> None:
    s = StreamStats(1)
    assert s.snapshot(0).since_last_us is None
    s.on_frame(0, 0, 1_000)
    snap = s.snapshot(3_000)
    assert snap.newest_age_us is None and snap.since_last_us == 2_000
    assert snap.latency_p50_us is None and snap.latency_min_us is None


# ---------------------------------------------------------------------------------------------
# Drops and path snapshots


def test_path_stats_drops_and_snapshot() -> None:
    p = PathStats("p2p")
    js = p.stream(1)
    feed(js, list(range(10)))
    p.stream(2).on_frame(0, 0, 0, size=50)
    p.on_drop("unauthenticated")  # no trustworthy stream id
    p.on_drop("replayed", n=3)
    p.on_drop("stale", stream_id=1, n=2)
    p.on_drop("stale", stream_id=99)  # unknown stream: counted on the path
    p.on_clock(rtt_us=800.0, offset_us=-1234.5, error_us=400.0)
    snap = p.snapshot(100 * MS)
    assert snap.name == "p2p" and snap.frames == 11 and snap.bytes == 1050
    assert snap.drops == {"unauthenticated": 1, "replayed": 3, "stale": 1}
    assert snap.streams[1].drops == {"stale": 2}
    assert snap.dropped == 7
    assert snap.rtt_us == 800.0 and snap.clock_offset_us == -1234.5
    d = snap.as_dict()
    assert d["streams"][1]["received"] == 10  # type: ignore[index]
    assert isinstance(snap.streams[2], StreamSnapshot)
    assert list(snap.streams) == [1, 2]


def test_path_stream_count_is_bounded() -> None:
    p = PathStats("muc", max_streams=2)
    p.stream(1)
    p.stream(2)
    assert p.stream(1) is p.stream(1)
    with pytest.raises(ValueError):
        p.stream(3)


def test_snapshot_is_a_copy() -> None:
    s = StreamStats(1)
    s.on_drop("stale")
    snap = s.snapshot(0)
    s.on_drop("stale")
    assert snap.drops == {"stale": 1}
