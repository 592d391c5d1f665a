"""``jitsi-teleop demo --lan``: the whole demo with no server at all, the sites pairing over
XEP-0174 link-local streams found by multicast DNS, and the same checks as the default demo.
Run inside a network namespace of its own (loopback only), so its multicast DNS stays there."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from jitsi_teleop.demo import TRACKING_RMS_BOUND_MM
from jitsi_teleop.netlab.netns import Netns
from lan_net import skip_reason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]


def test_demo_lan_pairs_without_a_server_and_passes_the_default_checks(tmp_path: Path) -> None:
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "jitsi_teleop.cli", "demo", "--lan", "--duration", "10"]
    with Netns("demo") as ns:
        proc = subprocess.run(
            ns.argv([*cmd, "--report", str(report), "--no-status"]),
            capture_output=True,
            text=True,
            timeout=250,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lan:demo-" in proc.stdout and "no server" in proc.stdout
    s = json.loads((report / "summary.json").read_text())
    assert s["ok"] is True
    assert all(s["checks"].values()), s["checks"]
    assert s["path"] == "p2p"
    assert 0.0 <= s["tracking"]["rms_mm"] < TRACKING_RMS_BOUND_MM
    c = s["contact"]
    assert c["peak_wall_n"] > 3.0 and c["peak_follower_n"] > 3.0 and c["peak_leader_n"] > 0.0
    lat = s["latency"]
    assert lat["p50_ms"] is not None and math.isfinite(lat["p50_ms"])
    assert lat["leader_to_follower"]["p2p_fraction"] > 0.9
