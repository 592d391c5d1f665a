"""Benchmark the Dexter driver against the simulator running in a separate process on loopback.

Measures the `g` request round trip (through DexterClient, and on a bare socket for reference)
and the status poll rate the client sustains, unpaced and at fixed poll_hz targets. The numbers
bound what the driver adds; a real robot's own latency comes on top (measure it on hardware).

    python bench/bench_driver.py [--json bench/results/driver.json] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from dexter_driver.client import ClientConfig, DexterClient
from dexter_driver.protocol import REPLY_SIZE, Instruction, decode_status, encode_request

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "driver.json"


@dataclass
class RttResult:
    path: str
    n: int
    median_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float


@dataclass
class PollResult:
    target_hz: float  #: 0 = unpaced (back-to-back requests)
    achieved_hz: float
    statuses: int
    seconds: float
    timeouts: int
    client_cpu_pct: float  #: this process (client + event loop)
    sim_cpu_pct: float | None  #: the simulator process (Linux /proc), None elsewhere


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def sim_process(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m dexter_driver.sim` in its own process; yields once it listens."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dexter_driver.sim",
        "--port",
        str(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
        if b"listening" not in line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"simulator did not start: {line!r} {err.decode().strip()}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)


def _summary(path: str, samples: list[float]) -> RttResult:
    ms = sorted(s * 1e3 for s in samples)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return RttResult(path, len(ms), statistics.median(ms), p99, statistics.fmean(ms), ms[-1])


async def bench_client_rtt(port: int, n: int) -> RttResult:
    async with DexterClient("127.0.0.1", port, ClientConfig(poll_hz=0.0)) as client:
        for _ in range(min(200, n)):
            await client.status()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.status()
            samples.append(time.perf_counter() - t0)
    return _summary("DexterClient g", samples)


async def bench_raw_rtt(port: int, n: int) -> RttResult:
    """The same exchange on a bare asyncio stream: the floor the client's overhead sits on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    try:
        for i in range(n + 200):
            data = encode_request(1, i + 1, Instruction.status())
            t0 = time.perf_counter()
            writer.write(data)
            decode_status(await reader.readexactly(REPLY_SIZE))
            if i >= 200:
                samples.append(time.perf_counter() - t0)
    finally:
        writer.close()
    return _summary("raw socket g", samples)


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_poll(port: int, sim_pid: int, target_hz: float, seconds: float) -> PollResult:
    """Statuses delivered to a listener per second at a poll_hz target (0 = back to back)."""
    count = 0

    def on_status(_status: object) -> None:
        nonlocal count
        count += 1

    cfg = ClientConfig(poll_hz=target_hz)
    async with DexterClient("127.0.0.1", port, cfg) as client:
        client.add_status_listener(on_status)
        sim0, cpu0 = _proc_cpu_s(sim_pid), time.process_time()
        t0 = time.perf_counter()
        if target_hz > 0:
            await asyncio.sleep(seconds)
        else:
            while time.perf_counter() - t0 < seconds:
                await client.status()
        elapsed = time.perf_counter() - t0
        cpu, sim1 = time.process_time() - cpu0, _proc_cpu_s(sim_pid)
        timeouts = client.stats.timeouts
    sim_pct = None if sim0 is None or sim1 is None else 100.0 * (sim1 - sim0) / elapsed
    return PollResult(
        target_hz, count / elapsed, count, elapsed, timeouts, 100.0 * cpu / elapsed, sim_pct
    )


def machine_info() -> dict[str, object]:
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    port = _free_port()
    async with sim_process(port) as proc:
        rtts = [
            await bench_client_rtt(port, args.requests),
            await bench_raw_rtt(port, args.requests),
        ]
        polls = [await bench_poll(port, proc.pid, hz, args.poll_seconds) for hz in args.poll_hz]
    return {
        "benchmark": "dexter_driver",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "setup": "dexter-sim in a separate process, loopback TCP, rate 1",
        "rtt": [asdict(r) for r in rtts],
        "poll": [asdict(p) for p in polls],
    }


def print_table(result: dict[str, object]) -> None:
    m = result["machine"]
    assert isinstance(m, dict)
    print(f"machine: {m['cpu_count']} CPUs, Python {m['python']}, {m['platform']}")
    print(f"{'round trip':<18}{'n':>7}{'median ms':>11}{'p99 ms':>9}{'mean ms':>9}{'max ms':>9}")
    for r in result["rtt"]:  # type: ignore[attr-defined]
        print(
            f"{r['path']:<18}{r['n']:>7}{r['median_ms']:>11.3f}{r['p99_ms']:>9.3f}"
            f"{r['mean_ms']:>9.3f}{r['max_ms']:>9.3f}"
        )
    print(
        f"{'poll target Hz':<18}{'achieved Hz':>12}{'statuses':>10}{'timeouts':>10}"
        f"{'client CPU%':>13}{'sim CPU%':>10}"
    )
    for p in result["poll"]:  # type: ignore[attr-defined]
        target = "unpaced" if p["target_hz"] == 0 else f"{p['target_hz']:g}"
        sim_cpu = "-" if p["sim_cpu_pct"] is None else f"{p['sim_cpu_pct']:.1f}"
        print(
            f"{target:<18}{p['achieved_hz']:>12.1f}{p['statuses']:>10}{p['timeouts']:>10}"
            f"{p['client_cpu_pct']:>13.1f}{sim_cpu:>10}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="write results here")
    ap.add_argument("--requests", type=int, default=2000, help="round trips per RTT series")
    ap.add_argument("--poll-seconds", type=float, default=3.0, help="duration of each poll run")
    ap.add_argument(
        "--poll-hz",
        type=float,
        nargs="+",
        default=[100.0, 250.0, 500.0, 0.0],
        help="poll_hz targets (0 = back-to-back requests)",
    )
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
