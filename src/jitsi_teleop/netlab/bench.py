"""``jitsi-teleop bench --nat``: the product across real NATs, against raw UDP on the same route.

Two parts, one run, one JSON (``bench/results/nat.json``):

1. **NAT cases**: for each case of the matrix (cone/cone, full-cone/symmetric, port-restricted/
   symmetric, symmetric/symmetric, UDP blocked, TURN down with symmetric NATs), ``runs`` fresh
   pairings of the real sessions: the path chosen, the time from join to paired and to the fast
   path, then a 500 Hz JointState-sized stream: one-way latency over the path in use.
2. **Rows on one internet** (port-restricted cone NATs on both sides, TURN announced): raw UDP
   hole-punched between the sites, the session's direct path, raw UDP through a bare UDP
   forwarder on the server, the session through TURN (direct UDP blocked) - then all four
   again with 40 +- 10 ms one-way delay and 2 % loss on the internet router (a relayed packet
   crosses the router twice, so it gets the delay twice, as on the internet).

Latency is exact (CLOCK_MONOTONIC is shared by all namespaces). Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .internet import SERVER_IP, Impairment
from .lab import Lab, LabConfig, pair_path, unavailable

RATE_HZ = 500
IMPAIRED = Impairment(delay_ms=40, jitter_ms=10, loss=0.02)
CASES: list[tuple[str, LabConfig]] = [
    ("cone / cone", LabConfig("port-restricted", "port-restricted")),
    ("full cone / symmetric", LabConfig("full-cone", "symmetric")),
    ("cone / symmetric", LabConfig("port-restricted", "symmetric")),
    ("symmetric / symmetric", LabConfig("symmetric", "symmetric")),
    ("UDP blocked between sites", LabConfig(block_direct_udp=True)),
    ("symmetric / symmetric, TURN down", LabConfig("symmetric", "symmetric", turn=False)),
]


@dataclass
class CaseResult:
    case: str
    runs: int = 0
    paths: dict[str, int] = field(default_factory=dict)
    pairs: list[Any] = field(default_factory=list)
    join_to_paired_s: list[float] = field(default_factory=list)
    join_to_fast_s: list[float] = field(default_factory=list)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    delivered: float | None = None
    raw_udp_p50_ms: float | None = None
    raw_udp_p99_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    #: 1-minute load average of the machine at the start and end of the case (shared cores)
    load: list[float] = field(default_factory=list)


@dataclass
class Row:
    transport: str  # "udp-direct", "session-direct", "udp-forwarded", "session-turn"
    impairment: str
    path: str = ""
    sent: int = 0
    received: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


async def _run_proc(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _line(proc: asyncio.subprocess.Process, key: str, timeout: float) -> Any:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {key!r} from {proc.pid}")
        line = await asyncio.wait_for(proc.stdout.readline(), left)
        if not line:
            err = (await proc.stderr.read()).decode(errors="replace")[-400:] if proc.stderr else ""
            raise RuntimeError(f"process exited without {key!r}: {err}")
        msg = json.loads(line)
        if key in msg:
            return msg[key]


async def raw_udp(lab: Lab, relayed: bool, duration: float) -> dict[str, Any]:
    """Raw UDP from site A to site B: hole-punched, or through a bare forwarder on the server."""
    mod = [sys.executable, "-m", "jitsi_teleop.netlab.rawudp"]
    procs = []
    try:
        if relayed:
            fwd = await _run_proc(
                lab.net.server.argv([*mod, "forward", "--bind", "9000", "--duration", "60"])
            )
            procs.append(fwd)
            await _line(fwd, "ready", 10)
            peer_a = peer_b = f"{SERVER_IP}:9000"
        else:
            peer_a = f"{lab.net.sites['b'].public_ip}:40000"
            peer_b = f"{lab.net.sites['a'].public_ip}:40000"
        common = ["--rate", str(RATE_HZ), "--duration", str(duration)]
        recv = await _run_proc(lab.net.host("b").argv([*mod, "recv", "--peer", peer_b, *common]))
        procs.append(recv)
        await _line(recv, "ready", 10)
        send = await _run_proc(lab.net.host("a").argv([*mod, "send", "--peer", peer_a, *common]))
        procs.append(send)
        sent = await _line(send, "result", duration + 30)
        got = await _line(recv, "result", duration + 30)
        return {**got, "sent": sent.get("sent", 0), "error": sent.get("error") or got.get("error")}
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()


async def session_stream(lab: Lab, duration: float) -> dict[str, Any]:
    """After the fast path is up: the follower's latency over ``duration`` s at RATE_HZ."""
    leader, follower = lab.sites["leader"], lab.sites["follower"]
    await asyncio.sleep(0.5)
    await follower.reset()
    await asyncio.sleep(duration)
    fs = await follower.stats()
    ls = await leader.stats()
    path = fs["path"]
    lat = fs["latency"].get(path, {})
    n = lat.get("n", 0)
    return {
        "path": pair_path(ls, fs),
        "on": path,
        "received": n,
        "sent": n + fs["lost"],
        "p50_ms": lat.get("p50_ms"),
        "p99_ms": lat.get("p99_ms"),
        "pair": {"leader": ls["pair"], "follower": fs["pair"]},
    }


