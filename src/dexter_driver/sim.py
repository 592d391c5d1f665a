"""Dexter simulator: speaks the robot's TCP protocol (port 50000) over a simple joint physics.

A client cannot tell it from DexRun on the wire (docs/dexter-protocol.md): one client at a time,
one recv() chunk = one message, exactly one 240-byte reply per accepted request, error 1 for an
unknown oplet, no reply plus error 2 next time for a missing ';', a 16-deep `a` queue whose reply
is withheld while full, `F`/`w`/`RunFile` waiting for the queue to drain, `P` as an offset to the
`a` position, boundaries that clamp silently (FW 2020) and an idle connection dropped after 30 s.

Physics per joint, integrated in fixed 1 ms substeps, lazily up to "now" on every request and by
a slow background tick (so CPU stays low; a resting arm costs nothing):

* keep mode: a rate-limited set-point drags the joint through a finite servo stiffness,
  ``I q'' = K (sp - q) - D q' + tau``; an external torque deflects the arm by tau/K, which shows in
  DELTA (sp - q) and PID_DELTA (filtered), the driver's effort proxy.
* follow-me mode: an admittance ``I q'' = tau - B q'`` that moves under external torque;
  FORCE_DELTA = measured - commanded.
* tau = scripted external torque + J^T (external wrench + wall contact force + hand)
  + injected ``S JnForce v`` x :data:`SIM_FORCE_NM_PER_UNIT`.

Gravity is not modelled (the real arm's steppers hold it). Not simulated: `M`/`T`/`C` (on-board
IK), `W`/`r` (files), the `g 1`/`g 2` layouts (all `g` answer the g0 layout); those oplets are
answered with error 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import math
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dexter_driver import kinematics
from dexter_driver.protocol import (
    COMMAND_REG,
    COMMAND_REG_FOLLOW_ME,
    COMMAND_REG_KEEP_POSITION,
    ERR_BAD_OPLET,
    ERR_NO_TERMINATOR,
    FOLLOW_ME_FILE,
    HDI_JOINT_LIMITS_RAD,
    JOINT_COUNT,
    KEEP_POSITION_FILE,
    MESSAGE_SIZE,
    PARAMETERS,
    DexterStatus,
    ErrorCode,
    JointStatus,
    MalformedRequest,
    MissingTerminator,
    ParsedRequest,
    arcsec_to_rad,
    atoi,
    encode_status,
    legacy_speed_to_arcsec,
    parse_request,
    rad_to_arcsec,
    servo_status,
    us_to_s,
)

__all__ = [
    "A_QUEUE_DEPTH",
    "SIM_ACCEL_RAD_S2_PER_UNIT",
    "SIM_FORCE_NM_PER_UNIT",
    "DexterPhysics",
    "DexterSim",
    "Hand",
    "SimConfig",
    "Wall",
    "main",
]

log = logging.getLogger(__name__)

#: Sim convention: `S JnForce v` adds a joint torque of v x 0.001 N·m (the robot's unit is
#: undocumented raw FPGA S19). Positive pushes the joint in its positive direction.
SIM_FORCE_NM_PER_UNIT = 0.001
#: Sim convention: `S Acceleration n` (firmware 0..63, default 3) = n x 0.5 rad/s².
SIM_ACCEL_RAD_S2_PER_UNIT = 0.5
#: Depth of the FPGA `a` FIFO; the move being executed occupies a slot until it finishes.
A_QUEUE_DEPTH = 16
DEFAULT_ANGULAR_SPEED_ARCSEC = 108000  #: 30 deg/s, the firmware default
DEFAULT_ACCELERATION = 3
SERVO_SPEED_UNITS_S = 600.0  #: J6/J7 Dynamixel slew (sim)
_OPLET_EMPTY_ECHO = ";"  #: what the firmware echoes for an empty payload (the char at the payload)


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings; the defaults behave like an HDI on its bench."""

    host: str = "127.0.0.1"
    port: int = 50000
    control_port: int | None = None  #: JSON-lines force scripting on loopback; None = off
    rate: float = 1.0  #: simulated seconds per wall second; 0 = time only moves with step()
    dt: float = 0.001  #: physics substep, s
    tick_hz: float = 20.0  #: background integration tick
    idle_timeout_s: float = 30.0  #: the robot's SO_RCVTIMEO: a silent client is dropped
    p_max_speed: float = 1.5  #: `P` set-point velocity cap, rad/s
    stiffness: tuple[float, ...] = (400.0, 400.0, 300.0, 80.0, 80.0)  #: servo, N·m/rad
    inertia: tuple[float, ...] = (0.08, 0.08, 0.05, 0.01, 0.01)  #: kg·m²
    follow_damping: tuple[float, ...] = (2.0, 2.0, 1.5, 0.5, 0.5)  #: N·m·s/rad
    pid_filter_s: float = 0.02  #: PID_DELTA = DELTA low-passed with this time constant
    #: if real-time integration falls further behind (a starved process), the excess is dropped:
    #: catching up on all of it would make each reply later still, until the client gives up
    max_catch_up_s: float = 0.1
    links: kinematics.LinkLengths = kinematics.HDI
    #: J1..J5 at power-on, rad (the robot boots at all zero; a bench set-up may start the
    #: simulated arm at a ready pose instead, as if it had been moved there)
    start_q: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.start_q is not None and (
            len(self.start_q) != JOINT_COUNT or not all(math.isfinite(v) for v in self.start_q)
        ):
            raise ValueError(f"start_q needs {JOINT_COUNT} finite angles")
        if self.rate < 0 or self.dt <= 0 or self.tick_hz <= 0 or self.idle_timeout_s <= 0:
            raise ValueError("need rate >= 0, dt > 0, tick_hz > 0 and idle_timeout_s > 0")
        if self.p_max_speed <= 0 or self.pid_filter_s <= 0:
            raise ValueError("p_max_speed and pid_filter_s must be > 0")
        for name in ("stiffness", "inertia", "follow_damping"):
            values = getattr(self, name)
            if len(values) != JOINT_COUNT or min(values) <= 0:
                raise ValueError(f"{name} needs {JOINT_COUNT} positive values")


