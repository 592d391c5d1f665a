"""Hostile and broken input against a paired session (real Prosody, real aiortc): truncated,
oversized, wrong-version, wrong-key and replayed frames; descriptors for unknown types; WebRTC
signalling with a wrong fingerprint; a third occupant posing as the peer's role. Nothing
reaches the application, and the counters say why."""

from __future__ import annotations

import asyncio
import os
import struct
import time

import pytest

from jitsi_teleop import wire
from jitsi_teleop.links.muc import MucLink
from jitsi_teleop.links.p2p import P2PDescription
from jitsi_teleop.pairing import Secret
from jitsi_teleop.protect import SessionCipher
from jitsi_teleop.session import PATH_P2P, Session
from prosody_server import eventually, room_config
from test_session import (
    FOLLOWER_OUT,
    LEADER_OUT,
    SECRET,
    Sink,
    close_all,
    fast_config,
    make_pair,
    sample,
)

pytestmark = [pytest.mark.prosody, pytest.mark.timeout(90)]
pytest_plugins = ["conftest_prosody"]


async def on_p2p(leader: Session, follower: Session) -> None:
    await eventually(
        lambda: leader.path == PATH_P2P and follower.path == PATH_P2P,
        timeout=20,
        what="both ends on the data channel",
    )


async def test_bad_frames_are_refused_and_counted(prosody, rooms, room_name):
    leader, follower, _lsink, fsink, *_ = await make_pair(prosody, rooms, room_name)
    try:
        await on_p2p(leader, follower)
        link = leader._p2p
        cipher = leader._cipher
        assert link is not None and cipher is not None
        now_us = time.monotonic_ns() // 1000
        genuine = cipher.seal(wire.Frame(1, 0, now_us, sample(1)))
        header = wire.encode_header(wire.Frame(1, 1, 1, b"x" * 100).header())
        bad = {
            "truncated": genuine[:-5],
            "short_header": genuine[:10],
            "oversized": wire.HEADER.pack(1, 0, 1, 2, 3, 0, 1, 10_000_000) + bytes(64),
            "wrong_version": bytes([2]) + genuine[1:],
            "wrong_key": SessionCipher(os.urandom(32), os.urandom(32), genuine[24:28]).seal(
                wire.Frame(1, 10_001, 1, sample(2))
            ),
            "wrong_session": SessionCipher(os.urandom(32), os.urandom(32), b"\0\0\0\0").seal(
                wire.Frame(1, 10_002, 1, sample(3))
            ),
            "forged": header + genuine[24:28] + os.urandom(8 + 100 + 16),
        }
        before = len(fsink.items)
        for record in bad.values():
            link.send(1, record, latest=False)
        link.send(1, genuine, latest=False)  # accepted once ...
        link.send(1, genuine, latest=False)  # ... and refused as a replay
        await eventually(
            lambda: sum(follower.stats().paths[PATH_P2P].drops.values()) >= len(bad) + 1,
            what="every bad record counted",
        )
        drops = follower.stats().paths[PATH_P2P].drops
        assert drops.get("truncated", 0) == 2  # cut payload, cut header
        assert drops.get("oversized") == 1
        assert drops.get("wrong_version") == 1
        assert drops.get("unauthenticated", 0) == 2  # wrong key, forged record
        assert drops.get("wrong_session") == 1
        assert drops.get("replayed") == 1
        delivered = [v for v in fsink.items[before:] if v[0] == "/joint_states"]
        assert [struct.unpack_from("<I", p)[0] for _, _, p, _ in delivered] == [1]
        # the session is unharmed: the stream still flows
        for i in range(20):
            leader.publish(1, sample(20_000 + i))
            await asyncio.sleep(0.005)
        await eventually(lambda: 20_019 in fsink.values("/joint_states"), what="stream after")
    finally:
        await close_all(leader, follower)


