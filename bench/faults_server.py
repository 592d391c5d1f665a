"""Fault campaign, part 2: the meeting server restarted mid-session, and a NAT that reboots.

Two sites behind NATs on the simulated internet (:mod:`jitsi_teleop.netlab`: Prosody in the
server namespace, each site a :mod:`~jitsi_teleop.netlab.fault_site` process in its own
namespace) pair, take the peer-to-peer fast path, and stream both ways: a 500 Hz ``latest``
stream (max age 0.25 s) and a 50 Hz ``reliable`` one. Then, ``--restarts`` times per mode,
Prosody is killed (``kill``: SIGKILL, no goodbye) or stopped cleanly (``clean``: SIGTERM, it
closes every stream) and started again on the same ports, at a random moment. For each restart:

- ``rejoin_s``: from the kill to the site being back in the room (the later of the two sites);
  also from the moment Prosody listened again (``rejoin_after_up_s``);
- ``room_path_s``: from the kill to the first authenticated record from the peer over the room
  at both sites (the session's clock probes, every ``muc_probe_interval``: the figure includes
  up to one interval of waiting for the next probe);
- the fast path: any path change away from ``p2p`` at either site, the longest gap between two
  deliveries of the latest stream, gaps beyond its max age, and whether the session id changed
  (a re-pairing) - and at the end, reliable frames lost (sent minus received after both sides
  quiesced).

``nat-reboot``: every conntrack entry of one site's NAT flushed (the room's WebSocket dies
silently; nothing tells the site): the time until the site noticed (its room keepalive), and
until it was back in the room and the room path worked end to end.

Needs root (network namespaces). Prints a table and writes the ``server`` section of
bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults_common import DEFAULT_JSON, print_table, stamp, write_section
from jitsi_teleop.netlab.lab import Lab, LabConfig, SiteProc, unavailable

MODES = ("kill", "clean")
#: the room settings every site uses here (RoomConfig fields); the keepalive is the product's
#: default unless ``--ping-interval``/``--ping-timeout`` say otherwise
SESSION = {"muc_probe_interval": 0.25}


@dataclass
class Record:
    """One fault (a server restart or a NAT reboot) as both sites saw it; times in s from the
    fault."""

    n: int
    fault: str  #: "kill", "clean" or "nat-reboot a|b"
    #: Prosody listening again (restarts)
    server_up_s: float | None = None
    #: the site's room connection dropped (a NAT reboot: when the keepalive found it dead)
    detected_s: float | None = None
    rejoin_s: float | None = None
    rejoin_after_up_s: float | None = None
    room_path_s: float | None = None
    #: path changes at either site between the fault and the window's end
    path_changes: list[str] = field(default_factory=list)
    latest_max_gap_s: float = 0.0
    #: gaps over the follower's lease (0.15 s) and over the stream's max age (0.25 s)
    gaps_over_lease: int = 0
    gaps_over_max_age: int = 0
    stale_delivered: int = 0
    #: the oldest latest frame delivered (s, true age)
    max_age_delivered_s: float = 0.0
    #: gaps over the lease that coincide with an event loop stall (> 50 ms late) at either
    #: site: the machine, not the network, held the frames back
    gaps_with_stall: int = 0
    #: the longest event loop stall at either site (s)
    max_stall_s: float = 0.0
    #: gaps over the lease: [site that received, s from the fault to the gap's start, length]
    long_gaps: list[list[Any]] = field(default_factory=list)
    #: what each sender's session counted meanwhile (e.g. link_busy: latest frames not sent
    #: because the fast path's buffer was busy)
    sender_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the session id changed at a site: the two ends paired again (the fast path went on)
    repaired: bool = False
    #: the machine's 1-minute load average at the fault (two cores, shared with other jobs)
    load: float = 0.0
    error: str | None = None


async def start_site(lab: Lab, role: str, room_extra: dict[str, Any]) -> SiteProc:
    assert lab.servers is not None
    side = "a" if role == "leader" else "b"
    proc = await asyncio.create_subprocess_exec(
        *lab.net.host(side).argv([sys.executable, "-m", "jitsi_teleop.netlab.fault_site"]),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    site = SiteProc(role, proc)
    lab.sites[role] = site
    site.tell(
        config={
            "role": role,
            "room": {
                **lab.servers.room_settings(lab.room),
                "teleop_role": role,
                "key_id": lab.secret_hex[:8],
                **room_extra,
            },
            "secret_hex": lab.secret_hex,
            "session": SESSION,
        }
    )
    return site


async def paired_sites(lab: Lab, room_extra: dict[str, Any]) -> tuple[SiteProc, SiteProc]:
    leader = await start_site(lab, "leader", room_extra)
    follower = await start_site(lab, "follower", room_extra)
    for s in (leader, follower):
        await s.wait_for("paired", 90)
    for s in (leader, follower):
        await s.wait_for("fast", 60)
    return leader, follower


async def site_stats(site: SiteProc, reset_gap: bool = False) -> dict[str, Any]:
    site.seen.pop("stats", None)
    site.tell(stats=1, reset_gap=int(reset_gap))
    return await site.wait_for("stats", 20)


async def both_stats(lab: Lab, reset_gap: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        await site_stats(lab.sites["leader"], reset_gap),
        await site_stats(lab.sites["follower"], reset_gap),
    )


def events_after(st: dict[str, Any], t0: float, kind: str | None = None) -> list[list[Any]]:
    return [e for e in st["events"] if e[0] >= t0 and (kind is None or e[1] == kind)]


def first(st: dict[str, Any], t0: float, kind: str) -> float | None:
    ev = events_after(st, t0, kind)
    return ev[0][0] if ev else None


def first_muc_rx(st: dict[str, Any], after: float) -> float | None:
    """The first authenticated record from the peer over the room after ``after``."""
    return next((t for t in st["muc_rx"] if t > after), None)


def room_back(by: dict[str, dict[str, Any]], t0: float, sides: tuple[str, ...]) -> float | None:
    """When the room path carried traffic both ways again after the fault at ``t0``: both
    sites heard the peer over the room after the last of ``sides`` rejoined."""
    joins = [first(by[s], t0, "room_joined") for s in sides]
    if any(j is None for j in joins):
        return None
    heard = [first_muc_rx(st, max(joins)) for st in by.values()]  # type: ignore[type-var]
    return None if any(h is None for h in heard) else max(heard)  # type: ignore[type-var]


async def until_back(
    lab: Lab, t0: float, timeout: float, sides: tuple[str, ...] = ("leader", "follower")
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Poll until every site in ``sides`` rejoined after ``t0`` and both heard the peer over
    the room since; raise with both sites' state when it does not happen in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        ls, fs = await both_stats(lab)
        if room_back({"leader": ls, "follower": fs}, t0, sides) is not None:
            return ls, fs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not back within {timeout:g} s: leader {_brief(ls, t0)}; follower {_brief(fs, t0)}"
            )
        await asyncio.sleep(0.1)


def _brief(st: dict[str, Any], t0: float) -> str:
    return f"room {st['room']}, path {st['path']}, events {events_after(st, t0)}"


def restart_prosody(lab: Lab, mode: str) -> float:
    """Kill (SIGKILL) or stop (SIGTERM) Prosody, start it on the same ports; returns when
    it listens again (monotonic)."""
    assert lab.servers is not None and lab.servers.prosody is not None
    prosody = lab.servers.prosody
    if mode == "kill" and prosody.proc is not None:
        prosody.proc.kill()
        prosody.proc.wait(10)
    prosody.stop()  # SIGTERM and wait (kill: only tidies up)
    prosody.start()
    return time.monotonic()


def _fill(rec: Record, t0: float, ls: dict[str, Any], fs: dict[str, Any], sides) -> None:
    by = {"leader": ls, "follower": fs}
    joins = [first(by[s], t0, "room_joined") for s in sides]
    rec.rejoin_s = max(j for j in joins if j is not None) - t0
    rec.room_path_s = room_back(by, t0, sides) - t0  # type: ignore[operator]
    lefts = [first(by[s], t0, "room_left") for s in sides]
    if all(x is not None for x in lefts):
        rec.detected_s = max(lefts) - t0
    for st in (ls, fs):
        rec.path_changes += [f"{st['role']}->{e[2]}" for e in events_after(st, t0, "path")]
        rec.repaired = rec.repaired or bool(events_after(st, t0, "session_id"))
        gaps = [(t, g) for t, g in st["latest"]["long_gaps"] if t >= t0]
        rec.latest_max_gap_s = max(rec.latest_max_gap_s, st["latest"]["max_gap_s"])
        rec.max_age_delivered_s = max(rec.max_age_delivered_s, st["latest"]["max_age_delivered_s"])
        rec.gaps_over_lease += sum(1 for _t, g in gaps if g > 0.15)
        rec.long_gaps += [
            [st["role"], round(t - g - t0, 3), round(g, 3)] for t, g in gaps if g > 0.15
        ]
        rec.gaps_over_max_age += sum(1 for _t, g in gaps if g > 0.25)
        stalls = [(e, d) for e, d in ls["stalls"] + fs["stalls"] if e >= t0]
        rec.max_stall_s = max([rec.max_stall_s, *(d for _e, d in stalls)])
        rec.gaps_with_stall += sum(
            1
            for t, g in gaps
            if g > 0.15 and any(t - g - 0.05 <= e <= t + 0.05 for e, _d in stalls)
        )


def _counter_delta(before: Any, after: Any) -> dict[str, dict[str, int]]:
    out = {}
    for b, a in zip(before, after):
        delta = {k: v - b["counters"].get(k, 0) for k, v in a["counters"].items()}
        out[a["role"]] = {k: v for k, v in delta.items() if v}
    return out


async def one_restart(lab: Lab, n: int, mode: str, timeout: float) -> Record:
    rec = Record(n, mode, load=round(os.getloadavg()[0], 2))
    before = await both_stats(lab, reset_gap=True)
    stale0 = sum(s["latest"]["stale_delivered"] for s in before)
    t0 = time.monotonic()
    up = await asyncio.to_thread(restart_prosody, lab, mode)
    rec.server_up_s = up - t0
    try:
        await until_back(lab, t0, timeout)
    except AssertionError as e:
        rec.error = str(e)[:2000]
    await asyncio.sleep(0.5)  # what happens right after the room is back counts too
    ls, fs = await both_stats(lab, reset_gap=True)
    if rec.error is None:
        _fill(rec, t0, ls, fs, ("leader", "follower"))
        rec.rejoin_after_up_s = rec.rejoin_s - rec.server_up_s
    rec.stale_delivered = sum(s["latest"]["stale_delivered"] for s in (ls, fs)) - stale0
    rec.sender_counters = _counter_delta(before, (ls, fs))
    return rec


async def one_nat_reboot(lab: Lab, n: int, side: str, timeout: float) -> Record:
    rec = Record(n, f"nat-reboot {side}", load=round(os.getloadavg()[0], 2))
    role = "leader" if side == "a" else "follower"
    before = await both_stats(lab, reset_gap=True)
    stale0 = sum(s["latest"]["stale_delivered"] for s in before)
    t0 = time.monotonic()
    await asyncio.to_thread(lab.net.flush_conntrack, side)
    try:
        await until_back(lab, t0, timeout, sides=(role,))
    except AssertionError as e:
        rec.error = str(e)[:2000]
    await asyncio.sleep(0.5)
    ls, fs = await both_stats(lab, reset_gap=True)
    if rec.error is None:
        _fill(rec, t0, ls, fs, (role,))
    rec.stale_delivered = sum(s["latest"]["stale_delivered"] for s in (ls, fs)) - stale0
    rec.sender_counters = _counter_delta(before, (ls, fs))
    return rec


async def finish(lab: Lab) -> dict[str, Any]:
    """Both sites stop sending and wait until nothing reliable is unacknowledged; then what
    each sent is compared with what the other received."""
    for s in lab.sites.values():
        s.seen.pop("quiesced", None)
        s.tell(quiesce=1)
    unacked = {r: await s.wait_for("quiesced", 40) for r, s in lab.sites.items()}
    await asyncio.sleep(0.5)
    ls, fs = await both_stats(lab)
    out: dict[str, Any] = {"unacked_at_end": unacked}
    for src, dst in ((ls, fs), (fs, ls)):
        sent = src["sent"]["reliable"]
        rx = dst["reliable"]
        delivered = rx["received"] - rx["duplicates"]
        out[f"{src['role']}_to_{dst['role']}"] = {
            "sent": sent,
            "delivered": delivered,
            "lost": sent - delivered,
            "missing_in_sequence": rx["missing"],
            "duplicates": rx["duplicates"],
            "latest_sent": src["sent"]["latest"],
            "latest_received": dst["latest"]["received"],
            "latest_stale_delivered": dst["latest"]["stale_delivered"],
        }
    out["room"] = {"leader": ls["room"], "follower": fs["room"]}
    out["failovers"] = {"leader": ls["failovers"], "follower": fs["failovers"]}
    return out


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 3)


def summarize(records: list[Record]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kinds = sorted({r.fault.split()[0] for r in records})
    for kind in kinds:
        rs = [r for r in records if r.fault.split()[0] == kind]
        ok = [r for r in rs if r.error is None]
        row: dict[str, Any] = {"n": len(rs), "failed": len(rs) - len(ok)}
        for name in ("server_up_s", "detected_s", "rejoin_s", "rejoin_after_up_s", "room_path_s"):
            xs = [getattr(r, name) for r in ok if getattr(r, name) is not None]
            if xs:
                row[name] = {"p50": _pct(xs, 50), "max": round(max(xs), 3)}
        row["path_changes"] = sum(len(r.path_changes) for r in rs)
        row["latest_max_gap_s"] = round(max((r.latest_max_gap_s for r in rs), default=0.0), 4)
        row["gaps_over_lease"] = sum(r.gaps_over_lease for r in rs)
        row["gaps_over_max_age"] = sum(r.gaps_over_max_age for r in rs)
        row["gaps_with_stall"] = sum(r.gaps_with_stall for r in rs)
        row["max_stall_s"] = round(max((r.max_stall_s for r in rs), default=0.0), 3)
        row["max_age_delivered_s"] = round(max((r.max_age_delivered_s for r in rs), default=0), 3)
        row["stale_delivered"] = sum(r.stale_delivered for r in rs)
        row["repaired"] = sum(1 for r in rs if r.repaired)
        row["load_p50_max"] = [_pct([r.load for r in rs], 50), max(r.load for r in rs)]
        out[kind] = row
    return out


async def campaign(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    room_extra: dict[str, Any] = {}
    if args.ping_interval:
        room_extra["ping_interval"] = args.ping_interval
    if args.ping_timeout:
        room_extra["ping_timeout"] = args.ping_timeout
    records: list[Record] = []
    async with Lab(LabConfig()) as lab:
        await paired_sites(lab, room_extra)
        await asyncio.sleep(1.0)
        plan = [MODES[i % len(MODES)] for i in range(args.restarts * len(MODES))]
        for n, mode in enumerate(plan, 1):
            await asyncio.sleep(rng.uniform(args.gap_min, args.gap_max))
            rec = await one_restart(lab, n, mode, args.timeout)
            records.append(rec)
            _progress(rec)
        for i in range(args.nat_reboots):
            await asyncio.sleep(rng.uniform(args.gap_min, args.gap_max))
            rec = await one_nat_reboot(lab, len(records) + 1, "ab"[i % 2], args.timeout)
            records.append(rec)
            _progress(rec)
        end = await finish(lab)
    return {
        **stamp(),
        "setup": (
            "netlab: two sites behind port-restricted cone NATs, Prosody in the server "
            "namespace (WebSocket), fast path peer to peer; each site sends a 500 Hz latest "
            "stream (276 B, max age 0.25 s) and a 50 Hz reliable stream; "
            f"session muc_probe_interval {SESSION['muc_probe_interval']} s"
        ),
        "command": "bench/faults.py server" + (" --quick" if args.quick else ""),
        "keepalive": {
            "ping_interval_s": room_extra.get("ping_interval", _default("ping_interval")),
            "ping_timeout_s": room_extra.get("ping_timeout", _default("ping_timeout")),
            "ping_failures": _default("ping_failures"),
        },
        "summary": summarize(records),
        "end": end,
        "records": [asdict(r) for r in records],
    }


def _default(name: str) -> Any:
    from jitsi_teleop.room.config import RoomConfig

    return RoomConfig.__dataclass_fields__[name].default


def _progress(rec: Record) -> None:
    if rec.error:
        print(f"  #{rec.n} {rec.fault}: FAILED {rec.error[:300]}", flush=True)
        return
    print(
        f"  #{rec.n} {rec.fault}: rejoin {rec.rejoin_s:.2f} s, room path {rec.room_path_s:.2f} s,"
        f" path changes {rec.path_changes or 0}, longest gap {rec.latest_max_gap_s * 1e3:.0f} ms,"
        f" re-paired {rec.repaired}",
        flush=True,
    )


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def report(section: dict[str, Any]) -> None:
    rows = []
    for r in section["records"]:
        rows.append(
            [
                r["n"],
                r["fault"],
                _fmt(r["server_up_s"]),
                _fmt(r["detected_s"]),
                _fmt(r["rejoin_s"]),
                _fmt(r["room_path_s"]),
                len(r["path_changes"]),
                f"{r['latest_max_gap_s'] * 1e3:.0f}",
                r["gaps_over_lease"],
                f"{r['max_stall_s'] * 1e3:.0f}",
                "yes" if r["repaired"] else "no",
                f"{r['load']:.1f}",
                "FAILED" if r["error"] else "ok",
            ]
        )
    print_table(
        [
            "#",
            "fault",
            "server up s",
            "dropped s",
            "rejoin s",
            "room path s",
            "path changes",
            "max gap ms",
            "gaps>lease",
            "stall ms",
            "re-paired",
            "load",
            "",
        ],
        rows,
    )
    print()
    srows = []
    for kind, row in section["summary"].items():

        def pm(name: str, row: dict[str, Any] = row) -> str:
            v = row.get(name)
            return "-" if v is None else f"{v['p50']:.2f} / {v['max']:.2f}"

        srows.append(
            [
                kind,
                f"{row['n'] - row['failed']}/{row['n']}",
                pm("rejoin_s"),
                pm("room_path_s"),
                pm("detected_s"),
                row["path_changes"],
                f"{row['latest_max_gap_s'] * 1e3:.0f}",
                f"{row['gaps_over_lease']} ({row['gaps_with_stall']})",
                row["repaired"],
            ]
        )
    print_table(
        [
            "fault",
            "back",
            "rejoin p50/max s",
            "room path p50/max s",
            "dropped p50/max s",
            "path changes",
            "max gap ms",
            "gaps>lease (with stall)",
            "re-paired",
        ],
        srows,
    )
    print()
    for k, v in section["end"].items():
        if k.endswith("_to_leader") or k.endswith("_to_follower"):
            print(
                f"reliable {k}: sent {v['sent']}, delivered {v['delivered']}, lost {v['lost']},"
                f" duplicates {v['duplicates']}; latest delivered {v['latest_received']} of"
                f" {v['latest_sent']}, stale delivered {v['latest_stale_delivered']}"
            )


def run(args: argparse.Namespace) -> int:
    why = unavailable()
    if why:
        print(f"server faults need the network lab: {why}", file=sys.stderr)
        return 2
    if args.quick:
        args.restarts, args.nat_reboots = min(args.restarts, 1), min(args.nat_reboots, 1)
        args.gap_min, args.gap_max = 0.5, 1.5
    section = asyncio.run(campaign(args))
    report(section)
    if args.json:
        write_section(Path(args.json), "server", section)
        print(f"\nwrote the server section of {args.json}")
    failed = [r for r in section["records"] if r["error"]]
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser(
        "server", help="Prosody killed and restarted mid-session; a NAT reboot (needs root)"
    )
    ap.add_argument("--restarts", type=int, default=20, help="restarts per mode (kill, clean)")
    ap.add_argument("--nat-reboots", type=int, default=4, help="full conntrack flushes, a/b")
    ap.add_argument("--quick", action="store_true", help="CI: one restart per mode, one reboot")
    ap.add_argument("--timeout", type=float, default=60.0, help="per fault, to be back (s)")
    ap.add_argument("--gap-min", type=float, default=1.0, help="wait before a fault (s), min")
    ap.add_argument("--gap-max", type=float, default=4.0, help="wait before a fault (s), max")
    ap.add_argument("--ping-interval", type=float, help="room keepalive (default: product's)")
    ap.add_argument("--ping-timeout", type=float, help="room keepalive (default: product's)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="'' to write nothing")
    ap.set_defaults(run=run)
