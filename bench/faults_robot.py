"""Fault campaign, part 3: the robot link cut and the robot restarted mid-teleoperation.

A scripted leader drives the follower: the follower's control loop as the teleop node and the
driver run it (:class:`FollowerControl` at 100 Hz, the real :class:`DexterClient` polling `g` at
100 Hz and sending `P` targets, newest wins), against the Dexter simulator in its own process
over real TCP. Mid-motion the bench breaks the link, several times each way:

* ``silent``: every packet to and from the robot's port dropped (iptables DROP), sockets left
  open: only a read timeout can tell;
* ``abrupt``: both ends' sockets reset (``ss -K``, RST) and new connections refused (REJECT
  tcp-reset) for the cut;
* ``restart``: the simulator process killed (SIGKILL) and started again; it comes back at its
  power-on pose (all joints zero, as the robot boots), not where the follower last sent it.

For each: when the driver reported the link down, when the follower held, how many commands
were acknowledged after the fault (goal 0: none may look delivered into a dead link) or issued
while the driver reported the link down (goal 0), when the driver reconnected after the link
returned, and, on resume, the largest joint step commanded, the first one measured from the
arm's real pose (goal: within the follower's velocity limit; the follower re-syncs to the
measured pose and ramps toward the leader).

Everything runs inside a private network namespace (``unshare -n``: loopback only, connected to
nothing; its iptables rules die with it), so it needs root; without root it says so and skips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faults_common import DEFAULT_JSON, HERE, ROOT, print_table, stamp, write_section

NETNS_ENV = "JT_FAULTS_ROBOT_NETNS"
KINDS = ("silent", "abrupt", "restart")
CONTROL_HZ = 100.0
#: leader motion about the ready pose: amplitude (rad) per joint, one frequency, phases
AMPLITUDE = (0.3, 0.2, 0.2, 0.3, 0.3)
FREQUENCY_HZ = 0.15
PHASES = (0.0, 1.1, 2.3, 0.7, 1.9)


# ---------------------------------------------------------------------------------------------
# the network and the robot process


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class LinkCutter:
    """Cuts the robot's TCP port inside this (private) network namespace."""

    def __init__(self, port: int) -> None:
        self.port = str(port)
        self.cut: str | None = None

    def silent(self) -> None:
        for side in ("--dport", "--sport"):
            _run("iptables", "-I", "INPUT", "-p", "tcp", side, self.port, "-j", "DROP")
        self.cut = "silent"

    def refuse(self) -> None:
        """From now on every packet to or from the port is answered with a RST."""
        for side in ("--dport", "--sport"):
            _run(
                "iptables", "-I", "INPUT", "-p", "tcp", side, self.port,
                "-j", "REJECT", "--reject-with", "tcp-reset",
            )  # fmt: skip
        self.cut = "abrupt"

    def reset(self) -> None:
        """RST both ends of the live connection(s) (after :meth:`refuse`: the abrupt cut)."""
        for side in ("dport", "sport"):
            _run("ss", "-K", "-t", side, "=", f":{self.port}")

    def restore(self) -> None:
        _run("iptables", "-F", "INPUT")
        self.cut = None


