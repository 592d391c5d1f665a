"""What each site does per control tick: the teleop node's job, with the driver's calls inlined.

Leader: the operator's hand (the simulator's :class:`~dexter_driver.sim.Hand`) moves the arm in
follow-me mode; every tick reads the status (``g``), runs :class:`LeaderControl` and renders its
torque with ``S JnForce`` (what the driver does with ``force_feedback``), and every
``send_every`` ticks sends ``/joint_states`` and ``/teleop/energy``.

Follower: every tick reads the status, estimates the servo torque like the driver's
``joint_states`` effort (stiffness × DELTA − damping × velocity), runs :class:`FollowerControl`
and sends its command as a ``P`` target (what the driver does with ``joint_command``), and sends
``/teleop/feedback`` and ``/teleop/energy``.

Each role records one row per tick (and one per received message) for the report.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dexter_driver import kinematics
from dexter_driver.client import DexterClient
from dexter_driver.protocol import DexterStatus
from dexter_driver.sim import SIM_FORCE_NM_PER_UNIT, DexterSim, SimConfig
from jitsi_teleop.session import ReceiveInfo, Session
from jitsi_teleop.teleop.force_feedback import ForceFeedbackConfig
from jitsi_teleop.teleop.interpolation import InterpolatorConfig
from jitsi_teleop.teleop.loop import FollowerControl, FollowerFeedback, LeaderControl, LeaderState
from jitsi_teleop.teleop.passivity import PassivityConfig
from jitsi_teleop.teleop.safety import SafetyConfig, SafetyState
from jitsi_teleop.wire import StreamDescriptor

from . import messages as m
from .scenario import Scenario

__all__ = ["FollowerRole", "LeaderRole", "Recorder", "ServoTorqueEstimate"]

FORCE_UNIT_NM = SIM_FORCE_NM_PER_UNIT  #: the driver's ``force_unit_nm`` for the simulator
SIM = SimConfig()
#: the driver's ``joint_damping`` default: the servo's own (critical) damping, 2 √(K I)
SERVO_DAMPING = tuple(2.0 * math.sqrt(k * i) for k, i in zip(SIM.stiffness, SIM.inertia))


@dataclass
class Recorder:
    """Per-tick rows and per-message latency rows, written as CSV at the end."""

    columns: tuple[str, ...]
    rows: MutableSequence[tuple[float, ...]] = field(default_factory=list)
    latency: MutableSequence[tuple[float, str, float, float, str]] = field(default_factory=list)
    latency_count: int = 0  #: latency rows ever added (``latency`` may keep only the newest)

    def keep_last(self, n: int) -> None:
        """Keep only the newest ``n`` rows of each kind: a soak runs for an hour at 500 Hz,
        and a full record would be gigabytes of growth that is not a leak."""
        self.rows = deque(self.rows, maxlen=n)
        self.latency = deque(self.latency, maxlen=n)

    def add(self, *values: float) -> None:
        self.rows.append(tuple(float(v) for v in values))

    def on_message(self, t: float, topic: str, info: ReceiveInfo) -> None:
        """Session latency estimate (its clock offset) and the true one: both site processes
        share CLOCK_MONOTONIC, which the session stamps with, so here it can be checked."""
        est = info.latency_us / 1e3 if info.latency_us is not None else math.nan
        true = (time.monotonic_ns() // 1000 - info.sender_ts_us) / 1e3
        self.latency.append((t, topic, est, true, info.path))
        self.latency_count += 1


class ServoTorqueEstimate:
    """The driver's effort estimate (dexter_driver.ros_node): stiffness × DELTA, less the servo's
    velocity damping, with the velocity a lightly smoothed difference over the robot clock."""

    def __init__(self) -> None:
        self.k = np.asarray(SIM.stiffness)
        self.d = np.asarray(SERVO_DAMPING)
        self.velocity = np.zeros(5)
        self._prev: tuple[float, NDArray[np.float64]] | None = None

    def update(self, status: DexterStatus) -> NDArray[np.float64]:
        q = np.asarray(status.measured_angles, dtype=float)
        t = status.robot_time
        if self._prev is not None and t > self._prev[0]:
            raw = (q - self._prev[1]) / (t - self._prev[0])
            self.velocity = 0.5 * self.velocity + 0.5 * raw
        self._prev = (t, q)
        return self.k * np.asarray(status.delta, dtype=float) - self.d * self.velocity


def _norm(v: Any) -> float:
    return float(np.linalg.norm(np.asarray(v, dtype=float)))


class _Role:
    """Common parts: the robot, the session, the peer's energy, counters."""

    role = ""
    columns: tuple[str, ...] = ()

    def __init__(self, scenario: Scenario, client: DexterClient, sim: DexterSim) -> None:
        self.scenario = scenario
        self.client = client
        self.sim = sim
        self.session: Session | None = None
        self.t0 = 0.0
        self.peer_energy = 0.0
        self.sent = 0  #: publish calls
        self.sent_out = 0  #: ... that went out at once (latest: the rest were newest-wins drops)
        self.out: dict[int, list[int]] = {}  #: per stream id: [publish calls, went out]
        self.received: dict[str, int] = {}
        self.rejected = 0  #: received messages that could not be used
        self.rec = Recorder(self.columns)
        self.tip = (0.0, 0.0, 0.0)
        self.force = 0.0

    def publish(self, stream_id: int, payload: bytes) -> None:
        assert self.session is not None
        went = bool(self.session.publish(stream_id, payload))
        self.sent += 1
        self.sent_out += went
        counts = self.out.setdefault(stream_id, [0, 0])
        counts[0] += 1
        counts[1] += went

    def on_receive(self, d: StreamDescriptor, payload: bytes, info: ReceiveInfo) -> None:
        now = time.monotonic()
        self.received[d.topic] = self.received.get(d.topic, 0) + 1
        self.rec.on_message(now - self.t0, d.topic, info)
        if d.topic == "/teleop/energy":
            e = m.decode_energy(payload)
            if math.isfinite(e):
                self.peer_energy = max(self.peer_energy, e)
            return
        self.handle(d.topic, payload, now)

    def handle(self, topic: str, payload: bytes, now: float) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {"tip": list(self.tip), "force": self.force}


