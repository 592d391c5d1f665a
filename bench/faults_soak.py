"""Fault campaign, part 5: the soak. The demo's two sites (each its own process with its Dexter
simulator, robot client, teleop role and session), a private Prosody, paired over the fast path
and teleoperating at 500 Hz both ways for an hour, the demo's 20 s script over and over.

Every ``--sample`` seconds it reads, per process, RSS and CPU time from /proc, and from the
sites' status lines their running counters (frames sent and received, drops by reason, sequence
gaps, failovers, path changes, late ticks, the follower's safety holds) and the tracking error
(follower tip to the newest leader state it received, outside the script's contact phase).
At the end: memory growth per process after a warm-up (first-to-last and a least-squares slope
in MB/hour), mean/max CPU, drops by reason, failovers, and whether teleoperation tracked all
along. The JSON keeps one sample a minute. ``make soak`` runs the hour; CI runs two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults_common import DEFAULT_JSON, print_table, stamp, write_section
from jitsi_teleop.demo import messages
from jitsi_teleop.demo.report import TRACKING_RMS_BOUND_MM
from jitsi_teleop.demo.scenario import MIN_DURATION_S
from jitsi_teleop.demo.site import SiteConfig
from jitsi_teleop.ipc import ChildProcess, SiteFailed
from jitsi_teleop.local_prosody import ProsodyServer, prosody_available
from jitsi_teleop.pairing import Secret

RATE_HZ = 500.0  #: control and send rate of both sites
CYCLE_S = 20.0  #: the demo's script, repeated
KEEP_ROWS = 2000  #: newest time-series rows a site keeps (the soak needs only its counters)
READY_TIMEOUT_S = 180.0  #: homing, joining, pairing, the data channel; on loaded cores
#: drop reasons a healthy fast path may show: a frame overtaken by a newer one of the same
#: stream (both paths carry frames around pairing), or older than its max age (0.5 s) after a
#: scheduling stall on loaded cores. Anything else (unauthenticated, replayed, malformed, ...)
#: is a fault.
EXPECTED_DROPS = frozenset({"superseded", "stale"})
#: phases where the follower is blocked by the table while the leader is not (by design)
CONTACT_PHASES = frozenset({"contact", "retreat"})
SITES = ("leader", "follower")
_CLK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, float] | None:
    """(RSS in MB, CPU seconds) of a live process from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if stat[0] == "Z":
        return None
    rss_kb = next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
    return rss_kb / 1024.0, (int(stat[11]) + int(stat[12])) / _CLK