class SimProcess:
    """``dexter-sim`` in a process of its own, so it can be killed like a robot losing power."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self, pose: str = "home", timeout: float = 30.0) -> None:
        """``pose``: where the arm is at power-on: home (all zero, as the robot boots) or ready
        (the bench's start pose, tool down)."""
        cmd = [sys.executable, "-m", "dexter_driver.sim", "--port", str(self.port)]
        cmd += ["--start", pose, "--log-level", "ERROR"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "dexter-sim listening on ..."
        if "listening" not in line or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError(f"dexter-sim did not start: {line!r}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# the follower under test


def leader_pose(t: float) -> tuple[float, ...]:
    from dexter_driver.kinematics import READY

    w = 2.0 * math.pi * FREQUENCY_HZ
    return tuple(q + a * math.sin(w * t + p) for q, a, p in zip(READY, AMPLITUDE, PHASES))


@dataclass
class Command:
    """One `P` target handed to the driver."""

    t: float  #: when the control tick produced it
    q: tuple[float, ...]  #: the target, rad
    measured: tuple[float, ...]  #: the arm's last measured pose at that tick
    link_up: bool = True  #: the driver reported the robot link up when the tick produced it
    ok: bool | None = None  #: None while in flight
    done: float | None = None
    error: str = ""


class Follower:
    """The follower site's loop: driver (client, poll, newest-wins sender) + teleop control."""

    def __init__(self, port: int, request_timeout_s: float, resync: bool = True) -> None:
        from dexter_driver.client import ClientConfig, DexterClient
        from jitsi_teleop.teleop.interpolation import InterpolatorConfig
        from jitsi_teleop.teleop.loop import FollowerControl
        from jitsi_teleop.teleop.safety import SafetyConfig

        self.client = DexterClient(
            "127.0.0.1",
            port,
            ClientConfig(poll_hz=CONTROL_HZ, timeout_s=request_timeout_s, connect_timeout_s=30.0),
        )
        self.safety_config = SafetyConfig.hdi()
        self.control = FollowerControl(self.safety_config, InterpolatorConfig())
        self.client.add_status_listener(self._on_status)
        self.client.add_link_listener(self._on_link)
        self.resync = resync  #: False: the follower as it was before the re-sync (ablation)
        self.q: tuple[float, ...] | None = None
        self.q_at = -math.inf
        self.links: list[tuple[float, bool]] = []  #: (time, up)
        self.link_up = True  #: as the driver last reported it
        self.holds: list[float] = []  #: times the follower went into a robot hold
        self.commands: list[Command] = []
        self.resuming: list[tuple[float, bool]] = []  #: (time, still ramping) per tick
        self.resyncs: list[float] = []  #: times the reference restarted at the measured pose
        self.t0 = 0.0
        self._pending: Command | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _on_status(self, st: Any) -> None:
        self.q = tuple(float(v) for v in st.measured_angles[:5])
        self.q_at = time.monotonic()

    def _on_link(self, up: bool) -> None:
        now = time.monotonic()
        self.links.append((now, up))
        self.link_up = up
        if not up and self.resync:
            self.control.robot_lost(now)  # hold now; staleness would catch it too
            self._note_hold(now)

    def _note_hold(self, now: float) -> None:
        if self.control.robot_down and (not self.holds or self.holds[-1] < self._last_resync):
            self.holds.append(now)

    _last_resync = -math.inf

    async def start(self) -> None:
        await self.client.start()
        self.t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._sender())]

    async def stop(self) -> None:
        from jitsi_teleop.tasks import cancel_and_wait

        for t in self._tasks:  # the sender's cancel can be lost in wait_for: hung for good
            await cancel_and_wait(t)
        await self.client.stop()

    async def _ticker(self) -> None:
        from jitsi_teleop.teleop.loop import LeaderState
        from jitsi_teleop.teleop.safety import SafetyState

        period = 1.0 / CONTROL_HZ
        deadline = time.monotonic()
        while True:
            now = time.monotonic()
            lq = leader_pose(now - self.t0)
            self.control.on_leader_state(LeaderState(now, lq, 0.0), now)
            if self.q is not None:
                was_down = self.control.robot_down
                at = self.q_at if self.resync else None
                tick = self.control.tick(now, self.q, np.zeros(5), measured_at=at)
                if was_down and not self.control.robot_down:
                    self._last_resync = now
                    self.resyncs.append(now)
                self._note_hold(now)
                self.resuming.append((now, self.control.safety._resuming))
                out = tick.command
                if out.state is not SafetyState.IDLE and not self.control.robot_down:
                    q = tuple(float(v) for v in out.command)
                    self._pending = Command(now, q, self.q, self.link_up)
                    self._wake.set()
            deadline = max(deadline + period, time.monotonic())
            await asyncio.sleep(deadline - time.monotonic())

    async def _sender(self) -> None:
        """As the driver node's: send the newest target; older ones pending are replaced."""
        from dexter_driver.client import DexterError
        from dexter_driver.protocol import ProtocolError

        while True:
            await self._wake.wait()
            self._wake.clear()
            cmd, self._pending = self._pending, None
            if cmd is None:
                continue
            self.commands.append(cmd)
            try:
                await self.client.set_position_target(cmd.q)
            except (DexterError, ProtocolError, ValueError) as exc:
                cmd.ok, cmd.error = False, type(exc).__name__
            else:
                cmd.ok = True
            cmd.done = time.monotonic()


# ---------------------------------------------------------------------------------------------
# one fault


@dataclass
class FaultResult:
    kind: str
    index: int
    outage_s: float  #: how long the link was cut / the robot was down (to "listening")
    link_down_s: float | None = None  #: fault -> the driver reported the link down (None: kept)
    hold_s: float | None = None  #: fault -> the follower held (robot hold)
    reconnect_s: float | None = None  #: link back (or robot listening) -> driver connected
    resume_s: float | None = None  #: link back -> the follower re-synced to the measured pose
    acked_while_cut: int = 0  #: commands reported delivered while nothing could reach the robot
    late_delivered: int = 0  #: issued before the hold, delivered by TCP after the link returned
    #: commands the follower issued while the driver reported the robot link down (the hold
    #: must last until the link is back and the arm measured again)
    issued_while_down: int = 0
    failed_commands: int = 0  #: commands that raised (the caller knew)
    gap_rad: float | None = None  #: |arm at re-sync - last command before the fault|, max joint
    first_step_rad: float | None = None  #: |first command after re-sync - arm then|
    max_step_rad: float | None = None  #: largest step between commands while resuming
    max_velocity_rad_s: float | None = None  #: largest commanded joint velocity while resuming
    catch_up_s: float | None = None  #: re-sync -> back on the leader (resume ramp ended)
    errors: list[str] = field(default_factory=list)

    def failures(self, limits: Limits) -> list[str]:
        bad = list(self.errors)
        need = ["hold_s", "resume_s", "first_step_rad"]
        if self.kind != "silent":  # a short silent cut may be ridden out by TCP itself
            need += ["link_down_s", "reconnect_s"]
        bad += [f"no {name}" for name in need if getattr(self, name) is None]
        if self.acked_while_cut:
            bad.append(f"{self.acked_while_cut} commands acknowledged while cut")
        if self.issued_while_down:
            bad.append(f"{self.issued_while_down} commands issued while the link was down")
        if self.first_step_rad is not None and self.first_step_rad > limits.first_step_rad:
            bad.append(f"first step {self.first_step_rad:.4f} rad > {limits.first_step_rad:.4f}")
        v = self.max_velocity_rad_s
        if v is not None and v > limits.velocity_rad_s * 1.001:
            bad.append(f"commanded {v:.3f} rad/s > limit {limits.velocity_rad_s:.3f}")
        return bad


@dataclass(frozen=True)
class Limits:
    """What the resume may do: the first command within one resume-velocity tick of the arm's
    measured pose, and no faster than the follower's velocity limit after it (the step between
    two commands sent is that velocity times the time between them: the sender skips ticks
    while the robot is slow to answer, so a step alone says little)."""

    first_step_rad: float  #: resume_velocity x max_step_s
    velocity_rad_s: float  #: max_velocity


async def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def run_fault(
    kind: str, index: int, f: Follower, sim: SimProcess, cutter: LinkCutter, outage: float
) -> FaultResult:
    res = FaultResult(kind, index, round(outage, 3))
    n_links, n_cmds = len(f.links), len(f.commands)
    last_before = f.commands[-1].q if f.commands else None
    loop = asyncio.get_running_loop()
    if kind == "abrupt":
        cutter.refuse()  # nothing gets through any more; then the RSTs are the cut
    t_fault = time.monotonic()
    if kind == "silent":
        cutter.silent()
    elif kind == "abrupt":
        cutter.reset()
    else:
        await loop.run_in_executor(None, sim.kill)
    t_dead = time.monotonic()  # from here nothing the robot says can arrive
    await asyncio.sleep(outage)
    if kind == "restart":
        await loop.run_in_executor(None, sim.start)
    else:
        cutter.restore()
    t_back = time.monotonic()
    res.outage_s = round(t_back - t_fault, 3)

    def resumed() -> list[float]:
        """Re-syncs after the link returned (the ablation has none: reconnects instead)."""
        if f.resync:
            return [t for t in f.resyncs if t > t_back]
        return [t for t, u in f.links[n_links:] if u and t > t_back]

    if not await _wait(lambda: bool(resumed()), 60.0):
        res.errors.append("did not resume within 60 s of the link's return")
    downs = [t for t, u in f.links[n_links:] if not u]
    if downs:
        res.link_down_s = max(0.0, downs[0] - t_fault)
    ups = [t for t, u in f.links[n_links:] if u and t >= t_back]
    if ups:
        res.reconnect_s = ups[0] - t_back
    holds = [t for t in f.holds if t >= t_fault]
    if holds:
        res.hold_s = holds[0] - t_fault
    t_resync = next(iter(resumed()), None)
    if t_resync is None:
        return res
    res.resume_s = t_resync - t_back
    # the resume: until the ramp has ended (or 15 s), then 0.3 s more
    await _wait(lambda: f.resuming and f.resuming[-1][0] > t_resync and not f.resuming[-1][1], 15.0)
    await asyncio.sleep(0.3)
    ramp_end = next((t for t, r in f.resuming if t > t_resync and not r), None)
    if ramp_end is not None:
        res.catch_up_s = ramp_end - t_resync
    cmds = f.commands[n_cmds:]
    res.failed_commands = sum(1 for c in cmds if c.ok is False)
    res.acked_while_cut = sum(1 for c in cmds if c.ok and c.done and t_dead < c.done < t_back)
    res.late_delivered = sum(
        1 for c in cmds if c.ok and c.done and t_fault < c.t < t_back and c.done > t_back
    )
    res.issued_while_down = sum(1 for c in cmds if not c.link_up)
    after = [c for c in cmds if c.t >= t_resync]
    if not after:
        res.errors.append("no command after the re-sync")
        return res
    first = after[0]
    measured = np.asarray(first.measured)
    res.first_step_rad = float(np.max(np.abs(np.asarray(first.q) - measured)))
    if last_before is not None:
        res.gap_rad = float(np.max(np.abs(measured - np.asarray(last_before))))
    window_end = (ramp_end or after[-1].t) + 0.3
    steps, speeds = [res.first_step_rad], []
    resumed = [c for c in after if c.t <= window_end]
    for a, b in itertools.pairwise(resumed):
        step = float(np.max(np.abs(np.asarray(b.q) - np.asarray(a.q))))
        steps.append(step)
        speeds.append(step / max(b.t - a.t, 1e-6))
    res.max_step_rad = max(steps)
    res.max_velocity_rad_s = max(speeds) if speeds else None
    return res


# ---------------------------------------------------------------------------------------------
# the campaign


def _stats(values: list[float]) -> dict[str, float | None]:
    v = sorted(x for x in values if x is not None)
    if not v:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(v), 4), "max": round(v[-1], 4)}


