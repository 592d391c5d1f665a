"""The MUC slow path against a real Prosody with mod_limits at the stock 10 kB/s."""

from __future__ import annotations

import asyncio
import struct

import pytest

from jitsi_teleop.links.base import FrameTooLarge, LinkBusy
from jitsi_teleop.links.muc import MucLink
from prosody_server import eventually, room_config

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]


async def pair(prosody, rooms, room_name, **kw):
    leader = rooms(room_config(prosody, room_name, teleop_role="leader", **kw))
    follower = rooms(room_config(prosody, room_name, "tcp", teleop_role="follower", **kw))
    await leader.join()
    await follower.join()
    await leader.wait_for_peer("follower")
    await follower.wait_for_peer("leader")
    return leader, follower


async def test_too_large_stanza_refused_locally(prosody, rooms, room_name):
    leader, follower = await pair(prosody, rooms, room_name)
    link = MucLink(leader, follower.nick)
    back = MucLink(follower, leader.nick)
    got = []
    back.set_receive_callback(lambda n, s, p: got.append(p))
    with pytest.raises(FrameTooLarge) as info:
        link.send(1, bytes(300 * 1024), latest=False)
    assert "256 KiB" in str(info.value) and "limit" in str(info.value)
    # just over the configured margin is refused too, though under the server's hard limit
    limit = leader.config.max_stanza_bytes
    with pytest.raises(FrameTooLarge):
        link.send(1, bytes(limit * 3 // 4), latest=True)
    assert link.stats.refused == 2
    assert link.frame_stanza_size(1000) < limit
    # nothing was lost: the session is alive and the link still works
    link.send(1, b"small", latest=False)
    await eventually(lambda: got == [b"small"], what="small frame after refusal")
    assert leader.online and leader.stats.disconnects == 0
    with pytest.raises(ValueError):
        link.send(70000, b"x", latest=True)
    with pytest.raises(TypeError):
        link.send(1, "text", latest=True)  # type: ignore[arg-type]


async def test_budget_holds_under_mod_limits(prosody, rooms, room_name):
    """500 Hz of JointState-sized frames into a 10 kB/s server: thinned, newest delivered,
    nothing queued without bound, no disconnect, reliable traffic still gets through."""
    leader, follower = await pair(prosody, rooms, room_name)
    link = MucLink(leader, follower.nick)
    back = MucLink(follower, leader.nick)
    got: list[tuple[int, int]] = []
    back.set_receive_callback(lambda n, s, p: got.append((s, struct.unpack_from("<I", p)[0])))
    payload_tail = bytes(272)
    n_frames = 1000  # 2 s at 500 Hz
    max_pending = 0
    for i in range(n_frames):
        link.send(5, struct.pack("<I", i) + payload_tail, latest=True)
        if i % 100 == 0:
            link.send(9, struct.pack("<I", i) + b"cmd", latest=False)
        max_pending = max(max_pending, link.stats.pending_latest + link.stats.queued_reliable)
        await asyncio.sleep(0.002)
    last = n_frames - 1
    await eventually(lambda: (5, last) in got, timeout=15, what="newest frame delivered")
    await eventually(
        lambda: [v for s, v in got if s == 9] == list(range(0, n_frames, 100)),
        timeout=15,
        what="reliable frames delivered in order",
    )
    st = link.stats
    latest_seen = [v for s, v in got if s == 5]
    assert latest_seen == sorted(latest_seen)  # never out of order
    assert st.thinned > 0 and st.sent < n_frames
    assert st.thinned + st.sent + st.expired >= n_frames  # every frame accounted for
    assert max_pending <= 2  # one slot per latest stream + a reliable message at most
    assert leader.online and leader.stats.disconnects == 0 and follower.stats.disconnects == 0
    # the budget, not the server, is the limit: the bytes we sent fit the configured budget
    # (checked against the counters, not wall time)
    assert st.bytes_sent >= st.sent * 300


async def test_reliable_queue_backpressure(prosody, rooms, room_name):
    leader, follower = await pair(prosody, rooms, room_name)
    link = MucLink(leader, follower.nick, reliable_max_items=4)
    back = MucLink(follower, leader.nick)
    got = []
    back.set_receive_callback(lambda n, s, p: got.append(int(p)))
    accepted = 0
    with pytest.raises(LinkBusy) as info:
        for i in range(50):
            link.send(2, b"%d" % i, latest=False)
            accepted += 1
    assert "full" in str(info.value)
    assert 4 <= accepted < 50 and link.stats.refused == 1
    # backpressure clears as the queue drains; the caller resumes without losing anything
    for i in range(accepted, 20):
        while True:
            try:
                link.send(2, b"%d" % i, latest=False)
                break
            except LinkBusy:
                await asyncio.wait_for(link.wait_writable(), 10)
    await eventually(lambda: len(got) == 20, timeout=20, what="all reliable frames")
    assert got == list(range(20))


async def test_signals_pass_a_full_reliable_queue(prosody, rooms, room_name):
    """While the room is the only path, reliable frames can fill their queue for the whole
    outage; the signalling that brings the fast path back (offer, answer, candidates) must
    still be admitted and sent first, or the fast path never returns."""
    leader, follower = await pair(prosody, rooms, room_name)
    link = MucLink(leader, follower.nick, reliable_max_items=8)
    back = MucLink(follower, leader.nick)
    frames: list[int] = []
    order: list[str] = []
    back.set_receive_callback(lambda n, s, p: (frames.append(int(p)), order.append("f")))
    back.set_signal_callback(lambda n, m: order.append(m["t"]))
    sent = 0
    with pytest.raises(LinkBusy):
        while True:
            link.send(2, b"%d" % sent, latest=False)
            sent += 1
    link.send_signal({"t": "offer"})  # admitted although the frame queue is full
    for _ in range(5):
        link.send_signal({"t": "cand"})
    await eventually(lambda: len(frames) == sent, timeout=20, what="all queued frames")
    await eventually(lambda: order.count("cand") == 5, what="every candidate")
    assert frames == list(range(sent))
    # the signals overtook the queued frames (the first frame may already have been on the wire)
    assert order.index("offer") <= 1, order
    assert max(i for i, k in enumerate(order) if k == "cand") < order.index("f", 2), order


async def test_signal_validation_and_size(prosody, rooms, room_name):
    leader, follower = await pair(prosody, rooms, room_name)
    link = MucLink(leader, follower.nick, max_signal_bytes=1000)
    with pytest.raises(FrameTooLarge):
        link.send_signal({"sdp": "x" * 2000})
    with pytest.raises(TypeError):
        link.send_signal({"bad": object()})


async def test_reliable_frames_survive_peer_reconnect(prosody, rooms, room_name):
    """Reliable frames sent while the peer's connection dies are acked end to end and sent
    again after it is back: all arrive, once each, in order."""
    leader, follower = await pair(prosody, rooms, room_name, key_id="a1")
    link = MucLink(leader, follower.nick)
    back = MucLink(follower, leader.nick)
    got: list[int] = []
    back.set_receive_callback(lambda n, s, p: got.append(int(p)))
    for i in range(5):
        link.send(2, b"%d" % i, latest=False)
    await eventually(lambda: got == list(range(5)), what="first frames")
    await eventually(lambda: not link._unacked, what="first frames acked")
    follower.xmpp.abort()  # the follower's session dies (a ghost may linger on stock Prosody)
    for i in range(5, 25):
        link.send(2, b"%d" % i, latest=False)
        await asyncio.sleep(0.05)
    await eventually(lambda: got[-1:] == [24], timeout=20, what="last frame")
    assert got == list(range(25))  # complete, in order, no duplicates delivered
    assert link.stats.resent > 0  # some went to the dead session and were sent again
    await eventually(lambda: not link._unacked, what="everything acked")
    assert follower.stats.rejoins + follower.stats.resumes >= 1
