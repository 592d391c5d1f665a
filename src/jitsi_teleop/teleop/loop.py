"""Two-arm teleoperation loop, simulated deterministically (pure: no I/O, no wall clock).

What runs here is what the nodes run, minus ROS (the simulator itself is imported only when a
simulation is built, so the nodes can import the controllers without it): :class:`LeaderControl` and
:class:`FollowerControl` compose the real safety filter, interpolator, force feedback and
passivity controller, and the teleop node is meant to call exactly these. Around them:

* two :class:`~dexter_driver.sim.DexterPhysics` arms: the leader in follow-me (admittance) mode,
  pulled by the operator's hand — a spring-damper from a scripted hand path to the tool tip, plus
  a grip on the wrist joints — and pushed by the rendered feedback torque (``S JnForce`` units);
  the follower in position mode (``a`` to zero, then ``P`` absolute targets), optionally facing a
  stiff :class:`~dexter_driver.sim.Wall`;
* two :class:`DelayChannel` s (leader → follower joint states, follower → leader force), with a
  base delay, jitter, loss and scripted outages, sample-based with a seeded RNG and newest-wins
  delivery like the data channel's ``latest`` class.

The follower's contact force is estimated like the driver does (servo stiffness × DELTA →
external joint torque → tip force), sent back through the delayed channel and rendered on the
leader as ``Jᵀ F`` through the passivity controller. Time advances in physics substeps
(``physics_dt``); both controllers run every ``control_dt``; states are sent every ``send_dt``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dexter_driver import kinematics
from jitsi_teleop.teleop.force_feedback import (
    ForceFeedback,
    ForceFeedbackConfig,
    shape_force,
    tip_force_from_servo_torque,
)
from jitsi_teleop.teleop.interpolation import InterpolatorConfig, TargetInterpolator
from jitsi_teleop.teleop.mapping import ArmMapping
from jitsi_teleop.teleop.passivity import (
    PassivityConfig,
    PassivityController,
    PortObserver,
)
from jitsi_teleop.teleop.safety import SafetyConfig, SafetyFilter, SafetyOutput, Verdict

if TYPE_CHECKING:  # the simulator (an asyncio module) is imported only to build a simulation
    from dexter_driver.sim import DexterPhysics, SimConfig, Wall

__all__ = [
    "ChannelConfig",
    "DelayChannel",
    "FollowerControl",
    "FollowerFeedback",
    "FollowerTick",
    "HandConfig",
    "LeaderControl",
    "LeaderState",
    "LeaderTick",
    "LoopConfig",
    "LoopTrace",
    "TeleopLoop",
    "contact_scenario",
    "free_motion_scenario",
    "run_loop",
]

FloatArray = NDArray[np.float64]
T = TypeVar("T")

# ------------------------------------------------------------------------------------------
# Network model
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelConfig:
    """One direction of the link: delay = ``delay_s`` + U(0, ``jitter_s``); i.i.d. ``loss``."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    seed: int = 0
    outages: tuple[tuple[float, float], ...] = ()  #: [start, end) send times that are lost

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.jitter_s < 0 or not 0 <= self.loss < 1:
            raise ValueError("need delay_s >= 0, jitter_s >= 0 and 0 <= loss < 1")


class DelayChannel(Generic[T]):
    """Newest-wins state stream: a sample older than one already delivered is dropped."""

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self._heap: list[tuple[float, int, float, T]] = []
        self._seq = 0
        self._newest_sent = -math.inf
        self.sent = 0
        self.lost = 0
        self.delivered = 0
        self.dropped_old = 0

    def send(self, now: float, payload: T) -> None:
        self.sent += 1
        c = self.config
        lost = self._rng.random() < c.loss  # always drawn: the RNG stream does not depend on cuts
        jitter = self._rng.random() * c.jitter_s
        if lost or any(a <= now < b for a, b in c.outages):
            self.lost += 1
            return
        self._seq += 1
        heapq.heappush(self._heap, (now + c.delay_s + jitter, self._seq, now, payload))

    def receive(self, now: float) -> T | None:
        """The newest sample that has arrived by ``now`` and is newer than any delivered."""
        best: tuple[float, T] | None = None
        while self._heap and self._heap[0][0] <= now:
            _, _, sent_at, payload = heapq.heappop(self._heap)
            if sent_at <= self._newest_sent or (best is not None and sent_at <= best[0]):
                self.dropped_old += 1
                continue
            if best is not None:
                self.dropped_old += 1
            best = (sent_at, payload)
        if best is None:
            return None
        self._newest_sent = best[0]
        self.delivered += 1
        return best[1]


