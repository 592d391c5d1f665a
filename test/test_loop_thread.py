"""The nodes' asyncio thread: uvloop when installed (asyncio's on request), and the batching
hand-off from rclpy's thread that must deliver every item, in order, with fewer wake-ups."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time

import pytest

from jitsi_teleop.loop_thread import LoopThread, loop_kind, new_event_loop, run

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_asyncio_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JITSI_TELEOP_UVLOOP", "0")
    loop = new_event_loop()
    try:
        assert loop_kind(loop) == "asyncio"
    finally:
        loop.close()


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (the speed extra)")
def test_uvloop_by_default_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JITSI_TELEOP_UVLOOP", raising=False)
    t = LoopThread("test-uvloop")
    try:
        assert t.kind == "uvloop"
        # the loop runs coroutines like asyncio's: a datagram round trip on loopback
        assert t.run(_udp_echo(), timeout=10) == b"ping"
    finally:
        t.stop()


@pytest.mark.parametrize("uv", ["0", "1"])
def test_run_returns_and_cleans_up(monkeypatch: pytest.MonkeyPatch, uv: str) -> None:
    monkeypatch.setenv("JITSI_TELEOP_UVLOOP", uv)
    assert run(_udp_echo()) == b"ping"


async def _udp_echo() -> bytes:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not got.done():
                got.set_result(data)

    t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    try:
        t.sendto(b"ping", t.get_extra_info("sockname"))
        return await asyncio.wait_for(got, 5)
    finally:
        t.close()


@pytest.mark.parametrize("uv", ["0", "1"])
def test_handoff_delivers_every_item_in_order_with_fewer_wakeups(
    monkeypatch: pytest.MonkeyPatch, uv: str
) -> None:
    monkeypatch.setenv("JITSI_TELEOP_UVLOOP", uv)
    t = LoopThread("test-handoff")
    got: list[tuple[int, int]] = []
    threads_seen: set[int] = set()

    def consume(item: tuple[int, int]) -> None:
        threads_seen.add(threading.get_ident())
        got.append(item)

    h = t.handoff(consume)
    n_per, producers = 5000, 3

    def produce(k: int) -> None:
        for i in range(n_per):
            h.put((k, i))
            if i % 500 == 0:
                time.sleep(0.001)  # let the loop drain now and then

    try:
        workers = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        deadline = time.monotonic() + 20
        while len(got) < n_per * producers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(got) == n_per * producers  # nothing lost, nothing twice
        for k in range(producers):  # each producer's items in its own order
            assert [i for kk, i in got if kk == k] == list(range(n_per))
        assert threads_seen == {t._thread.ident}  # consumed in the loop's thread only
        assert 1 <= h.wakeups < n_per * producers  # bursts shared wake-ups
    finally:
        t.stop()


def test_handoff_survives_a_failing_consumer() -> None:
    t = LoopThread("test-handoff-error")
    got: list[int] = []

    def consume(i: int) -> None:
        if i == 2:
            raise ValueError("bad item")
        got.append(i)

    h = t.handoff(consume)
    try:
        for i in range(5):
            h.put(i)
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [0, 1, 3, 4]  # the items behind the bad one were not stranded
    finally:
        t.stop()
