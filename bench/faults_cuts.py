"""Fault campaign, part 1: cuts of the fast path at the network, at 500 Hz both ways.

Two sites behind cone NATs on the simulated internet (src/jitsi_teleop/netlab), the real Room
and Session in a process per site (netlab/agent.py, ``both_ways``): the leader streams its
joint state (the follower's command, latest, max age 0.25 s) at 500 Hz, the follower streams
its joint state and tip force back at 500 Hz and runs the product's safety filter
(teleop/safety.py) on every command, and each end sends a numbered reliable stream. Each cut
drops every UDP packet the internet router forwards (``Internet.cut``: the fast path dies,
direct or relayed; the room's TCP stays up), at a random moment, for a random length (seeded).

Per cut, from the moment the cut took effect (the last fast-path arrival at either site, within
the window of the iptables command; every site shares CLOCK_MONOTONIC, so times are exact):
time to the follower's hold (its command lease ran out), time to the room path (the later of
the two sites' path switches), the time back on the fast path after the link returned, reliable
frames lost and latest samples delivered older than their max age. Then, with no cut, false
failovers under jitter and loss on the router.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults_common import DEFAULT_JSON, print_table, stamp, write_section

RATE_HZ = 500.0
RELIABLE_HZ = 20.0
GOAL_TO_ROOM_P99_S = 0.5
#: --nat: the NATs of both sites, and the fast path they leave (symmetric: the TURN relay)
NATS = {
    "cone": "port-restricted cone / port-restricted cone",
    "symmetric": "symmetric / symmetric (fast path through TURN)",
}
#: with no cut: (one-way delay ms, jitter ms, loss) on every forwarded packet
FALSE_CASES = [(20.0, 10.0, 0.01), (20.0, 10.0, 0.05)]


@dataclass
class Cut:
    n: int
    length_s: float  #: how long the router dropped UDP (asked)
    cut_at: float = 0.0  #: monotonic: when the cut took effect
    cmd_ms: float = 0.0  #: how long the iptables command took (uncertainty of cut_at)
    failed_over: bool = False  #: both sites moved to the room
    to_hold_s: float | None = None
    to_room_s: float | None = None  #: the later site's switch to the room
    detection_s: list[float] = field(default_factory=list)  #: the sessions' own figures
    #: from the start of the iptables command that restores the link (packets may flow before
    #: it returns): both sites on the fast path again / fast-path frames arriving at both
    back_s: float | None = None
    resume_s: float | None = None
    #: the follower was already holding when the cut began (a starved process misses its
    #: commands' lease on its own): to_hold_s is then 0
    held_before: bool = False
    #: how long after the cut the sessions still processed fast-path frames that had arrived
    #: before it: time the receiving process was behind (CPU starvation), part of to_room_s
    late_processing_s: float | None = None
    load: float = 0.0  #: 1-minute load average when the cut began
    reliable_lost: int = 0
    stale_delivered: int = 0
    came_back: bool = False
    note: str = ""


def _pct(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    s = sorted(xs)
    if not s:
        return None
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summary(xs: list[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "p50": _pct(xs, 50),
        "p95": _pct(xs, 95),
        "p99": _pct(xs, 99),
        "max": max(xs) if xs else None,
    }


def _r(v: float | None, d: int = 3) -> float | None:
    return None if v is None else round(v, d)


async def _both(lab: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return await lab.sites["leader"].timeline(), await lab.sites["follower"].timeline()


async def _wait(lab: Any, cond: Any, timeout: float, every: float = 0.1) -> tuple[Any, Any] | None:
    """Poll both timelines until ``cond(leader, follower)``; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        lt, ft = await _both(lab)
        if cond(lt, ft):
            return lt, ft
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(every)


def _fast_flowing(since: float) -> Any:
    """Both sites on the fast path and receiving over it after ``since``."""

    def ok(lt: dict[str, Any], ft: dict[str, Any]) -> bool:
        return all(
            t["path"] == "p2p" and t["p2p_last"] is not None and t["p2p_last"] > since
            for t in (lt, ft)
        )

    return ok


