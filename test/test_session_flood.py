"""UDP garbage flooded at every UDP port of the paired sessions (the ICE ports of the data
channel and of the latest-only datagrams) from another address on the same host: nothing of
it reaches decryption, no receive queue grows without bound, and the stream keeps its rate
(real Prosody, real aiortc/aioice on loopback)."""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import subprocess
import sys
import time

import pytest

from jitsi_teleop.session import PATH_P2P
from prosody_server import eventually
from test_session import close_all, make_pair

pytestmark = [pytest.mark.prosody, pytest.mark.slow, pytest.mark.timeout(120)]
pytest_plugins = ["conftest_prosody"]

FLOOD_S = 3.0
FLOOD_PPS = 4000  # datagrams per second per port, from one other process
STREAM_HZ = 100
QUEUE_BOUND = 4096

# the flooder: a separate process, so its source address is not one ICE selected
FLOODER = r"""
import os, socket, sys, time
ports = [int(p) for p in sys.argv[1].split(",")]
pps, secs = float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
junk = [os.urandom(n) for n in (20, 64, 300, 1200)]
junk += [b"\x17\xfe\xfd" + os.urandom(100), b"\x00\x05" + os.urandom(260)]
sent, t0 = 0, time.monotonic()
while time.monotonic() - t0 < secs:
    for p in ports:
        try:
            s.sendto(junk[sent % len(junk)], ("127.0.0.1", p))
        except BlockingIOError:
            pass
        sent += 1
    ahead = sent / len(ports) / pps - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(sent)
"""


def own_udp_ports() -> set[int]:
    """UDP ports on 127.0.0.1 bound by this process (read from /proc: no internals)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    with open("/proc/self/net/udp") as f:
        next(f)
        for line in f:
            parts = line.split()
            addr, inode = parts[1], parts[9]
            host, port = addr.split(":")
            if inode in inodes and host == "0100007F":  # 127.0.0.1, little-endian hex
                ports.add(int(port, 16))
    return ports


def queue_sizes() -> int:
    """The longest asyncio.Queue in the process right now."""
    return max((q.qsize() for q in gc.get_objects() if isinstance(q, asyncio.Queue)), default=0)


def p2p_drops(session) -> int:
    return sum(session.stats().paths[PATH_P2P].drops.values())


async def test_udp_garbage_flood_at_the_ice_ports(prosody, rooms, room_name):
    leader, follower, _lsink, fsink, *_ = await make_pair(prosody, rooms, room_name)
    try:
        await eventually(
            lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
            timeout=20,
            what="both ends on the data channel",
        )
        ports = own_udp_ports()
        assert len(ports) >= 2, ports  # at least the ICE sockets of both ends
        drops0 = p2p_drops(follower) + p2p_drops(leader)
        flood = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            FLOODER,
            ",".join(map(str, sorted(ports))),
            str(FLOOD_PPS),
            str(FLOOD_S),
            stdout=subprocess.PIPE,
        )
        mark = len(fsink.items)
        sent = 0
        longest = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < FLOOD_S:
            leader.publish(1, struct.pack("<I", 1_000_000 + sent) + bytes(60))
            sent += 1
            if sent % 10 == 0:
                longest = max(longest, queue_sizes())
            await asyncio.sleep(1 / STREAM_HZ)
        out, _ = await flood.communicate()
        junk = int(out.decode().strip() or 0)
        await asyncio.sleep(0.3)
        got = [
            v
            for v in fsink.values("/joint_states")[mark:]
            if v >= 1_000_000  # the frames sent during the flood
        ]
        assert junk > FLOOD_S * FLOOD_PPS * 0.5 * len(ports), "the flood did not run"
        # the stream kept its rate over the data channel
        assert len(got) >= 0.8 * sent, (len(got), sent)
        assert fsink.paths_since(mark, "/joint_states") == {PATH_P2P}
        assert leader.path == PATH_P2P and follower.path == PATH_P2P
        # junk from a foreign address never reached the session's decryption
        extra = p2p_drops(follower) + p2p_drops(leader) - drops0
        assert extra <= junk * 0.001, f"{extra} of {junk} junk datagrams were opened"
        # and no queue in the process grew with it
        assert longest <= QUEUE_BOUND, longest
    finally:
        await close_all(leader, follower)
