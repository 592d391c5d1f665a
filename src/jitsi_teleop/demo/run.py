"""``jitsi-teleop demo``: two simulated Dexters teleoperated through a room, on this machine.

The parent process owns the room server (a private Prosody on loopback ports, or a real Jitsi
deployment with ``--room``), the impairment relay on the data channel's path (``--delay``,
``--jitter``, ``--loss``), the live status and the report. Each site (simulator, robot client,
teleop controller, session) runs in its own process (:mod:`jitsi_teleop.demo.site`); they pair
with a random 32-byte secret made for this run and meet in a room with a random name.
With ``--ros`` (:mod:`.ros_run`) each site is instead the ROS 2 processes the launch file starts.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jitsi_teleop.local_prosody import PROSODY, ProsodyServer, prosody_available
from jitsi_teleop.pairing import Secret
from jitsi_teleop.relay import Impairment, UdpRelay
from jitsi_teleop.relay_faces import FaceServer

from ..ipc import ChildProcess, SiteFailed
from . import messages
from .report import build_report, format_summary
from .scenario import MIN_DURATION_S, build_scenario
from .site import SiteConfig
from .status import LiveStatus, StatusSnapshot

__all__ = ["DemoError", "DemoOptions", "run_demo"]

READY_TIMEOUT_S = 90.0  #: homing, joining, pairing and the data channel, both sites
REPORT_FILES = (
    "summary.json",
    "joints.png",
    "latency.png",
    "force.png",
    "tracking.png",
    "leader.csv",
    "follower.csv",
    "latency_leader.csv",
    "latency_follower.csv",
)
INSTALL_HINT = "install it with `sudo apt-get install prosody` (or run `make setup`)"


class DemoError(Exception):
    """A one-line reason the demo could not run or did not work."""


@dataclass(frozen=True)
class DemoOptions:
    """The command's options (see ``jitsi-teleop demo --help``)."""

    duration_s: float = 20.0
    report_dir: Path = Path("demo-report")
    delay_ms: float = 0.0  #: one-way, each direction, on the data channel's path
    jitter_ms: float = 0.0  #: ± uniform, at most the delay
    loss_pct: float = 0.0
    room_url: str | None = None  #: a Jitsi meeting URL instead of the local server
    seed: int = 1  #: the relay's loss and jitter draws
    status: bool = True  #: live status (redrawn in place on a terminal, a line a second else)
    #: control rate of both sites (the driver's default status rate); the simulators' 1 kHz
    #: physics already take about two thirds of each site's CPU, and 200 Hz was not kept up
    #: on two cores
    control_hz: float = 100.0
    send_hz: float = 100.0
    insecure: bool = False  #: with --room: do not verify TLS (self-signed test deployments)
    #: run each site as the ROS 2 nodes teleop.launch.py starts (:mod:`.ros_run`), not the core
    ros: bool = False
    #: run across simulated NATs (:mod:`jitsi_teleop.netlab`): "KIND" for both sites,
    #: "KIND/KIND" per site, or "blocked" (cone NATs, direct UDP dropped: TURN only)
    network: str | None = None
    #: no server: the sites find each other over multicast DNS on loopback (XEP-0174)
    lan: bool = False

    @property
    def impaired(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)

    def check(self) -> None:
        if not self.duration_s >= MIN_DURATION_S:
            raise DemoError(f"--duration must be at least {MIN_DURATION_S:g} s")
        if self.delay_ms < 0 or self.jitter_ms < 0 or not 0 <= self.loss_pct < 100:
            raise DemoError("need --delay >= 0, --jitter >= 0 and 0 <= --loss < 100")
        if self.jitter_ms > self.delay_ms:
            raise DemoError("--jitter must not exceed --delay (no negative delays)")
        if not 0 < self.send_hz <= self.control_hz:
            raise DemoError("need 0 < send rate <= control rate")
        if self.ros and self.room_url is not None:
            raise DemoError("--room is not available with --ros (a private Prosody only)")
        if self.network is not None:
            if self.ros or self.room_url is not None:
                raise DemoError("--network works with the default demo only (not --ros/--room)")
            try:
                network_cases(self.network)
            except ValueError as exc:
                raise DemoError(f"--network: {exc}") from None
            from jitsi_teleop.netlab.lab import unavailable

            why = unavailable(need_delay=self.impaired)
            if why:
                raise DemoError(f"--network needs root and the netlab tools: {why}")
        if self.lan and self.network is not None:
            raise DemoError("--lan and --network do not go together")
        if self.lan and (self.room_url is not None or self.ros):
            raise DemoError("--lan runs without a server: not with --room or --ros")
        if self.room_url is None and not self.lan and not prosody_available():
            raise DemoError(f"prosody not found ({PROSODY}): {INSTALL_HINT}")


