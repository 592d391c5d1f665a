"""Benchmark the MUC slow path: a latest-only 500 Hz JointState-sized stream through Prosody.

Two endpoints in one room on a local Prosody (loopback), one process. The sender offers
276-byte frames at 500 Hz on one latest-only stream; the receiver records, per delivered frame,
the one-way latency (send() call to receive callback, same clock) and samples the age of the
newest frame it holds every 10 ms. Scenarios:

* ``limit+budget``: stock mod_limits (10 kB/s) with the link's default budget (9 kB/s);
* ``limit, no budget``: the same server, budget lifted (what happens if we did not shape);
* ``no limit``: mod_limits off and the budget lifted (the path's raw capacity).

Each scenario runs once per transport (both ends on it): WebSocket, and BOSH (XEP-0206) where
every batch of stanzas is an HTTP POST and the receiver keeps a long poll open. For BOSH the
budget also pays each request's HTTP headers and body wrapper and every long poll, so
``room B/s`` (all the sender's bytes, as charged) differs from ``wire B/s`` (frame stanzas).

    python bench/bench_slowpath.py [--seconds 10] [--quick] [--transport ws,bosh]
                                   [--json bench/results/slowpath.json]
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
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "test"))  # the test Prosody helper

from jitsi_teleop.links.muc import MucLink  # noqa: E402
from jitsi_teleop.room.room import Room  # noqa: E402
from prosody_server import ProsodyServer, room_config  # noqa: E402

DEFAULT_JSON = HERE / "results" / "slowpath.json"
FRAME = 276  # bytes, about a serialized 6-joint JointState
RATE_HZ = 500.0


@dataclass
class Result:
    scenario: str
    server_limit: str
    budget_bytes_per_s: float
    transport: str
    seconds: float
    offered_hz: float
    delivered_hz: float
    thinned: int
    expired: int
    wire_bytes_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    newest_age_p50_ms: float
    newest_age_p99_ms: float
    disconnects: int
    #: all bytes the sender's room charged (stanzas, framing, BOSH headers and polls) per s
    room_bytes_per_s: float = 0.0
    #: the same for the receiving room (BOSH: mostly its long polls)
    receiver_room_bytes_per_s: float = 0.0
    #: HTTP requests per second, sender and receiver (BOSH only; 0 otherwise)
    sender_requests_per_s: float = 0.0
    receiver_requests_per_s: float = 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_scenario(
    name: str, srv: ProsodyServer, budget: float, transport: str, seconds: float
) -> Result:
    room = f"bench{int(time.time() * 1000) % 100000}"
    extra = dict(rate_bytes_per_s=budget, ping_interval=30.0)
    if budget > 100_000:
        extra["burst_bytes"] = budget / 10
    leader = Room(room_config(srv, room, transport, teleop_role="leader", **extra))
    follower = Room(room_config(srv, room, transport, teleop_role="follower", **extra))
    await leader.join()
    await follower.join()
    await leader.wait_for_peer("follower")
    await follower.wait_for_peer("leader")
    link = MucLink(leader, follower.nick, max_latest_age=5.0)
    back = MucLink(follower, leader.nick)
    latencies: list[float] = []
    newest_sent_at: list[float] = []

    def on_frame(_nick: str, _stream: int, payload: bytes) -> None:
        sent_ns, _seq = struct.unpack_from("<qI", payload)
        now = time.perf_counter_ns()
        latencies.append((now - sent_ns) / 1e6)
        newest_sent_at[:] = [sent_ns]

    back.set_receive_callback(on_frame)
    ages: list[float] = []
    stop = asyncio.Event()

    async def sample_age() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            if newest_sent_at:
                ages.append((time.perf_counter_ns() - newest_sent_at[0]) / 1e6)

    sampler = asyncio.ensure_future(sample_age())
    room_bytes0, recv_bytes0 = leader.stats.bytes_sent, follower.stats.bytes_sent
    req0 = [_requests(r) for r in (leader, follower)]
    pad = bytes(FRAME - 12)
    period = 1.0 / RATE_HZ
    start = time.perf_counter()
    offered = 0
    next_t = start
    while True:
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if now >= next_t:
            link.send(1, struct.pack("<qI", time.perf_counter_ns(), offered) + pad, latest=True)
            offered += 1
            next_t += period
            if next_t < now - 0.05:  # fell behind (loaded machine): do not burst to catch up
                next_t = now + period
        await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
    elapsed = time.perf_counter() - start
    room_bytes = leader.stats.bytes_sent - room_bytes0
    recv_bytes = follower.stats.bytes_sent - recv_bytes0
    reqs = [_requests(r) - n for r, n in zip((leader, follower), req0)]
    stop.set()  # ages only while the stream runs
    await sampler
    await asyncio.sleep(1.0)  # let the last frames land
    st = link.stats
    disconnects = leader.stats.disconnects + follower.stats.disconnects
    await link.close()
    await back.close()
    await leader.close()
    await follower.close()
    return Result(
        scenario=name,
        server_limit=srv.c2s_rate if srv.limits else "none",
        budget_bytes_per_s=budget,
        transport=transport,
        seconds=round(elapsed, 2),
        offered_hz=round(offered / elapsed, 1),
        delivered_hz=round(len(latencies) / elapsed, 1),
        thinned=st.thinned,
        expired=st.expired,
        wire_bytes_per_s=round(st.bytes_sent / elapsed, 1),
        latency_p50_ms=round(statistics.median(latencies), 2) if latencies else float("nan"),
        latency_p95_ms=round(_pct(latencies, 0.95), 2),
        latency_p99_ms=round(_pct(latencies, 0.99), 2),
        latency_max_ms=round(max(latencies), 2) if latencies else float("nan"),
        newest_age_p50_ms=round(_pct(ages, 0.5), 2),
        newest_age_p99_ms=round(_pct(ages, 0.99), 2),
        disconnects=disconnects,
        room_bytes_per_s=round(room_bytes / elapsed, 1),
        receiver_room_bytes_per_s=round(recv_bytes / elapsed, 1),
        sender_requests_per_s=round(reqs[0] / elapsed, 1),
        receiver_requests_per_s=round(reqs[1] / elapsed, 1),
    )


def _requests(room: Room) -> int:
    """HTTP requests the room's BOSH transport made so far (0 on other transports)."""
    transport = room.xmpp.transport if room.xmpp is not None else None
    return getattr(transport, "requests_sent", 0)


