"""Benchmark join -> paired -> fast path on loopback (local Prosody, real aiortc).

Per run, a fresh room: the leader joins and starts its session, then the follower joins and
starts its own (a site that restarts into a waiting peer); ``crossed`` runs instead start both
sessions at the same moment after both joined, so their handshakes cross in flight. Measured
from each site's room join (the session's own timings), plus the XMPP connect + join itself.
A run that needed a handshake retry (more than one offer, or a link-level resend) is counted.

STUN/TURN discovery is off: the test server announces a STUN/TURN address where nothing
listens (gathering would wait for it); host candidates on 127.0.0.1 only.

    python bench/bench_pairing.py [--runs 20] [--quick] [--json bench/results/pairing.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "test"))  # the test Prosody helper

from jitsi_teleop.links.p2p import P2PConfig, loopback_only  # noqa: E402
from jitsi_teleop.pairing import Secret  # noqa: E402
from jitsi_teleop.room.room import Room  # noqa: E402
from jitsi_teleop.session import PATH_P2P, Session, SessionConfig  # noqa: E402
from jitsi_teleop.wire import StreamDescriptor  # noqa: E402
from prosody_server import ProsodyServer, room_config  # noqa: E402

DEFAULT_JSON = HERE / "results" / "pairing.json"
SECRET = Secret(bytes(range(32)))
HASH = "RIHS01_" + "a" * 64
OUT = {
    "leader": [StreamDescriptor(1, "/joint_states", "sensor_msgs/msg/JointState", HASH)],
    "follower": [StreamDescriptor(7, "/wrench", "geometry_msgs/msg/WrenchStamped", HASH)],
}


@dataclass
class Run:
    scenario: str
    connect_join_s: float  # the follower's XMPP connect + MUC join
    join_to_paired_s: float
    join_to_fast_path_s: float
    crossed: int
    retries: int


def _config() -> SessionConfig:
    return SessionConfig(p2p=P2PConfig(candidate_filter=loopback_only), discover_ice_servers=False)


async def one_run(srv: ProsodyServer, i: int, scenario: str) -> Run:
    name = f"bench{i}{scenario[:2]}{int(time.time() * 1000) % 100000}"
    rooms = {r: Room(room_config(srv, name, teleop_role=r, key_id="ab12")) for r in OUT}
    sessions: dict[str, Session] = {}
    try:
        await rooms["leader"].join()
        sessions["leader"] = Session(rooms["leader"], _config(), SECRET, "leader", OUT["leader"])
        if scenario == "follower joins":
            await sessions["leader"].start()
        t0 = time.monotonic()
        await rooms["follower"].join()
        connect_join = time.monotonic() - t0
        sessions["follower"] = Session(
            rooms["follower"], _config(), SECRET, "follower", OUT["follower"]
        )
        if scenario == "follower joins":
            await sessions["follower"].start()
        else:
            await asyncio.gather(*(s.start() for s in sessions.values()))
        deadline = time.monotonic() + 30
        f = sessions["follower"]
        while not (f.path == PATH_P2P and sessions["leader"].path == PATH_P2P):
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {i}: no fast path within 30 s")
            await asyncio.sleep(0.005)
        t = f.stats().timings
        crossed = sum(s.stats().pairing["crossed"] for s in sessions.values())
        retries = 0
        for s in sessions.values():
            retries += max(0, s.stats().refusals.get("offers", 0) - 1)
            muc = s._muc
            retries += muc.stats.resent if muc is not None else 0
        return Run(
            scenario,
            connect_join,
            float(t["join_to_paired_s"] or 0.0),
            float(t["join_to_fast_path_s"] or 0.0),
            crossed,
            retries,
        )
    finally:
        for s in sessions.values():
            await s.close()
        for r in rooms.values():
            await r.close()


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(runs: list[Run]) -> list[dict[str, object]]:
    rows = []
    for scenario in dict.fromkeys(r.scenario for r in runs):
        rs = [r for r in runs if r.scenario == scenario]
        row: dict[str, object] = {"scenario": scenario, "runs": len(rs)}
        for key in ("connect_join_s", "join_to_paired_s", "join_to_fast_path_s"):
            vals = [getattr(r, key) for r in rs]
            row[f"{key[:-2]}_p50_s"] = round(_pct(vals, 50), 4)
            row[f"{key[:-2]}_p95_s"] = round(_pct(vals, 95), 4)
            row[f"{key[:-2]}_max_s"] = round(max(vals), 4)
        row["runs_crossed"] = sum(1 for r in rs if r.crossed)
        row["runs_with_retry"] = sum(1 for r in rs if r.retries)
        rows.append(row)
    return rows


def _ms_pair(row: dict[str, object], key: str) -> str:
    p50, p95 = row[key + "_p50_s"], row[key + "_p95_s"]
    assert isinstance(p50, float) and isinstance(p95, float)
    return f"{p50 * 1e3:7.0f} / {p95 * 1e3:5.0f} ms"


def print_table(rows: list[dict[str, object]]) -> None:
    print(
        f"{'scenario':16} {'runs':>4}  {'connect+join p50/p95':>21}  {'join->paired p50/p95':>21}"
        f"  {'join->fast path p50/p95':>24}  {'crossed':>7}  {'retried':>7}"
    )
    for r in rows:
        print(
            f"{r['scenario']:16} {r['runs']:>4}  {_ms_pair(r, 'connect_join'):>21}  "
            f"{_ms_pair(r, 'join_to_paired'):>21}  {_ms_pair(r, 'join_to_fast_path'):>24}  "
            f"{r['runs_crossed']:>7}  {r['runs_with_retry']:>7}"
        )


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    srv = ProsodyServer()
    srv.start()
    runs: list[Run] = []
    try:
        for scenario in ("follower joins", "crossed"):
            for i in range(args.runs):
                runs.append(await one_run(srv, i, scenario))
    finally:
        srv.cleanup()
    rows = summarize(runs)
    print_table(rows)
    if args.json:
        out = {
            "bench": "pairing",
            "network": "loopback, local Prosody (mod_limits 10 kB/s), host candidates only",
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "rows": rows,
            "runs": [asdict(r) for r in runs],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per scenario (default 20)")
    ap.add_argument("--quick", action="store_true", help="3 runs per scenario, no JSON")
    ap.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the results")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.json = 3, None
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
