"""Sessions whose data channel runs through the userspace impairment relay: a stalled path
(blackout) fails over to the room within the bound and comes back; under delay, jitter and loss
the latest-only stream keeps its age bounded."""

from __future__ import annotations

import asyncio

import pytest

from jitsi_teleop.links.p2p import P2PConfig
from jitsi_teleop.relay import Impairment, UdpRelay
from jitsi_teleop.session import PATH_MUC, PATH_P2P
from prosody_server import eventually
from test_session import close_all, fast_config, make_pair, sample

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]


def ipv4_loopback(address: str) -> bool:
    return address == "127.0.0.1"  # one family only: every candidate goes through the relay


async def relayed_pair(prosody, rooms, room_name, relay: UdpRelay, datagrams=False, **kw):
    def cfg(side: str):
        p2p = P2PConfig(
            candidate_filter=ipv4_loopback,
            advertise=relay.advertise(side),
            latest_datagrams=datagrams,
        )
        return fast_config(p2p=p2p, **kw)

    return await make_pair(prosody, rooms, room_name, cfg("a"), cfg("b"))


async def test_stalled_data_channel_fails_over_and_back(prosody, rooms, room_name):
    relay = UdpRelay(seed=1)
    await relay.start()
    leader, follower, _lsink, fsink, *_ = await relayed_pair(prosody, rooms, room_name, relay)
    try:
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=20,
            what="both ends on the relayed data channel",
        )
        assert relay.stats.forwarded > 0  # the path really goes through the relay
        relay.impairment = Impairment(blackout=True)  # the path stalls: nothing gets through
        i = 0
        while leader.path != PATH_MUC or follower.path != PATH_MUC:
            leader.publish(1, sample(i))
            i += 1
            await asyncio.sleep(0.01)
            assert i < 2000, "no failover"
        mark = len(fsink.items)
        for _ in range(50):
            leader.publish(1, sample(i))
            i += 1
            await asyncio.sleep(0.01)
        await eventually(
            lambda: PATH_MUC in {p for *_, p in fsink.items[mark:]}, what="stream over the room"
        )
        relay.impairment = Impairment()
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=30,
            what="fail-back after the stall",
        )
        for s in (leader, follower):
            st = s.stats()
            assert st.failovers >= 1 and st.failbacks >= 1
            assert any(e.reason == "data channel silent" for e in s.path_events)
            assert st.last_detection_s is not None
            assert st.last_detection_s <= st.failover_bound_s
    finally:
        await close_all(leader, follower)
        relay.close()


@pytest.mark.parametrize("datagrams", [False, True], ids=["channel", "datagrams"])
async def test_latest_stream_age_stays_bounded_under_delay_and_loss(
    prosody, rooms, room_name, datagrams
):
    relay = UdpRelay(seed=7)
    await relay.start()
    leader, follower, _lsink, fsink, *_ = await relayed_pair(
        prosody, rooms, room_name, relay, datagrams, failover_after=1.0
    )
    try:
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=20,
            what="both ends on the relayed data channel",
        )
        relay.impairment = Impairment(delay_s=0.04, jitter_s=0.01, loss=0.05)
        n = 600
        for i in range(n):
            leader.publish(1, sample(i))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        got = fsink.values("/joint_states")
        assert got == sorted(got) and len(set(got)) == len(got)  # newest wins
        assert relay.stats.lost > 0
        st = follower.stats().paths[PATH_P2P].streams[1]
        # the age of what was delivered is bounded by the stream's max age (stale samples are
        # dropped and counted, never delivered late)
        assert st.latency_samples > 0
        assert st.latency_max_us is not None and st.latency_max_us <= 0.5e6
        assert st.latency_p50_us is not None and st.latency_p50_us >= 0.02e6  # the relay's delay
        assert st.lost > 0  # loss was seen and counted, not hidden
        # the sender never let the unordered channel queue: at most one waiting frame per stream
        assert leader._p2p is not None and leader._p2p.stats.pending_latest <= 2
        assert leader._p2p.latest_transport == ("datagram" if datagrams else "channel")
        # what arrived (delivered, or older than a sample already delivered: jitter reorders)
        arrived = st.received + st.drops.get("superseded", 0)
        assert len(got) > n // 4
        if datagrams:  # no congestion window: nearly everything the relay let through arrives
            assert arrived > n * 3 // 4
    finally:
        await close_all(leader, follower)
        relay.close()