async def run_case(name: str, cfg: LabConfig, runs: int, duration: float, out: Callable) -> Any:
    res = CaseResult(name)
    res.load.append(round(os.getloadavg()[0], 1))
    lat50, lat99, deliv = [], [], []
    for i in range(runs):
        c = LabConfig(**{**asdict(cfg), "rate_hz": RATE_HZ})
        c.impairment = cfg.impairment
        try:
            async with Lab(c) as lab:
                r = await lab.pair(fast_timeout=12.0 if not cfg.turn else 30.0)
                res.runs += 1
                res.paths[r.path] = res.paths.get(r.path, 0) + 1
                res.join_to_paired_s.append(round(r.paired_s - r.joined_s, 3))
                if r.join_to_fast_s is not None:
                    res.join_to_fast_s.append(round(r.join_to_fast_s, 3))
                if len(res.pairs) < 3:
                    res.pairs.append({"leader": r.leader["pair"], "follower": r.follower["pair"]})
                if not lat50:  # one latency window per case keeps the run short
                    s = await session_stream(lab, duration)
                    if s["p50_ms"] is None:  # nothing arrived in the window: say so, try
                        res.errors.append(f"run {i + 1}: no samples in the window: {s}")
                        continue  # the next run
                    lat50.append(s["p50_ms"])
                    lat99.append(s["p99_ms"])
                    deliv.append(s["received"] / max(1, s["sent"]))
                    if r.path != "none":
                        u = await raw_udp(lab, relayed=r.path == "relay", duration=duration)
                        res.raw_udp_p50_ms, res.raw_udp_p99_ms = u.get("p50_ms"), u.get("p99_ms")
        except Exception as e:  # one broken run must not lose the others
            res.errors.append(f"{type(e).__name__}: {str(e)[-300:]}")
    if lat50 and lat50[0] is not None:
        res.latency_p50_ms, res.latency_p99_ms, res.delivered = lat50[0], lat99[0], deliv[0]
    res.load.append(round(os.getloadavg()[0], 1))
    out(_case_row(res))
    return res


async def run_rows(imp: Impairment | None, duration: float, out: Callable) -> list[Row]:
    rows: list[Row] = []
    label = imp.describe() if imp else "none"
    for blocked in (False, True):
        cfg = LabConfig(block_direct_udp=blocked, impairment=imp, rate_hz=RATE_HZ)
        udp = Row("udp-forwarded" if blocked else "udp-direct", label)
        ses = Row("session-turn" if blocked else "session-direct", label)
        udp.notes["load"] = ses.notes["load"] = round(os.getloadavg()[0], 1)
        try:
            async with Lab(cfg) as lab:
                try:
                    u = await raw_udp(lab, relayed=blocked, duration=duration)
                    udp.path = "server forwarder" if blocked else "hole-punched"
                    udp.sent, udp.received = u.get("sent", 0), u.get("received", 0)
                    udp.latency_p50_ms, udp.latency_p99_ms = u.get("p50_ms"), u.get("p99_ms")
                    udp.error = u.get("error")
                except Exception as e:
                    udp.error = f"{type(e).__name__}: {e}"
                r = await lab.pair(fast_timeout=45.0)
                ses.notes["join_to_fast_s"] = r.join_to_fast_s
                if r.fast_s is None:
                    ses.error = "no fast path"
                else:
                    s = await session_stream(lab, duration)
                    ses.path = s["path"]
                    ses.sent, ses.received = s["sent"], s["received"]
                    ses.latency_p50_ms, ses.latency_p99_ms = s["p50_ms"], s["p99_ms"]
                    ses.notes["pair"] = s["pair"]
        except Exception as e:
            ses.error = ses.error or f"{type(e).__name__}: {str(e)[-300:]}"
        for row in (udp, ses):
            rows.append(row)
            out(_row(row))
    return rows