# ------------------------------------------------------------------------------------------
# The two controllers (what the teleop node runs)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderState:
    """Leader → follower (``latest``): joint positions, the leader port's e_in for the PO."""

    stamp: float
    q: tuple[float, ...]
    e_in: float


@dataclass(frozen=True)
class FollowerFeedback:
    """Follower → leader (``latest``): contact tip force (N, base frame) and the port's e_in."""

    stamp: float
    force: tuple[float, float, float]
    e_in: float


@dataclass(frozen=True)
class LeaderTick:
    torque: FloatArray  #: N·m, J1..J5, to send as force feedback
    state: LeaderState  #: to send to the follower
    damping: float  #: α the passivity controller applied
    observed: float  #: the leader port's W, J


@dataclass(frozen=True)
class FollowerTick:
    command: SafetyOutput  #: the joint command for the driver
    feedback: FollowerFeedback  #: to send to the leader
    observed: float  #: the follower port's W, J (observe-only)


class _VelocityEstimate:
    """Backward difference of the measured angles, as the driver would compute it."""

    def __init__(self) -> None:
        self._prev: tuple[float, FloatArray] | None = None
        self.value = np.zeros(5)

    def update(self, now: float, q: FloatArray) -> tuple[FloatArray, float]:
        dt = 0.0
        if self._prev is not None and now > self._prev[0]:
            dt = now - self._prev[0]
            self.value = (q - self._prev[1]) / dt
        self._prev = (now, q.copy())
        return self.value, dt


class LeaderControl:
    """Leader side: render the follower's force through the passivity controller."""

    def __init__(
        self,
        feedback: ForceFeedbackConfig | None = None,
        passivity: PassivityConfig | None = None,
    ) -> None:
        self.feedback = ForceFeedback(feedback)
        scale = self.feedback.config.scale
        self.passivity = PassivityController(replace(passivity or PassivityConfig(), scale=scale))
        self._vel = _VelocityEstimate()

    @property
    def e_in(self) -> float:
        return self.passivity.e_in

    def on_feedback(self, msg: FollowerFeedback, now: float) -> None:
        """A feedback message arrived (authenticated and newest, by the transport)."""
        if self.feedback.set_force(msg.force, now):
            self.passivity.observe(msg.e_in)

    def tick(self, now: float, q: ArrayLike) -> LeaderTick:
        """``q`` = the leader's measured angles J1..J5. The torque goes to the driver's
        force_feedback (whose own gate saturates it to max_torque_nm), the state to the link."""
        qa = np.asarray(q, dtype=np.float64).reshape(-1)[:5]
        if not np.all(np.isfinite(qa)):  # a bad status: render nothing, send nothing usable
            return LeaderTick(np.zeros(qa.size), LeaderState(now, tuple(qa), self.e_in), 0.0, 0.0)
        qd, dt = self._vel.update(now, qa)
        tau = self.feedback.torques(qa, now)
        step = self.passivity.step(tau, qd, self.passivity.remote_e_in, dt)
        state = LeaderState(now, tuple(float(v) for v in qa), self.passivity.e_in)
        return LeaderTick(step.torque, state, step.damping, step.observed)


