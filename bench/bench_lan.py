"""Benchmark serverless mode (XEP-0174 link-local): how long two sites on one LAN take to find
each other and pair (from the start of announcing), and what the LAN carrier's slow path costs
next to the P2P path.

Two sites on a namespace LAN (a bridge and two host namespaces, as in the tests; needs root),
each on a thread inside its namespace, in one process (so one clock). Per trial both sites
announce at once; we record the session's own timings (announce -> paired -> fast path), then
stream 100 Hz JointState-sized frames leader -> follower for a few seconds and take the
one-way latency (publish() to the receive callback): once over the P2P path, once with P2P
off (the slow path over the direct XML stream, no server in between).

    python bench/bench_lan.py [--trials 5] [--seconds 4] [--quick] [--json bench/results/lan.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import struct
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "test"))  # the namespace LAN helper

from jitsi_teleop.carriers.lan import LanCarrier  # noqa: E402
from jitsi_teleop.linklocal import LanConfig, LanRoom  # noqa: E402
from jitsi_teleop.links.p2p import P2PConfig  # noqa: E402
from jitsi_teleop.pairing import Secret  # noqa: E402
from jitsi_teleop.session import PATH_MUC, PATH_P2P, Session, SessionConfig  # noqa: E402
from jitsi_teleop.wire import StreamDescriptor  # noqa: E402
from lan_net import Lan, skip_reason, start_in_netns  # noqa: E402

DEFAULT_JSON = HERE / "results" / "lan.json"
H = "RIHS01_" + "a" * 64
OUT = {
    "leader": [StreamDescriptor(1, "/js", "sensor_msgs/msg/JointState", H, "latest", 100, 0.5)],
    "follower": [
        StreamDescriptor(7, "/wr", "geometry_msgs/msg/WrenchStamped", H, "latest", 100, 0.5)
    ],
}


def site(role: str, addr: str, trial: int, use_p2p: bool, seconds: float):
    async def main() -> dict:
        secret = Secret(bytes([trial]) * 32)
        lan = LanRoom(
            LanConfig(
                f"bench{trial}",
                role,
                key_id=secret.key_id,
                nick=f"{role}{trial}@b",
                addresses=[addr],
            )
        )
        lat: list[float] = []

        def on_receive(d, payload, info):
            sent = struct.unpack_from("<d", payload)[0]
            lat.append((time.monotonic() - sent) * 1e3)
            paths.add(info.path)

        paths: set[str] = set()
        cfg = SessionConfig(p2p=P2PConfig(), discover_ice_servers=False, use_p2p=use_p2p)
        s = Session(LanCarrier(lan), cfg, secret, role, OUT[role], on_receive=on_receive)
        t0 = time.monotonic()  # before announcing (mDNS probing takes ~1-2 s of this)
        await lan.join()
        await s.start()
        try:
            await s.wait_paired(60)
            t_paired = time.monotonic() - t0
            want = PATH_P2P if use_p2p else PATH_MUC
            deadline = time.monotonic() + 60
            while s.path != want:
                assert time.monotonic() < deadline, f"no {want} path"
                await asyncio.sleep(0.01)
            t_fast = time.monotonic() - t0
            await asyncio.sleep(0.5)
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                if role == "leader":
                    s.publish(1, struct.pack("<d", time.monotonic()) + bytes(268))
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)
            return {
                "timings": {"join_to_paired_s": t_paired, "join_to_fast_path_s": t_fast},
                "latency_ms": lat,
                "paths": sorted(paths),
            }
        finally:
            await s.close()
            await lan.close()

    return main


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--quick", action="store_true", help="2 trials of 2 s")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    if args.quick:
        args.trials, args.seconds = 2, 2.0
    why = skip_reason()
    if why:
        print(f"bench_lan: {why}", file=sys.stderr)
        return 1
    paired, fast, rows = [], [], {}
    for use_p2p in (True, False):
        lat: list[float] = []
        for trial in range(args.trials):
            net = Lan(2, "bl")
            try:
                futs = [
                    start_in_netns(
                        net.hosts[0], site("leader", net.addresses[0], trial, use_p2p, args.seconds)
                    ),
                    start_in_netns(
                        net.hosts[1],
                        site("follower", net.addresses[1], trial, use_p2p, args.seconds),
                    ),
                ]
                leader, follower = (f.result(180) for f in futs)
            finally:
                net.delete()
            if use_p2p:
                for r in (leader, follower):
                    if r["timings"].get("join_to_paired_s") is not None:
                        paired.append(r["timings"]["join_to_paired_s"])
                    if r["timings"].get("join_to_fast_path_s") is not None:
                        fast.append(r["timings"]["join_to_fast_path_s"])
            lat += follower["latency_ms"]
        name = "p2p (ICE host candidates on the LAN)" if use_p2p else "slow path (XEP-0174 stream)"
        rows[name] = {
            "frames": len(lat),
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat) if lat else None,
        }
    result = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "trials": args.trials,
        "seconds": args.seconds,
        "announce_to_paired_s": {
            "median": statistics.median(paired) if paired else None,
            "max": max(paired) if paired else None,
            "n": len(paired),
        },
        "announce_to_fast_path_s": {
            "median": statistics.median(fast) if fast else None,
            "max": max(fast) if fast else None,
            "n": len(fast),
        },
        "latency_100hz": rows,
    }
    print(f"{'':40} {'median':>8} {'max':>8}")
    for k in ("announce_to_paired_s", "announce_to_fast_path_s"):
        v = result[k]
        print(f"{k:40} {v['median'] or float('nan'):8.2f} {v['max'] or float('nan'):8.2f}")
    print(f"\n{'one-way latency, 100 Hz, 276 B':40} {'p50 ms':>8} {'p99 ms':>8} {'frames':>7}")
    for k, v in rows.items():
        print(
            f"{k:40} {v['p50_ms'] or float('nan'):8.2f} {v['p99_ms'] or float('nan'):8.2f} "
            f"{v['frames']:7d}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