async def campaign(args: argparse.Namespace) -> dict[str, Any]:
    _run("ip", "link", "set", "lo", "up")
    port = _free_port()
    sim = SimProcess(port)
    cutter = LinkCutter(port)
    rng = random.Random(args.seed)
    sim.start("ready")
    f = Follower(port, args.request_timeout, resync=not args.no_resync)
    c = f.safety_config
    limits = Limits(c.resume_velocity * c.max_step_s, float(np.max(c.max_velocity)))
    plan = [k for _ in range(args.repeat) for k in args.kinds]
    rng.shuffle(plan)
    results: list[FaultResult] = []
    try:
        await f.start()
        await asyncio.sleep(args.settle)
        for i, kind in enumerate(plan):
            await asyncio.sleep(rng.uniform(args.settle, 2 * args.settle))  # a random moment
            outage = rng.uniform(args.min_outage, args.max_outage)
            r = await run_fault(kind, i, f, sim, cutter, outage)
            results.append(r)
            bad = r.failures(limits)
            print(
                f"{i + 1:3d}/{len(plan)} {kind:8s} out {r.outage_s:5.2f}s  "
                f"down {_fmt(r.link_down_s)}  hold {_fmt(r.hold_s)}  "
                f"reconnect {_fmt(r.reconnect_s)}  resume {_fmt(r.resume_s)}  "
                f"gap {_fmt(r.gap_rad)}  "
                f"first {_fmt(r.first_step_rad, 4)}  max step {_fmt(r.max_step_rad, 4)}  "
                f"max {_fmt(r.max_velocity_rad_s, 3)} rad/s"
                + (f"  FAIL: {'; '.join(bad)}" if bad else ""),
                flush=True,
            )
    finally:
        await f.stop()
        with contextlib.suppress(Exception):
            cutter.restore()
        sim.kill()
    return _section(args, results, limits, f)


