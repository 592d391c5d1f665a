"""One site of the demo, as its own process: a Dexter simulator on loopback, the robot client,
the teleop role, and a session with the peer site over a room.

Run by the parent (``python -m jitsi_teleop.demo.site``): the first stdin line is the
:class:`SiteConfig` as JSON (it carries the pairing secret, so it is not on the command line);
then it says ``ready`` once homed, paired and on the data channel, waits for ``go`` (a shared
CLOCK_MONOTONIC start time), runs the script, says ``status`` a few times a second and ``done``
at the end, with its time series written to the report folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dexter_driver.client import ClientConfig, DexterClient
from dexter_driver.sim import DexterSim, SimConfig
from jitsi_teleop.carriers.lan import make_room, session_carrier
from jitsi_teleop.linklocal.carrier import LanConfig, LanRoom
from jitsi_teleop.links.p2p import P2PConfig
from jitsi_teleop.netlab.paths import route_of
from jitsi_teleop.pairing import Secret
from jitsi_teleop.relay_faces import ipv4_loopback, remote_advertise
from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.room.room import Room
from jitsi_teleop.session import PATH_P2P, Session, SessionConfig

from ..ipc import ParentLink, run_child
from . import messages as m
from .roles import FollowerRole, LeaderRole
from .scenario import build_scenario

__all__ = ["SiteConfig", "main", "run_site"]

log = logging.getLogger(__name__)

HOMING_SPEED_ARCSEC = 360_000  #: `S AngularSpeed` for the move to the start pose (100 °/s)
HOMING_ACCELERATION = 20  #: `S Acceleration` (× 0.5 rad/s² in the simulator)
STATUS_PERIOD_S = 0.25
#: per robot request; above the client's 1 s default, as both sites start on shared cores
ROBOT_TIMEOUT_S = 3.0
PAIR_TIMEOUT_S = 60.0


@dataclass
class SiteConfig:
    """Everything a site process needs; sent by the parent as one JSON line."""

    role: str  #: "leader" or "follower"
    room: dict[str, Any]  #: RoomConfig fields
    secret_hex: str
    hashes: dict[str, str]  #: ROS type → type hash
    duration_s: float
    out_dir: str
    control_hz: float = 100.0
    send_every: int = 1  #: states are sent every this many control ticks
    relay_port: int | None = None  #: the parent's relay face server, when impaired
    relay_side: str = "a"
    p2p_wait_s: float = 30.0
    #: running inside a site namespace of jitsi_teleop.netlab (``demo --network``): gather on
    #: the namespace's interfaces and take STUN/TURN from the room, as on the internet
    network: bool = False
    lan: bool = False  #: ``room`` holds LanConfig fields: no server, XEP-0174 on the LAN
    #: the script repeats every this many seconds (the soak: an hour of the same motion)
    cycle_s: float | None = None
    #: keep only this many newest rows of the time series (the soak: bounded memory)
    keep_rows: int | None = None


def _session_config(cfg: SiteConfig) -> SessionConfig:
    if cfg.network:
        return SessionConfig(p2p=P2PConfig(), discover_ice_servers=True)
    advertise = None
    if cfg.relay_port is not None:
        advertise = remote_advertise(cfg.relay_port, cfg.relay_side)
    p2p = P2PConfig(candidate_filter=ipv4_loopback, advertise=advertise)
    return SessionConfig(p2p=p2p, discover_ice_servers=False)


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def _home(client: DexterClient, q0: tuple[float, ...]) -> None:
    """Move to the start pose with the robot's own `a` move, then let the servo settle."""
    await client.set_parameter("AngularSpeed", HOMING_SPEED_ARCSEC)
    await client.set_parameter("Acceleration", HOMING_ACCELERATION)
    await client.move_all_joints(q0)
    await client.wait_until_idle()
    for _ in range(100):
        st = await client.status()
        if max(abs(a - b) for a, b in zip(st.measured_angles, q0)) < 1e-3:
            return
        await asyncio.sleep(0.02)