def _f(v: float | None, w: int = 7, d: int = 2) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.{d}f}"


def _case_row(c: CaseResult) -> str:
    fast = sorted(c.join_to_fast_s)
    med = fast[len(fast) // 2] if fast else None
    paths = ",".join(f"{k}x{v}" for k, v in sorted(c.paths.items()))
    err = f"  errors: {len(c.errors)}" if c.errors else ""
    return (
        f"{c.case:<34} {paths:<18} {_f(med)} {_f(max(fast) if fast else None)} "
        f"{_f(c.latency_p50_ms)} {_f(c.latency_p99_ms)} {_f(c.raw_udp_p50_ms)}{err}"
    )


def _row(r: Row) -> str:
    head = f"{r.transport:<15} {r.impairment:<26} {r.path:<16}"
    if r.error:
        return f"{head} failed: {r.error}"
    return f"{head} {r.sent:>6} {r.received:>6} {_f(r.latency_p50_ms)} {_f(r.latency_p99_ms)}"


async def run(
    runs: int,
    duration: float,
    out: Callable[[str], None] = print,
    save: Callable[[dict[str, Any]], None] = lambda doc: None,
) -> dict[str, Any]:
    """Both parts; ``save`` gets the document after every case and row (a run that is
    interrupted keeps what it measured)."""
    doc: dict[str, Any] = {
        "rate_hz": RATE_HZ,
        "payload_bytes": 276,
        "duration_s": duration,
        "runs_per_case": runs,
        "impairment": asdict(IMPAIRED),
        "cpus": os.cpu_count(),
        "complete": False,
        "cases": [],
        "rows": [],
    }
    out(
        f"NAT cases ({runs} pairing(s) each; latency at {RATE_HZ} Hz, ms; times from join, s)\n"
        f"{'case':<34} {'path x runs':<18} {'fast p50':>7} {'fast max':>7} "
        f"{'lat p50':>7} {'lat p99':>7} {'udp p50':>7}"
    )
    for name, cfg in CASES:
        doc["cases"].append(asdict(await run_case(name, cfg, runs, duration, out)))
        save(doc)
    out(
        f"\nOne internet (cone NATs, TURN announced), {RATE_HZ} Hz, ms\n"
        f"{'transport':<15} {'impairment':<26} {'path':<16} {'sent':>6} {'recv':>6} "
        f"{'lat p50':>7} {'lat p99':>7}"
    )
    for imp in (None, IMPAIRED):
        doc["rows"] += [asdict(r) for r in await run_rows(imp, duration, out)]
        save(doc)
    doc["complete"] = True
    save(doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="jitsi-teleop bench --nat", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--quick", action="store_true", help="1 pairing per case, 2 s windows")
    ap.add_argument("--runs", type=int, default=None, help="pairings per NAT case (default 5)")
    args = ap.parse_args(argv)
    why = unavailable(need_delay=True)
    if why:
        print(f"bench --nat: cannot run here: {why}", file=sys.stderr)
        return 2
    runs = args.runs or (1 if args.quick else 5)

    def save(doc: dict[str, Any]) -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")

    asyncio.run(run(runs, 2.0 if args.quick else 5.0, save=save))
    return 0


if __name__ == "__main__":
    sys.exit(main())