def _gap_start(t: dict[str, Any], lo: float, hi: float) -> float | None:
    """The last fast-path arrival before the cut: the start of the gap that spans [lo, hi]."""
    starts = [a for a, b in t["p2p_gaps"] if a <= hi and b >= lo]
    return min(starts) if starts else None


def _gap_end(t: dict[str, Any], lo: float, hi: float) -> float | None:
    ends = [b for a, b in t["p2p_gaps"] if a <= hi and b >= lo]
    return max(ends) if ends else None


def _events(t: dict[str, Any], old: str, new: str, after: float) -> list[list[Any]]:
    return [e for e in t["path_events"] if e[1] == old and e[2] == new and e[0] >= after]


async def one_cut(lab: Any, cut: Cut, back_timeout: float) -> Cut:
    lt0, ft0 = await _both(lab)
    cut.load = round(os.getloadavg()[0], 2)
    t0 = time.monotonic()
    await asyncio.to_thread(lab.net.cut, True)
    t1 = time.monotonic()
    await asyncio.sleep(max(0.0, t1 + cut.length_s - time.monotonic()))
    u0 = time.monotonic()
    await asyncio.to_thread(lab.net.cut, False)
    u1 = time.monotonic()
    cut.cmd_ms = round((t1 - t0) * 1e3, 1)
    got = await _wait(lab, _fast_flowing(u1), back_timeout)
    if got is None:
        cut.note = f"fast path not back within {back_timeout:g} s"
        lt, ft = await _both(lab)
    else:
        cut.came_back = True
        lt, ft = got
    # When the cut took effect: after the last fast-path frame either site received, and
    # within the window of the iptables command.
    starts = [s for s in (_gap_start(lt, t1, u0), _gap_start(ft, t1, u0)) if s is not None]
    cut.cut_at = min(t1, max(t0, max(starts))) if starts else t0
    cut.cut_at = round(cut.cut_at, 4)
    downs = [_events(t, "p2p", "muc", t0) for t in (lt, ft)]
    if all(downs):
        cut.failed_over = True
        cut.to_room_s = _r(max(d[0][0] for d in downs) - cut.cut_at)
        cut.detection_s = [_r(d[0][4]) for d in downs if d[0][4] is not None]
        last = [d[0][0] - d[0][4] for d in downs if d[0][4] is not None]
        if last:
            cut.late_processing_s = _r(max(0.0, max(last) - cut.cut_at))
        ups = [_events(t, "muc", "p2p", d[0][0]) for t, d in zip((lt, ft), downs)]
        if all(ups):
            cut.back_s = _r(max(u[0][0] for u in ups) - u0)
    elif any(downs):
        cut.note = (cut.note + "; " if cut.note else "") + "only one site failed over"
    ends = [e for e in (_gap_end(lt, t1, u0), _gap_end(ft, t1, u0)) if e is not None]
    if len(ends) == 2:
        cut.resume_s = _r(max(ends) - u0)
    holds = [h for h in ft["holds"] if h[0] <= u1 + 1.0 and (h[1] is None or h[1] >= cut.cut_at)]
    if holds:
        cut.held_before = holds[0][0] < cut.cut_at
        cut.to_hold_s = _r(max(0.0, holds[0][0] - cut.cut_at))
    cut.reliable_lost = (lt["rel_lost_n"] - lt0["rel_lost_n"]) + (
        ft["rel_lost_n"] - ft0["rel_lost_n"]
    )
    cut.stale_delivered = sum(lt["stale_n"].values()) - sum(lt0["stale_n"].values())
    cut.stale_delivered += sum(ft["stale_n"].values()) - sum(ft0["stale_n"].values())
    return cut


