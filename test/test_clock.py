"""Clock offset estimation (minimum-RTT filter, drift), conversions and probe messages."""

from __future__ import annotations

import random

import pytest

from jitsi_teleop.clock import (
    PROBE_SIZE,
    ClockError,
    ClockEstimate,
    ClockEstimator,
    ClockProber,
    ClockSample,
    answer_ping,
)

OFFSET = 1_234_567_890  # remote clock minus local clock, µs


class SimRemote:
    """A remote clock with an offset and a rate error, and a link with random delays."""

    def __init__(
        self,
        offset: float = OFFSET,
        drift_ppm: float = 0.0,
        seed: int = 0,
        base_us: float = 5_000,
        jitter_us: float = 3_000,
        asym_us: float = 0.0,
    ) -> None:
        self.offset, self.drift = offset, drift_ppm * 1e-6
        self.rng = random.Random(seed)
        self.base, self.jitter, self.asym = base_us, jitter_us, asym_us

    def remote(self, local: float) -> float:
        return local + self.offset + self.drift * local

    def true_offset(self, local: float) -> float:
        return self.remote(local) - local

    def probe(self, t1: int) -> ClockSample:
        fwd = self.base + self.asym + self.rng.expovariate(1 / self.jitter)
        back = self.base + self.rng.expovariate(1 / self.jitter)
        t2 = int(self.remote(t1 + fwd))
        t3 = t2 + 50
        t3_local = t1 + fwd + 50 / (1 + self.drift)
        return ClockSample(t1, t2, t3, int(t3_local + back))


def test_offset_and_rtt_formulas() -> None:
    s = ClockSample(t1=1000, t2=OFFSET + 1010, t3=OFFSET + 1012, t4=1022)
    assert s.rtt_us == 20
    assert s.offset_us == OFFSET
    s.check()


@pytest.mark.parametrize(
    "s", [ClockSample(100, 0, 0, 99), ClockSample(0, 10, 9, 20), ClockSample(0, 10, 50, 20)]
)
def test_impossible_samples_refused_and_counted(s: ClockSample) -> None:
    with pytest.raises(ClockError):
        s.check()
    est = ClockEstimator()
    assert not est.add(s)
    assert est.counters.invalid == 1 and est.estimate() is None


def test_too_slow_samples_refused() -> None:
    est = ClockEstimator(max_rtt_us=1000)
    assert not est.add(ClockSample(0, 0, 0, 2000))
    assert est.counters.too_slow == 1


def test_minimum_rtt_sample_wins_over_asymmetric_slow_ones() -> None:
    est = ClockEstimator()
    t = 0
    for _ in range(30):  # slow and asymmetric: 50 ms out, 5 ms back -> offset off by 22.5 ms
        est.add(ClockSample(t, OFFSET + t + 50_000, OFFSET + t + 50_000, t + 55_000))
        t += 100_000
    est.add(ClockSample(t, OFFSET + t + 1_000, OFFSET + t + 1_000, t + 2_000))  # fast, symmetric
    for _ in range(10):
        t += 100_000
        est.add(ClockSample(t, OFFSET + t + 50_000, OFFSET + t + 50_000, t + 55_000))
    e = est.estimate()
    assert e is not None
    assert e.rtt_us == 2_000
    assert abs(e.offset_us - OFFSET) < 50
    mean = sum(s.offset_us for s in est._samples) / len(est)
    assert abs(mean - OFFSET) > 10_000  # a mean filter would be far off


@pytest.mark.parametrize("seed", range(5))
def test_estimate_within_error_bound_with_jitter(seed: int) -> None:
    sim = SimRemote(seed=seed, asym_us=400)
    est = ClockEstimator()
    for i in range(60):
        est.add(sim.probe(i * 500_000))
    e = est.estimate()
    assert e is not None
    err = abs(e.offset_us - sim.true_offset(e.at_us))
    assert err <= e.error_us
    assert err < 500


@pytest.mark.parametrize("drift_ppm", [-80.0, 0.0, 50.0])
def test_drift_is_estimated_and_applied(drift_ppm: float) -> None:
    sim = SimRemote(drift_ppm=drift_ppm, seed=3, jitter_us=500, base_us=2_000, offset=0)
    est = ClockEstimator(window=64)
    t = 10_000_000
    for _ in range(64):
        est.add(sim.probe(t))
        t += 2_000_000
    now = t + 1_000_000
    e = est.estimate(now)
    assert e is not None
    assert abs(e.drift_ppm - drift_ppm) < 10
    assert abs(e.offset_us - sim.true_offset(now)) < 150
    # projecting further ahead still tracks the drifting clock
    later = now + 20_000_000
    assert abs(e.offset_at(later) - sim.true_offset(later)) < 400


def test_drift_estimate_is_clamped() -> None:
    est = ClockEstimator(drift_bound_ppm=100.0, min_drift_span_us=1_000)
    for i in range(8):  # offset changes 1000 ppm: impossible for a real crystal
        t = i * 1_000_000
        off = OFFSET + i * 1_000
        est.add(ClockSample(t, t + off + 100, t + off + 100, t + 200))
    e = est.estimate()
    assert e is not None and e.drift_ppm == 100.0


