"""CI's short fuzz campaign: every parser target of bench/fuzz_targets.py for a few seconds.

Runs ``bench/faults.py fuzz --quick`` (atheris when installed, else the random engine), each
target in its own subprocess as the campaign does, and fails on any finding: an undocumented
exception, a hang past the per-input limit, or memory past the limit. The crashing input is
kept under the test's temporary directory and named in the failure message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import fuzz_targets  # noqa: E402

SECONDS = 2


def test_every_target_has_seeds_its_parser_accepts_or_refuses() -> None:
    """The seeds run clean: a target that fails on its own seeds would hide real findings."""
    for t in fuzz_targets.TARGETS.values():
        for seed in t.seeds():
            t.fn(seed)


@pytest.mark.slow
@pytest.mark.timeout(60 * len(fuzz_targets.TARGETS))
def test_short_fuzz_campaign_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "faults.py"),
            "fuzz",
            "--seconds",
            str(SECONDS),
            "--timeout",
            "20",
            "--corpus",
            str(tmp_path / "corpus"),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    doc = json.loads(out.read_text())["fuzz"]
    ran = {t["name"]: t for t in doc["targets"]}
    assert set(ran) == set(fuzz_targets.TARGETS), proc.stdout
    findings = [
        f"{t['name']}: {f['kind']} {f['error']} ({f['artifact']})"
        for t in doc["targets"]
        for f in t["findings"]
    ]
    assert not findings, "\n".join(findings) + "\n" + proc.stdout[-3000:]
    assert all(t["inputs"] > 0 for t in doc["targets"]), proc.stdout
    if doc["engine"] == "atheris":  # coverage-guided only if the parsers were instrumented
        blind = [t["name"] for t in doc["targets"] if not t.get("coverage")]
        assert not blind, f"no coverage reported (not instrumented?): {blind}\n{proc.stdout}"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _fuzz(tmp_path: Path, out: Path, *targets: str) -> dict:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "faults.py"),
            "fuzz",
            "--seconds",
            "1",
            "--inputs",
            "2000",
            "--engine",
            "random",
            "--corpus",
            str(tmp_path / "corpus"),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--json",
            str(out),
            "--targets",
            *targets,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(out.read_text())["fuzz"]


@pytest.mark.slow
def test_a_run_of_some_targets_replaces_only_their_figures(tmp_path: Path) -> None:
    """A target fixed and rerun after the campaign (--targets) joins the campaign's JSON."""
    out = tmp_path / "faults.json"
    first = _fuzz(tmp_path, out, "dexter_status", "config")
    second = _fuzz(tmp_path, out, "config")
    assert [t["name"] for t in second["targets"]] == ["dexter_status", "config"]
    assert second["targets"][0] == first["targets"][0]
    assert second["total_inputs"] == sum(t["inputs"] for t in second["targets"])
    assert all(t["inputs"] > 0 and t["date"] for t in second["targets"])


def test_session_target_reaches_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session target's seeds get past opening, reassembly and the descriptor check to
    delivery (a latest sample, a reliable stream put back in order, a reassembled frame): a
    target that never delivers would fuzz only the refusals."""
    from jitsi_teleop.session import Session

    seen: list[tuple[int, int, bytes]] = []
    deliver = Session._deliver

    def spy(self, d, frame, path, latency):
        seen.append((d.stream_id, frame.seq, frame.payload))
        return deliver(self, d, frame, path, latency)

    monkeypatch.setattr(Session, "_deliver", spy)
    target = fuzz_targets.TARGETS["session_receive"]
    for seed in target.seeds():
        target.fn(seed)
    assert (1, 0, b"state") in seen
    assert [p for s, _, p in seen if s == 2][:2] == [b"first", b"second"]
    assert any(len(p) == 2048 for _, _, p in seen)  # the fragmented frame, whole
