"""The impairment relay itself: one face per peer socket, seeded loss, delay, blackout."""

from __future__ import annotations

import asyncio

import pytest

from jitsi_teleop.relay import Impairment, UdpRelay


class Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr) -> None:
        self.got.append(data)


async def endpoint():
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(Endpoint, local_addr=("127.0.0.1", 0))
    return t, p, t.get_extra_info("sockname")[:2]


async def settle(pred, n=300):
    for _ in range(n):
        if pred():
            return
        await asyncio.sleep(0.01)


async def test_each_socket_gets_its_own_face_and_flows_do_not_mix():
    relay = UdpRelay()
    await relay.start()
    ta1, a1, addr_a1 = await endpoint()
    ta2, a2, addr_a2 = await endpoint()
    tb1, b1, addr_b1 = await endpoint()
    tb2, b2, addr_b2 = await endpoint()
    try:
        fa1, fa2 = relay.face_for("a", *addr_a1), relay.face_for("a", *addr_a2)
        fb1, fb2 = relay.face_for("b", *addr_b1), relay.face_for("b", *addr_b2)
        assert len({fa1, fa2, fb1, fb2}) == 4 and relay.face_for("a", *addr_a1) == fa1
        ta1.sendto(b"a1->b1", fb1)
        ta2.sendto(b"a2->b2", fb2)
        tb2.sendto(b"b2->a2", fa2)
        await settle(lambda: b1.got and b2.got and a2.got)
        assert b1.got == [b"a1->b1"] and b2.got == [b"a2->b2"] and a2.got == [b"b2->a2"]
        assert a1.got == []
        t_x, _x, _ = await endpoint()  # a socket the relay was never told about
        t_x.sendto(b"stranger", fb1)
        await settle(lambda: relay.stats.unroutable == 1)
        assert b1.got == [b"a1->b1"]
        t_x.close()
        assert relay.advertise("b")(*addr_b1) == fb1
    finally:
        for t in (ta1, ta2, tb1, tb2):
            t.close()
        relay.close()


async def test_loss_is_seeded_and_blackout_drops_everything():
    async def run(seed: int) -> list[bytes]:
        relay = UdpRelay(Impairment(loss=0.3), seed=seed)
        await relay.start()
        ta, _a, addr_a = await endpoint()
        tb, b, addr_b = await endpoint()
        relay.face_for("a", *addr_a)
        fb = relay.face_for("b", *addr_b)
        try:
            for i in range(200):
                ta.sendto(b"%d" % i, fb)
            await settle(lambda: relay.stats.received == 200)
            await asyncio.sleep(0.05)
            assert relay.stats.lost + relay.stats.forwarded == 200
            relay.impairment = Impairment(blackout=True)
            ta.sendto(b"gone", fb)
            await settle(lambda: relay.stats.blackholed == 1)
            assert b"gone" not in b.got
            return b.got
        finally:
            ta.close()
            tb.close()
            relay.close()

    first, second = await run(3), await run(3)
    assert first == second and 0 < len(first) < 200  # same seed, same drops


async def test_delay_holds_datagrams_back_and_keeps_them():
    relay = UdpRelay(Impairment(delay_s=0.05, jitter_s=0.02))
    await relay.start()
    ta, _a, addr_a = await endpoint()
    tb, b, addr_b = await endpoint()
    relay.face_for("a", *addr_a)
    fb = relay.face_for("b", *addr_b)
    try:
        for i in range(20):
            ta.sendto(b"%d" % i, fb)
        await asyncio.sleep(0)
        assert b.got == []  # nothing overtakes the delay
        await settle(lambda: len(b.got) == 20)
        assert sorted(b.got, key=int) == [b"%d" % i for i in range(20)]
    finally:
        ta.close()
        tb.close()
        relay.close()


def test_bad_impairments_are_refused():
    with pytest.raises(ValueError):
        Impairment(loss=1.5)
    with pytest.raises(ValueError):
        Impairment(delay_s=0.01, jitter_s=0.02)
    with pytest.raises(ValueError):
        Impairment(delay_s=-1)