class FollowerControl:
    """Follower side: map, validate, interpolate and limit the leader's pose; report force."""

    def __init__(
        self,
        safety: SafetyConfig,
        interpolator: InterpolatorConfig | None = None,
        mapping: ArmMapping | None = None,
        feedback: ForceFeedbackConfig | None = None,
        links: kinematics.LinkLengths = kinematics.HDI,
    ) -> None:
        self.safety = SafetyFilter(safety)
        self.interpolator = TargetInterpolator(interpolator)
        self.mapping = mapping or ArmMapping.identity(safety.size)
        self.links = links
        self.feedback = feedback or ForceFeedbackConfig()
        self.port = PortObserver(self.feedback.scale)
        self._vel = _VelocityEstimate()
        self._remote_e_in = 0.0
        self._down_since = -math.inf

    def on_leader_state(self, msg: LeaderState, now: float, authenticated: bool = True) -> Verdict:
        """A leader state arrived: validate it (lease), then queue it for interpolation."""
        try:
            target = self.mapping.leader_to_follower(msg.q)
        except (TypeError, ValueError):
            return self.safety.counters.reject(Verdict.BAD_SHAPE)
        verdict = self.safety.accept(target, now, authenticated)
        if verdict is Verdict.ACCEPTED:
            self.interpolator.push(msg.stamp, target, now)
            if math.isfinite(msg.e_in):
                self._remote_e_in = max(self._remote_e_in, msg.e_in)
        return verdict

    def tick(
        self,
        now: float,
        q: ArrayLike,
        servo_torque: ArrayLike,
        measured_at: float | None = None,
    ) -> FollowerTick:
        """``q`` = measured angles, ``servo_torque`` = the driver's joint_states effort
        (stiffness × DELTA), both J1..J5; returns the command and the feedback to send.

        ``measured_at`` (same clock as ``now``) is when ``q`` arrived from the robot: older
        than the safety's ``measurement_timeout_s`` means the robot link is down, and the
        filter holds (its state is HOLDING and :attr:`robot_down` is true: send nothing);
        the first fresh ``q`` after that re-syncs the reference to it. None = always fresh.
        """
        qa = np.asarray(q, dtype=np.float64).reshape(-1)[:5]
        safety = self.safety
        if measured_at is not None:
            if now - measured_at > safety.config.measurement_timeout_s:
                self.robot_lost(measured_at)
            elif safety.robot_down and measured_at > self._down_since:
                safety.resync(qa, now)  # the first state read after the loss
        qd, dt = self._vel.update(now, qa)
        force = tip_force_from_servo_torque(qa, servo_torque, self.links)
        if not np.all(np.isfinite(force)):
            force = np.zeros(3)
        # Port = the contact: the force the leader will render (deadband and saturation
        # included, before the scale) times the measured tip velocity.
        port_force = shape_force(force, self.feedback, scaled=False)
        tip_v = kinematics.jacobian(qa, self.links)[:3] @ qd
        w = self.port.step(float(-port_force @ tip_v), self._remote_e_in, dt)
        out = safety.update(now, qa, self.interpolator.sample(now))
        fb = FollowerFeedback(
            now, (float(force[0]), float(force[1]), float(force[2])), self.port.e_in
        )
        return FollowerTick(out, fb, w)

    def robot_lost(self, since: float) -> None:
        """The robot link went down at ``since`` (e.g. the driver reported it): hold now, and
        re-sync on the first measurement taken after ``since``."""
        self._down_since = max(self._down_since, since) if self.safety.robot_down else since
        self.safety.robot_lost()

    @property
    def robot_down(self) -> bool:
        """The robot link is down (stale measurements): the command must not be sent."""
        return self.safety.robot_down


# ------------------------------------------------------------------------------------------
# Scenario
# ------------------------------------------------------------------------------------------

#: Start pose: tool pointing straight down, tip at (0, 0.467, 0.499) m, well-conditioned.
Q0: tuple[float, ...] = kinematics.READY


@dataclass(frozen=True)
class HandConfig:
    """The gains of the operator's hand on the leader's tool (the simulator's
    :class:`~dexter_driver.sim.Hand`, whose target follows the script): a Cartesian
    spring-damper on the tip plus a grip that keeps the wrist joints (J4, J5) where they
    started."""

    stiffness: float = 300.0  #: N/m
    damping: float = 15.0  #: N·s/m
    wrist_stiffness: float = 1.5  #: N·m/rad
    wrist_damping: float = 0.05  #: N·m·s/rad


@dataclass(frozen=True)
class LoopConfig:
    """Everything one run depends on; two runs with equal configs give equal traces."""

    duration_s: float
    #: hand path: (time s, tip xyz m) knots, minimum-jerk between them, held after the last
    script: tuple[tuple[float, tuple[float, float, float]], ...]
    q0: tuple[float, ...] = Q0
    rtt_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    seed: int = 1
    outages: tuple[tuple[float, float], ...] = ()  #: both directions cut, [start, end) s
    wall: Wall | None = None
    physics_dt: float = 0.001
    control_dt: float = 0.002
    send_dt: float = 0.004
    hand: HandConfig = field(default_factory=HandConfig)
    sim: SimConfig = field(default_factory=lambda: _sim().SimConfig(rate=0.0))
    safety: SafetyConfig = field(default_factory=SafetyConfig.hdi)
    interpolator: InterpolatorConfig = field(default_factory=InterpolatorConfig)
    feedback: ForceFeedbackConfig = field(default_factory=ForceFeedbackConfig)
    passivity: PassivityConfig = field(default_factory=PassivityConfig)
    #: (start, end) of the steady contact window over which force oscillation is measured
    contact_window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        ratio = self.control_dt / self.physics_dt
        send_ratio = self.send_dt / self.control_dt
        if abs(ratio - round(ratio)) > 1e-9 or abs(send_ratio - round(send_ratio)) > 1e-9:
            raise ValueError("control_dt must be a multiple of physics_dt, send_dt of control_dt")
        if not self.script:
            raise ValueError("the hand script needs at least one knot")