def network_cases(spec: str) -> tuple[str, str, bool]:
    """``--network`` text -> (NAT kind at A, NAT kind at B, direct UDP blocked)."""
    from jitsi_teleop.netlab.internet import nat_kind

    if spec == "blocked":
        return "port-restricted", "port-restricted", True
    kinds = spec.split("/")
    if len(kinds) not in (1, 2):
        raise ValueError(f"{spec!r}: use KIND, KIND/KIND or blocked")
    a, b = nat_kind(kinds[0]), nat_kind(kinds[-1])
    return a, b, False


def run_demo(options: DemoOptions) -> int:
    """Run it; 0 on success, else 1 with a one-line reason on stderr."""
    try:
        options.check()
        if options.ros:
            from .ros_run import run_ros_demo

            summary = run_ros_demo(options)
        else:
            summary = asyncio.run(_run(options))
    except DemoError as exc:
        print(f"jitsi-teleop demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jitsi-teleop demo: interrupted", file=sys.stderr)
        return 130
    print(format_summary(summary, options.report_dir))
    return 0


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _proc_cpu_s(pid: int) -> float | None:
    """CPU seconds of another process (Linux /proc), e.g. Prosody's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def _room_settings(opts: DemoOptions, srv: ProsodyServer | None) -> dict[str, Any]:
    """RoomConfig fields both sites share: the local server, or the deployment at --room."""
    suffix = secrets.token_hex(3)
    if opts.lan:  # LanConfig fields: a LAN room of this run's own, on loopback only
        return {"name": f"demo-{suffix}", "addresses": ["127.0.0.1"]}
    if srv is not None:
        return {"room": f"demo-{suffix}", "domain": srv.domain, "websocket_url": srv.websocket_url}
    from jitsi_teleop.room.discovery import DiscoveryError, discover

    assert opts.room_url is not None
    try:
        settings = await discover(opts.room_url, insecure=opts.insecure)
    except DiscoveryError as exc:
        raise DemoError(f"--room {opts.room_url}: {exc}") from None
    cfg = settings.room_config(room=f"{settings.room}-teleop-demo-{suffix}")
    fields = ("room", "domain", "muc_domain", "websocket_url", "tcp_host", "tcp_port", "focus")
    out = {k: getattr(cfg, k) for k in fields}
    out["insecure"] = opts.insecure
    return out


async def _run(opts: DemoOptions) -> dict[str, Any]:
    out = opts.report_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:  # ours from an earlier run; nothing else in the folder is touched
        (out / name).unlink(missing_ok=True)
    scenario = build_scenario(opts.duration_s)
    cpu0, wall0 = _cpu_s(), time.monotonic()
    try:
        hashes = messages.type_hashes()
    except Exception as exc:
        raise DemoError(f"cannot find the ROS message types (is rclpy installed?): {exc}") from None
    srv: ProsodyServer | None = None
    net: Any = None  #: jitsi_teleop.netlab.internet.Internet with --network
    servers: Any = None
    relay: UdpRelay | None = None
    faces: FaceServer | None = None
    children: list[ChildProcess] = []
    try:
        if opts.network is not None:
            net, servers = await asyncio.to_thread(_start_network, opts)
            srv = servers.prosody
        elif opts.room_url is None and not opts.lan:
            srv = ProsodyServer()
            try:
                await asyncio.to_thread(srv.start)
            except Exception as exc:
                raise DemoError(f"the local Prosody did not start: {exc}") from None
        room = await _room_settings(opts, srv)
        if net is not None:
            room = servers.room_settings(room["room"])
        if opts.impaired and net is None:
            relay, faces = await start_relay(opts)
        secret = Secret(secrets.token_bytes(32))
        where = "a private Prosody (loopback)" if srv else opts.room_url
        if opts.lan:
            where = "the LAN with no server (XEP-0174, multicast DNS on loopback)"
        print(
            f"jitsi-teleop demo: room {room.get('room') or 'lan:' + room['name']!r} on "
            f"{_server_text(opts, srv) if opts.network else where}; "
            f"{_data_path_text(opts)}; "
            f"{opts.duration_s:g} s",
            flush=True,
        )
        for side, role in (("a", "leader"), ("b", "follower")):
            cfg = SiteConfig(
                role=role,
                room={
                    **room,
                    "teleop_role": role,
                    "key_id": secret.key_id,
                    "robot": f"dexter-sim-{role}",
                    "display_name": f"jitsi-teleop demo ({role})",
                },
                secret_hex=secret.key.hex(),
                hashes=hashes,
                duration_s=opts.duration_s,
                out_dir=str(out),
                control_hz=opts.control_hz,
                send_every=max(1, round(opts.control_hz / opts.send_hz)),
                relay_port=faces.port if faces else None,
                relay_side=side,
                network=net is not None,
                lan=opts.lan,
            )
            if net is None:
                child = await ChildProcess.spawn(role, "-m", "jitsi_teleop.demo.site")
            else:  # the site's process inside its namespace, behind its NAT
                proc = await asyncio.create_subprocess_exec(
                    *net.host(side).argv([sys.executable, "-m", "jitsi_teleop.demo.site"]),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                child = ChildProcess(role, proc)
            child.tell(config=asdict(cfg))
            children.append(child)
        sites = await _drive(opts, children)
        extra = _cpu_figures(sites, cpu0, wall0, srv)
        if relay is not None:
            extra["relay"] = asdict(relay.stats)
        if net is not None:
            extra["network"] = net.describe()
            extra["route"] = {role: sites[role].get("route") for role in sites}
        summary = _report(out, scenario, sites, opts, extra)
    except SiteFailed as exc:
        tail = f" (prosody log: {srv.tail(3)!r})" if srv and "Room" in str(exc) else ""
        raise DemoError(f"{exc}{tail}") from None
    finally:
        for c in children:
            await c.close()
        if faces is not None:
            faces.close()
        if relay is not None:
            relay.close()
        if servers is not None:
            await asyncio.to_thread(servers.stop)
        elif srv is not None:
            srv.cleanup()
        if net is not None:
            await asyncio.to_thread(net.down)
    return summary


def _start_network(opts: DemoOptions) -> tuple[Any, Any]:
    """The simulated internet of ``--network``: NATs, router (with the impairment), servers."""
    from jitsi_teleop.netlab.internet import Impairment as NetImpairment
    from jitsi_teleop.netlab.internet import Internet
    from jitsi_teleop.netlab.servers import Servers

    assert opts.network is not None
    a, b, blocked = network_cases(opts.network)
    net = Internet(a, b).up()
    try:
        servers = Servers(net.server).start()
        net.block_direct_udp(blocked)
        if opts.impaired:
            net.impair(NetImpairment(opts.delay_ms, opts.jitter_ms, opts.loss_pct / 100))
    except BaseException:
        net.down()
        raise
    return net, servers


def _server_text(opts: DemoOptions, srv: ProsodyServer | None) -> str:
    if opts.network is not None:
        a, b, blocked = network_cases(opts.network)
        how = ", direct UDP blocked" if blocked else ""
        return f"sites behind {a} / {b} NATs{how}, Prosody + coturn on 198.18.0.2"
    return "a private Prosody (loopback)" if srv else str(opts.room_url)


async def start_relay(opts: DemoOptions) -> tuple[UdpRelay, FaceServer]:
    """The impairment relay the options ask for, and the face server through which the sites'
    processes (demo sites or transport nodes) find its faces."""
    imp = Impairment(opts.delay_ms / 1e3, opts.jitter_ms / 1e3, opts.loss_pct / 100)
    relay = UdpRelay(imp, seed=opts.seed)
    await relay.start()
    faces = FaceServer(relay)
    try:
        await faces.start()
    except BaseException:
        relay.close()
        raise
    return relay, faces


def _data_path_text(opts: DemoOptions) -> str:
    if opts.network is not None:
        imp = f"; router {opts.delay_ms:g} ± {opts.jitter_ms:g} ms, {opts.loss_pct:g} % loss"
        return "ICE across the NATs" + (imp if opts.impaired else "")
    if not opts.impaired:
        return "direct data channel"
    return f"relay {opts.delay_ms:g} ± {opts.jitter_ms:g} ms, {opts.loss_pct:g} % loss each way"


async def _drive(opts: DemoOptions, children: list[ChildProcess]) -> dict[str, dict[str, Any]]:
    """Both sites ready → a common start time → statuses until both are done."""
    leader, follower = children
    ready = await asyncio.gather(
        leader.expect("ready", READY_TIMEOUT_S), follower.expect("ready", READY_TIMEOUT_S)
    )
    paths = {r["path"] for r in ready}
    if paths != {"p2p"}:
        print(f"jitsi-teleop demo: data channel not up, running over {paths}", flush=True)
    t0 = time.monotonic() + 0.3
    for c in children:
        c.tell(go=t0)
    view = LiveStatus(opts.duration_s) if opts.status else None
    snap = StatusSnapshot()
    done: dict[str, dict[str, Any]] = {}
    deadline = opts.duration_s + 60.0

    async def pump(child: ChildProcess) -> None:
        while True:
            msg = await child.get()
            if "status" in msg:
                setattr(snap, child.name, msg["status"])
                if view is not None:
                    view.update(snap)
            elif "done" in msg:
                done[child.name] = msg["done"]
                return

    tasks = [asyncio.ensure_future(pump(c)) for c in children]
    finished, pending = await asyncio.wait(tasks, timeout=deadline, return_when="FIRST_EXCEPTION")
    for t in pending:
        t.cancel()
    for t in finished:
        t.result()  # a site's failure, as SiteFailed
    if pending:
        raise DemoError(f"the sites did not finish within {deadline:g} s")
    if view is not None:
        view.update(snap, force=True)
    return done


def _cpu_figures(
    sites: dict[str, dict[str, Any]], cpu0: float, wall0: float, srv: ProsodyServer | None
) -> dict[str, Any]:
    wall = time.monotonic() - wall0
    cpu: dict[str, float | None] = {
        "leader": sites["leader"].get("cpu_pct"),
        "follower": sites["follower"].get("cpu_pct"),
        "parent": 100.0 * (_cpu_s() - cpu0) / wall,
    }
    if srv is not None and srv.proc is not None:
        used = _proc_cpu_s(srv.proc.pid)
        cpu["prosody"] = None if used is None else 100.0 * used / wall
    note = "percent of one core: sites over the script, parent and prosody over the whole run"
    return {"cpu": cpu, "cpu_note": note}


def _report(
    out: Path,
    scenario: Any,
    sites: dict[str, dict[str, Any]],
    opts: DemoOptions,
    extra: dict[str, Any],
) -> dict[str, Any]:
    for name in ("leader.csv", "follower.csv"):
        with (out / name).open() as f:
            if sum(1 for _ in f) < 3:
                raise DemoError(f"{name}: the site recorded no data")
    if not sites["follower"].get("received", {}).get("/joint_states"):
        raise DemoError("the follower received no leader state")
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    return build_report(out, scenario, sites, options, extra)