@dataclass
class _Move:
    """One queued coordinated `a` move with a trapezoidal speed profile."""

    target: np.ndarray
    start: np.ndarray | None = None
    t0: float = 0.0
    dist: float = 0.0
    t_acc: float = 0.0
    v_peak: float = 0.0
    duration: float = 0.0

    def begin(self, t: float, position: np.ndarray, speed: float, accel: float) -> None:
        """Plan the profile from ``position`` (the largest joint sets the timing)."""
        self.start = position.copy()
        self.t0 = t
        self.dist = float(np.max(np.abs(self.target - position)))
        if self.dist <= 0.0:
            return
        if self.dist >= speed * speed / accel:
            self.v_peak, self.t_acc = speed, speed / accel
            self.duration = self.dist / speed + self.t_acc
        else:
            self.t_acc = math.sqrt(self.dist / accel)
            self.v_peak = accel * self.t_acc
            self.duration = 2.0 * self.t_acc

    def fraction(self, t: float) -> float:
        """Progress 0..1 along the path at time ``t``."""
        if self.dist <= 0.0:
            return 1.0
        tau = t - self.t0
        if tau >= self.duration:
            return 1.0
        a = self.v_peak / self.t_acc
        if tau < self.t_acc:
            s = 0.5 * a * tau * tau
        elif tau < self.duration - self.t_acc:
            s = 0.5 * self.v_peak * self.t_acc + self.v_peak * (tau - self.t_acc)
        else:
            rem = self.duration - tau
            s = self.dist - 0.5 * a * rem * rem
        return min(1.0, s / self.dist)