def _sim() -> ModuleType:
    """The simulator module, imported on first use: the controllers above stay importable by
    the nodes without it (it is an I/O-layer module)."""
    from dexter_driver import sim

    return sim


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)


def hand_target(script: Sequence[tuple[float, Sequence[float]]], t: float) -> FloatArray:
    """Hand position at ``t`` along the script (minimum-jerk segments, held at the ends)."""
    if t <= script[0][0]:
        return np.asarray(script[0][1], float)
    for (t0, p0), (t1, p1) in itertools.pairwise(script):
        if t < t1:
            s = _min_jerk((t - t0) / (t1 - t0)) if t1 > t0 else 1.0
            return np.asarray(p0, float) + s * (np.asarray(p1, float) - np.asarray(p0, float))
    return np.asarray(script[-1][1], float)


def contact_scenario(
    rtt_s: float = 0.2,
    pc: bool = True,
    *,
    press_depth_m: float = 0.03,
    wall_stiffness: float = 20000.0,
    hold_s: float = 3.0,
    **overrides: object,
) -> LoopConfig:
    """Reach down onto a stiff table, press ``press_depth_m`` into it, hold, retreat.

    The table is 2 cm below the start tip; the hand aims ``press_depth_m`` below its surface, so
    the force settles where the hand spring and the rendered force balance.
    """
    tip0 = kinematics.tool_position(Q0)
    table_z = float(tip0[2]) - 0.02
    above = (float(tip0[0]), float(tip0[1]), float(tip0[2]))
    press = (above[0], above[1], table_z - press_depth_m)
    t_press, t_hold_end = 1.5, 1.5 + hold_s
    script = ((0.2, above), (t_press, press), (t_hold_end, press), (t_hold_end + 1.0, above))
    base = LoopConfig(
        duration_s=t_hold_end + 1.5,
        script=script,
        rtt_s=rtt_s,
        wall=_sim().Wall((0.0, 0.0, 1.0), table_z, wall_stiffness, 20.0),
        contact_window=(t_press + 0.5, t_hold_end),
    )
    return _with_pc(replace(base, **overrides), pc)  # type: ignore[arg-type]


def _with_pc(config: LoopConfig, pc: bool) -> LoopConfig:
    """The leader PC's damping, weighted by the leader's joint inertias and capped at the
    dead-beat value for the control period (α · Δt = 1), switched on or off."""
    passivity = replace(
        config.passivity,
        enabled=pc,
        weights=config.sim.inertia,
        max_damping=1.0 / config.control_dt,
    )
    return replace(config, passivity=passivity)


def free_motion_scenario(rtt_s: float = 0.05, pc: bool = True, **overrides: object) -> LoopConfig:
    """Free-space moves: 10 cm forward, 8 cm down, 10 cm sideways and back, no obstacle."""
    x, y, z = (float(v) for v in kinematics.tool_position(Q0))
    knots = [(0.2, (x, y, z)), (1.0, (x, y + 0.1, z)), (1.8, (x, y + 0.1, z - 0.08))]
    knots += [(2.6, (x + 0.1, y + 0.05, z - 0.04)), (3.4, (x, y, z))]
    base = LoopConfig(duration_s=4.0, script=tuple(knots), rtt_s=rtt_s)
    return _with_pc(replace(base, **overrides), pc)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------


