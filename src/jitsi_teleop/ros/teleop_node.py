"""Teleop node (``ros2 run jitsi_teleop teleop``): the control logic between driver and transport.

A thin ROS adapter around :class:`~jitsi_teleop.teleop.loop.FollowerControl` and
:class:`~jitsi_teleop.teleop.loop.LeaderControl` — the same classes the loop simulation and the
demo run. Topics are relative (they follow the node's namespace); the peer's streams, as the
transport republishes them, are read under ``peer_prefix``.

Follower (``role:=follower``, peer prefix ``/leader``):
  in  ``joint_states`` (own driver), ``<peer>/joint_states``, ``<peer>/teleop/energy``,
      ``teleop/estop`` and ``<peer>/teleop/estop`` (std_msgs/Bool, True latches the e-stop)
  out ``joint_command`` (to the driver), ``teleop/feedback`` (WrenchStamped: contact tip force,
      base frame), ``teleop/energy`` (Float64: the port's energy for the passivity observer)
Leader (``role:=leader``, peer prefix ``/follower``):
  in  ``joint_states`` (own driver), ``<peer>/teleop/feedback``, ``<peer>/teleop/energy``,
      ``teleop/estop``
  out ``force_feedback`` (JointState effort, N·m, to the driver in follow-me mode),
      ``teleop/energy``, ``teleop/estop`` (re-published when the operator stops, so it crosses)
Both: services ``~/estop`` and ``~/reset`` (std_srvs/Trigger); ``/diagnostics``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import WrenchStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from jitsi_teleop.ros.common import publish_diagnostics, spin_node
from jitsi_teleop.teleop.force_feedback import ForceFeedbackConfig
from jitsi_teleop.teleop.interpolation import InterpolatorConfig
from jitsi_teleop.teleop.loop import FollowerControl, FollowerFeedback, LeaderControl, LeaderState
from jitsi_teleop.teleop.mapping import ArmMapping
from jitsi_teleop.teleop.passivity import PassivityConfig
from jitsi_teleop.teleop.safety import SafetyConfig, SafetyState
from jitsi_teleop.teleop.timing import LoopTiming

ROLES = ("leader", "follower")
#: An e-stop must arrive even if sent before the subscriber was up, and never be dropped.
ESTOP_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
#: The driver's command input is latest-wins too.
COMMAND_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
#: Dexter HDI joint inertias (the simulator's), weighting the passivity controller's damping.
HDI_INERTIA = (0.08, 0.08, 0.05, 0.01, 0.01)


@dataclass(frozen=True)
class TeleopParams:
    role: str
    peer_prefix: str
    rate_hz: float
    joint_names: tuple[str, ...]
    timeout_s: float
    state_timeout_s: float
    max_velocity: float
    max_acceleration: float
    max_deviation: float | None
    playout_delay_s: float
    mapping_scale: tuple[float, ...]
    mapping_offset: tuple[float, ...]
    feedback_scale: float
    deadband_n: float
    max_force_n: float
    max_torque_nm: float
    passivity: bool
    passivity_weights: tuple[float, ...]
    diagnostics_period: float


@dataclass
class _Outputs:
    """The messages the control loop publishes, built once per stream (names, frame); a
    tick sets only the stamp and the values (publish copies them out at once)."""

    command: JointState
    force: JointState
    feedback: WrenchStamped
    energy: Float64

    @classmethod
    def make(cls, joint_names: Sequence[str]) -> _Outputs:
        command, force, feedback = JointState(), JointState(), WrenchStamped()
        command.name = list(joint_names)
        force.name = list(joint_names)
        feedback.header.frame_id = "base_link"
        return cls(command, force, feedback, Float64())


def _desc(text: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=text, read_only=True)


def _stamp_s(msg_stamp) -> float:
    return msg_stamp.sec + msg_stamp.nanosec * 1e-9


class TeleopNode(Node):
    """Runs the leader or follower controller at ``rate_hz`` on the newest inputs."""

    def __init__(self, **kwargs) -> None:
        super().__init__("teleop", **kwargs)
        self.params = p = self._declare()
        peer = p.peer_prefix.rstrip("/")
        self._q: np.ndarray | None = None
        self._q_at = 0.0  #: when the own driver's joint_states last arrived (node clock, s)
        self._servo_torque = np.zeros(len(p.joint_names))
        self._peer_energy = 0.0
        self._last: dict[str, float] = {}
        self._damping = 0.0
        self._leader_estopped = ""
        self._counters = {"leader_states": 0, "feedback": 0, "bad_input": 0}
        self._timing = LoopTiming(1.0 / p.rate_hz)  # is the loop itself on time?
        self.create_subscription(JointState, "joint_states", self._on_joint_states, 10)
        self.create_subscription(Float64, f"{peer}/teleop/energy", self._on_energy, 10)
        self.create_subscription(Bool, "teleop/estop", self._on_estop_topic, ESTOP_QOS)
        self._pub_energy = self.create_publisher(Float64, "teleop/energy", 10)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/estop", self._srv_estop)
        self.create_service(Trigger, "~/reset", self._srv_reset)
        if p.role == "follower":
            self.follower = FollowerControl(
                SafetyConfig.hdi(
                    max_velocity=p.max_velocity,
                    max_acceleration=p.max_acceleration,
                    timeout_s=p.timeout_s,
                    measurement_timeout_s=p.state_timeout_s,
                    max_deviation=p.max_deviation,
                ),
                InterpolatorConfig(playout_delay_s=p.playout_delay_s),
                ArmMapping(scale=p.mapping_scale, offset=p.mapping_offset),
                self._feedback_config(),
            )
            self.create_subscription(
                JointState, f"{peer}/joint_states", self._on_leader_state, qos_profile_sensor_data
            )
            self.create_subscription(Bool, f"{peer}/teleop/estop", self._on_estop_topic, ESTOP_QOS)
            self._pub_command = self.create_publisher(JointState, "joint_command", COMMAND_QOS)
            self._pub_feedback = self.create_publisher(WrenchStamped, "teleop/feedback", 10)
        else:
            self.leader = LeaderControl(
                self._feedback_config(),
                PassivityConfig(
                    enabled=p.passivity,
                    weights=p.passivity_weights,
                    max_damping=p.rate_hz,  # dead-beat cap for the control period (α·Δt = 1)
                ),
            )
            self.create_subscription(
                WrenchStamped, f"{peer}/teleop/feedback", self._on_feedback, qos_profile_sensor_data
            )
            self._pub_force = self.create_publisher(JointState, "force_feedback", 10)
            self._pub_estop = self.create_publisher(Bool, "teleop/estop", ESTOP_QOS)
        self._out = _Outputs.make(p.joint_names)
        self.create_timer(1.0 / p.rate_hz, self._tick)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)

    # -- parameters ------------------------------------------------------------------------
    def _declare(self) -> TeleopParams:
        d = self.declare_parameter
        role = d("role", "follower", _desc("leader (operator's arm) or follower (remote arm)"))
        role = str(role.value)
        if role not in ROLES:
            raise ValueError(f"parameter role must be leader or follower, not {role!r}")
        other = "follower" if role == "leader" else "leader"
        peer = d("peer_prefix", f"/{other}", _desc("where the transport republishes the peer"))
        names = d("joint_names", ["j1", "j2", "j3", "j4", "j5"], _desc("J1..J5 names")).value
        n = len(names)
        dev = d(
            "max_deviation",
            -1.0,
            _desc(
                "rad; keep the command this close to the measured "
                "pose, bounding the contact force (<0 = off)"
            ),
        ).value
        params = TeleopParams(
            role=role,
            peer_prefix=str(peer.value),
            # each follower command is a robot request: faster than the driver only loads it
            rate_hz=float(d("rate_hz", 100.0, _desc("control rate (Hz), the driver's")).value),
            joint_names=tuple(names),
            timeout_s=float(
                d("command_timeout", 0.15, _desc("s without a fresh leader state: hold")).value
            ),
            state_timeout_s=float(
                d(
                    "state_timeout",
                    0.2,
                    _desc(
                        "s without the own driver's joint_states (robot link down): hold, send "
                        "nothing, re-sync to the measured pose when they return"
                    ),
                ).value
            ),
            max_velocity=float(d("max_velocity", 1.0, _desc("rad/s, follower")).value),
            max_acceleration=float(d("max_acceleration", 8.0, _desc("rad/s², follower")).value),
            max_deviation=None if dev < 0 else float(dev),
            playout_delay_s=float(
                d("playout_delay", 0.02, _desc("s of jitter absorbed by interpolation")).value
            ),
            mapping_scale=tuple(
                d("mapping_scale", [1.0] * n, _desc("follower = scale·leader + offset")).value
            ),
            mapping_offset=tuple(d("mapping_offset", [0.0] * n, _desc("rad")).value),
            feedback_scale=float(
                d("feedback_scale", 0.5, _desc("leader tip force per follower tip force")).value
            ),
            deadband_n=float(d("deadband", 1.5, _desc("N of contact force ignored")).value),
            max_force_n=float(d("max_force", 15.0, _desc("N, rendered force saturation")).value),
            max_torque_nm=float(d("max_torque", 3.0, _desc("N·m per joint saturation")).value),
            passivity=bool(
                d(
                    "passivity",
                    True,
                    _desc(
                        "time-domain passivity controller on the force "
                        "channel (keep on with any delay)"
                    ),
                ).value
            ),
            passivity_weights=tuple(
                d(
                    "passivity_weights",
                    list(HDI_INERTIA),
                    _desc("joint inertias weighting the PC's damping"),
                ).value
            ),
            diagnostics_period=float(d("diagnostics_period", 1.0, _desc("s")).value),
        )
        for what, seq in (
            ("mapping_scale", params.mapping_scale),
            ("mapping_offset", params.mapping_offset),
            ("passivity_weights", params.passivity_weights),
        ):
            if len(seq) != n:
                raise ValueError(f"parameter {what} needs {n} values, has {len(seq)}")
        return params

    def _feedback_config(self) -> ForceFeedbackConfig:
        p = self.params
        return ForceFeedbackConfig(
            scale=p.feedback_scale,
            deadband_n=p.deadband_n,
            max_force_n=p.max_force_n,
            max_torque_nm=p.max_torque_nm,
        )

    # -- inputs ----------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _ordered(self, msg: JointState, values: Sequence[float]) -> np.ndarray | None:
        """J1..J5 by name (or in order when unnamed); None when the message does not fit."""
        names = self.params.joint_names
        if msg.name:
            index = {name: i for i, name in enumerate(msg.name)}
            if any(n not in index for n in names) or len(values) < len(msg.name):
                return None
            return np.array([values[index[n]] for n in names], dtype=float)
        if len(values) < len(names):
            return None
        return np.array(values[: len(names)], dtype=float)

    def _on_joint_states(self, msg: JointState) -> None:
        q = self._ordered(msg, msg.position)
        if q is None:
            self._counters["bad_input"] += 1
            return
        self._q = q
        self._q_at = self._now()
        torque = self._ordered(msg, msg.effort) if msg.effort else None
        self._servo_torque = torque if torque is not None else np.zeros(len(q))

    def _on_energy(self, msg: Float64) -> None:
        if math.isfinite(msg.data):
            self._peer_energy = max(self._peer_energy, msg.data)

    def _on_leader_state(self, msg: JointState) -> None:
        q = self._ordered(msg, msg.position)
        if q is None:
            self._counters["bad_input"] += 1
            return
        state = LeaderState(_stamp_s(msg.header.stamp), tuple(q), self._peer_energy)
        self.follower.on_leader_state(state, self._now())  # the transport authenticated it
        self._counters["leader_states"] += 1

    def _on_feedback(self, msg: WrenchStamped) -> None:
        f = msg.wrench.force
        feedback = FollowerFeedback(_stamp_s(msg.header.stamp), (f.x, f.y, f.z), self._peer_energy)
        self.leader.on_feedback(feedback, self._now())
        self._counters["feedback"] += 1

    # -- e-stop ----------------------------------------------------------------------------
    def estop(self, reason: str) -> None:
        if self.params.role == "follower":
            self.follower.safety.estop(reason, self._q)
        else:
            if self._leader_estopped:
                # latched already: our own True comes back on teleop/estop (we subscribe to
                # it too); publishing again would loop and flood the reliable stream
                return
            self._leader_estopped = reason
            self._pub_estop.publish(Bool(data=True))  # crosses to the follower (reliable)
        self.get_logger().warning(f"E-STOP: {reason}")

    def reset(self) -> bool:
        if self.params.role == "follower":
            return self.follower.safety.reset()
        was = bool(self._leader_estopped)
        self._leader_estopped = ""
        self._pub_estop.publish(Bool(data=False))  # informative; the follower resets locally
        return was

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self.estop("e-stop topic")

    def _srv_estop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        self.estop("e-stop service")
        res.success, res.message = True, "e-stop latched"
        return res

    def _srv_reset(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success = self.reset()
        res.message = "e-stop cleared" if res.success else "not e-stopped"
        return res

    # -- control ---------------------------------------------------------------------------
    def _tick(self) -> None:
        self._timing.tick(time.monotonic())
        if self._q is None:
            return
        t = self.get_clock().now()
        now, stamp = t.nanoseconds * 1e-9, t.to_msg()
        out = self._out  # the messages are made once; each tick fills in what changes
        if self.params.role == "follower":
            # joint_states gone stale = the robot link is down: hold, send nothing, and re-sync
            # to the pose the driver reads after reconnecting (no jump to an old target)
            tick = self.follower.tick(now, self._q, self._servo_torque, measured_at=self._q_at)
            if tick.command.state is not SafetyState.IDLE and not self.follower.robot_down:
                out.command.header.stamp = stamp
                out.command.position = tick.command.command.tolist()
                self._pub_command.publish(out.command)
            fb = out.feedback
            fb.header.stamp = stamp
            fb.wrench.force.x, fb.wrench.force.y, fb.wrench.force.z = map(
                float, tick.feedback.force
            )
            self._pub_feedback.publish(fb)
            out.energy.data = float(tick.feedback.e_in)
            self._pub_energy.publish(out.energy)
        else:
            tick = self.leader.tick(now, self._q)
            self._damping = tick.damping
            torque = np.zeros(len(self._q)) if self._leader_estopped else tick.torque
            out.force.header.stamp = stamp
            out.force.effort = np.asarray(torque, dtype=float).tolist()
            self._pub_force.publish(out.force)
            out.energy.data = float(tick.state.e_in)
            self._pub_energy.publish(out.energy)

    # -- diagnostics -----------------------------------------------------------------------
    def diagnostic_status(self) -> DiagnosticStatus:
        st = DiagnosticStatus()
        st.name = f"{self.get_name()}: teleop {self.params.role}"
        st.hardware_id = self.params.role
        values = {"role": self.params.role, **{k: str(v) for k, v in self._counters.items()}}
        if self.params.role == "follower":
            safety = self.follower.safety
            state = safety.state
            values.update(
                state=state.value,
                estop_reason=safety.estop_reason,
                accepted=str(safety.counters.accepted),
                clamped=str(safety.counters.clamped),
                rejected=str(dict(safety.counters.rejected)),
                holds=str(safety.counters.holds),
                estops=str(safety.counters.estops),
                robot_down=str(safety.robot_down),
                robot_holds=str(safety.counters.robot_holds),
                resyncs=str(safety.counters.resyncs),
            )
            if state is SafetyState.ESTOP:
                st.level, st.message = DiagnosticStatus.ERROR, f"e-stopped ({safety.estop_reason})"
            elif safety.robot_down:
                st.level = DiagnosticStatus.ERROR
                st.message = "robot link down (no joint_states): holding, nothing sent"
            elif state is SafetyState.TRACKING:
                st.level, st.message = DiagnosticStatus.OK, "tracking the leader"
            else:
                st.level, st.message = DiagnosticStatus.WARN, f"{state.value}: holding position"
        else:
            pc = self.leader.passivity
            active = self._damping > 0.0
            values.update(
                state="estop" if self._leader_estopped else "rendering",
                passivity_active=str(active),
                passivity_damping=f"{self._damping:.3f}",
                energy_dissipated_j=f"{pc.dissipated:.4f}",
            )
            if self._leader_estopped:
                st.level, st.message = DiagnosticStatus.ERROR, "e-stopped: no force rendered"
            else:
                st.level = DiagnosticStatus.OK
                st.message = "passivity controller active" if active else "rendering feedback"
        self._loop_health(st, values)
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return st

    def _loop_health(self, st: DiagnosticStatus, values: dict[str, str]) -> None:
        """The control loop's own timing; a starved loop is a WARN even when all is well else
        (late ticks act like extra delay in the force loop)."""
        now, t = time.monotonic(), self._timing
        rate, gap = t.rate_hz(now), t.max_gap_s(now)
        values["loop_hz"] = "n/a" if rate is None else f"{rate:.0f}"
        values["loop_max_gap_ms"] = "n/a" if gap is None else f"{gap * 1e3:.1f}"
        values["late_ticks"] = str(t.late_ticks)
        if t.slow(now) and st.level == DiagnosticStatus.OK:
            seen = "not running" if not rate else f"at {rate:.0f} Hz"
            st.level = DiagnosticStatus.WARN
            st.message = f"control loop {seen} of {self.params.rate_hz:g} Hz (CPU starved?)"

    def _publish_diagnostics(self) -> None:
        publish_diagnostics(self, self._pub_diag, self.diagnostic_status())


def main(args: Sequence[str] | None = None) -> None:
    spin_node(TeleopNode, args)


if __name__ == "__main__":
    main()
