"""``jitsi-teleop demo --network``: the demo's two sites behind simulated NATs (network
namespaces, iptables NAT, Prosody and coturn on the simulated public side), with the path the
sessions took in the live status and the report. Root only, as CI runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jitsi_teleop.demo import run as demo_run
from jitsi_teleop.demo.run import DemoError, DemoOptions
from jitsi_teleop.netlab.lab import unavailable

REASON = unavailable()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_demo_across_symmetric_nats_goes_through_turn_and_says_so(tmp_path: Path) -> None:
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "jitsi_teleop.cli", "demo", "--duration", "8"]
    proc = subprocess.run(
        [*cmd, "--network", "symmetric", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Two symmetric NATs have no direct path: the sessions run through the room's coturn,
    # and both the live status and the summary say so.
    assert "behind symmetric / symmetric NATs" in proc.stdout
    assert "(relay via TURN 198.18.0.2)" in proc.stdout  # the live status line
    assert "route: relay via TURN 198.18.0.2" in proc.stdout  # the summary
    s = json.loads((report / "summary.json").read_text())
    assert s["network"]["nat_a"] == "symmetric" and s["network"]["nat_b"] == "symmetric"
    assert set(s["route"].values()) == {"relay via TURN 198.18.0.2"}, s["route"]
    assert s["ok"] is True, s["checks"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("carrier-grade", "unknown NAT kind 'carrier-grade'"),
        ("cone/cone/cone", "use KIND, KIND/KIND or blocked"),
    ],
)
def test_bad_network_option_is_a_one_line_error(spec: str, message: str) -> None:
    with pytest.raises(DemoError, match=message):
        DemoOptions(network=spec).check()


def test_network_option_parses_kinds_and_blocked() -> None:
    assert demo_run.network_cases("symmetric") == ("symmetric", "symmetric", False)
    assert demo_run.network_cases("cone/symmetric") == ("port-restricted", "symmetric", False)
    assert demo_run.network_cases("full-cone/cone")[0] == "full-cone"
    assert demo_run.network_cases("blocked") == ("port-restricted", "port-restricted", True)


def test_network_is_not_combined_with_ros() -> None:
    with pytest.raises(DemoError, match="default demo only"):
        DemoOptions(network="cone", ros=True).check()