async def false_failovers(lab: Any, seconds: float, out: Any) -> list[dict[str, Any]]:
    """No cut, jitter and loss on the router: every failover is a false one."""
    from jitsi_teleop.netlab import delay
    from jitsi_teleop.netlab.internet import Impairment

    rows = []
    for d_ms, j_ms, loss in FALSE_CASES:
        imp = Impairment(d_ms, j_ms, loss) if delay.available() is None else Impairment(loss=loss)
        await asyncio.to_thread(lab.net.impair, imp)
        try:
            await asyncio.sleep(1.0)  # the jitter's first reordering settles
            lt0, ft0 = await _both(lab)
            await asyncio.sleep(seconds)
            lt, ft = await _both(lab)
        finally:
            await asyncio.to_thread(lab.net.impair, None)
        row = {
            "impairment": imp.describe(),
            "seconds": seconds,
            "false_failovers": (lt["failovers"] - lt0["failovers"])
            + (ft["failovers"] - ft0["failovers"]),
            "stale_delivered": sum(lt["stale_n"].values())
            + sum(ft["stale_n"].values())
            - sum(lt0["stale_n"].values())
            - sum(ft0["stale_n"].values()),
            "reliable_lost": lt["rel_lost_n"]
            + ft["rel_lost_n"]
            - lt0["rel_lost_n"]
            - ft0["rel_lost_n"],
            "received_p2p": {
                "leader": lt["received"].get("p2p", 0) - lt0["received"].get("p2p", 0),
                "follower": ft["received"].get("p2p", 0) - ft0["received"].get("p2p", 0),
            },
        }
        rows.append(row)
        out(
            f"  no cut, {row['impairment']}, {seconds:g} s: {row['false_failovers']} false "
            f"failovers, {row['stale_delivered']} stale delivered, "
            f"{row['reliable_lost']} reliable lost"
        )
        ok = await _wait(lab, _fast_flowing(time.monotonic()), 60)
        if ok is None:
            row["note"] = "fast path not back within 60 s after the impairment"
    return rows