async def main_async(args: argparse.Namespace) -> list[Result]:
    results = []
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    with ProsodyServer(limits=True, nagle=args.nagle) as limited:
        for transport in transports:
            for name, budget in (("limit+budget", 9000.0), ("limit, no budget", 10e6)):
                results.append(await run_scenario(name, limited, budget, transport, args.seconds))
    with ProsodyServer(limits=False, nagle=args.nagle) as open_srv:
        for transport in transports:
            results.append(await run_scenario("no limit", open_srv, 10e6, transport, args.seconds))
    order = {t: i for i, t in enumerate(transports)}
    results.sort(key=lambda r: order[r.transport])
    return results


def print_table(results: list[Result]) -> None:
    cols = [
        ("transport", 9),
        ("scenario", 17),
        ("deliv Hz", 9),
        ("thinned", 8),
        ("wire B/s", 9),
        ("lat p50", 8),
        ("lat p99", 8),
        ("lat max", 8),
        ("age p50", 8),
        ("age p99", 8),
        ("disc", 5),
        ("room B/s", 9),
        ("req/s", 6),
        ("rx B/s", 7),
        ("rx req/s", 8),
    ]
    print(" ".join(f"{c:>{w}}" for c, w in cols))
    for r in results:
        row = [
            r.transport,
            r.scenario,
            r.delivered_hz,
            r.thinned,
            r.wire_bytes_per_s,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            r.newest_age_p50_ms,
            r.newest_age_p99_ms,
            r.disconnects,
            r.room_bytes_per_s,
            r.sender_requests_per_s,
            r.receiver_room_bytes_per_s,
            r.receiver_requests_per_s,
        ]
        print(" ".join(f"{v!s:>{w}}" for v, (_, w) in zip(row, cols)))
    print(f"(offered {RATE_HZ:g} Hz x {FRAME} B latest-only; latencies and ages in ms;")
    print(" room B/s: all bytes the sender charged; rx: the receiver's bytes and requests)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    ap.add_argument(
        "--transport",
        default="ws,bosh",
        help="comma-separated: ws, bosh, tcp (each scenario runs on each)",
    )
    ap.add_argument("--quick", action="store_true", help="3 s per scenario")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument(
        "--no-nagle",
        dest="nagle",
        action="store_false",
        help="server sets TCP_NODELAY (not Prosody's default)",
    )
    args = ap.parse_args()
    if not set(args.transport.split(",")) <= {"ws", "bosh", "tcp"}:
        ap.error(f"--transport: ws, bosh or tcp, not {args.transport!r}")
    if args.quick:
        args.seconds = 3.0
    results = asyncio.run(main_async(args))
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "bench": "slowpath",
                "host": platform.node(),
                "python": platform.python_version(),
                "frame_bytes": FRAME,
                "rate_hz": RATE_HZ,
                "seconds_per_scenario": args.seconds,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
