"""CI's short server fault campaign (``bench/faults.py server --quick``) and the keepalive's
settings.

In the network lab (root): two sites behind NATs pair, take the peer-to-peer path and stream
both ways (500 Hz latest, 50 Hz reliable); Prosody is killed (SIGKILL) once and stopped cleanly
once, then one site's NAT "reboots" (all its conntrack flushed: the room's WebSocket dies with
no FIN and no reset). Asserted is what a user relies on, not how fast: after each fault both
sites are back in the room and the room path carries authenticated traffic both ways again, the
fast path never left ``p2p``, no reliable frame was lost, no latest frame was delivered older
than its max age, a server restart does not make the two ends pair again, and the NAT reboot
was found by the room keepalive (nothing else tells the site).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jitsi_teleop.netlab.lab import unavailable
from jitsi_teleop.room.config import RoomConfig

ROOT = Path(__file__).resolve().parent.parent
REASON = unavailable()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_restarts_and_a_nat_reboot_leave_the_fast_path_alone(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    cmd = [sys.executable, str(ROOT / "bench" / "faults.py"), "server", "--quick"]
    proc = subprocess.run(
        [*cmd, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=280,
    )
    assert out.exists(), f"no JSON written:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())["server"]
    records = doc["records"]
    faults = [r["fault"] for r in records]
    assert faults[:2] == ["kill", "clean"] and faults[2].startswith("nat-reboot"), faults
    for r in records:
        # back in the room, and the room path carries authenticated records both ways again
        assert r["error"] is None, f"{r['fault']}: {r['error']}"
        assert r["rejoin_s"] is not None and r["room_path_s"] is not None
        # the fast path carried on: no switch to the room, nothing stale delivered
        assert r["path_changes"] == [], f"{r['fault']}: {r['path_changes']}"
        assert r["stale_delivered"] == 0, r
    for r in records[:2]:  # a server restart keeps the pairing (no new handshake)
        assert not r["repaired"], r
    nat = records[2]
    assert nat["detected_s"] is not None, nat  # the site's room connection was dropped...
    end = doc["end"]
    flushed = "leader" if nat["fault"].endswith("a") else "follower"
    assert end["room"][flushed]["keepalive_drops"] >= 1, end["room"]  # ...by its keepalive
    for direction in ("leader_to_follower", "follower_to_leader"):
        d = end[direction]
        assert d["sent"] > 0 and d["lost"] == 0 and d["missing_in_sequence"] == 0, (direction, d)
        assert d["latest_stale_delivered"] == 0, (direction, d)
    assert end["unacked_at_end"] == {"leader": 0, "follower": 0}, end
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ping_interval", 0),
        ("ping_interval", -1.0),
        ("ping_interval", float("nan")),
        ("ping_timeout", "3"),
        ("ping_timeout", True),
        ("ping_failures", 0),
        ("ping_failures", 1.5),
    ],
)
def test_keepalive_settings_are_checked(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RoomConfig(room="lab", domain="meet.test", tcp_host="127.0.0.1", **{field: value})


def test_keepalive_defaults_bound_detection_to_a_few_seconds() -> None:
    """The README's bound: a silently dead connection is dropped within ping_interval +
    ping_timeout (one failed ping)."""
    cfg = RoomConfig(room="lab", domain="meet.test", tcp_host="127.0.0.1")
    assert cfg.ping_failures == 1
    assert cfg.ping_interval + cfg.ping_timeout <= 8.0