async def _wait_p2p(session: Session, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while session.path != PATH_P2P and loop.time() < deadline:
        await asyncio.sleep(0.05)


def _write_csv(path: Path, header: tuple[str, ...] | list[str], rows: list[Any]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _stream_counts(session: Session) -> dict[str, dict[str, int]]:
    """Per received topic, over both paths: ``received`` (delivered), ``lost`` (sequence gaps:
    lost on the way or discarded on arrival) and ``discarded`` (on arrival: superseded by a
    newer sample, or stale)."""
    snap = session.stats()
    out: dict[str, dict[str, int]] = {}
    remote = session.remote_descriptors
    for path in snap.paths.values():
        for sid, st in path.streams.items():
            d = remote.get(sid)
            if d is None:
                continue
            c = out.setdefault(d.topic, {"received": 0, "lost": 0, "discarded": 0})
            c["received"] += st.received
            c["lost"] += st.lost
            c["discarded"] += sum(st.drops.values())
    return out


def _out_counts(session: Session, out: dict[int, list[int]]) -> dict[str, dict[str, int]]:
    """Per sent topic, what became of the samples handed to the session (the in-process core
    has no shaper and no ROS queue in front of it: nothing is superseded before the link)."""
    res = {}
    for sid, (taken, went) in out.items():
        d = session.descriptors.get(sid)
        if d is not None:
            res[d.topic] = {"taken": taken, "sent": went, "link_busy": taken - went}
    return res


async def run_site(cfg: SiteConfig, link: ParentLink) -> None:
    scenario = build_scenario(cfg.cycle_s or cfg.duration_s)
    sim = DexterSim(SimConfig(port=0))
    await sim.start()
    client = DexterClient("127.0.0.1", sim.port, ClientConfig(timeout_s=ROBOT_TIMEOUT_S))
    room: Room | LanRoom | None = None
    session: Session | None = None
    role: LeaderRole | FollowerRole
    try:
        await client.start()
        cls = LeaderRole if cfg.role == "leader" else FollowerRole
        role = cls(scenario, client, sim, cfg.control_hz)
        if cfg.keep_rows is not None:
            role.rec.keep_last(cfg.keep_rows)
        room = make_room(LanConfig(**cfg.room) if cfg.lan else RoomConfig(**cfg.room))
        streams = m.Streams(cfg.hashes, cfg.control_hz / cfg.send_every)
        session = Session(
            session_carrier(room),
            _session_config(cfg),
            Secret(bytes.fromhex(cfg.secret_hex)),
            cfg.role,
            streams.sends(cfg.role),
            expected=streams.expects(cfg.role),
            on_receive=role.on_receive,
        )
        role.session = session
        await _home(client, scenario.q0)
        await room.join()
        await role.prepare()
        await session.start()
        try:
            await session.wait_paired(PAIR_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RuntimeError(
                f"did not pair with the other site within {PAIR_TIMEOUT_S:g} s"
            ) from None
        await _wait_p2p(session, cfg.p2p_wait_s)
        link.say(ready={"path": session.path, "nick": room.nick})
        t0 = float(await link.expect("go"))
        meta = await _run_script(cfg, role, session, link, t0)
        with contextlib.suppress(Exception):
            await role.finish()
        await _report(cfg, role, session, link, meta)
    finally:
        if session is not None:
            await session.close()
        if room is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.close(), 5)
        await client.stop()
        await sim.stop()


async def _run_script(
    cfg: SiteConfig, role: LeaderRole | FollowerRole, session: Session, link: ParentLink, t0: float
) -> dict[str, Any]:
    """Tick at ``control_hz`` on the shared clock from ``t0`` for ``duration_s``. A tick up to
    one period late runs at once (the event loop's timers are millisecond-grained, so at 500 Hz
    most wake-ups overshoot a little and the rate would sag to ~400 Hz if each were dropped);
    a tick more than one period late is not made up (the next one is on the grid again), and
    counted."""
    role.t0 = t0
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    period = 1.0 / cfg.control_hz
    progress = {"ticks": 0, "late_ticks": 0}
    status_task = asyncio.ensure_future(_status_loop(role, session, link, progress))
    cpu0, k, ticks, late = _cpu_s(), 0, 0, 0
    try:
        while (now := time.monotonic()) - t0 < cfg.duration_s:
            if cfg.cycle_s:  # the script starts over each cycle
                role.t0 = t0 + cfg.cycle_s * math.floor((now - t0) / cfg.cycle_s)
            await role.tick(now, send=ticks % cfg.send_every == 0)
            ticks += 1
            progress["ticks"] = ticks
            k += 1
            wait = t0 + k * period - time.monotonic()
            if wait < -period:
                late += 1
                progress["late_ticks"] = late
                k = math.ceil((time.monotonic() - t0) / period)
                wait = t0 + k * period - time.monotonic()
            await asyncio.sleep(max(0.0, wait))
    finally:
        status_task.cancel()
    return {
        "ticks": ticks,
        "late_ticks": late,
        "tick_hz": ticks / cfg.duration_s,
        "cpu_pct": 100.0 * (_cpu_s() - cpu0) / cfg.duration_s,
    }


async def _status_loop(
    role: LeaderRole | FollowerRole, session: Session, link: ParentLink, progress: dict[str, int]
) -> None:
    prev: dict[str, int] = {}
    prev_t = time.monotonic()
    lat_mark = 0
    while True:
        await asyncio.sleep(STATUS_PERIOD_S)
        now = time.monotonic()
        got = sum(role.received.values())
        rate = (got - sum(prev.values())) / max(now - prev_t, 1e-6)
        prev, prev_t = dict(role.received), now
        new = min(role.rec.latency_count - lat_mark, len(role.rec.latency))
        recent = [r[2] for r in itertools.islice(reversed(role.rec.latency), new)]
        recent = [v for v in recent if not math.isnan(v)]
        lat_mark = role.rec.latency_count
        snap = session.stats()
        ages = [
            s.newest_age_us
            for p in snap.paths.values()
            for s in p.streams.values()
            if s.newest_age_us is not None
        ]
        link.say(
            status={
                "t": now - role.t0,
                "phase": role.scenario.phase_at(now - role.t0),
                "path": session.path,
                "route": route_of(session),
                "rx_hz": rate,
                "latency_ms": sorted(recent)[len(recent) // 2] if recent else None,
                "age_ms": min(ages) / 1e3 if ages else None,
                "refused": _refused(snap.refusals),
                "unproven": snap.refusals.get("unproven_claimants", 0),
                "counters": _counters(role, session, snap, progress),
                **role.status(),
            }
        )


def _counters(
    role: LeaderRole | FollowerRole, session: Session, snap: Any, progress: dict[str, int]
) -> dict[str, Any]:
    """Running totals since the start: what a long run is watched by (the soak samples them)."""
    drops: dict[str, int] = {}
    lost = 0
    for path in snap.paths.values():
        for reason, n in path.drops.items():
            drops[reason] = drops.get(reason, 0) + n
        for st in path.streams.values():
            lost += st.lost
            for reason, n in st.drops.items():
                drops[reason] = drops.get(reason, 0) + n
    out: dict[str, Any] = {
        **progress,
        "sent": role.sent,
        "sent_out": role.sent_out,
        "received": sum(role.received.values()),
        "lost": lost,
        "drops": drops,
        "failovers": snap.failovers,
        "path_changes": len(session.path_events),
        "sim_dropped_steps": role.sim.dropped_steps,
    }
    if isinstance(role, FollowerRole):
        out["holds"] = role.control.safety.counters.holds
    return out


def _refused(refusals: dict[str, int]) -> int:
    """Everything the room tried that this site refused (not the bookkeeping entries)."""
    return sum(v for k, v in refusals.items() if k not in _NOT_REFUSALS)


_NOT_REFUSALS = ("unproven_claimants", "candidates", "offers")


async def _report(
    cfg: SiteConfig,
    role: LeaderRole | FollowerRole,
    session: Session,
    link: ParentLink,
    meta: dict[str, Any],
) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / f"{cfg.role}.csv", role.columns, role.rec.rows)
    _write_csv(
        out / f"latency_{cfg.role}.csv",
        ("t", "topic", "latency_ms", "true_latency_ms", "path"),
        role.rec.latency,
    )
    snap = session.stats()
    done: dict[str, Any] = {
        **meta,
        "path": session.path,
        "route": route_of(session),
        "sent": role.sent,
        "sent_out": role.sent_out,
        "received": role.received,
        "rejected": role.rejected,
        "streams": _stream_counts(session),
        "out": _out_counts(session, role.out),
        "rtt_ms": {k: (v / 1e3 if v is not None else None) for k, v in snap.rtt_us.items()},
        "failovers": snap.failovers,
        "pairing": {"timings": snap.timings, "refusals": snap.refusals},
        "path_events": [
            {"at": e.at, "old": e.old, "new": e.new, "reason": e.reason}
            for e in session.path_events
        ],
        "robot_requests": role.client.stats.requests,
        "robot_rtt_ms": (role.client.stats.last_rtt_s or 0.0) * 1e3,
        "sim_dropped_steps": role.sim.dropped_steps,
    }
    if isinstance(role, FollowerRole):
        done["verdicts"] = role.verdicts
        done["safety"] = {
            "holds": role.control.safety.counters.holds,
            "rejected": role.control.safety.counters.rejected,
        }
    else:
        done["pc_dissipated_j"] = role.control.passivity.dissipated
    link.say(done=done)


async def _main() -> int:
    return await run_child(SiteConfig, run_site, "site")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    return asyncio.run(_main())


if __name__ == "__main__":
    sys.exit(main())
