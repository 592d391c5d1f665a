"""Bench (issue 14): how much of a core a site's ROS nodes take at 100 Hz, before and after.

Runs ``jitsi-teleop demo --ros`` (two sites of four processes each: simulator, driver,
teleop, transport, at the default 100 Hz) once per variant and repeat, and reads each run's
``summary.json``: CPU per process as process CPU time over the script's wall time (utime +
stime from /proc, so other load on the machine lengthens nothing but the wall clock; it is
still not free of it: caches and wake-up latency change under contention, so runs repeat
and the table gives the median and the range), messages the transports took per second, and
the tracking error.

Variants (environment of the site processes):

* ``before``: rclpy's SingleThreadedExecutor and asyncio's own event loop
  (``JITSI_TELEOP_EXECUTOR=single JITSI_TELEOP_UVLOOP=0``): the nodes as they were, less
  the per-stream message reuse and batched hand-off, which have no switch;
* ``events``: the EventsExecutor, asyncio's loop;
* ``after``: the EventsExecutor and uvloop (the default where both are installed).

The goal: driver + teleop + transport of one site at most 25 % of one core.

    python bench/bench_site_cpu.py [--repeat 2] [--duration 20] [--quick]
                                   [--variants before,events,after]
                                   [--json bench/results/site_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "site_cpu.json"
NODES = ("dexter_driver", "teleop", "jitsi_teleop_transport")
GOAL_PCT = 25.0
VARIANTS: dict[str, dict[str, str]] = {
    "before": {"JITSI_TELEOP_EXECUTOR": "single", "JITSI_TELEOP_UVLOOP": "0"},
    "events": {"JITSI_TELEOP_EXECUTOR": "events", "JITSI_TELEOP_UVLOOP": "0"},
    "after": {"JITSI_TELEOP_EXECUTOR": "events", "JITSI_TELEOP_UVLOOP": "1"},
}


def run_demo(variant: str, duration: float, out: Path) -> dict[str, Any]:
    """One ``demo --ros`` run; its summary.json, or ``{"failed": reason}``."""
    exe = Path(sys.executable).parent / "jitsi-teleop"
    cmd = [str(exe), "demo", "--ros", "--no-status", "--duration", str(duration)]
    cmd += ["--report", str(out)]
    env = {**os.environ, **VARIANTS[variant]}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-2:]
        return {"failed": " | ".join(tail) or f"exit {proc.returncode}"}
    s = json.loads(summary_path.read_text())
    s["_wall_s"] = time.monotonic() - t0
    return s


def row(variant: str, s: dict[str, Any], duration: float) -> dict[str, Any]:
    """What one run says about CPU, messages and tracking."""
    if "failed" in s:
        return {"variant": variant, "failed": s["failed"]}
    per = s.get("cpu_by_process", {})
    sites = {}
    for role in ("leader", "follower"):
        nodes = {n: per.get(f"{role}:{n}") for n in NODES}
        known = [v for v in nodes.values() if v is not None]
        sites[role] = {
            "nodes_pct": sum(known) if len(known) == len(NODES) else None,
            "by_node": nodes,
            "simulator_pct": per.get(f"{role}:dexter_sim"),
        }
    acc = s.get("messages", {}).get("accounted", {})
    by_topic = s.get("messages", {}).get("by_topic", {})
    for role, site in sites.items():
        # what this site's transport carried out per second, and the nodes' CPU per message
        taken = sum(r["taken"] for k, r in by_topic.items() if k.startswith(f"{role}: "))
        site["taken_per_s"] = taken / duration
        pct = site["nodes_pct"]
        site["cpu_us_per_msg"] = 1e4 * pct / site["taken_per_s"] if pct and taken else None
    return {
        "variant": variant,
        "env": VARIANTS[variant],
        "sites": sites,
        "taken_per_s": acc.get("taken", 0) / duration if acc else None,
        "accounted": acc,
        "tracking_rms_mm": s.get("tracking", {}).get("rms_mm"),
        "lag_ms": s.get("tracking", {}).get("best_lag_ms"),
        "latency_p50_ms": s.get("latency", {}).get("p50_ms"),
        "robot_reconnects": s.get("ros", {}).get("robot_reconnects"),
        "load_at_end": os.getloadavg(),
    }


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(rows: list[dict[str, Any]], variants: list[str]) -> tuple[str, dict[str, Any]]:
    lines = [
        f"{'variant':<8} {'runs':>4} {'site %':>7} {'range':>13} {'driver':>7} {'teleop':>7} "
        f"{'transp':>7} {'msg/s':>6} {'us/msg':>7} {'RMS mm':>7}"
    ]
    medians: dict[str, Any] = {}
    for v in variants:
        ok = [r for r in rows if r["variant"] == v and "failed" not in r]
        site = [
            x["nodes_pct"] for r in ok for x in r["sites"].values() if x["nodes_pct"] is not None
        ]
        node = {
            n: _med([x["by_node"][n] for r in ok for x in r["sites"].values() if x["by_node"][n]])
            for n in NODES
        }
        rate = _med([r["taken_per_s"] for r in ok if r["taken_per_s"] is not None])
        per_msg = _med(
            [x["cpu_us_per_msg"] for r in ok for x in r["sites"].values() if x["cpu_us_per_msg"]]
        )
        rms = _med([r["tracking_rms_mm"] for r in ok if r["tracking_rms_mm"] is not None])
        m = _med(site)
        medians[v] = {
            "site_pct_median": m,
            "site_pct_min": min(site) if site else None,
            "site_pct_max": max(site) if site else None,
            "node_pct_median": node,
            "taken_per_s_median": rate,
            "cpu_us_per_msg_median": per_msg,
            "tracking_rms_mm_median": rms,
            "runs": len(ok),
            "failed": len([r for r in rows if r["variant"] == v]) - len(ok),
        }

        def f(x: float | None, w: int = 7) -> str:
            return f"{'-':>{w}}" if x is None else f"{x:>{w}.1f}"

        rng = f"{min(site):.1f}-{max(site):.1f}" if site else "-"
        lines.append(
            f"{v:<8} {len(ok):>4} {f(m)} {rng:>13} {f(node['dexter_driver'])} "
            f"{f(node['teleop'])} {f(node['jitsi_teleop_transport'])} {f(rate, 6)} "
            f"{f(per_msg, 7)} {f(rms)}"
        )
    return "\n".join(lines), medians


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=2, help="runs per variant (default 2)")
    p.add_argument("--duration", type=float, default=20.0, help="demo seconds (default 20)")
    p.add_argument("--quick", action="store_true", help="one 10 s run per variant")
    p.add_argument("--variants", default="before,events,after")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.duration = 1, 10.0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    load0 = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-site-cpu-") as tmp:
        for i in range(args.repeat):  # interleaved, so that load from elsewhere falls on all
            for v in variants:
                s = run_demo(v, args.duration, Path(tmp) / f"{v}-{i}")
                r = row(v, s, args.duration)
                rows.append(r)
                sites = r.get("sites", {})
                pcts = [f"{x['nodes_pct']:.1f}" for x in sites.values() if x["nodes_pct"]]
                print(f"  {v} run {i + 1}: site nodes {', '.join(pcts) or r.get('failed')} %")
    text, medians = table(rows, variants)
    print(f"\nper site, driver + teleop + transport, % of one core (goal <= {GOAL_PCT:g} %);")
    print("msg/s: both transports took; us/msg: a site's node CPU per message its transport took")
    print(text)
    result = {
        "bench": "site_cpu",
        "goal_site_pct": GOAL_PCT,
        "duration_s": args.duration,
        "repeat": args.repeat,
        "summary": medians,
        "runs": rows,
        "note": "percent of one core = process CPU time (utime+stime) over the demo script's "
        "wall time; median and range over both sites and all runs of a variant; the machine "
        "is shared, so figures move between runs",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_at_start": load0,
            "load_at_end": os.getloadavg(),
        },
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
