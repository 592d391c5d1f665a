"""``jitsi-teleop bench``: the fast path against baselines, two processes on loopback.

Run: ``python -m jitsi_teleop.benchmark [--json FILE] [--quick]``.

A JointState-sized (276-byte) latest-only stream goes from a sender process to a receiver
process at 100, 500 and 1000 Hz over

- ``p2p``: our data-channel link (:class:`~jitsi_teleop.links.p2p.P2PLink`, aiortc) carrying
  sealed records (:mod:`jitsi_teleop.protect`) on the unordered channel, as a session does;
- ``p2p-dg``: the same link with ``latest_datagrams``: sealed records as plain datagrams over
  an ICE connection of their own (no SCTP, no congestion window);
- ``udp``: raw UDP datagrams between the same two processes (the floor);
- ``zenoh``: eclipse-zenoh pub/sub in peer mode, explicit loopback endpoints, multicast
  scouting off (skipped with a message when the package is not installed).

``p2p``, ``p2p-dg`` and ``udp`` run again through the userspace impairment relay (40 ms
+- 10 ms, 5 % loss; :mod:`jitsi_teleop.relay`). There the figure of merit is the
*age of the newest sample* at the receiver, sampled every millisecond, against the path's own
delay.

Both processes stamp with CLOCK_MONOTONIC, which Linux shares between processes, so one-way
latency needs no clock estimation here. CPU is per process over the measurement window.
The parent process only orchestrates (and runs the relay); signalling goes through it as
JSON lines on the children's stdin/stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jitsi_teleop.ipc import ParentLink
from jitsi_teleop.loop_thread import loop_kind, new_event_loop
from jitsi_teleop.loop_thread import run as run_loop
from jitsi_teleop.relay import Impairment, UdpRelay

PAYLOAD_SIZE = 276  # sensor_msgs/JointState with 6 joints, CDR
_HEAD = struct.Struct(">QI")  # send timestamp (ns), sequence
RATES = (100, 500, 1000)
DELAY_S, JITTER_S, LOSS = 0.040, 0.010, 0.05
BENCH_KEY_A, BENCH_KEY_B, BENCH_TAG = b"A" * 32, b"B" * 32, b"tag!"
ZENOH_REQUIREMENT = "eclipse-zenoh>=1.0"


def _now_ns() -> int:
    return time.monotonic_ns()


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


@dataclass
class Result:
    """One row: transport, rate, impairment, and what the receiver saw."""

    transport: str
    rate_hz: int
    impaired: bool
    sent: int = 0
    received: int = 0
    delivered_hz: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    age_p50_ms: float | None = None
    age_p99_ms: float | None = None
    path_delay_ms: float = 0.0
    cpu_sender_pct: float | None = None
    cpu_receiver_pct: float | None = None
    skipped: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# =============================================================================================
# children: one process per end


class _Child(ParentLink):
    """One end of a measurement: JSON lines with the parent (``say``/``expect``), and the
    receive log."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.recv_ns: list[tuple[int, int, int]] = []  # (recv ns, send ns, seq)

    async def start_stdin(self) -> None:
        await self.start()

    def on_payload(self, data: bytes) -> None:
        if len(data) < _HEAD.size:
            return
        sent, seq = _HEAD.unpack_from(data, 0)
        self.recv_ns.append((_now_ns(), sent, seq))

    async def run_sender(self, send: Callable[[bytes], None]) -> None:
        await self.expect("go")
        rate, duration = self.args.rate, self.args.duration
        period = 1.0 / rate
        pad = bytes(PAYLOAD_SIZE - _HEAD.size)
        c0, t0 = _cpu_s(), time.monotonic()
        n = 0
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= duration:
                break
            due = int(elapsed / period) + 1
            while n < due:  # catch up when the loop woke late (sleep granularity is ~1 ms)
                send(_HEAD.pack(_now_ns(), n) + pad)
                n += 1
            await asyncio.sleep(max(0.0, (n * period) - (time.monotonic() - t0)))
        wall = time.monotonic() - t0
        self.say(done={"sent": n, "cpu_pct": 100 * (_cpu_s() - c0) / wall})

    async def run_receiver(self) -> None:
        await self.expect("go")
        c0, t0 = _cpu_s(), time.monotonic()
        start_ns = _now_ns()
        ages: list[float] = []
        stop = asyncio.ensure_future(self.expect("stop"))
        while not stop.done():
            await asyncio.sleep(0.001)
            if self.recv_ns:
                newest = max(self.recv_ns[-32:], key=lambda r: r[2])
                ages.append((_now_ns() - newest[1]) / 1e6)
        wall = time.monotonic() - t0
        await asyncio.sleep(float(stop.result()))  # late arrivals still count as delivered
        rows = [r for r in self.recv_ns if r[0] >= start_ns]
        lat = [(r - s) / 1e6 for r, s, _ in rows]
        span = (rows[-1][0] - rows[0][0]) / 1e9 if len(rows) > 1 else 0.0
        self.say(
            done={
                "received": len(rows),
                "unique": len({q for *_, q in rows}),
                "delivered_hz": (len(rows) - 1) / span if span > 0 else 0.0,
                "lat_p50": _pct(lat, 50),
                "lat_p99": _pct(lat, 99),
                "age_p50": _pct(ages[len(ages) // 10 :], 50),
                "age_p99": _pct(ages[len(ages) // 10 :], 99),
                "cpu_pct": 100 * (_cpu_s() - c0) / wall,
            }
        )


async def _child_udp(args: argparse.Namespace) -> None:
    c = _Child(args)
    await c.start_stdin()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    c.say(hello={"port": sock.getsockname()[1]})
    peer = await c.expect("peer")
    target = (peer["host"], peer["port"])
    if args.role == "recv":
        c.loop.add_reader(sock.fileno(), lambda: _drain(sock, c.on_payload))
        c.say(ready=True)
        await c.run_receiver()
    else:
        c.say(ready=True)
        await c.run_sender(lambda b: sock.sendto(b, target))


def _drain(sock: socket.socket, handle: Callable[[bytes], None]) -> None:
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        handle(data)


async def _child_p2p(args: argparse.Namespace) -> None:
    from .links.p2p import P2PConfig, P2PDescription, P2PLink
    from .protect import SessionCipher
    from .wire import Frame

    c = _Child(args)
    await c.start_stdin()
    cfg = P2PConfig(
        candidate_filter=lambda a: a == "127.0.0.1",
        latest_datagrams=args.transport == "p2p-dg",
    )
    sender = args.role == "send"
    link = P2PLink("peer", cfg, controlling=sender)
    keys = (BENCH_KEY_A, BENCH_KEY_B) if sender else (BENCH_KEY_B, BENCH_KEY_A)
    cipher = SessionCipher(keys[0], keys[1], BENCH_TAG, window=1 << 16)
    desc = await link.describe()
    c.say(hello=desc.to_dict())
    remote = P2PDescription.from_dict(await c.expect("peer"))
    await link.connect(remote)

    def receive(_nick: str, _sid: int, record: bytes) -> None:
        frame = cipher.try_open(record)
        if frame is not None:
            c.on_payload(frame.payload)

    link.set_receive_callback(receive)
    c.say(ready=True)
    seq = [0]

    def send(payload: bytes) -> None:
        frame = Frame(1, seq[0], _now_ns() // 1000, payload)
        seq[0] += 1
        link.send(1, cipher.seal(frame), latest=True)

    if sender:
        await c.run_sender(send)
        c.say(link=link.stats.as_dict())
        await c.expect("stop")
    else:
        await c.run_receiver()
    await link.close()


async def _child_zenoh(args: argparse.Namespace) -> None:
    import zenoh  # type: ignore[import-not-found]

    c = _Child(args)
    await c.start_stdin()
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("scouting/multicast/enabled", "false")
    if args.role == "recv":
        port = _free_port()
        conf.insert_json5("listen/endpoints", json.dumps([f"tcp/127.0.0.1:{port}"]))
        session = zenoh.open(conf)
        loop = c.loop

        def on_sample(sample: Any) -> None:
            data = bytes(sample.payload.to_bytes())
            loop.call_soon_threadsafe(c.on_payload, data)

        sub = session.declare_subscriber("jitsi_teleop/bench", on_sample)
        c.say(hello={"port": port})
        await c.expect("peer")
        c.say(ready=True)
        await c.run_receiver()
        sub.undeclare()
    else:
        c.say(hello={})
        peer = await c.expect("peer")
        conf.insert_json5("listen/endpoints", "[]")
        conf.insert_json5("connect/endpoints", json.dumps([f"tcp/127.0.0.1:{peer['port']}"]))
        session = zenoh.open(conf)
        pub = session.declare_publisher("jitsi_teleop/bench", express=True)
        await asyncio.sleep(0.5)  # let the peers find each other over the explicit endpoint
        c.say(ready=True)
        await c.run_sender(pub.put)
        await c.expect("stop")
    session.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =============================================================================================
# parent: orchestration


class _Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.msgs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.msgs.put({"eof": True})
                return
            try:
                await self.msgs.put(json.loads(line))
            except ValueError:
                continue

    async def expect(self, key: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.msgs.get(), max(0.1, deadline - time.monotonic()))
            if key in msg:
                return msg[key]
            if "eof" in msg:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                raise RuntimeError(f"child exited: {err.decode(errors='replace')[-2000:]}")

    def tell(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def finish(self) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


async def _spawn(transport: str, role: str, rate: int, duration: float) -> _Proc:
    cmd = [sys.executable, "-m", "jitsi_teleop.benchmark", "--child", transport, role]
    cmd += ["--rate", str(rate), "--duration", str(duration)]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return _Proc(proc)


def _via(relay: Any, side: str, desc: dict[str, Any]) -> dict[str, Any]:
    """A P2P description whose candidates point at the relay faces standing for them."""

    from .links.p2p import parse_candidate

    def faces(cands: list[str]) -> list[str]:
        out = []
        for i, line in enumerate(cands):
            c = parse_candidate(line, i)
            c.host, c.port = relay.face_for(side, c.host, c.port)
            out.append(c.to_sdp())
        return out

    desc = dict(desc, candidates=faces(desc["candidates"]))
    if desc.get("datagram"):
        desc["datagram"] = dict(desc["datagram"], candidates=faces(desc["datagram"]["candidates"]))
    return desc


async def run_one(transport: str, rate: int, duration: float, impaired: bool) -> Result:
    res = Result(transport, rate, impaired, path_delay_ms=DELAY_S * 1e3 if impaired else 0.0)
    relay = None
    if impaired:
        relay = UdpRelay(Impairment(DELAY_S, JITTER_S, LOSS), seed=rate)
        await relay.start()
    recv = await _spawn(transport, "recv", rate, duration)
    send = await _spawn(transport, "send", rate, duration)
    try:
        h_recv = await recv.expect("hello")
        h_send = await send.expect("hello")
        if transport == "udp":
            to_recv, to_send = ("127.0.0.1", h_recv["port"]), ("127.0.0.1", h_send["port"])
            if relay is not None:  # each end is told the relay face that stands for the other
                to_recv = relay.face_for("b", *to_recv)
                to_send = relay.face_for("a", *to_send)
            recv.tell(peer={"host": to_send[0], "port": to_send[1]})
            send.tell(peer={"host": to_recv[0], "port": to_recv[1]})
        else:
            if relay is not None and transport.startswith("p2p"):
                # the signalling path rewrites candidates, as a TURN-less NAT would look
                h_send, h_recv = _via(relay, "a", h_send), _via(relay, "b", h_recv)
            recv.tell(peer=h_send)
            send.tell(peer=h_recv)
        await recv.expect("ready")
        await send.expect("ready")
        await asyncio.sleep(0.3)
        recv.tell(go=True)
        send.tell(go=True)
        s = await send.expect("done", duration + 30)
        # age is sampled only while the sender runs; then arrivals in flight are collected
        recv.tell(stop=0.3 + (DELAY_S * 3 if impaired else 0))
        r = await recv.expect("done", 30)
        if transport.startswith("p2p"):
            res.notes["sender_link"] = await send.expect("link", 10)
        send.tell(stop=True)
    finally:
        for p in (send, recv):
            if p.proc.stdin is not None:
                p.proc.stdin.close()
            await p.finish()
        if relay is not None:
            res.notes["relay"] = asdict(relay.stats)
            relay.close()
    res.sent = s["sent"]
    res.received = r["unique"]
    res.delivered_hz = r["delivered_hz"]
    res.latency_p50_ms, res.latency_p99_ms = r["lat_p50"], r["lat_p99"]
    res.age_p50_ms, res.age_p99_ms = r["age_p50"], r["age_p99"]
    res.cpu_sender_pct, res.cpu_receiver_pct = s["cpu_pct"], r["cpu_pct"]
    return res


def _zenoh_available() -> bool:
    return importlib.util.find_spec("zenoh") is not None


async def run_all(quick: bool, out: Callable[[str], None] = print) -> list[Result]:
    duration = 2.0 if quick else 5.0
    plan: list[tuple[str, int, bool]] = []
    for rate in RATES:
        plan += [("udp", rate, False), ("p2p", rate, False), ("p2p-dg", rate, False)]
        plan += [("zenoh", rate, False)]
    for rate in RATES:
        plan += [("udp", rate, True), ("p2p", rate, True), ("p2p-dg", rate, True)]
    results = []
    for transport, rate, impaired in plan:
        if transport == "zenoh" and not _zenoh_available():
            r = Result(transport, rate, impaired)
            r.skipped = f"eclipse-zenoh is not installed (add the requirement {ZENOH_REQUIREMENT})"
        else:
            for attempt in (1, 2):  # a rare connect timeout must not lose the row
                try:
                    r = await run_one(transport, rate, duration, impaired)
                    break
                except Exception as e:  # one broken row must not lose the others
                    r = Result(transport, rate, impaired, skipped=f"failed: {str(e)[-400:]}")
                    r.notes["attempts"] = attempt
        results.append(r)
        out(_row(r))
    return results


_HEADER = (
    f"{'transport':<9} {'rate':>5} {'path':>10} {'sent':>6} {'recv':>6} {'deliv/s':>8} "
    f"{'lat p50':>8} {'lat p99':>8} {'age p50':>8} {'age p99':>8} {'cpu tx%':>7} {'cpu rx%':>7}"
)


def _f(v: float | None, w: int = 8, d: int = 2) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:>{w}.{d}f}"


def _row(r: Result) -> str:
    path = f"+{r.path_delay_ms:.0f}ms/5%" if r.impaired else "loopback"
    head = f"{r.transport:<9} {r.rate_hz:>5} {path:>10}"
    if r.skipped:
        return f"{head} skipped: {r.skipped}"
    return (
        f"{head} {r.sent:>6} {r.received:>6} {r.delivered_hz:>8.1f} "
        f"{_f(r.latency_p50_ms)} {_f(r.latency_p99_ms)} {_f(r.age_p50_ms)} {_f(r.age_p99_ms)} "
        f"{_f(r.cpu_sender_pct, 7, 1)} {_f(r.cpu_receiver_pct, 7, 1)}"
    )


def _loop_name() -> str:
    loop = new_event_loop()
    try:
        return loop_kind(loop)
    finally:
        loop.close()


def goals(results: list[Result]) -> dict[str, Any]:
    """Issue 14's goals for the used path (``p2p-dg``), per rate, from this run's rows: p50 at
    most twice raw UDP's, p99 at most zenoh's."""
    by = {(r.transport, r.rate_hz): r for r in results if not r.impaired and not r.skipped}
    out: dict[str, Any] = {}
    for rate in (500, 1000):
        dg, udp, zen = by.get(("p2p-dg", rate)), by.get(("udp", rate)), by.get(("zenoh", rate))
        g: dict[str, Any] = {}
        if dg and udp and dg.latency_p50_ms and udp.latency_p50_ms:
            g["p50_ratio_to_udp"] = dg.latency_p50_ms / udp.latency_p50_ms
            g["p50_met"] = g["p50_ratio_to_udp"] <= 2.0
        if dg and zen and dg.latency_p99_ms is not None and zen.latency_p99_ms is not None:
            g["p99_ms"], g["zenoh_p99_ms"] = dg.latency_p99_ms, zen.latency_p99_ms
            g["p99_met"] = dg.latency_p99_ms <= zen.latency_p99_ms
        out[str(rate)] = g
    return out


def goal_lines(g: dict[str, Any]) -> list[str]:
    lines = [f"goals (p2p-dg, event loop: {_loop_name()}):"]
    for rate, v in g.items():
        p50 = (
            f"p50 {v['p50_ratio_to_udp']:.2f}x raw UDP ({'met' if v['p50_met'] else 'NOT met'})"
            if "p50_met" in v
            else "p50: no row"
        )
        p99 = (
            f"p99 {v['p99_ms']:.2f} ms vs zenoh {v['zenoh_p99_ms']:.2f} "
            f"({'met' if v['p99_met'] else 'NOT met'})"
            if "p99_met" in v
            else "p99: no zenoh row"
        )
        lines.append(f"  {rate} Hz: {p50}; {p99}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jitsi-teleop bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--quick", action="store_true", help="2 s per row instead of 5 s")
    p.add_argument(
        "--nat",
        action="store_true",
        help="the rows across simulated NATs instead (root; jitsi_teleop.netlab.bench)",
    )
    p.add_argument("--runs", type=int, default=None, help="with --nat: pairings per NAT case")
    p.add_argument("--child", nargs=2, metavar=("TRANSPORT", "ROLE"), help=argparse.SUPPRESS)
    p.add_argument("--rate", type=int, default=500, help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=5.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.nat:
        from jitsi_teleop.netlab.bench import main as nat_main

        extra = (["--json", args.json] if args.json else []) + (["--quick"] if args.quick else [])
        return nat_main(extra + (["--runs", str(args.runs)] if args.runs else []))
    if args.child:
        args.transport, args.role = args.child
        children = {"udp": _child_udp, "p2p": _child_p2p, "p2p-dg": _child_p2p}
        child = {**children, "zenoh": _child_zenoh}[args.transport]
        run_loop(child(args))  # uvloop where installed: every transport's children alike
        return 0
    print(
        f"{PAYLOAD_SIZE}-byte latest-only stream, two processes on loopback; impaired rows go "
        f"through the relay ({DELAY_S * 1e3:.0f} ms +- {JITTER_S * 1e3:.0f} ms, "
        f"{LOSS * 100:.0f} % loss); latency and age in ms"
    )
    print(_HEADER)
    results = asyncio.run(run_all(args.quick))
    for line in goal_lines(goals(results)):
        print(line)
    if args.json:
        doc = {
            "payload_bytes": PAYLOAD_SIZE,
            "impairment": {"delay_s": DELAY_S, "jitter_s": JITTER_S, "loss": LOSS},
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "results": [asdict(r) for r in results],
            "event_loop": _loop_name(),
            "goals": goals(results),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
