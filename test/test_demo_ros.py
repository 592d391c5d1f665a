"""``jitsi-teleop demo --ros`` headless: the demo's script through the real ROS 2 nodes (the
processes ``teleop.launch.py`` starts at each site, two ROS domains, a private Prosody) leaves
the same report, and its figures show the follower tracked and the contact force came back.
Plus the one-line refusals of what ``--ros`` does not do."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jitsi_teleop import cli
from jitsi_teleop.demo import FEEDBACK_MIN_RATIO
from jitsi_teleop.demo.ros_run import ROS_TRACKING_RMS_BOUND_MM, SKIPPED_NOTE
from jitsi_teleop.local_prosody import prosody_available

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("joints.png", "latency.png", "force.png", "tracking.png")
DATA = ("leader.csv", "follower.csv", "latency_leader.csv", "latency_follower.csv")
DELAY_MS = 10.0


@pytest.mark.prosody
@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not prosody_available(), reason="prosody not installed (sudo apt-get install prosody)"
)
def test_demo_ros_runs_the_nodes_and_reports_tracking_and_force(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "jitsi_teleop.cli", "demo", "--ros", "--duration", "12"]
    # a light impairment on the transports' fast path (through the demo's relay): the run
    # below shows the nodes took it and still tracked
    cmd += ["--delay", str(DELAY_MS), "--jitter", "2", "--loss", "1"]
    proc = subprocess.run(
        [*cmd, "--report", str(report), "--no-status"],
        capture_output=True,
        text=True,
        timeout=270,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tracking error" in proc.stdout and SKIPPED_NOTE in proc.stdout
    assert f"relay {DELAY_MS:g} ± 2 ms, 1 % loss" in proc.stdout

    for name in PLOTS:
        data = (report / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, f"{name} looks empty ({len(data)} bytes)"
    for name in DATA:
        lines = (report / name).read_text().splitlines()
        assert len(lines) > 100, f"{name}: {len(lines)} lines"

    s = json.loads((report / "summary.json").read_text())
    assert s["ok"] is True and s["mode"] == "ros"
    assert s["path"] == "p2p" and s["checks"]["data_channel"]
    # both drivers kept their simulators (else the figures below are over gaps: a machine
    # whose two cores are busy elsewhere shows here first)
    ros = s["ros"]
    why = f"joint states {ros['joint_states_hz']} Hz, robot reconnects {ros['robot_reconnects']}"
    assert s["checks"]["robot_data"], why
    # the follower tracked the leader (tip distance at the same instant, outside contact)
    tr = s["tracking"]
    assert tr["samples"] > 100, why
    assert 0.0 <= tr["rms_mm"] < ROS_TRACKING_RMS_BOUND_MM == tr["bound_rms_mm"], why
    # ... and went where the leader went (the bound alone would pass a follower that stayed
    # put: the hand's excursion is 10-14 cm), if late
    reach = {r: _excursion_mm(report / f"{r}.csv") for r in ("leader", "follower")}
    assert reach["leader"] > 80.0 and reach["follower"] > 0.7 * reach["leader"], reach
    # the follower met the table, and its force reached the operator's hand
    c = s["contact"]
    assert c["peak_wall_n"] > 3.0 and c["peak_follower_n"] > 3.0
    assert c["peak_leader_n"] > FEEDBACK_MIN_RATIO * c["peak_follower_n"] > 0.0
    # latency per direction from the transports' diagnostics, and end to end per message
    lat = s["latency"]
    for part in (lat, lat["leader_to_follower"], lat["follower_to_leader"]):
        assert part["p50_ms"] is not None and math.isfinite(part["p50_ms"])
        assert 0.0 < part["p50_ms"] <= part["p99_ms"]
    for part in (lat["leader_to_follower"], lat["follower_to_leader"]):
        assert part["end_to_end_messages"] > 100 and part["end_to_end_p50_ms"] > 0.0
    msg = s["messages"]
    assert msg["sent"] > 0 and 0 < msg["received"] <= msg["sent"]
    assert_every_message_accounted(msg)
    # the fast path went through the relay: it forwarded and lost datagrams, and each
    # direction's one-way latency includes its delay
    relay = s["relay"]
    assert relay["forwarded"] > 1000 and relay["lost"] > 0, relay
    for part in (lat["leader_to_follower"], lat["follower_to_leader"]):
        assert part["p50_ms"] >= DELAY_MS - 2.0, part
    # what could not run here is named; every process of the plan that can, ran
    assert set(ros["skipped"]) <= {
        "robot_state_publisher/robot_state_publisher",
        "tf2_ros/static_transform_publisher",
        "rviz2/rviz2",
    }
    # each ended on SIGINT, none needed SIGKILL (a node may exit 1: rclpy's take can raise
    # RuntimeError while the signal shuts its context down; spin_node lets that through)
    assert all(c is not None and c != -signal.SIGKILL for c in ros["exit_codes"].values()), ros
    assert {k.split(":")[1] for k in s["cpu_by_process"]} == {
        "dexter_sim",
        "dexter_driver",
        "jitsi_teleop_transport",
        "teleop",
    }


def _excursion_mm(csv_path: Path) -> float:
    """How far the tool tip got from where it started, mm."""
    tips = np.loadtxt(csv_path, delimiter=",", skiprows=1, usecols=(6, 7, 8), ndmin=2)
    return float(1e3 * np.linalg.norm(tips - tips[0], axis=1).max())


@pytest.mark.parametrize("args, word", [(["--room", "https://x/y"], "room")])
def test_ros_refuses_what_it_cannot_do_in_one_line(
    args: list[str], word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "--ros", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("jitsi-teleop demo:") and word in err and "\n" not in err


def assert_every_message_accounted(msg: dict) -> None:
    """Per topic and direction, what the publishers handed over is explained by the counters:
    taken = received + lost + discarded + superseded + not_sent + errors, nothing unaccounted
    (issue 14: the --ros demo once reported 351 messages that no counter explained)."""
    rows = msg["by_topic"]
    assert {k.split(": ")[0] for k in rows} == {"leader", "follower"}
    for topic, r in rows.items():
        parts = ("received", "lost", "discarded", "superseded", "not_sent", "errors")
        assert r["unaccounted"] == 0, (topic, r)
        assert r["taken"] == sum(r[k] for k in parts), (topic, r)
    assert msg["accounted"]["taken"] >= msg["sent"]  # what was taken covers what went out