async def campaign(
    cuts: int = 100,
    seed: int = 1,
    min_s: float = 0.05,
    max_s: float = 5.0,
    false_seconds: float = 120.0,
    back_timeout: float = 60.0,
    session: dict[str, Any] | None = None,
    out: Any = print,
    nat: str = "cone",
) -> dict[str, Any]:
    """``nat``: ``cone`` (port-restricted both: the fast path is direct) or ``symmetric`` (both:
    no direct pair works, the fast path goes through the TURN relay, whose UDP the cut drops
    as well)."""
    from jitsi_teleop.netlab.lab import Lab, LabConfig
    from jitsi_teleop.session import SessionConfig

    rng = random.Random(seed)
    plan = [(rng.uniform(0.5, 3.0), rng.uniform(min_s, max_s)) for _ in range(cuts)]
    if nat not in NATS:
        raise ValueError(f"nat must be one of {', '.join(NATS)}")
    cfg = LabConfig(
        nat,
        nat,
        rate_hz=RATE_HZ,
        both_ways=True,
        reliable_hz=RELIABLE_HZ,
        session=dict(session or {}),
    )
    sc = SessionConfig(**(session or {}))
    doc: dict[str, Any] = {
        **stamp(),
        "load_at_start": round(os.getloadavg()[0], 2),
        "rate_hz": RATE_HZ,
        "reliable_hz": RELIABLE_HZ,
        "seed": seed,
        "cut_length_s": [min_s, max_s],
        "failover_after_s": sc.failover_after,
        "probe_interval_s": sc.probe_interval,
        "failover_bound_s": sc.failover_bound,
        "goal_to_room_p99_s": GOAL_TO_ROOM_P99_S,
        "nat": NATS[nat],
    }
    results: list[Cut] = []
    async with Lab(cfg) as lab:
        r = await lab.pair(fast_timeout=45.0)
        if r.fast_s is None:
            raise RuntimeError("no fast path to cut")
        doc["path"] = r.path
        if nat == "symmetric" and r.path != "relay":  # else the harness is not what it says
            raise RuntimeError(f"behind symmetric NATs the fast path is {r.path}, not relay")
        if await _wait(lab, _fast_flowing(time.monotonic() + 0.5), 30) is None:
            raise RuntimeError("the fast path carries no traffic")
        rows = []
        hdr = ["cut", "len s", "hold s", "room s", "detect s", "back s", "resume s", "rel lost"]
        hdr += ["stale", "late s", "load", "note"]
        for i, (pause, length) in enumerate(plan, 1):
            await asyncio.sleep(pause)
            c = await one_cut(lab, Cut(i, round(length, 3)), back_timeout)
            results.append(c)
            row = [
                i,
                f"{c.length_s:.2f}",
                c.to_hold_s,
                c.to_room_s,
                ",".join(f"{d:.3f}" for d in c.detection_s) or None,
                c.back_s,
                c.resume_s,
                c.reliable_lost,
                c.stale_delivered,
                c.late_processing_s,
                c.load,
                c.note,
            ]
            rows.append(row)
            out(" ".join(str("-" if v is None else v) for v in row))
            # the next cut needs a fast path to cut
            if not c.came_back and (
                await _wait(lab, _fast_flowing(time.monotonic()), back_timeout) is None
            ):
                c.note += "; campaign stopped"
                break
        # Every reliable frame sent so far must arrive: wait for the tails in flight.
        lt, ft = await _both(lab)
        sent = {"leader": lt["rel_tx"], "follower": ft["rel_tx"]}
        fin = await _wait(
            lab,
            lambda a, b: (
                b["rel_rx"] + b["rel_lost_n"] >= sent["leader"]
                and a["rel_rx"] + a["rel_lost_n"] >= sent["follower"]
            ),
            30,
        )
        lt, ft = fin if fin is not None else await _both(lab)
        doc["reliable"] = {
            "sent": sent["leader"] + sent["follower"],
            "delivered_in_order": lt["rel_rx"] + ft["rel_rx"],
            "lost_gaps": lt["rel_lost_n"] + ft["rel_lost_n"],
            "missing_at_end": max(0, sent["leader"] - ft["rel_rx"] - ft["rel_lost_n"])
            + max(0, sent["follower"] - lt["rel_rx"] - lt["rel_lost_n"]),
            "refused_busy": lt["rel_busy"] + ft["rel_busy"],
            "out_of_order": lt["rel_disorder"] + ft["rel_disorder"],
        }
        doc["stale_delivered_total"] = sum(lt["stale_n"].values()) + sum(ft["stale_n"].values())
        doc["stale_examples"] = (lt["stale"] + ft["stale"])[:10]
        out("")
        print_table(hdr, [[("-" if v is None else v) for v in r] for r in rows])
        if false_seconds > 0:
            out("\nfalse failovers (no cut):")
            doc["false_failovers"] = await false_failovers(lab, false_seconds, out)
    doc["load_at_end"] = round(os.getloadavg()[0], 2)
    fo = [c for c in results if c.failed_over]
    doc["cuts"] = len(results)
    doc["failed_over"] = len(fo)
    doc["came_back"] = sum(c.came_back for c in results)
    doc["reliable_lost"] = sum(c.reliable_lost for c in results) + doc["reliable"]["missing_at_end"]
    doc["stale_delivered"] = sum(c.stale_delivered for c in results)
    doc["to_hold_s"] = summary([c.to_hold_s for c in results if c.to_hold_s is not None])
    doc["to_room_s"] = summary([c.to_room_s for c in fo if c.to_room_s is not None])
    doc["detection_s"] = summary([d for c in fo for d in c.detection_s])
    doc["late_processing_s"] = summary(
        [c.late_processing_s for c in fo if c.late_processing_s is not None]
    )
    doc["held_before_cut"] = sum(c.held_before for c in results)
    doc["load_per_cut"] = summary([c.load for c in results])
    doc["back_s"] = summary([c.back_s for c in fo if c.back_s is not None])
    doc["resume_s"] = summary([c.resume_s for c in results if c.resume_s is not None])
    p99 = doc["to_room_s"]["p99"]
    doc["goal_met"] = p99 is not None and p99 <= GOAL_TO_ROOM_P99_S
    # a cut shorter than the silence threshold must not fail over; longer ones must
    doc["short_cuts_failed_over"] = sum(
        1 for c in results if c.failed_over and c.length_s < sc.failover_after - 0.05
    )
    doc["long_cuts_not_failed_over"] = sum(
        1 for c in results if not c.failed_over and c.length_s > sc.failover_bound + 0.1
    )
    doc["per_cut"] = [asdict(c) for c in results]
    return doc


