"""Contact stability and free-motion tracking of the simulated two-Dexter loop vs round trip.

For each round trip it runs the contact scenario (reach down onto a stiff table, press, hold,
retreat) and the free-motion scenario, each with and without the passivity controller, in the
pure deterministic loop (jitsi_teleop.teleop.loop) and reports:

- peak contact force (N) and mean force in the steady contact window,
- force oscillation: std of the contact force about its trend over the window, and over its
  last 0.5 s ("settled": a decaying transient is gone there, a limit cycle is not),
- times the follower bounced off the table in the window,
- energy the passivity controller dissipated (J),
- free-motion tip tracking error, RMS and max (mm), delay included.

    python bench/bench_teleop_stability.py [--rtt 0,50,100,200,300] [--coarse] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from jitsi_teleop.teleop.loop import contact_scenario, free_motion_scenario, run_loop

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "teleop_stability.json"


@dataclass
class Row:
    rtt_ms: float
    jitter_ms: float
    loss: float
    pc: bool
    peak_force_n: float
    mean_force_n: float
    oscillation_n: float
    settled_oscillation_n: float
    contact_losses: int
    pc_dissipated_j: float
    tracking_rms_mm: float
    tracking_max_mm: float
    stable: bool


def run_case(rtt_ms: float, pc: bool, jitter_ms: float, loss: float, steps: dict) -> Row:
    rtt, jitter = rtt_ms / 1000.0, jitter_ms / 1000.0
    contact = run_loop(contact_scenario(rtt, pc, jitter_s=jitter, loss=loss, **steps))
    free = run_loop(free_motion_scenario(rtt, pc, jitter_s=jitter, loss=loss, **steps))
    err = free.tracking_error()
    settled = contact.settled_oscillation()
    return Row(
        rtt_ms=rtt_ms,
        jitter_ms=jitter_ms,
        loss=loss,
        pc=pc,
        peak_force_n=round(contact.peak_force(), 2),
        mean_force_n=round(contact.mean_contact_force(), 2),
        oscillation_n=round(contact.force_oscillation(), 3),
        settled_oscillation_n=round(settled, 3),
        contact_losses=contact.contact_losses(),
        pc_dissipated_j=round(contact.pc_dissipated, 4),
        tracking_rms_mm=round(1000.0 * float(np.sqrt(np.mean(err**2))), 2),
        tracking_max_mm=round(1000.0 * float(err.max()), 2),
        stable=bool(settled < 0.5 and contact.contact_losses() == 0),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt", default="0,50,100,200,300", help="round trips, ms (comma list)")
    ap.add_argument("--jitter", type=float, default=0.0, help="extra one-way jitter, ms")
    ap.add_argument("--loss", type=float, default=0.0, help="loss probability per message")
    ap.add_argument(
        "--also",
        default="200:10:0.02",
        help="extra rtt_ms:jitter_ms:loss cases, comma separated ('' for none)",
    )
    ap.add_argument("--coarse", action="store_true", help="2 ms physics / 4 ms control (fast)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    steps = (
        {"physics_dt": 0.002, "control_dt": 0.004, "send_dt": 0.004}
        if args.coarse
        else {"physics_dt": 0.001, "control_dt": 0.002, "send_dt": 0.004}
    )
    rows: list[Row] = []
    t0 = time.perf_counter()
    header = (
        f"{'rtt ms':>6} {'jit':>4} {'loss':>5} {'PC':>3} {'peak N':>7} {'mean N':>7} "
        f"{'osc N':>7} {'settled':>8} {'bounces':>7} {'PC J':>7} {'track rms':>9} "
        f"{'max mm':>7}  verdict"
    )
    print(header)
    cases = [(float(v), args.jitter, args.loss) for v in args.rtt.split(",")]
    for extra in filter(None, args.also.split(",")):
        rtt_s, jitter_s, loss_s = extra.split(":")
        cases.append((float(rtt_s), float(jitter_s), float(loss_s)))
    for rtt_ms, jitter_ms, loss in cases:
        for pc in (False, True):
            r = run_case(rtt_ms, pc, jitter_ms, loss, steps)
            rows.append(r)
            print(
                f"{r.rtt_ms:6.0f} {r.jitter_ms:4.0f} {r.loss:5.2f} {'on' if r.pc else 'off':>3} "
                f"{r.peak_force_n:7.1f} "
                f"{r.mean_force_n:7.1f} {r.oscillation_n:7.2f} {r.settled_oscillation_n:8.3f} "
                f"{r.contact_losses:7d} {r.pc_dissipated_j:7.3f} {r.tracking_rms_mm:9.1f} "
                f"{r.tracking_max_mm:7.1f}  {'stable' if r.stable else 'OSCILLATES'}",
                flush=True,
            )
    elapsed = time.perf_counter() - t0
    result = {
        "bench": "teleop_stability",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "steps": steps,
        "stable_criterion": "settled oscillation < 0.5 N and no bounce in the contact window",
        "seconds": round(elapsed, 1),
        "rows": [asdict(r) for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