async def test_descriptors_for_unknown_types_are_refused_naming_the_topic(
    prosody, rooms, room_name
):
    other = "RIHS01_" + "d" * 64
    other_hash = [
        wire.StreamDescriptor(1, "/joint_states", "sensor_msgs/msg/JointState", other),
        wire.StreamDescriptor(2, "/mode", "std_msgs/msg/String", other, "reliable"),
    ]
    lroom = rooms(room_config(prosody, room_name, teleop_role="leader"))
    froom = rooms(room_config(prosody, room_name, "tcp", teleop_role="follower"))
    await lroom.join()
    await froom.join()
    fsink = Sink()
    leader = Session(lroom, fast_config(), SECRET, "leader", LEADER_OUT)
    follower = Session(
        froom,
        fast_config(known_types={"std_msgs/msg/String"}),
        SECRET,
        "follower",
        FOLLOWER_OUT,
        expected=other_hash,
        on_receive=fsink,
    )
    try:
        await leader.start()
        await follower.start()
        await follower.wait_paired(20)
        await eventually(lambda: follower.problems, what="descriptors checked")
        msgs = follower.stats().problems
        assert any("/joint_states" in m and "cannot handle" in m for m in msgs)
        assert any("/mode" in m and "hash mismatch" in m for m in msgs)
        await eventually(lambda: leader.stats().peer_refusals, what="refusal reported back")
        assert any("/joint_states" in m for m in leader.stats().peer_refusals)
        for i in range(30):
            leader.publish(1, sample(i))
            if i % 10 == 0:
                leader.publish(2, b"cmd")
            await asyncio.sleep(0.01)
        await eventually(
            lambda: (
                sum(
                    s.drops.get("refused", 0)
                    for p in follower.stats().paths.values()
                    for s in p.streams.values()
                )
                >= 10
            ),
            what="refused frames counted",
        )
        assert fsink.items == []  # nothing reached the application
    finally:
        await close_all(leader, follower)


async def test_signalling_with_a_wrong_fingerprint_is_refused(prosody, rooms, room_name):
    leader, follower, _lsink, _fsink, *_ = await make_pair(prosody, rooms, room_name)
    try:
        await on_p2p(leader, follower)
        link_before = follower._p2p
        fake = P2PDescription(
            "abcd",
            "a" * 22,
            ("127.0.0.1 9",),
            ("sha-256 " + ":".join(["AB"] * 32),),
        )
        assert leader._muc is not None
        leader._muc.send_signal({"t": "offer", "g": 99, "d": fake.to_dict()})
        leader._muc.send_signal({"t": "offer", "g": 100, "d": {"v": 1}})  # malformed
        await eventually(
            lambda: (
                follower.stats().counters.get("signal_refused", 0) >= 1
                and follower.stats().counters.get("signal_invalid", 0) >= 1
            ),
            what="bad offers counted",
        )
        assert follower.stats().pairing["fingerprint"] == 1
        assert follower._p2p is link_before and follower.path == PATH_P2P  # nothing applied
    finally:
        await close_all(leader, follower)


async def test_third_occupant_posing_as_the_peer_is_refused(prosody, rooms, room_name):
    # the impostor is in the room first, claiming the follower role and the same key id
    iroom = rooms(room_config(prosody, room_name, teleop_role="follower", key_id="ab12"))
    await iroom.join()
    impostor = Session(
        iroom, fast_config(use_p2p=False), Secret(os.urandom(32)), "follower", FOLLOWER_OUT
    )
    await impostor.start()
    leader, follower, lsink, _fsink, lroom, froom = await make_pair(prosody, rooms, room_name)
    try:
        assert leader.peer == froom.nick and follower.peer == lroom.nick
        assert leader.stats().session_id == follower.stats().session_id
        assert impostor.paired is False
        await eventually(
            lambda: (
                impostor.stats().pairing["key_mismatch"] + leader.stats().pairing["key_mismatch"]
                >= 1
            ),
            what="the impostor's handshake refused",
        )
        # the impostor sends frames straight to the leader through the room
        await eventually(lambda: lroom.nick in iroom.occupants, what="impostor sees leader")
        raw = MucLink(iroom, lroom.nick, follow_key=False)
        for i in range(5):
            raw.send(1, b"\x01" + os.urandom(80), latest=False)
            raw.send(
                1,
                SessionCipher(os.urandom(32), os.urandom(32), b"abcd").seal(
                    wire.Frame(1, i, 1, sample(i))
                ),
                latest=True,
            )
        await eventually(
            lambda: leader.stats().counters.get("foreign_frames", 0) >= 2,
            what="impostor frames counted",
        )
        assert lsink.items == []
        assert leader.stats().paths["muc"].drops.get("foreign_sender", 0) >= 2
        await raw.close()
    finally:
        await close_all(leader, follower, impostor)