def print_summary(doc: dict[str, Any]) -> None:
    print(
        f"\n{doc['cuts']} cuts ({doc['cut_length_s'][0]}-{doc['cut_length_s'][1]} s, seed "
        f"{doc['seed']}), {doc['rate_hz']:g} Hz both ways, failover_after "
        f"{doc['failover_after_s']} s (bound {doc['failover_bound_s']:.2f} s)"
    )
    rows = []
    for key, what in (
        ("to_hold_s", "cut -> follower holds"),
        ("to_room_s", "cut -> room path (both sites)"),
        ("detection_s", "last frame -> switch (session)"),
        ("late_processing_s", "cut -> last frame processed"),
        ("back_s", "link back -> fast path (both)"),
        ("resume_s", "link back -> fast-path frames"),
    ):
        s = doc[key]
        rows.append([what, s["n"], *(_r(s[k]) for k in ("p50", "p95", "p99", "max"))])
    print_table(
        ["s", "n", "p50", "p95", "p99", "max"],
        [[("-" if v is None else v) for v in r] for r in rows],
    )
    rel = doc["reliable"]
    print(
        f"failed over {doc['failed_over']}/{doc['cuts']}, came back {doc['came_back']}/"
        f"{doc['cuts']}; reliable: {rel['sent']} sent, {doc['reliable_lost']} lost; latest "
        f"delivered older than max age: {doc['stale_delivered']}; goal p99 <= "
        f"{doc['goal_to_room_p99_s']} s: {'met' if doc['goal_met'] else 'NOT met'}"
    )
    for f in doc.get("false_failovers", []):
        print(f"no cut, {f['impairment']}, {f['seconds']:g} s: {f['false_failovers']} failovers")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cuts", help="cut the fast path at the network, 500 Hz both ways")
    p.add_argument("--cuts", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-s", type=float, default=0.05, help="shortest cut, s")
    p.add_argument("--max-s", type=float, default=5.0, help="longest cut, s")
    p.add_argument(
        "--false-seconds", type=float, default=120.0, help="no-cut run per impairment, s"
    )
    p.add_argument("--failover-after", type=float, default=None, help="SessionConfig override")
    p.add_argument(
        "--nat",
        choices=sorted(NATS),
        default="cone",
        help="cone: direct fast path (section 'cuts'); symmetric: through TURN ('cuts_relay')",
    )
    p.add_argument("--quick", action="store_true", help="CI: 5 cuts of 0.05-2 s, 10 s no-cut")
    p.add_argument("--json", default=str(DEFAULT_JSON), help="'' to write nothing")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from jitsi_teleop.netlab.lab import unavailable

    why = unavailable()
    if why:
        print(f"faults cuts: cannot run here: {why}", file=sys.stderr)
        return 2
    if args.quick:
        args.cuts, args.max_s, args.false_seconds = min(args.cuts, 5), 2.0, 10.0
    session = {} if args.failover_after is None else {"failover_after": args.failover_after}
    # SIGTERM ends the run as an exit, so the namespaces are torn down (atexit) like on ^C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    doc = asyncio.run(
        campaign(
            args.cuts,
            args.seed,
            args.min_s,
            args.max_s,
            args.false_seconds,
            60.0,
            session,
            nat=args.nat,
        )
    )
    doc["quick"] = args.quick
    doc["command"] = "python bench/faults.py " + " ".join(sys.argv[1:])
    print_summary(doc)
    if args.json:
        section = "cuts" if args.nat == "cone" else "cuts_relay"
        write_section(Path(args.json), section, doc)
        print(f"\nwrote the {section} section of {args.json}")
    ok = doc["reliable_lost"] == 0 and doc["stale_delivered"] == 0
    return 0 if ok and doc["came_back"] == doc["cuts"] else 1