def test_old_samples_expire() -> None:
    est = ClockEstimator(max_age_us=10_000_000)
    est.add(ClockSample(0, OFFSET + 100, OFFSET + 100, 200))
    assert est.estimate(5_000_000) is not None
    assert est.estimate(20_000_000) is None


@pytest.mark.parametrize(("bound_ppm", "chosen_rtt"), [(100.0, 1_000), (10.0, 200)])
def test_error_of_old_samples_grows_with_age(bound_ppm: float, chosen_rtt: int) -> None:
    """A 6 s old 200 µs sample vs a fresh 1000 µs one: which is better depends on the drift
    bound (100 ppm: 100 + 600 > 500 -> fresh; 10 ppm: 100 + 60 < 500 -> old)."""
    est = ClockEstimator(drift_bound_ppm=bound_ppm)
    est.add(ClockSample(0, OFFSET + 100, OFFSET + 100, 200))
    est.add(ClockSample(5_999_000, OFFSET + 5_999_500, OFFSET + 5_999_500, 6_000_000))
    e = est.estimate(6_000_000)
    assert e is not None and e.rtt_us == chosen_rtt and e.samples == 2


def test_window_is_bounded() -> None:
    est = ClockEstimator(window=8)
    for i in range(100):
        est.add(ClockSample(i, i, i, i + 1))
    assert len(est) == 8


def test_conversions() -> None:
    e = ClockEstimate(offset_us=OFFSET, rtt_us=100, error_us=50, drift_ppm=0.0, at_us=0, samples=1)
    sent_remote = OFFSET + 1_000_000
    assert e.to_local(sent_remote) == 1_000_000
    assert e.one_way_latency_us(sent_remote, 1_004_000) == 4_000
    assert e.age_us(sent_remote, 1_250_000) == 250_000
    est = ClockEstimator()
    assert est.one_way_latency_us(sent_remote, 1_004_000) is None
    assert est.age_us(sent_remote, 1_004_000) is None and est.to_local(5) is None
    est.add(ClockSample(0, OFFSET + 50, OFFSET + 50, 100))
    assert est.one_way_latency_us(sent_remote, 1_004_000) == pytest.approx(4_000)
    assert est.age_us(sent_remote, 1_250_000) == pytest.approx(250_000)
    assert est.to_local(sent_remote) == pytest.approx(1_000_000)


def test_conversion_with_drift() -> None:
    e = ClockEstimate(offset_us=1000, rtt_us=0, error_us=0, drift_ppm=100.0, at_us=0, samples=1)
    # at local 10 s the offset has grown by 1 ms
    assert e.offset_at(10_000_000) == pytest.approx(2000)
    assert e.to_local(10_000_000 + 2000) == pytest.approx(10_000_000, abs=1)


def test_end_to_end_one_way_latency_measurement() -> None:
    sim = SimRemote(seed=11, jitter_us=200, base_us=3_000, offset=-987_654)
    est = ClockEstimator()
    for i in range(20):
        est.add(sim.probe(i * 100_000))
    # the remote stamps a frame at its clock and it takes 3.1 ms to arrive
    local_send = 2_500_000
    stamped = int(sim.remote(local_send))
    lat = est.one_way_latency_us(stamped, local_send + 3_100)
    assert lat == pytest.approx(3_100, abs=300)


# ---------------------------------------------------------------------------------------------
# Probe messages


def test_probe_roundtrip() -> None:
    p = ClockProber()
    ping = p.ping(1_000)
    assert len(ping) == PROBE_SIZE
    pong = answer_ping(ping, OFFSET + 1_500, OFFSET + 1_520)
    s = p.on_pong(pong, 2_020)
    assert s == ClockSample(1_000, OFFSET + 1_500, OFFSET + 1_520, 2_020)
    with pytest.raises(ClockError, match="no outstanding"):
        p.on_pong(pong, 2_030)  # duplicate


def test_probe_bad_inputs() -> None:
    p = ClockProber()
    ping = p.ping(1_000)
    pong = answer_ping(ping, 5, 6)
    for n in range(len(pong)):
        with pytest.raises(ClockError):
            p.on_pong(pong[:n], 2_000)
    with pytest.raises(ClockError, match="kind"):
        p.on_pong(ping, 2_000)
    with pytest.raises(ClockError, match="kind"):
        answer_ping(pong, 1, 2)
    with pytest.raises(ClockError, match="version"):
        p.on_pong(b"\x09" + pong[1:], 2_000)
    forged_t1 = pong[:6] + (999).to_bytes(8, "big") + pong[14:]
    with pytest.raises(ClockError):
        p.on_pong(forged_t1, 2_000)
    with pytest.raises(ClockError):
        p.on_pong(pong, 500)  # arrives before the ping left: impossible
    with pytest.raises(ClockError):
        answer_ping(ping, -1, 0)


def test_prober_outstanding_is_bounded() -> None:
    p = ClockProber(max_outstanding=4)
    pings = [p.ping(i) for i in range(10)]
    with pytest.raises(ClockError):
        p.on_pong(answer_ping(pings[0], 100, 100), 200)
    assert p.on_pong(answer_ping(pings[9], 100, 100), 200).t1 == 9