@dataclass
class LoopTrace:
    """Per control tick records of one run (numpy arrays after :meth:`TeleopLoop.run`)."""

    t: FloatArray
    leader_tip: FloatArray  #: (n, 3) m
    follower_tip: FloatArray  #: (n, 3) m
    hand: FloatArray  #: (n, 3) m, the hand's scripted position
    contact_force: FloatArray  #: N, true wall force on the follower (the simulator's)
    estimated_force: FloatArray  #: (n, 3) N, what the follower sends
    rendered_torque: FloatArray  #: (n, 5) N·m on the leader, after the PC
    damping: FloatArray  #: α of the PC
    command: FloatArray  #: (n, 5) rad, what the safety filter sent to the follower driver
    holding: NDArray[np.bool_]  #: the safety filter was not tracking
    follower_q: FloatArray  #: (n, 5) rad
    leader_q: FloatArray  #: (n, 5) rad
    pc_dissipated: float = 0.0  #: J, leader PC (variable damping)
    leader_e_out: float = 0.0
    follower_e_out: float = 0.0
    config: LoopConfig | None = None

    def window(self, start: float, end: float) -> NDArray[np.bool_]:
        return (self.t >= start) & (self.t < end)

    def peak_force(self) -> float:
        return float(self.contact_force.max(initial=0.0))

    def force_oscillation(self) -> float:
        """Std of the contact force about its linear trend over the contact window (N)."""
        assert self.config is not None and self.config.contact_window is not None
        sel = self.window(*self.config.contact_window)
        f, t = self.contact_force[sel], self.t[sel]
        if f.size < 3:
            return 0.0
        trend = np.polyval(np.polyfit(t, f, 1), t)
        return float(np.std(f - trend))

    def settled_oscillation(self, last_s: float = 0.5) -> float:
        """Std of the contact force over the last ``last_s`` of the contact window (N): a
        decaying transient has died out there, a limit cycle has not."""
        assert self.config is not None and self.config.contact_window is not None
        end = self.config.contact_window[1]
        return float(np.std(self.contact_force[self.window(end - last_s, end)]))

    def mean_contact_force(self) -> float:
        assert self.config is not None and self.config.contact_window is not None
        return float(np.mean(self.contact_force[self.window(*self.config.contact_window)]))

    def contact_losses(self) -> int:
        """Times the follower left the table during the contact window (bouncing)."""
        assert self.config is not None and self.config.contact_window is not None
        f = self.contact_force[self.window(*self.config.contact_window)] > 0.0
        return int(np.count_nonzero(f[:-1] & ~f[1:]))

    def tracking_error(self, lag_s: float = 0.0) -> FloatArray:
        """|follower tip(t) − leader tip(t − lag_s)| in m, for t where the lag is defined."""
        dt = float(self.t[1] - self.t[0])
        k = round(lag_s / dt)
        if k <= 0:
            return np.linalg.norm(self.follower_tip - self.leader_tip, axis=1)
        return np.linalg.norm(self.follower_tip[k:] - self.leader_tip[:-k], axis=1)