class LeaderRole(_Role):
    role = "leader"
    columns = (
        "t",
        *(f"q{i}" for i in range(1, 6)),
        "tip_x",
        "tip_y",
        "tip_z",
        "hand_x",
        "hand_y",
        "hand_z",
        *(f"tau{i}" for i in range(1, 6)),
        "rendered_force",  #: |tip force| the rendered torque amounts to, N
        "feedback_force",  #: |follower force| last received, N
        "pc_damping",
    )

    def __init__(self, scenario: Scenario, client: DexterClient, sim: DexterSim, rate: float):
        super().__init__(scenario, client, sim)
        self.feedback_config = ForceFeedbackConfig()
        self.control = LeaderControl(
            self.feedback_config,
            # as the teleop node: weights = joint inertias, dead-beat cap at the control rate
            PassivityConfig(weights=SIM.inertia, max_damping=rate),
        )
        self.last_feedback = 0.0

    async def prepare(self) -> None:
        """The operator takes the tool, then the arm goes limp (follow-me)."""
        self.sim.set_hand(self.scenario.hand(0.0))
        await self.client.set_follow_me()

    def handle(self, topic: str, payload: bytes, now: float) -> None:
        stamp, force = m.decode_wrench(payload)
        self.control.on_feedback(FollowerFeedback(stamp, force, self.peer_energy), now)
        self.last_feedback = _norm(force)

    async def tick(self, now: float, send: bool) -> None:
        t = now - self.t0
        hand = self.scenario.hand(t)
        self.sim.set_hand(hand)  # the operator's hand follows the script
        st = await self.client.status()
        q = st.measured_angles
        lt = self.control.tick(now, q)
        await self.client.set_joint_forces([float(v) / FORCE_UNIT_NM for v in lt.torque])
        if send:
            self.publish(m.SID_JOINT_STATES, m.encode_joint_state(now, q))
            self.publish(m.SID_LEADER_ENERGY, m.encode_energy(lt.state.e_in))
        tip = kinematics.tool_position(q)
        rendered = kinematics.tip_force_from_joint_torques(q, lt.torque)
        self.tip = (float(tip[0]), float(tip[1]), float(tip[2]))
        self.force = _norm(rendered)
        self.rec.add(t, *q, *tip, *hand, *lt.torque, self.force, self.last_feedback, lt.damping)

    async def finish(self) -> None:
        """Nothing rendered any more; the operator lets go of a still arm."""
        await self.client.set_joint_forces([0.0] * 5)


