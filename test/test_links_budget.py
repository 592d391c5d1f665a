"""Pure send-budget logic: token bucket, latest-only slots, bounded reliable queue."""

from __future__ import annotations

import pytest

from jitsi_teleop.links.budget import BoundedQueue, LatestSlots, QueueFull, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_rate_and_burst():
    clock = FakeClock()
    b = TokenBucket(rate=1000, burst=500, clock=clock)
    assert b.try_consume(500)
    assert not b.try_consume(100)
    assert b.delay_for(100) == pytest.approx(0.1)
    clock.t += 0.125
    assert b.try_consume(100)
    clock.t += 100  # idle time does not accumulate beyond the burst
    assert b.tokens == pytest.approx(500)


def test_token_bucket_overdraw_for_big_frames():
    clock = FakeClock()
    b = TokenBucket(rate=1000, burst=500, clock=clock)
    # a frame bigger than the burst may go when the bucket is full, leaving a debt
    assert b.delay_for(2000) == 0
    b.consume(2000)
    assert b.tokens == pytest.approx(-1500)
    assert b.delay_for(10) == pytest.approx(1.51)
    clock.t += 1.51
    assert b.delay_for(10) == pytest.approx(0.0, abs=1e-9)


def test_token_bucket_rejects_bad_settings():
    with pytest.raises(ValueError):
        TokenBucket(0, 10)


def test_latest_slots_newest_wins_and_fair_order():
    s: LatestSlots[str] = LatestSlots(max_streams=2)
    assert s.put(1, "a1", now=1.0) is False
    assert s.put(2, "b1", now=2.0) is False
    assert s.put(1, "a2", now=3.0) is True  # thinned: a1 is gone
    head = s.peek()
    assert head is not None and head.stream_id == 1 and head.item == "a2"
    assert len(s) == 2
    with pytest.raises(OverflowError):
        s.put(3, "c", now=4.0)
    s.pop(1)
    assert s.peek().item == "b1"


def test_bounded_queue_backpressure():
    q: BoundedQueue[int] = BoundedQueue(max_items=3, max_bytes=100)
    q.put(1, 10)
    q.put(2, 10)
    with pytest.raises(QueueFull):
        q.put(3, 90)  # bytes bound
    q.put(3, 10)
    with pytest.raises(QueueFull):
        q.put(4, 1)  # count bound
    assert [q.pop(), q.pop(), q.pop()] == [1, 2, 3]
    assert q.bytes == 0 and q.has_room(100)
