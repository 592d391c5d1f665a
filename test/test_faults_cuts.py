"""The link-cut campaign's short version (bench/faults_cuts.py --quick): cuts of the fast path
made at the network (every UDP packet the simulated internet's router forwards is dropped; the
room's TCP stays up) while both sites stream at 500 Hz both ways with a reliable stream each way.

Asserts behaviour, not timings (those are the bench's): no reliable frame lost, no latest
sample delivered older than its max age, every cut longer than the failover bound moved both
sites to the room and every cut came back to the fast path, a cut shorter than the silence
threshold did not fail over, the follower held while its commands were missing, and no
failover happened with no cut under jitter and loss. Root and the netlab tools, or a skip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jitsi_teleop.netlab.lab import unavailable
from jitsi_teleop.session import SessionConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import faults_cuts

REASON = unavailable()
pytestmark = [
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
    pytest.mark.slow,
    pytest.mark.timeout(300),
]


async def test_quick_cut_campaign_loses_nothing_and_always_comes_back():
    bound = SessionConfig().failover_bound
    # Seeded lengths: cuts well over the bound (fail over, some past the link rebuild at 1.5 s)
    # and one under the silence threshold (must not fail over).
    doc = await faults_cuts.campaign(
        cuts=5, seed=1, min_s=0.05, max_s=2.0, false_seconds=8.0, back_timeout=60.0
    )
    cuts = doc["per_cut"]
    assert doc["cuts"] == 5, cuts
    assert doc["reliable_lost"] == 0, doc["reliable"]
    assert doc["reliable"]["sent"] > 0 and doc["reliable"]["missing_at_end"] == 0
    assert doc["stale_delivered"] == 0, doc["stale_examples"]
    assert all(c["came_back"] for c in cuts), cuts
    long_cuts = [c for c in cuts if c["length_s"] > bound + 0.1]
    short_cuts = [c for c in cuts if c["length_s"] < SessionConfig().failover_after - 0.1]
    assert long_cuts and short_cuts, "the seeded plan must have both kinds"
    for c in long_cuts:
        assert c["failed_over"], c
        assert c["back_s"] is not None, c  # both sites returned to the fast path
        assert c["to_hold_s"] is not None, c  # the follower's lease held it meanwhile
    for c in short_cuts:
        assert not c["failed_over"], c
    for row in doc["false_failovers"]:
        assert row["false_failovers"] == 0, row
        assert row["stale_delivered"] == 0 and row["reliable_lost"] == 0, row


async def test_quick_cuts_of_the_relayed_path_lose_nothing_and_come_back():
    """Behind symmetric NATs the fast path goes through TURN; the cut drops the relay's UDP
    too. The same guarantees hold: failover, nothing lost or stale, back on the relay."""
    bound = SessionConfig().failover_bound
    doc = await faults_cuts.campaign(
        cuts=3, seed=1, min_s=0.05, max_s=2.0, false_seconds=0.0, back_timeout=60.0, nat="symmetric"
    )
    cuts = doc["per_cut"]
    assert doc["path"] == "relay", doc["path"]
    assert doc["reliable_lost"] == 0 and doc["reliable"]["missing_at_end"] == 0, doc["reliable"]
    assert doc["stale_delivered"] == 0, doc["stale_examples"]
    assert all(c["came_back"] for c in cuts), cuts
    long_cuts = [c for c in cuts if c["length_s"] > bound + 0.1]
    assert long_cuts, "the seeded plan must cut longer than the failover bound"
    for c in long_cuts:
        assert c["failed_over"] and c["back_s"] is not None and c["to_hold_s"] is not None, c
