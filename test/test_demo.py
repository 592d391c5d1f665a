"""``jitsi-teleop demo`` headless: the whole chain (Prosody, two simulated Dexters over the real
protocol, two sessions on the data channel, the teleop controllers) runs for a short script and
leaves a report whose figures show the follower tracked and the contact force came back.
Plus the pure pieces (the script, the status line) and the one-line failure on bad options."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dexter_driver import kinematics
from jitsi_teleop import cli
from jitsi_teleop.demo import FEEDBACK_MIN_RATIO, TRACKING_RMS_BOUND_MM
from jitsi_teleop.demo import run as demo_run
from jitsi_teleop.demo.scenario import MIN_DURATION_S, build_scenario
from jitsi_teleop.demo.status import LiveStatus, StatusSnapshot
from jitsi_teleop.local_prosody import prosody_available
from jitsi_teleop.teleop.loop import Q0

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("joints.png", "latency.png", "force.png", "tracking.png")
DATA = ("leader.csv", "follower.csv", "latency_leader.csv", "latency_follower.csv")


@pytest.mark.prosody
@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(
    not prosody_available(), reason="prosody not installed (sudo apt-get install prosody)"
)
def test_demo_runs_headless_and_reports_tracking_and_force(tmp_path: Path) -> None:
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "jitsi_teleop.cli", "demo", "--duration", "10"]
    proc = subprocess.run(
        [*cmd, "--report", str(report), "--no-status"],
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tracking error" in proc.stdout and "latency" in proc.stdout

    for name in PLOTS:
        data = (report / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, f"{name} looks empty ({len(data)} bytes)"
    for name in DATA:
        lines = (report / name).read_text().splitlines()
        assert len(lines) > 100, f"{name}: {len(lines)} lines"

    s = json.loads((report / "summary.json").read_text())
    assert s["ok"] is True
    assert all(s["checks"].values()), s["checks"]
    assert s["path"] == "p2p"
    # the follower tracked the leader (tip distance at the same instant, outside contact)
    tr = s["tracking"]
    assert tr["samples"] > 100
    assert 0.0 <= tr["rms_mm"] < TRACKING_RMS_BOUND_MM
    assert math.isfinite(tr["max_mm"])
    # the follower met the table, and its force reached the operator's hand
    c = s["contact"]
    assert c["peak_wall_n"] > 3.0 and c["peak_follower_n"] > 3.0
    assert c["peak_leader_n"] > 0.0
    assert c["peak_leader_n"] > FEEDBACK_MIN_RATIO * c["peak_follower_n"]
    # latency figures, per direction and overall, finite and over the data channel
    lat = s["latency"]
    for part in (lat, lat["leader_to_follower"], lat["follower_to_leader"]):
        assert part["p50_ms"] is not None and math.isfinite(part["p50_ms"])
        assert part["p99_ms"] is not None and math.isfinite(part["p99_ms"])
        assert 0.0 < part["p50_ms"] <= part["p99_ms"]
    assert lat["leader_to_follower"]["p2p_fraction"] > 0.9
    msg = s["messages"]
    assert msg["sent"] > 0 and 0 < msg["received"] <= msg["sent"]
    assert_every_message_accounted(msg)
    assert s["machine"]["cpu_count"] >= 1 and s["options"]["duration_s"] == 10.0
    assert set(s["cpu"]) >= {"leader", "follower", "parent"}
    # join -> paired -> fast path per site, and what the room tried (nothing here)
    for role in ("leader", "follower"):
        p = s["pairing"][role]
        assert 0 < p["join_to_paired_s"] <= p["join_to_fast_path_s"]
        assert p["unproven_claimants"] == 0
    assert "pairing: leader paired" in proc.stdout


def test_scenario_starts_at_rest_and_touches_the_table_only_in_the_contact_phase() -> None:
    sc = build_scenario(10.0)
    tip0 = kinematics.tool_position(Q0)
    assert np.allclose(sc.hand(0.0), tip0) and np.allclose(sc.hand(sc.duration_s), tip0)
    names = [p.name for p in sc.phases]
    assert names == ["settle", "reach", "contact", "retreat", "rest"]
    assert sc.phases[0].start == 0.0 and sc.phases[-1].end == pytest.approx(sc.duration_s)
    for a, b in zip(sc.phases, sc.phases[1:]):
        assert a.end == pytest.approx(b.start)
    table = sc.wall.offset
    t = np.linspace(0.0, sc.duration_s, 2001)
    z = np.array([sc.hand(x)[2] for x in t])
    outside = sc.outside_contact(t)
    assert np.all(z[outside] > table)  # free motion stays above the table
    assert z.min() < table - 0.02  # the hand presses into it during the contact phase
    assert sc.phase_at(sc.contact_window[0] + 0.01) == "contact"
    # twice the duration: the same path, twice as slow
    assert np.allclose(build_scenario(20.0).hand(7.0), sc.hand(3.5))
    with pytest.raises(ValueError):
        build_scenario(MIN_DURATION_S - 1)


def test_status_prints_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    view = LiveStatus(10.0, out)
    snap = StatusSnapshot(
        leader={"t": 2.0, "phase": "reach", "path": "p2p", "tip": [0, 0.5, 0.5], "force": 1.0},
        follower={
            "path": "p2p",
            "rx_hz": 200.0,
            "latency_ms": 1.2,
            "tip": [0, 0.5, 0.503],
            "refused": 17,
            "unproven": 2,
        },
    )
    view.update(snap, force=True)
    text = out.getvalue()
    assert "\x1b[" not in text and text.count("\n") == 1
    assert "p2p" in text and "3.0 mm" in text and "1.2 ms" in text
    # an operator sees that the room is under attack
    assert "refused from the room: leader 0 / follower 17 (impostors: 0 / 2)" in text


def test_bad_options_fail_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--delay", "5", "--jitter", "10"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("jitsi-teleop demo:") and "jitter" in err and "\n" not in err


def test_missing_prosody_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(demo_run, "prosody_available", lambda: False)
    assert cli.main(["demo", "--report", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert "prosody" in err and "apt-get install prosody" in err and "\n" not in err


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
