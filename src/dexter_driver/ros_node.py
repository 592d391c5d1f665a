"""ROS 2 driver node for the Dexter arm (``ros2 run jitsi_teleop dexter_driver``).

A thin adapter: parameters, topics, QoS and diagnostics here; the robot protocol lives in
``client``/``protocol``, the command safety in ``command``, the wrench estimate in ``kinematics``.
The asyncio client runs in its own thread; rclpy callbacks hand work to it with
``call_soon_threadsafe`` and status is published straight from the loop thread.

Topics (relative, so a namespace or remapping places them):
- ``joint_states`` (sensor_msgs/JointState, out): J1..J5 measured angles, velocities and the
  servo torque estimated from the tracking error (stiffness × DELTA), then J6/J7 (servos).
- ``wrench`` (geometry_msgs/WrenchStamped, out): the external force on the tool tip (point
  contact assumed, so torque is zero), expressed in ``wrench_frame`` (default ``tool0``, so
  rviz draws it at the tip).
- ``joint_command`` (sensor_msgs/JointState, in): position targets by joint name.
- ``force_feedback`` (sensor_msgs/JointState, in): joint torques (effort, N·m) to render on an
  arm in follow-me mode.
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import WrenchStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import JointState

from dexter_driver import kinematics, protocol
from dexter_driver.client import ClientConfig, DexterClient
from dexter_driver.command import (
    CommandError,
    CommandGate,
    ForceGate,
    GateConfig,
    GateState,
)
from jitsi_teleop.loop_thread import LoopThread
from jitsi_teleop.ros.common import publish_diagnostics, spin_node

MODES = ("position", "follow_me", "monitor")
# Latest-wins streams: a deep queue would only deliver stale targets late.
COMMAND_QOS = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
)
STATE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST)


@dataclass(frozen=True)
class DriverParams:
    host: str
    port: int
    rate_hz: float
    mode: str
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    command_timeout_s: float
    joint_stiffness: tuple[float, ...]
    joint_damping: tuple[float, ...]
    force_unit_nm: float
    max_torque_nm: tuple[float, ...]
    frame_id: str
    wrench_frame: str
    servo_joint_names: tuple[str, ...]
    diagnostics_period: float
    request_timeout_s: float = 1.0


def _desc(text: str, read_only: bool = True) -> ParameterDescriptor:
    return ParameterDescriptor(description=text, read_only=read_only)


class DexterDriverNode(Node):
    """Publishes the arm's state and forwards gated commands and force feedback to it."""

    def __init__(self, **kwargs) -> None:
        super().__init__("dexter_driver", **kwargs)
        self.params = self._declare()
        p = self.params
        n = len(p.joint_names)
        self._gate = CommandGate(GateConfig(p.joint_names, p.lower, p.upper, p.command_timeout_s))
        self._force_gate = ForceGate(p.joint_names, p.max_torque_nm, p.command_timeout_s)
        self._pub_js = self.create_publisher(JointState, "joint_states", STATE_QOS)
        self._pub_wrench = self.create_publisher(WrenchStamped, "wrench", STATE_QOS)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if p.mode == "position":
            self.create_subscription(JointState, "joint_command", self._on_command, COMMAND_QOS)
        if p.mode == "follow_me":
            self.create_subscription(
                JointState, "force_feedback", self._on_force, qos_profile_sensor_data
            )
        # per stream, once: the published messages' fixed parts and the servo model
        self._js = JointState()
        self._js.header.frame_id = p.frame_id
        self._js.name = [*p.joint_names, *p.servo_joint_names]
        self._servo_zeros = [0.0] * len(p.servo_joint_names)
        self._ws = WrenchStamped()
        self._ws.header.frame_id = p.wrench_frame
        self._stiffness = np.asarray(p.joint_stiffness, dtype=float)
        self._damping = np.asarray(p.joint_damping, dtype=float)
        self._prev: tuple[float, np.ndarray] | None = None
        self._velocity = np.zeros(n)
        self._pending_target: tuple[float, ...] | None = None
        self._pending_force: tuple[float, ...] | None = None
        self._mode_ready = False
        self._last_error = ""
        self._status_count = 0
        self.loop_thread = LoopThread("dexter_driver")
        self.client = DexterClient(
            p.host, p.port, ClientConfig(poll_hz=p.rate_hz, timeout_s=p.request_timeout_s)
        )
        self.client.add_status_listener(self._on_status)
        self.loop_thread.run(self._start(), timeout=10.0)
        self.create_timer(p.diagnostics_period, self._publish_diagnostics)

    # -- parameters ------------------------------------------------------------------------
    def _declare(self) -> DriverParams:
        lim = protocol.JOINT_LIMITS_RAD
        d = self.declare_parameter
        host = d("host", "127.0.0.1", _desc("Dexter IP address or host name")).value
        port = d("port", 50000, _desc("Dexter TCP port")).value
        rate = d("rate_hz", 100.0, _desc("status poll rate (Hz)")).value
        request_timeout = d(
            "request_timeout",
            1.0,
            _desc("seconds to wait for the robot's reply to a short request before reconnecting"),
        ).value
        mode = d(
            "mode",
            "position",
            _desc(
                "position: stream joint_command targets (keep-position mode); "
                "follow_me: the arm is moved by hand, force_feedback is rendered; "
                "monitor: publish only"
            ),
        ).value
        names = d("joint_names", ["j1", "j2", "j3", "j4", "j5"], _desc("J1..J5 names")).value
        lower = d("joint_lower", [lo for lo, _ in lim], _desc("lower joint limits (rad)")).value
        upper = d("joint_upper", [hi for _, hi in lim], _desc("upper joint limits (rad)")).value
        timeout = d(
            "command_timeout",
            0.25,
            _desc(
                "seconds without joint_command (or force_feedback) before holding position "
                "(or zeroing the rendered torques)"
            ),
        ).value
        stiffness = d(
            "joint_stiffness",
            [400.0, 400.0, 300.0, 80.0, 80.0],
            _desc("servo stiffness (N·m/rad) turning tracking error into joint torque"),
        ).value
        damping = d(
            "joint_damping",
            [11.3, 11.3, 7.7, 1.8, 1.8],
            _desc(
                "servo velocity damping (N·m·s/rad): while the arm moves, this much of the "
                "tracking error is the servo's own damping, not an external force"
            ),
        ).value
        unit = d(
            "force_unit_nm",
            0.001,
            _desc(
                "N·m per unit of the robot's S JnForce parameter (undocumented on hardware: "
                "calibrate)"
            ),
        ).value
        max_t = d(
            "max_torque_nm",
            [3.0, 3.0, 3.0, 1.0, 1.0],
            _desc("saturation of rendered force-feedback torques (N·m)"),
        ).value
        diag = d("diagnostics_period", 1.0, _desc("seconds between diagnostics")).value
        frame = d("frame_id", "base_link", _desc("header frame of joint_states")).value
        wrench_frame = d(
            "wrench_frame", "tool0", _desc("tool0 (tool frame, at the tip) or base_link")
        ).value
        servo_names = d(
            "servo_joint_names",
            ["j6", "j7"],
            _desc("names for the J6 roll and J7 gripper servos in joint_states ([] = omit)"),
        ).value
        if wrench_frame not in ("tool0", "base_link"):
            raise ValueError(
                f"parameter wrench_frame must be tool0 or base_link, not {wrench_frame!r}"
            )
        if mode not in MODES:
            raise ValueError(f"parameter mode must be one of {MODES}, not {mode!r}")
        for what, seq in (
            ("joint_lower", lower),
            ("joint_upper", upper),
            ("joint_stiffness", stiffness),
            ("joint_damping", damping),
            ("max_torque_nm", max_t),
        ):
            if len(seq) != len(names):
                raise ValueError(f"parameter {what} needs {len(names)} values, has {len(seq)}")
        return DriverParams(
            host=str(host),
            port=int(port),
            rate_hz=float(rate),
            mode=str(mode),
            joint_names=tuple(names),
            lower=tuple(map(float, lower)),
            upper=tuple(map(float, upper)),
            command_timeout_s=float(timeout),
            joint_stiffness=tuple(map(float, stiffness)),
            joint_damping=tuple(map(float, damping)),
            force_unit_nm=float(unit),
            max_torque_nm=tuple(map(float, max_t)),
            frame_id=str(frame),
            wrench_frame=str(wrench_frame),
            servo_joint_names=tuple(servo_names)[:2],
            diagnostics_period=float(diag),
            request_timeout_s=float(request_timeout),
        )

    # -- asyncio side ----------------------------------------------------------------------
    async def _start(self) -> None:
        await self.client.start()
        self._wake = asyncio.Event()
        self._tasks = [
            asyncio.ensure_future(self._sender()),
            asyncio.ensure_future(self._ticker()),
        ]

    async def _enter_mode(self) -> None:
        if self.params.mode == "position":
            await self.client.set_keep_position()
        elif self.params.mode == "follow_me":
            await self.client.set_follow_me()
        self._mode_ready = True

    async def _sender(self) -> None:
        """Send the newest target/forces; older ones queued meanwhile are simply replaced."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if not self.client.connected:
                    # a target for a dead link is stale by the time it returns: drop it (the
                    # teleop holds meanwhile and re-syncs to the state read after reconnecting)
                    self._mode_ready = False
                    self._pending_target = None
                    continue
                if not self._mode_ready:
                    await self._enter_mode()
                target, self._pending_target = self._pending_target, None
                if target is not None:
                    await self.client.set_position_target(target)
                forces, self._pending_force = self._pending_force, None
                if forces is not None:
                    units = [round(t / self.params.force_unit_nm) for t in forces]
                    await self.client.set_joint_forces(units)
            except Exception as exc:  # the client reconnects by itself; report, keep going
                self._last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().warning(f"command not delivered: {self._last_error}")
                if not self.client.connected:
                    self._mode_ready = False

    async def _ticker(self) -> None:
        """Hold on command silence, zero stale torques, and (re)enter the mode on reconnect."""
        period = 1.0 / max(self.params.rate_hz, 1.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            status = self.client.latest
            measured = status.measured_angles[: len(self.params.joint_names)] if status else None
            hold = self._gate.tick(now, measured)
            if hold is not None and hold.target is not None:
                self.get_logger().info("no fresh joint_command: holding position")
                self._pending_target = hold.target
                self._wake.set()
            zero = self._force_gate.tick(now)
            if zero is not None:
                self._pending_force = zero
                self._wake.set()
            if not self.client.connected:
                self._mode_ready = False  # a reconnected robot must be put in our mode again
                self._pending_target = None  # never replay a target queued while it was down
            elif not self._mode_ready and self.params.mode != "monitor":
                self._wake.set()

    def _on_status(self, status: protocol.DexterStatus) -> None:
        """Called in the loop thread for every status poll."""
        if not self.context.ok():  # Ctrl-C: rclpy is shut down, the loop not yet
            return
        p = self.params
        n = len(p.joint_names)
        q = np.asarray(status.measured_angles[:n], dtype=float)
        t = status.robot_time
        if self._prev is not None and t > self._prev[0]:
            raw = (q - self._prev[1]) / (t - self._prev[0])
            self._velocity = 0.5 * self._velocity + 0.5 * raw  # light smoothing of a noisy diff
        self._prev = (t, q)
        # The servo's torque: stiffness × tracking error, less its own velocity damping (which
        # shows up as tracking error in free motion and is no contact force).
        delta = np.asarray(status.delta[:n], dtype=float)
        servo_torque = self._stiffness * delta
        if p.mode == "position":
            servo_torque -= self._damping * self._velocity
        stamp = self.get_clock().now().to_msg()
        js = self._js  # built once (names, frame); each status fills in stamp and values
        js.header.stamp = stamp
        servos = (status.j6.position, status.j7.position)[: len(p.servo_joint_names)]
        js.position = [*q.tolist(), *servos]
        js.velocity = [*self._velocity.tolist(), *self._servo_zeros]
        js.effort = [*servo_torque.tolist(), *self._servo_zeros]
        self._pub_js.publish(js)
        if n == 5:
            self._pub_wrench.publish(self._wrench(q, -servo_torque, stamp))
        self._status_count += 1

    def _wrench(self, q: np.ndarray, external_torque: np.ndarray, stamp) -> WrenchStamped:
        """Tip force explaining the external joint torques (the servo resists them)."""
        force = kinematics.tip_force_from_joint_torques(q, external_torque)
        if self.params.wrench_frame == "tool0":
            force = kinematics.forward(q)[:3, :3].T @ force
        ws = self._ws
        ws.header.stamp = stamp
        ws.wrench.force.x, ws.wrench.force.y, ws.wrench.force.z = map(float, force)
        return ws

    # -- rclpy side (executor thread) --------------------------------------------------------
    def _on_command(self, msg: JointState) -> None:
        names, positions, now = list(msg.name), list(msg.position), time.monotonic()
        self.loop_thread.call_soon(self._apply_command, names, positions, now)

    def _apply_command(self, names: Sequence[str], positions: Sequence[float], now: float) -> None:
        try:
            decision = self._gate.command(names, positions, now)
        except CommandError as exc:
            self._last_error = f"joint_command refused: {exc}"
            self.get_logger().warning(self._last_error, throttle_duration_sec=1.0)
            return
        if decision.clamped:
            self.get_logger().warning(
                "joint_command outside the joint limits: clamped", throttle_duration_sec=1.0
            )
        self._pending_target = decision.target
        self._wake.set()

    def _on_force(self, msg: JointState) -> None:
        names, efforts, now = list(msg.name), list(msg.effort), time.monotonic()
        self.loop_thread.call_soon(self._apply_force, names, efforts, now)

    def _apply_force(self, names: Sequence[str], efforts: Sequence[float], now: float) -> None:
        try:
            self._pending_force = self._force_gate.command(names, efforts, now)
        except CommandError as exc:
            self._last_error = f"force_feedback refused: {exc}"
            self.get_logger().warning(self._last_error, throttle_duration_sec=1.0)
            return
        self._wake.set()

    # -- diagnostics -----------------------------------------------------------------------
    def diagnostic_status(self) -> DiagnosticStatus:
        st = DiagnosticStatus()
        st.name = f"{self.get_name()}: Dexter {self.params.host}:{self.params.port}"
        st.hardware_id = f"dexter@{self.params.host}"
        connected = self.client.connected
        holding = self._gate.state is GateState.HOLDING
        if not connected:
            st.level, st.message = DiagnosticStatus.ERROR, "robot not connected"
        elif holding:
            st.level, st.message = DiagnosticStatus.WARN, "holding: no fresh joint_command"
        else:
            st.level, st.message = DiagnosticStatus.OK, f"{self.params.mode}"
        stats = self.client.stats
        g = self._gate.counters
        values = {
            "mode": self.params.mode,
            "connected": str(connected),
            "command_state": self._gate.state.value,
            "status_messages": str(self._status_count),
            "commands_accepted": str(g.accepted),
            "commands_clamped": str(g.clamped),
            "commands_rejected": str(g.rejected + self._force_gate.rejected),
            "holds": str(g.holds),
            "last_error": self._last_error,
        }
        for key, value in vars(stats).items():
            values[f"client_{key}"] = str(value)
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return st

    def _publish_diagnostics(self) -> None:
        publish_diagnostics(self, self._pub_diag, self.diagnostic_status())

    def destroy_node(self) -> None:
        # Kilted's rclpy.shutdown() also destroys a node whose constructor raised (bad
        # parameters), before loop_thread exists
        loop_thread = getattr(self, "loop_thread", None)
        if loop_thread is not None and loop_thread.alive:
            try:
                self.loop_thread.run(self._shutdown(), timeout=5.0)
            finally:
                self.loop_thread.stop()
        super().destroy_node()

    async def _shutdown(self) -> None:
        for task in getattr(self, "_tasks", []):
            task.cancel()
        await self.client.stop()


def main(args: Sequence[str] | None = None) -> None:
    spin_node(DexterDriverNode, args)


if __name__ == "__main__":
    main()