@dataclass(frozen=True)
class Hand:
    """An operator's hand on the tool: a spring-damper pulling the tip toward ``target`` (base
    frame, m) and a grip holding the wrist joints J4/J5 at ``wrist`` (rad). This is what holds
    a follow-me arm still, and what force feedback pushes against."""

    target: tuple[float, float, float]
    wrist: tuple[float, float]
    stiffness: float = 300.0  #: N/m
    damping: float = 15.0  #: N·s/m
    wrist_stiffness: float = 1.5  #: N·m/rad
    wrist_damping: float = 0.05  #: N·m·s/rad

    def load(
        self, q: np.ndarray, qd: np.ndarray, tip: np.ndarray, jac_v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the hand applies now: the force on the tip (N, base frame) and the grip's
        torque on J4/J5 (N·m); ``jac_v`` is the Jacobian's linear part at ``q``."""
        force = self.stiffness * (np.asarray(self.target) - tip) - self.damping * (jac_v @ qd)
        grip = self.wrist_stiffness * (np.asarray(self.wrist) - q[3:5])
        return force, grip - self.wrist_damping * qd[3:5]


@dataclass(frozen=True)
class Wall:
    """A stiff plane obstacle for the tool tip: free side n·p >= offset (base frame, m)."""

    normal: tuple[float, float, float]
    offset: float
    stiffness: float  #: N/m
    damping: float  #: N·s/m


@dataclass
class DexterPhysics:
    """Joint-space state and its integration (no I/O; the server owns the clock)."""

    config: SimConfig = field(default_factory=SimConfig)
    t: float = 0.0
    follow: bool = False

    def __post_init__(self) -> None:
        n = JOINT_COUNT
        c = self.config
        q0 = np.zeros(n) if c.start_q is None else np.array(c.start_q, dtype=float)
        self.q = q0.copy()
        self.qd = np.zeros(n)
        self.setpoint = q0.copy()
        self.traj = q0.copy()  # the `a` commanded path (position_at of the queue)
        self.a_goal = q0.copy()  # last accepted `a` target (SENT)
        self.p_offset = np.zeros(n)
        self.low = np.array([lo for lo, _ in HDI_JOINT_LIMITS_RAD])
        self.high = np.array([hi for _, hi in HDI_JOINT_LIMITS_RAD])
        self.hard_low, self.hard_high = self.low.copy(), self.high.copy()
        self.queue: deque[_Move] = deque()
        self.speed = arcsec_to_rad(DEFAULT_ANGULAR_SPEED_ARCSEC)
        self.accel = DEFAULT_ACCELERATION * SIM_ACCEL_RAD_S2_PER_UNIT
        self.force_units = np.zeros(n)
        self.ext_torque = np.zeros(n)
        self.ext_wrench = np.zeros(6)
        self.wall: Wall | None = None
        self.hand: Hand | None = None
        self.pid = np.zeros(n)
        self.k = np.array(c.stiffness)
        self.inertia = np.array(c.inertia)
        self.d_keep = 2.0 * np.sqrt(self.k * self.inertia)  # critically damped servo
        self.d_follow = np.array(c.follow_damping)
        self.servo_units = np.array([512.0, 0.0])  # J6, J7
        self.servo_target = self.servo_units.copy()

    # -- commands ---------------------------------------------------------------------------

    def queue_full(self) -> bool:
        return len(self.queue) >= A_QUEUE_DEPTH

    def enqueue(self, target: Sequence[float]) -> None:
        """Queue an `a` move; out-of-boundary targets are clamped silently (FW 2020)."""
        goal = np.clip(np.asarray(target, dtype=float), self.low, self.high)
        self.a_goal = goal
        self.queue.append(_Move(goal))

    def set_offset(self, offset: Sequence[float]) -> None:
        self.p_offset = np.asarray(offset, dtype=float)

    def set_follow(self, follow: bool) -> None:
        """Switch mode; the keep set-point starts where the arm is and slews back to the goal."""
        self.follow = follow
        self.setpoint = self.q.copy()
        self.pid[:] = 0.0

    def external_torque(self) -> np.ndarray:
        """Total external joint torque now: scripted torque + J^T (wrench + wall + hand)."""
        tau = self.ext_torque.copy()
        wall, wrench, hand = self.wall, self.ext_wrench, self.hand
        if wall is None and hand is None and not wrench.any():
            return tau
        tip, jac = kinematics.tip_and_jacobian(self.q, self.config.links)  # one FK pass
        w = wrench.copy()
        if hand is not None:
            force, grip = hand.load(self.q, self.qd, tip, jac[:3])
            w[:3] += force
            tau[3:5] += grip
        if wall is not None:
            n = np.asarray(wall.normal)
            pen = self._wall_penetration(tip)
            if pen > 0.0:
                vn = float(n @ (jac[:3] @ self.qd))
                w[:3] += n * max(0.0, wall.stiffness * pen - wall.damping * vn)
        return tau + jac.T @ w

    def _wall_penetration(self, tip: np.ndarray | None = None) -> float:
        """How far (m) the tool tip (at ``q``, or ``tip`` when known) is inside the wall;
        <= 0 when free or no wall."""
        if self.wall is None:
            return 0.0
        if tip is None:
            tip = kinematics.tool_position(self.q, self.config.links)
        return self.wall.offset - float(np.asarray(self.wall.normal) @ tip)

    def at_rest(self) -> bool:
        """Nothing would change in a step: lets the server skip integrating an idle arm."""
        if self.hand or self.queue or self.ext_wrench.any() or self._wall_penetration() > 0.0:
            return False
        if self.ext_torque.any() or self.force_units.any() or np.abs(self.qd).max() > 1e-9:
            return False
        if not np.all(self.servo_units == self.servo_target):
            return False
        if self.follow:
            return True
        goal = self.goal()
        if np.abs(goal - self.setpoint).max() > 0 or np.abs(self.setpoint - self.q).max() > 1e-9:
            return False
        return bool(np.abs(self.pid).max() < 1e-9)

    # -- integration ------------------------------------------------------------------------

    def run(self, steps: int, dt: float) -> None:
        """Integrate ``steps`` substeps of ``dt``; an arm at rest only advances the clock."""
        for i in range(steps):
            if self.at_rest():
                self.q = self.setpoint.copy() if not self.follow else self.q
                self.qd[:] = 0.0
                self.pid[:] = 0.0
                self.t += (steps - i) * dt
                return
            self.step(dt)

    def step(self, dt: float) -> None:
        self._advance_queue()
        tau = self.external_torque() + self.force_units * SIM_FORCE_NM_PER_UNIT
        if self.follow:
            acc = (tau - self.d_follow * self.qd) / self.inertia
        else:
            goal = self.goal()
            lim = self.config.p_max_speed * dt
            self.setpoint += np.clip(goal - self.setpoint, -lim, lim)
            acc = (self.k * (self.setpoint - self.q) - self.d_keep * self.qd + tau) / self.inertia
        self.qd += acc * dt
        self.q += self.qd * dt
        hit = (self.q < self.hard_low) | (self.q > self.hard_high)
        if hit.any():
            self.q = np.clip(self.q, self.hard_low, self.hard_high)
            self.qd[hit] = 0.0
        if self.follow:
            self.setpoint = self.q.copy()
        alpha = min(1.0, dt / self.config.pid_filter_s)
        self.pid += (self.delta() - self.pid) * alpha
        step = SERVO_SPEED_UNITS_S * dt
        self.servo_units += np.clip(self.servo_target - self.servo_units, -step, step)
        self.t += dt

    def _advance_queue(self) -> None:
        while self.queue:
            move = self.queue[0]
            if move.start is None:
                move.begin(self.t, self.traj, self.speed, self.accel)
            frac = move.fraction(self.t)
            assert move.start is not None
            self.traj = move.start + (move.target - move.start) * frac
            if frac < 1.0:
                return
            self.queue.popleft()

    # -- what the status reports ------------------------------------------------------------

    def delta(self) -> np.ndarray:
        return np.zeros(JOINT_COUNT) if self.follow else self.setpoint - self.q

    def goal(self) -> np.ndarray:
        """The commanded position: `a` path + `P` offset, inside the boundaries."""
        return np.clip(self.traj + self.p_offset, self.low, self.high)

    def force_delta(self) -> np.ndarray:
        return self.q - self.goal() if self.follow else np.zeros(JOINT_COUNT)

    def joint_status(self) -> tuple[JointStatus, ...]:
        delta, fdelta = self.delta(), self.force_delta()
        return tuple(
            JointStatus(
                measured_angle=float(self.q[i]),
                position_at=float(self.setpoint[i]),
                delta=float(delta[i]),
                pid_delta=float(self.pid[i]),
                force_delta=float(fdelta[i]),
                sent=rad_to_arcsec(float(self.a_goal[i])),
                sin=2048 + round(1500 * math.sin(self.q[i] * 50.0)),
                cos=2048 + round(1500 * math.cos(self.q[i] * 50.0)),
            )
            for i in range(JOINT_COUNT)
        )


# ------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------


class DexterSim:
    """The simulated robot: TCP server(s), clock and physics. Use ``async with`` or start/stop."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.physics = DexterPhysics(self.config)
        self._server: asyncio.AbstractServer | None = None
        self._control: asyncio.AbstractServer | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._client_lock = asyncio.Lock()
        self._pending_error = 0
        self._t0 = time.monotonic()
        self._manual_s = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.params: dict[str, tuple[str, ...]] = {}
        self.registers: dict[int, int] = {}
        self.connections = 0  #: connections served so far (not counting ones still waiting)
        self.requests = 0  #: requests received (including ones that got no reply)
        self.dropped_steps = 0
        self._dropped_logged = -math.inf

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; raises OSError (e.g. EADDRINUSE) if a port cannot be bound."""
        c = self.config
        self._t0 = time.monotonic()
        self.physics.t = self._manual_s
        self._server = await asyncio.start_server(self._serve_client, c.host, c.port)
        if c.control_port is not None:
            try:
                self._control = await asyncio.start_server(
                    self._serve_control, "127.0.0.1", c.control_port
                )
            except OSError:
                await self.stop()
                raise
        self._tick_task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        for srv in (self._server, self._control):
            if srv is not None:
                srv.close()
        for w in list(self._writers):
            w.close()
        handlers = [t for t in self._handlers if not t.done() and t is not asyncio.current_task()]
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=1.0)
            for t in pending:
                t.cancel()
        self._handlers.clear()
        for srv in (self._server, self._control):
            if srv is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.wait_closed(), 1.0)
        self._server = self._control = None

    async def __aenter__(self) -> DexterSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound robot port (useful with port 0)."""
        assert self._server is not None, "simulator not started"
        return self._server.sockets[0].getsockname()[1]

    @property
    def control_port(self) -> int | None:
        return None if self._control is None else self._control.sockets[0].getsockname()[1]

    # -- clock ------------------------------------------------------------------------------

    def sim_now(self) -> float:
        """Simulated time the physics should have reached."""
        return self._manual_s + (time.monotonic() - self._t0) * self.config.rate

    def advance(self) -> None:
        """Integrate the physics up to :meth:`sim_now` in fixed substeps."""
        dt = self.config.dt
        behind = self.sim_now() - self.physics.t
        steps = int(behind / dt + 1e-9)
        if steps <= 0:
            return
        max_steps = int(self.config.max_catch_up_s / dt)
        if steps > max_steps:
            self.dropped_steps += steps - max_steps
            self.physics.t += (steps - max_steps) * dt
            steps = max_steps
            now = time.monotonic()
            if now - self._dropped_logged > 5.0:
                self._dropped_logged = now
                log.warning(
                    "simulator starved of CPU: %.0f ms of physics skipped so far",
                    self.dropped_steps * dt * 1e3,
                )
        self.physics.run(steps, dt)

    def step(self, seconds: float) -> None:
        """Advance simulated time by ``seconds`` now (deterministic with ``rate=0``)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"step needs a finite duration >= 0, got {seconds!r}")
        self.advance()
        steps = round(seconds / self.config.dt)
        self._manual_s += steps * self.config.dt
        self.physics.run(steps, self.config.dt)

    async def _tick(self) -> None:
        period = 1.0 / self.config.tick_hz
        while True:
            await asyncio.sleep(period)
            try:
                self.advance()
            except Exception:  # keep serving; the next request will show the problem
                log.exception("physics integration failed")

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait (integrating every few ms) until ``done()``; how the robot blocks a reply."""
        period = min(1.0 / self.config.tick_hz, 0.005)
        self.advance()
        while not done():
            await asyncio.sleep(period)
            self.advance()

    # -- scripted forces --------------------------------------------------------------------

    def set_external_torque(self, tau: Sequence[float]) -> None:
        """External joint torques J1..J5, N·m (replaces the previous ones)."""
        self.advance()
        self.physics.ext_torque = _finite_vector(tau, JOINT_COUNT, "torque")

    def set_external_wrench(
        self, fx: float, fy: float, fz: float, tx: float = 0.0, ty: float = 0.0, tz: float = 0.0
    ) -> None:
        """External wrench at the tool tip, base frame (N, N·m), mapped through the Jacobian."""
        self.advance()
        self.physics.ext_wrench = _finite_vector((fx, fy, fz, tx, ty, tz), 6, "wrench")

    def set_wall(
        self,
        normal: Sequence[float],
        offset: float,
        stiffness: float = 20000.0,
        damping: float = 200.0,
    ) -> None:
        """A stiff plane the tool tip cannot pass: free side normal·p >= offset (base frame)."""
        n = _finite_vector(normal, 3, "normal")
        norm = float(np.linalg.norm(n))
        if norm == 0.0:
            raise ValueError("wall normal must be non-zero")
        if not (math.isfinite(offset) and stiffness >= 0 and damping >= 0):
            raise ValueError("wall offset must be finite, stiffness and damping >= 0")
        self.advance()
        self.physics.wall = Wall(tuple(n / norm), float(offset), float(stiffness), float(damping))

    def set_hand(
        self,
        target: Sequence[float] | None = None,
        stiffness: float = 300.0,
        damping: float = 15.0,
        wrist_stiffness: float = 1.5,
        wrist_damping: float = 0.05,
    ) -> None:
        """Put (or move) an operator's hand on the tool: the tip is pulled toward ``target``
        (base frame, m; default: where the tip is now) and the wrist held where it is."""
        self.advance()
        p = self.physics
        tip = kinematics.tool_position(p.q, self.config.links) if target is None else target
        t = _finite_vector(tip, 3, "hand target")
        gains = (stiffness, damping, wrist_stiffness, wrist_damping)
        if not all(math.isfinite(g) and g >= 0 for g in gains):
            raise ValueError("hand stiffness and damping must be finite and >= 0")
        wrist = p.hand.wrist if p.hand is not None else (float(p.q[3]), float(p.q[4]))
        p.hand = Hand((float(t[0]), float(t[1]), float(t[2])), wrist, *map(float, gains))

    def clear_hand(self) -> None:
        self.advance()
        self.physics.hand = None

    def clear_wall(self) -> None:
        self.advance()
        self.physics.wall = None

    def clear_external(self) -> None:
        """Remove every scripted force (torque, wrench, wall, hand)."""
        self.advance()
        self.physics.hand = None
        self.physics.ext_torque = np.zeros(JOINT_COUNT)
        self.physics.ext_wrench = np.zeros(6)
        self.physics.wall = None

    def joint_angles(self) -> tuple[float, ...]:
        """Current measured J1..J5 (rad), after integrating up to now."""
        self.advance()
        return tuple(float(v) for v in self.physics.q)

    def tool_position(self) -> tuple[float, float, float]:
        self.advance()
        p = kinematics.tool_position(self.physics.q, self.config.links)
        return (float(p[0]), float(p[1]), float(p[2]))

    # -- robot connection -------------------------------------------------------------------

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            async with self._client_lock:  # the firmware serves one accepted socket at a time
                self.connections += 1
                await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # a leaf task being shut down; re-raising only makes asyncio log it (3.11)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            try:
                chunk = await asyncio.wait_for(
                    reader.read(MESSAGE_SIZE), self.config.idle_timeout_s
                )
            except asyncio.TimeoutError:
                log.info("no request for %.1f s: dropping the client", self.config.idle_timeout_s)
                return
            if not chunk:
                return
            reply = await self.handle_message(chunk)
            if reply is not None:
                writer.write(reply)
                await writer.drain()

    async def handle_message(self, chunk: bytes) -> bytes | None:
        """Process one received chunk like DexRun; returns the reply, or None (no `;`)."""
        self.requests += 1
        self.advance()
        try:
            req = parse_request(chunk)
        except MissingTerminator:
            self._pending_error = ERR_NO_TERMINATOR
            return None
        except MalformedRequest:
            req = ParsedRequest(0, 0, 0, "", "", ())
        err = await self._dispatch(req)
        self.advance()
        base = err or self._pending_error
        self._pending_error = 0
        return encode_status(self._status(req, base))

    def _status(self, req: ParsedRequest, base_error: int) -> DexterStatus:
        p = self.physics
        # the robot's clock at the moment the reported angles hold: physics stops up to a
        # substep (or a skipped catch-up) short of now, and a client differentiating angles
        # over its ~10 ms poll would read that as 10 % velocity noise
        lag_s = max(0.0, self.sim_now() - p.t) / self.config.rate if self.config.rate else 0.0
        return DexterStatus(
            job=req.job,
            instruction_id=req.instruction_id,
            clock_s=time.time() - lag_s,
            oplet=req.oplet or _OPLET_EMPTY_ECHO,
            error=ErrorCode.make(base_error),
            joints=p.joint_status(),
            j6=servo_status(round(p.servo_units[0]), j6=True),
            j7=servo_status(round(p.servo_units[1]), j6=False),
        )

    async def _dispatch(self, req: ParsedRequest) -> int:
        handler = {
            "g": self._op_status,
            "h": self._op_status,
            "G": self._op_status,
            "a": self._op_move,
            "R": self._op_move,
            "P": self._op_pid_move,
            "S": self._op_set,
            "w": self._op_write,
            "F": self._op_finish,
            "z": self._op_sleep,
        }.get(req.oplet)
        if handler is None:
            log.debug("unknown or unsimulated oplet %r", req.oplet)
            return ERR_BAD_OPLET
        return await handler(req)

    async def _op_status(self, req: ParsedRequest) -> int:
        return 0

    async def _op_move(self, req: ParsedRequest) -> int:
        """`a` absolute / `R` relative queued move; the reply waits while the FIFO is full."""
        if len(req.args) < JOINT_COUNT:
            return ERR_BAD_OPLET
        values = np.array([arcsec_to_rad(atoi(a)) for a in req.args[:JOINT_COUNT]])
        await self._until(lambda: not self.physics.queue_full())
        p = self.physics
        p.enqueue(p.a_goal + values if req.oplet == "R" else values)
        self._set_servos(req.args[JOINT_COUNT:])
        return 0

    async def _op_pid_move(self, req: ParsedRequest) -> int:
        """`P`: immediate; the joint values are an offset to the `a` commanded position."""
        if len(req.args) < JOINT_COUNT:
            return ERR_BAD_OPLET
        self.physics.set_offset([arcsec_to_rad(atoi(a)) for a in req.args[:JOINT_COUNT]])
        self._set_servos(req.args[JOINT_COUNT:])
        return 0

    def _set_servos(self, args: Sequence[str]) -> None:
        for i, tok in enumerate(args[:2]):
            if tok.upper() not in ("N", "NAN"):
                self.physics.servo_target[i] = float(atoi(tok))

    async def _op_set(self, req: ParsedRequest) -> int:
        if len(req.args) < 2:
            return ERR_BAD_OPLET
        name = _parameter_name(req.args[0])
        if name is None:
            return ERR_BAD_OPLET
        values = req.args[1:]
        p = self.physics
        if name == "RunFile":
            return await self._run_file(values[0])
        self.params[name] = values
        if name.endswith("Force") and name[1:-5].isdigit():
            p.force_units[int(name[1]) - 1] = _float(values[0])
        elif name == "AngularSpeed":
            p.speed = max(arcsec_to_rad(_float(values[0])), 1e-6)
        elif name == "MaxSpeed":
            p.speed = max(arcsec_to_rad(legacy_speed_to_arcsec(_float(values[0]))), 1e-6)
        elif name == "Acceleration":
            p.accel = max(_float(values[0]), 0.1) * SIM_ACCEL_RAD_S2_PER_UNIT
        elif "Boundry" in name:
            j = int(name[1]) - 1
            bound = arcsec_to_rad(atoi(values[0]))
            (p.high if name.endswith("High") else p.low)[j] = bound
        return 0

    async def _run_file(self, filename: str) -> int:
        """The two mode files the driver uses; both write registers, so they wait for the FIFO."""
        if filename not in (FOLLOW_ME_FILE, KEEP_POSITION_FILE):
            log.warning("RunFile %r is not simulated", filename)
            return ERR_BAD_OPLET
        await self._until(lambda: not self.physics.queue)
        self.physics.set_follow(filename == FOLLOW_ME_FILE)
        return 0

    async def _op_write(self, req: ParsedRequest) -> int:
        """`w addr value`: waits for the FIFO to flush; COMMAND_REG selects the mode."""
        if len(req.args) < 2:
            return ERR_BAD_OPLET
        await self._until(lambda: not self.physics.queue)
        addr, value = atoi(req.args[0]), atoi(req.args[1])
        self.registers[addr] = value
        if addr == COMMAND_REG and value in (COMMAND_REG_FOLLOW_ME, COMMAND_REG_KEEP_POSITION):
            self.physics.set_follow(value == COMMAND_REG_FOLLOW_ME)
        return 0

    async def _op_finish(self, req: ParsedRequest) -> int:
        await self._until(lambda: not self.physics.queue)
        return 0

    async def _op_sleep(self, req: ParsedRequest) -> int:
        us = atoi(req.args[0]) if req.args else 0
        await asyncio.sleep(us_to_s(max(us, 0)))
        return 0

    # -- control port (JSON lines) ------------------------------------------------------------

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """JSON lines: one object in, one out. Ops: torque, wrench, wall, clear, state."""
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                writer.write((json.dumps(self.control(line)) + "\n").encode())
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def control(self, line: bytes | str) -> dict[str, object]:
        """Apply one control command; the reply says ok or why not, plus the state."""
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise ValueError("expected a JSON object")
            op = msg.get("op")
            if op == "torque":
                self.set_external_torque(msg["values"])
            elif op == "wrench":
                self.set_external_wrench(*msg["values"])
            elif op == "wall":
                self.set_wall(
                    msg["normal"],
                    float(msg["offset"]),
                    float(msg.get("stiffness", 20000.0)),
                    float(msg.get("damping", 200.0)),
                )
            elif op == "hand":
                self.set_hand(
                    msg.get("target"),
                    float(msg.get("stiffness", 300.0)),
                    float(msg.get("damping", 15.0)),
                )
            elif op == "clear":
                self.clear_external()
            elif op != "state":
                raise ValueError(f"unknown op {op!r} (torque, wrench, wall, hand, clear, state)")
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            # OverflowError: an integer too large for float(); RecursionError: nested JSON
            return {"ok": False, "error": str(exc)}
        p = self.physics
        return {
            "ok": True,
            "t": p.t,
            "mode": "follow" if p.follow else "keep",
            "q": self.joint_angles(),
            "tip": self.tool_position(),
            "queue": len(p.queue),
        }


def _finite_vector(values: Sequence[float], n: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} needs {n} finite numbers, got {values!r}") from None
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} needs {n} finite values, got {values!r}")
    return arr


def _float(token: str) -> float:
    try:
        v = float(token)
    except ValueError:
        return float(atoi(token))
    return v if math.isfinite(v) else 0.0


_PARAMETER_BY_INDEX = {i: name for name, i in PARAMETERS.items() if i is not None}


def _parameter_name(token: str) -> str | None:
    """An `S` name or its index, as the firmware accepts either; None if unknown."""
    if token in PARAMETERS:
        return token
    if token.lstrip("-").isdigit():
        # atoi like the firmware: int() refuses what isdigit() lets through ('²', "--5")
        return _PARAMETER_BY_INDEX.get(atoi(token))
    return None


# ------------------------------------------------------------------------------------------
# Console script
# ------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="dexter-sim",
        description="Dexter robot simulator (DexRun TCP protocol).",
        epilog=(
            "Control port (loopback), one JSON object per line, one reply line each: "
            '{"op": "torque", "values": [5 x N·m]}, {"op": "wrench", "values": [fx, fy, fz, tx, '
            'ty, tz]} (tool tip, base frame), {"op": "wall", "normal": [x, y, z], "offset": m, '
            '"stiffness": N/m, "damping": N·s/m}, {"op": "hand", "target": [x, y, z] (default: '
            'where the tip is), "stiffness": N/m, "damping": N·s/m} (an operator holding the '
            'tool), {"op": "clear"}, {"op": "state"}.'
        ),
    )
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    ap.add_argument("--port", type=int, default=50000, help="robot port (default 50000)")
    ap.add_argument("--control-port", type=int, default=None, help="JSON-lines force scripting")
    ap.add_argument(
        "--rate", type=float, default=1.0, help="simulated seconds per wall second (default 1)"
    )
    ap.add_argument("--idle-timeout", type=float, default=30.0, help="drop silent clients, s")
    ap.add_argument(
        "--start",
        choices=("home", "ready"),
        default="home",
        help="pose at power-on: home (all zero, like the robot) or ready (tool down, "
        "away from the singular home pose)",
    )
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    if args.rate <= 0:
        ap.error("--rate must be > 0")
    return args


async def _run(config: SimConfig) -> None:
    sim = DexterSim(config)
    await sim.start()
    extra = f", control port {sim.control_port}" if sim.control_port else ""
    print(f"dexter-sim listening on {config.host}:{sim.port}{extra}", flush=True)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # not on Windows
        # SIGINT too (what ros2 launch sends): the same clean stop as SIGTERM, instead of the
        # main task's cancellation racing the connection handlers
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `dexter-sim`; a port already in use is a one-line error, exit 2."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = SimConfig(
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        rate=args.rate,
        idle_timeout_s=args.idle_timeout,
        start_q=kinematics.READY if args.start == "ready" else None,
    )
    try:
        asyncio.run(_run(config))
    except OSError as exc:
        ports = f"{args.port}" + (f" / {args.control_port}" if args.control_port else "")
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
        print(f"dexter-sim: cannot listen on {args.host} port {ports}: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