class TeleopLoop:
    """Step two simulated Dexters, their controllers and the link between them."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = c = config
        self.leader_arm = self._arm(follow=True)
        self.follower_arm = self._arm(follow=False)
        if c.wall is not None:
            self.follower_arm.wall = c.wall
        self.leader = LeaderControl(c.feedback, c.passivity)
        self.follower = FollowerControl(
            c.safety,
            c.interpolator,
            feedback=c.feedback,
            links=c.sim.links,
        )
        one_way = c.rtt_s / 2.0
        self.to_follower: DelayChannel[LeaderState] = DelayChannel(
            ChannelConfig(one_way, c.jitter_s, c.loss, c.seed, c.outages)
        )
        self.to_leader: DelayChannel[FollowerFeedback] = DelayChannel(
            ChannelConfig(one_way, c.jitter_s, c.loss, c.seed + 1, c.outages)
        )
        self.t = 0.0
        self._tick = 0
        self._substeps = round(c.control_dt / c.physics_dt)
        self._send_every = round(c.send_dt / c.control_dt)
        self._wrist0 = np.asarray(c.q0, float)[3:5]
        self._follower_prev_q = self.follower_arm.q.copy()
        self._rows: list[tuple[object, ...]] = []

    def _arm(self, follow: bool) -> DexterPhysics:
        arm = _sim().DexterPhysics(self.config.sim)
        q0 = np.asarray(self.config.q0, dtype=float)
        arm.q = q0.copy()
        arm.setpoint = q0.copy()
        arm.set_offset(q0)  # `a 0 0 0 0 0`, then `P` absolute targets
        arm.set_follow(follow)
        return arm

    def _hand_torque(self, arm: DexterPhysics, t: float) -> FloatArray:
        """The simulator's hand model, its target moved along the script."""
        h = self.config.hand
        target = hand_target(self.config.script, t)
        hand = _sim().Hand(
            (float(target[0]), float(target[1]), float(target[2])),
            (float(self._wrist0[0]), float(self._wrist0[1])),
            h.stiffness,
            h.damping,
            h.wrist_stiffness,
            h.wrist_damping,
        )
        jac = kinematics.jacobian(arm.q, self.config.sim.links)[:3]
        tip = kinematics.tool_position(arm.q, self.config.sim.links)
        force, grip = hand.load(arm.q, arm.qd, tip, jac)
        tau = jac.T @ force
        tau[3:5] += grip
        return tau

    def _wall_force(self, tip: FloatArray) -> float:
        arm, wall = self.follower_arm, self.follower_arm.wall
        if wall is None:
            return 0.0
        links = self.config.sim.links
        n = np.asarray(wall.normal)
        pen = wall.offset - float(n @ tip)
        if pen <= 0.0:
            return 0.0
        vn = float(n @ (kinematics.jacobian(arm.q, links)[:3] @ arm.qd))
        return max(0.0, wall.stiffness * pen - wall.damping * vn)

    def step(self) -> None:
        """One control period: both controllers, the network, then the physics substeps."""
        c, now = self.config, self.t
        fb = self.to_leader.receive(now)
        if fb is not None:
            self.leader.on_feedback(fb, now)
        lt = self.leader.tick(now, self.leader_arm.q)
        self.leader_arm.force_units = np.round(lt.torque / _sim().SIM_FORCE_NM_PER_UNIT)
        msg = self.to_follower.receive(now)
        if msg is not None:
            self.follower.on_leader_state(msg, now)
        # the driver's effort: stiffness × DELTA less the servo's own damping at the velocity
        # the driver estimates (a backward difference of the measured angles)
        arm = self.follower_arm
        v_est = (arm.q - self._follower_prev_q) / c.control_dt
        self._follower_prev_q = arm.q.copy()
        servo_torque = arm.k * arm.delta() - arm.d_keep * v_est
        ft = self.follower.tick(now, self.follower_arm.q, servo_torque)
        self.follower_arm.set_offset(ft.command.command)
        if self._tick % self._send_every == 0:
            self.to_follower.send(now, lt.state)
            self.to_leader.send(now, ft.feedback)
        self._record(now, lt, ft)
        # The hand is updated at the control rate: its bandwidth is far below 250 Hz.
        self.leader_arm.ext_torque = self._hand_torque(self.leader_arm, self.t)
        for _ in range(self._substeps):
            self.leader_arm.step(c.physics_dt)
            self.follower_arm.step(c.physics_dt)
            self.t += c.physics_dt
        self._tick += 1

    def _record(self, now: float, lt: LeaderTick, ft: FollowerTick) -> None:
        links = self.config.sim.links
        follower_tip = kinematics.tool_position(self.follower_arm.q, links)
        self._rows.append(
            (
                now,
                kinematics.tool_position(self.leader_arm.q, links),
                follower_tip,
                hand_target(self.config.script, now),
                self._wall_force(follower_tip),
                np.asarray(ft.feedback.force),
                lt.torque,
                lt.damping,
                ft.command.command,
                ft.command.state.value != "tracking",
                self.follower_arm.q.copy(),
                self.leader_arm.q.copy(),
            )
        )

    def run(self) -> LoopTrace:
        n = round(self.config.duration_s / self.config.control_dt)
        for _ in range(n):
            self.step()
        return self.trace()

    def trace(self) -> LoopTrace:
        cols = list(zip(*self._rows)) if self._rows else [[] for _ in range(12)]
        arrays = [np.asarray(col) for col in cols]
        return LoopTrace(
            *arrays,  # type: ignore[arg-type]
            pc_dissipated=self.leader.passivity.dissipated,
            leader_e_out=self.leader.passivity.port.e_out,
            follower_e_out=self.follower.port.port.e_out,
            config=self.config,
        )


def run_loop(config: LoopConfig) -> LoopTrace:
    """Run one scenario to the end and return its trace."""
    return TeleopLoop(config).run()