def slope_per_hour(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``ts`` (seconds), per hour."""
    n = len(ts)
    if n < 2:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    den = sum((t - mt) ** 2 for t in ts)
    if den <= 0:
        return None
    return 3600.0 * sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den


@dataclass
class Window:
    """What the sites said between two samples."""

    tracking: list[float] = field(default_factory=list)  #: follower, outside contact, mm
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SITES, 0))
    off_fast_path: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SITES, 0))
    holding: int = 0  #: follower statuses in the safety filter's hold state


@dataclass
class Sample:
    t: float  #: seconds since go
    procs: dict[str, dict[str, float | None]]  #: name → rss_mb, cpu_pct (over the interval)
    counters: dict[str, dict[str, Any]]  #: site → running totals
    rates: dict[str, dict[str, float]]  #: site → sent_hz, received_hz (over the interval)
    tracking_rms_mm: float | None
    tracking_max_mm: float | None
    statuses: dict[str, int]
    off_fast_path: dict[str, int]
    holding: int


class Soak:
    def __init__(self, minutes: float, sample_s: float, warmup_s: float) -> None:
        self.duration_s = minutes * 60.0
        self.sample_s = sample_s
        self.warmup_s = warmup_s
        self.srv: ProsodyServer | None = None
        self.children: dict[str, ChildProcess] = {}
        self.pids: dict[str, int] = {}
        self.latest: dict[str, dict[str, Any]] = {s: {} for s in SITES}
        #: each site's counters in its first status after go (path changes before it: pairing)
        self.first: dict[str, dict[str, Any]] = {}
        self.window = Window()
        self.samples: list[Sample] = []
        self.died: dict[str, str] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self.ready_paths: dict[str, str] = {}
        self.t0 = 0.0
        self._prev_cpu: dict[str, tuple[float, float]] = {}
        self._prev_counts: dict[str, tuple[float, int, int]] = {}

    async def run(self) -> None:
        self.srv = ProsodyServer()
        await asyncio.to_thread(self.srv.start)
        assert self.srv.proc is not None
        self.pids["prosody"] = self.srv.proc.pid
        out = tempfile.mkdtemp(prefix="soak-")
        try:
            await self._spawn(out)
            await self._drive()
        finally:
            for c in self.children.values():
                await c.close()
            self.srv.cleanup()

    async def _spawn(self, out: str) -> None:
        assert self.srv is not None
        secret = Secret(secrets.token_bytes(32))
        room = {
            "room": f"soak-{secrets.token_hex(3)}",
            "domain": self.srv.domain,
            "websocket_url": self.srv.websocket_url,
        }
        hashes = messages.type_hashes()
        for side, role in (("a", "leader"), ("b", "follower")):
            cfg = SiteConfig(
                role=role,
                room={
                    **room,
                    "teleop_role": role,
                    "key_id": secret.key_id,
                    "robot": f"dexter-sim-{role}",
                    "display_name": f"jitsi-teleop soak ({role})",
                },
                secret_hex=secret.key.hex(),
                hashes=hashes,
                duration_s=self.duration_s,
                out_dir=out,
                control_hz=RATE_HZ,
                send_every=1,
                relay_side=side,
                cycle_s=CYCLE_S,
                keep_rows=KEEP_ROWS,
            )
            child = await ChildProcess.spawn(role, "-m", "jitsi_teleop.demo.site")
            child.tell(config=asdict(cfg))
            self.children[role] = child
            self.pids[role] = child.proc.pid

    async def _drive(self) -> None:
        lead, fol = self.children["leader"], self.children["follower"]
        ready = await asyncio.gather(
            lead.expect("ready", READY_TIMEOUT_S), fol.expect("ready", READY_TIMEOUT_S)
        )
        self.ready_paths = {s: r["path"] for s, r in zip(SITES, ready)}
        print(f"soak: paired, paths {self.ready_paths}; {self.duration_s / 60:g} min", flush=True)
        self.t0 = time.monotonic() + 0.3
        for c in self.children.values():
            c.tell(go=self.t0)
        self._sample()  # the baseline of the CPU and rate intervals
        pumps = [asyncio.ensure_future(self._pump(s)) for s in SITES]
        sampler = asyncio.ensure_future(self._sampler())
        deadline = self.duration_s + 120.0
        try:
            await asyncio.wait(pumps, timeout=deadline, return_when="ALL_COMPLETED")
        finally:
            sampler.cancel()
            for p in pumps:
                p.cancel()
        for s in SITES:
            if s not in self.done and s not in self.died:
                self.died[s] = f"no 'done' within {deadline:g} s"
        if self.srv is not None and self.srv.proc is not None and self.srv.proc.poll() is not None:
            self.died["prosody"] = f"exited with {self.srv.proc.returncode}"

    async def _pump(self, site: str) -> None:
        child = self.children[site]
        try:
            while True:
                msg = await child.get()
                if "done" in msg:
                    self.done[site] = msg["done"]
                    return
                st = msg.get("status")
                if st is None:
                    continue
                self.latest[site] = st
                self.first.setdefault(site, st.get("counters", {}))
                w = self.window
                w.statuses[site] += 1
                w.off_fast_path[site] += st.get("path") != "p2p"
                if site == "follower":
                    w.holding += st.get("state") == 2
                    tr = st.get("tracking_mm")
                    if tr is not None and st.get("phase") not in CONTACT_PHASES:
                        w.tracking.append(float(tr))
        except SiteFailed as exc:
            self.died[site] = str(exc)

    async def _sampler(self) -> None:
        k = 1
        while True:
            await asyncio.sleep(max(0.0, self.t0 + k * self.sample_s - time.monotonic()))
            k += 1
            self._sample()
            s = self.samples[-1]
            rss = "  ".join(f"{n} {p['rss_mb']:.1f} MB" for n, p in s.procs.items() if p["rss_mb"])
            rates = "  ".join(f"{n} rx {r['received_hz']:.0f}/s" for n, r in s.rates.items())
            tr = "-" if s.tracking_rms_mm is None else f"{s.tracking_rms_mm:.1f} mm"
            print(f"soak: t {s.t:6.0f} s  {rss}  {rates}  tracking {tr}", flush=True)
            proc = self.srv.proc if self.srv is not None else None
            if proc is not None and proc.poll() is not None:
                self.died["prosody"] = f"exited with {proc.returncode}"

    def _sample(self) -> None:
        now = time.monotonic()
        procs: dict[str, dict[str, float | None]] = {}
        for name, pid in self.pids.items():
            got = proc_sample(pid)
            if got is None:
                procs[name] = {"rss_mb": None, "cpu_pct": None}
                continue
            rss, cpu = got
            prev = self._prev_cpu.get(name)
            pct = 100.0 * (cpu - prev[1]) / (now - prev[0]) if prev and now > prev[0] else None
            self._prev_cpu[name] = (now, cpu)
            procs[name] = {
                "rss_mb": round(rss, 2),
                "cpu_pct": None if pct is None else round(pct, 1),
            }
        counters = {s: dict(self.latest[s].get("counters", {})) for s in SITES}
        rates = {}
        for s in SITES:
            c = counters[s]
            sent, got = c.get("sent_out", 0), c.get("received", 0)
            prev_c = self._prev_counts.get(s)
            if prev_c and now > prev_c[0]:
                dt = now - prev_c[0]
                rates[s] = {
                    "sent_hz": round((sent - prev_c[1]) / dt, 1),
                    "received_hz": round((got - prev_c[2]) / dt, 1),
                }
            self._prev_counts[s] = (now, sent, got)
        w, self.window = self.window, Window()
        tr = w.tracking
        if self._prev_counts and len(self._prev_cpu) and self.t0 and now >= self.t0:
            self.samples.append(
                Sample(
                    t=round(now - self.t0, 1),
                    procs=procs,
                    counters=counters,
                    rates=rates,
                    tracking_rms_mm=math.sqrt(sum(v * v for v in tr) / len(tr)) if tr else None,
                    tracking_max_mm=max(tr) if tr else None,
                    statuses=w.statuses,
                    off_fast_path=w.off_fast_path,
                    holding=w.holding,
                )
            )

    # ------------------------------------------------------------------ the figures

    def summary(self) -> dict[str, Any]:
        warm = [s for s in self.samples if s.t >= self.warmup_s] or self.samples[-2:]
        procs: dict[str, Any] = {}
        for name in self.pids:
            pts = [(s.t, s.procs[name]["rss_mb"]) for s in warm if s.procs[name]["rss_mb"]]
            cpus = [
                s.procs[name]["cpu_pct"]
                for s in self.samples
                if s.procs.get(name, {}).get("cpu_pct") is not None
            ]
            rss_all = [s.procs[name]["rss_mb"] for s in self.samples if s.procs[name]["rss_mb"]]
            procs[name] = {
                "rss_first_mb": pts[0][1] if pts else None,
                "rss_last_mb": pts[-1][1] if pts else None,
                "rss_max_mb": max(rss_all) if rss_all else None,
                "growth_mb": round(pts[-1][1] - pts[0][1], 2) if pts else None,
                "slope_mb_per_h": _round(slope_per_hour([p[0] for p in pts], [p[1] for p in pts])),
                "cpu_mean_pct": _round(sum(cpus) / len(cpus) if cpus else None),
                "cpu_max_pct": _round(max(cpus) if cpus else None),
            }
        sites: dict[str, Any] = {}
        for s in SITES:
            d = self.done.get(s, {})
            c = self.latest[s].get("counters", {})
            drops = c.get("drops", {})
            c0 = self.first.get(s, {})
            sites[s] = {
                "ticks": c.get("ticks"),
                "tick_hz": _round(d.get("tick_hz")),
                "late_ticks": c.get("late_ticks"),
                "sent": c.get("sent_out"),
                "received": c.get("received"),
                "streams": 2,  #: each way: a state stream and an energy stream, every tick
                "sent_hz": _round(c["sent_out"] / self.duration_s) if "sent_out" in c else None,
                "received_hz": _round(c["received"] / self.duration_s) if "received" in c else None,
                "lost": c.get("lost"),
                "drops": drops,
                "unexpected_drops": {k: v for k, v in drops.items() if k not in EXPECTED_DROPS},
                "failovers": d.get("failovers", c.get("failovers")),
                "path_changes": c.get("path_changes"),  #: since the session started
                "path_changes_while_teleoperating": (
                    c["path_changes"] - c0.get("path_changes", 0) if "path_changes" in c else None
                ),
                "path_at_end": d.get("path"),
                #: when (s since go) and why the path changed while teleoperating
                "path_events": [
                    {"t": round(e["at"] - self.t0, 1), "to": e["new"], "reason": e["reason"]}
                    for e in d.get("path_events", [])
                    if e["at"] >= self.t0
                ],
                "statuses_off_fast_path": sum(x.off_fast_path[s] for x in self.samples),
                "holds": c.get("holds"),
                "sim_dropped_steps": c.get("sim_dropped_steps"),
            }
        trs = [x for x in self.samples if x.tracking_rms_mm is not None]
        no_flow = [
            x.t for x in self.samples[1:] if any(r["received_hz"] <= 0 for r in x.rates.values())
        ]
        tracking = {
            "bound_rms_mm": TRACKING_RMS_BOUND_MM,
            "windows": len(trs),
            "worst_window_rms_mm": _round(max((x.tracking_rms_mm for x in trs), default=None)),
            "max_mm": _round(max((x.tracking_max_mm for x in trs), default=None)),
            "windows_over_bound": sum(x.tracking_rms_mm > TRACKING_RMS_BOUND_MM for x in trs),
            "holding_statuses": sum(x.holding for x in self.samples),
            "windows_without_traffic": no_flow,
        }
        tracked = (
            bool(trs)
            and tracking["windows_over_bound"] == 0
            and not no_flow
            and all(sites[s]["holds"] in (0, None) for s in SITES)
        )
        checks = {
            "paired_on_fast_path": self.ready_paths == dict.fromkeys(SITES, "p2p")
            and all(sites[s]["statuses_off_fast_path"] == 0 for s in SITES)
            and all(sites[s]["path_at_end"] == "p2p" for s in SITES),
            "no_failovers": all(
                not sites[s]["failovers"] and not sites[s]["path_changes_while_teleoperating"]
                for s in SITES
            ),
            "only_expected_drops": all(not sites[s]["unexpected_drops"] for s in SITES),
            "no_process_died": not self.died,
            "tracked_all_along": tracked,
        }
        return {
            **stamp(),
            "minutes": self.duration_s / 60.0,
            "rate_hz": RATE_HZ,
            "sample_s": self.sample_s,
            "warmup_s": self.warmup_s,
            "note": "each site process holds its Dexter simulator (the demo's design), so the "
            "simulators' memory and CPU are in the sites' rows; cpu_pct is percent of one core",
            "expected_drop_reasons": sorted(EXPECTED_DROPS),
            "processes": procs,
            "sites": sites,
            "tracking": tracking,
            "died": self.died,
            "checks": checks,
            "ok": all(checks.values()),
            "series": self._series(),
        }

    def _series(self) -> list[dict[str, Any]]:
        """About one sample a minute (and the last one), to keep the JSON small."""
        every = max(1, round(60.0 / self.sample_s))
        picked = self.samples[::every]
        if self.samples and picked[-1] is not self.samples[-1]:
            picked.append(self.samples[-1])
        return [
            {
                "t": s.t,
                "rss_mb": {n: p["rss_mb"] for n, p in s.procs.items()},
                "cpu_pct": {n: p["cpu_pct"] for n, p in s.procs.items()},
                "sent_hz": {n: r["sent_hz"] for n, r in s.rates.items()},
                "received_hz": {n: r["received_hz"] for n, r in s.rates.items()},
                "drops": {n: sum(c.get("drops", {}).values()) for n, c in s.counters.items()},
                "lost": {n: c.get("lost") for n, c in s.counters.items()},
                "tracking_rms_mm": _round(s.tracking_rms_mm),
            }
            for s in picked
        ]


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def print_summary(sec: dict[str, Any]) -> None:
    print(f"\nsoak: {sec['minutes']:g} min at {sec['rate_hz']:g} Hz both ways")
    rows = [
        [
            n,
            p["rss_first_mb"],
            p["rss_last_mb"],
            p["growth_mb"],
            p["slope_mb_per_h"],
            p["cpu_mean_pct"],
            p["cpu_max_pct"],
        ]
        for n, p in sec["processes"].items()
    ]
    print_table(
        ["process", "rss first MB", "rss last MB", "growth MB", "MB/h", "cpu mean %", "cpu max %"],
        rows,
    )
    print()
    rows = [
        [
            s,
            v["tick_hz"],
            v["sent"],
            v["received"],
            v["sent_hz"],
            v["received_hz"],
            v["lost"],
            ", ".join(f"{k} {n}" for k, n in sorted(v["drops"].items())) or "-",
            v["failovers"],
            v["path_changes_while_teleoperating"],
            v["late_ticks"],
            v["holds"] if v["holds"] is not None else "-",
        ]
        for s, v in sec["sites"].items()
    ]
    heads = ["site", "tick Hz", "sent", "received", "sent/s", "rx/s", "lost", "drops"]
    print_table([*heads, "failovers", "path changes", "late ticks", "holds"], rows)
    print("(frames over both streams each way: a state and an energy stream, one each a tick)")
    tr = sec["tracking"]
    print(
        f"\ntracking (follower tip to newest leader state, outside contact): worst 10 s RMS "
        f"{tr['worst_window_rms_mm']} mm (bound {tr['bound_rms_mm']:g}), max {tr['max_mm']} mm, "
        f"{tr['windows_over_bound']} windows over the bound"
    )
    if sec["died"]:
        print(f"died: {sec['died']}")
    for k, v in sec["checks"].items():
        print(f"  {'ok  ' if v else 'FAIL'} {k}")


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    warmup = args.warmup if args.warmup is not None else min(120.0, args.minutes * 60.0 / 4)
    soak = Soak(args.minutes, args.sample, warmup)
    try:
        await soak.run()
    except SiteFailed as exc:
        soak.died.setdefault("setup", str(exc))
    return soak.summary()


def check_args(args: argparse.Namespace) -> str | None:
    """Why these options cannot make a soak (None when they can)."""
    if not args.minutes * 60.0 >= MIN_DURATION_S:
        return f"--minutes must be at least {MIN_DURATION_S / 60:g} (the sites' shortest run)"
    if not 0 < args.sample <= args.minutes * 60.0:
        return "--sample must be > 0 s and within the run"
    if args.warmup is not None and not 0 <= args.warmup < args.minutes * 60.0:
        return "--warmup must be >= 0 s and shorter than the run"
    return None


def _run_soak(args: argparse.Namespace) -> int:
    if not prosody_available():
        print("soak: prosody not found (run `make setup`)", file=sys.stderr)
        return 2
    if args.quick:
        args.minutes = min(args.minutes, 2.0)
    why = check_args(args)
    if why:
        print(f"soak: {why}", file=sys.stderr)
        return 2
    sec = asyncio.run(_amain(args))
    print_summary(sec)
    if args.json:
        write_section(Path(args.json), "soak", sec)
    return 0 if sec["ok"] else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    sk = sub.add_parser("soak", help="the demo's two sites at 500 Hz both ways for an hour")
    sk.add_argument("--minutes", type=float, default=60.0)
    sk.add_argument("--quick", action="store_true", help="CI: two minutes")
    sk.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    sk.add_argument("--warmup", type=float, help="s before memory growth counts (default ≤ 120)")
    sk.add_argument("--json", default=str(DEFAULT_JSON), help="'' to write nothing")
    sk.set_defaults(run=_run_soak)