def _fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _section(
    args: argparse.Namespace, results: list[FaultResult], limits: Limits, f: Follower
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in args.kinds:
        rs = [r for r in results if r.kind == kind]
        summary[kind] = {
            "n": len(rs),
            "passed": sum(1 for r in rs if not r.failures(limits)),
            "outage_s": _stats([r.outage_s for r in rs]),
            "link_down_s": _stats([r.link_down_s for r in rs]),
            "hold_s": _stats([r.hold_s for r in rs]),
            "reconnect_s": _stats([r.reconnect_s for r in rs]),
            "link_kept": sum(1 for r in rs if r.link_down_s is None),
            "resume_s": _stats([r.resume_s for r in rs]),
            "acked_while_cut": sum(r.acked_while_cut for r in rs),
            "late_delivered": sum(r.late_delivered for r in rs),
            "issued_while_down": sum(r.issued_while_down for r in rs),
            "failed_commands": sum(r.failed_commands for r in rs),
            "gap_rad": _stats([r.gap_rad for r in rs]),
            "first_step_rad": _stats([r.first_step_rad for r in rs]),
            "max_step_rad": _stats([r.max_step_rad for r in rs]),
            "max_velocity_rad_s": _stats([r.max_velocity_rad_s for r in rs]),
            "catch_up_s": _stats([r.catch_up_s for r in rs]),
        }
    c = f.safety_config
    return {
        **stamp(),
        "command": " ".join(["python bench/faults.py", *sys.argv[1:]]),
        "resync": not args.no_resync,
        "quick": bool(args.quick),
        "config": {
            "control_hz": CONTROL_HZ,
            "request_timeout_s": args.request_timeout,
            "measurement_timeout_s": c.measurement_timeout_s,
            "max_velocity_rad_s": c.max_velocity,
            "resume_velocity_rad_s": c.resume_velocity,
            "max_step_s": c.max_step_s,
            "first_step_limit_rad": limits.first_step_rad,
            "velocity_limit_rad_s": limits.velocity_rad_s,
            "outage_s": [args.min_outage, args.max_outage],
            "repeat": args.repeat,
            "seed": args.seed,
            "leader": {"amplitude_rad": AMPLITUDE, "frequency_hz": FREQUENCY_HZ},
        },
        "summary": summary,
        "faults": [asdict(r) for r in results],
        "ok": all(not r.failures(limits) for r in results),
    }


def print_summary(section: dict[str, Any]) -> None:
    headers = ["fault", "n", "passed", "down p50/max s", "hold p50/max s", "reconnect p50/max s"]
    headers += ["acked", "issued", "gap max rad", "first step max", "max step", "max rad/s"]
    headers += ["catch-up p50 s"]
    rows = []
    for kind, s in section["summary"].items():

        def pm(key: str, d: dict = s) -> str:
            return f"{_fmt(d[key]['p50'])}/{_fmt(d[key]['max'])}"

        rows.append(
            [
                kind,
                s["n"],
                s["passed"],
                pm("link_down_s"),
                pm("hold_s"),
                pm("reconnect_s"),
                s["acked_while_cut"],
                s["issued_while_down"],
                _fmt(s["gap_rad"]["max"], 3),
                _fmt(s["first_step_rad"]["max"], 4),
                _fmt(s["max_step_rad"]["max"], 4),
                _fmt(s["max_velocity_rad_s"]["max"], 3),
                _fmt(s["catch_up_s"]["p50"]),
            ]
        )
    print()
    print_table(headers, rows)
    cfg = section["config"]
    print(
        f"limits: first step {cfg['first_step_limit_rad']:.3f} rad, commanded velocity "
        f"{cfg['velocity_limit_rad_s']:.2f} rad/s; ok: {section['ok']}"
    )


def _run_robot(args: argparse.Namespace) -> int:
    if args.quick:
        args.repeat = 1
        args.max_outage = min(args.max_outage, 1.5)
        args.settle = min(args.settle, 0.8)
    if os.environ.get(NETNS_ENV) != "1":
        return _reexec_in_netns()
    section = asyncio.run(campaign(args))
    print_summary(section)
    if args.json:
        write_section(Path(args.json), "robot", section)
        print(f"wrote the robot section of {args.json}")
    return 0 if section["ok"] else 1


def _reexec_in_netns() -> int:
    """Run this same command again inside a new, private network namespace (loopback only)."""
    missing = [t for t in ("unshare", "iptables", "ss", "ip") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        why = "needs root" if os.geteuid() != 0 else f"needs {', '.join(missing)}"
        print(f"faults robot: skipped ({why}: the cuts are iptables rules in a network namespace)")
        return 77
    env = dict(os.environ, **{NETNS_ENV: "1"})
    cmd = ["unshare", "-n", "--", sys.executable, str(HERE / "faults.py"), *sys.argv[1:]]
    return subprocess.call(cmd, env=env)


def add_parser(sub: argparse._SubParsersAction) -> None:
    rb = sub.add_parser("robot", help="robot link cut and robot restarted mid-teleoperation")
    rb.add_argument("--repeat", type=int, default=10, help="faults of each kind")
    rb.add_argument("--min-outage", type=float, default=0.3, help="s")
    rb.add_argument("--max-outage", type=float, default=3.0, help="s")
    rb.add_argument("--settle", type=float, default=1.5, help="s of tracking before a fault")
    rb.add_argument("--request-timeout", type=float, default=1.0, help="driver's reply timeout, s")
    rb.add_argument("--seed", type=int, default=1)
    rb.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="faults")
    rb.add_argument(
        "--no-resync",
        action="store_true",
        help="ablation: the follower without the robot-link hold and re-sync (as before)",
    )
    rb.add_argument("--quick", action="store_true", help="CI: one fault of each kind")
    rb.add_argument("--json", default=str(DEFAULT_JSON), help="'' to write nothing")
    rb.set_defaults(run=_run_robot)