class FollowerRole(_Role):
    role = "follower"
    columns = (
        "t",
        *(f"q{i}" for i in range(1, 6)),
        "tip_x",
        "tip_y",
        "tip_z",
        *(f"cmd{i}" for i in range(1, 6)),
        "est_force",  #: |estimated contact force| sent to the leader, N
        "wall_force",  #: the simulator's true wall force, N (ground truth, for the report)
        "state",  #: safety filter: 0 idle, 1 tracking, 2 holding, 3 e-stop
    )
    _STATES = {SafetyState.IDLE: 0, SafetyState.TRACKING: 1, SafetyState.HOLDING: 2}

    def __init__(self, scenario: Scenario, client: DexterClient, sim: DexterSim, rate: float):
        super().__init__(scenario, client, sim)
        self.control = FollowerControl(
            SafetyConfig.hdi(), InterpolatorConfig(), feedback=ForceFeedbackConfig()
        )
        self.servo = ServoTorqueEstimate()
        self.verdicts: dict[str, int] = {}
        self.leader_q: tuple[float, ...] | None = None  #: newest leader state used
        self.state = 0  #: safety filter state of the last tick (see ``columns``)

    async def prepare(self) -> None:
        """The obstacle is at this site only; the arm holds its pose (keep-position mode)."""
        w = self.scenario.wall
        self.sim.set_wall(w.normal, w.offset, w.stiffness, w.damping)

    def handle(self, topic: str, payload: bytes, now: float) -> None:
        decoded = m.decode_joint_state(payload)
        if decoded is None:
            self.rejected += 1
            return
        stamp, q = decoded
        self.leader_q = tuple(q)
        verdict = self.control.on_leader_state(LeaderState(stamp, q, self.peer_energy), now)
        self.verdicts[verdict.value] = self.verdicts.get(verdict.value, 0) + 1

    def wall_force(self) -> float:
        """The contact force the simulator applies now (what a force sensor would read)."""
        p, w = self.sim.physics, self.scenario.wall
        n = np.asarray(w.normal)
        pen = w.offset - float(n @ kinematics.tool_position(p.q))
        if pen <= 0.0:
            return 0.0
        vn = float(n @ (kinematics.jacobian(p.q)[:3] @ p.qd))
        return max(0.0, w.stiffness * pen - w.damping * vn)

    async def tick(self, now: float, send: bool) -> None:
        t = now - self.t0
        st = await self.client.status()
        q = st.measured_angles
        ft = self.control.tick(now, q, self.servo.update(st))
        if ft.command.state is not SafetyState.IDLE:
            await self.client.set_position_target([float(v) for v in ft.command.command])
        if send:
            self.publish(m.SID_FEEDBACK, m.encode_wrench(now, ft.feedback.force))
            self.publish(m.SID_FOLLOWER_ENERGY, m.encode_energy(ft.feedback.e_in))
        tip = kinematics.tool_position(q)
        self.tip = (float(tip[0]), float(tip[1]), float(tip[2]))
        self.force = _norm(ft.feedback.force)
        state = self.state = self._STATES.get(ft.command.state, 3)
        self.rec.add(t, *q, *tip, *ft.command.command, self.force, self.wall_force(), state)

    def status(self) -> dict[str, Any]:
        """Also how far the follower's tip is from the leader's newest received one (the
        tracking a soak watches without keeping the time series) and the safety state."""
        out = super().status()
        if self.leader_q is not None:
            lead = kinematics.tool_position(self.leader_q)
            out["tracking_mm"] = 1e3 * math.dist(lead, self.tip)
        out["state"] = self.state
        return out

    async def finish(self) -> None:
        return None
