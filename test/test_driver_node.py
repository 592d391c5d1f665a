"""The Dexter driver node with real rclpy (ROS wheels) against the simulator over loopback TCP."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (ROS wheels or a ROS 2 install)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import WrenchStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from dexter_driver import kinematics  # noqa: E402
from dexter_driver.ros_node import COMMAND_QOS, DexterDriverNode  # noqa: E402
from dexter_driver.sim import SIM_FORCE_NM_PER_UNIT, DexterSim, SimConfig  # noqa: E402
from jitsi_teleop.loop_thread import LoopThread  # noqa: E402

pytestmark = pytest.mark.ros


@dataclass
class Site:
    """One simulated robot, its driver node and a probe node, spun in a background thread."""

    sim: DexterSim
    sim_loop: LoopThread
    driver: DexterDriverNode
    probe: rclpy.node.Node
    joint_states: list[JointState] = field(default_factory=list)
    wrenches: list[WrenchStamped] = field(default_factory=list)
    diagnostics: list[DiagnosticArray] = field(default_factory=list)

    def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def latest_q(self) -> np.ndarray:
        return np.asarray(self.joint_states[-1].position[:5])

    def diag_values(self) -> dict[str, str]:
        if not self.diagnostics:
            return {}
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values}


def _make_site(mode: str, **params: object) -> Iterator[Site]:
    sim_loop = LoopThread("sim")
    sim = DexterSim(SimConfig(port=0))
    sim_loop.run(sim.start())
    context = rclpy.context.Context()
    rclpy.init(context=context)
    overrides = [
        Parameter("port", value=sim.port),
        Parameter("mode", value=mode),
        Parameter("rate_hz", value=100.0),
        *(Parameter(k, value=v) for k, v in params.items()),
    ]
    driver = DexterDriverNode(context=context, parameter_overrides=overrides)
    probe = rclpy.create_node("probe", context=context)
    site = Site(sim, sim_loop, driver, probe)
    probe.create_subscription(JointState, "joint_states", site.joint_states.append, 50)
    probe.create_subscription(WrenchStamped, "wrench", site.wrenches.append, 50)
    probe.create_subscription(DiagnosticArray, "/diagnostics", site.diagnostics.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(driver)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert site.wait_for(lambda: len(site.joint_states) > 5), "no joint_states published"
        yield site
    finally:
        executor.shutdown()
        driver.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(5)
        sim_loop.run(sim.stop())
        sim_loop.stop()


@pytest.fixture
def position_site() -> Iterator[Site]:
    yield from _make_site("position", command_timeout=0.3, diagnostics_period=0.1)


@pytest.fixture
def follow_site() -> Iterator[Site]:
    yield from _make_site("follow_me", command_timeout=0.3, diagnostics_period=0.1)


def _command_publisher(site: Site):
    return site.probe.create_publisher(JointState, "joint_command", COMMAND_QOS)


def _send(pub, positions, names=("j1", "j2", "j3", "j4", "j5")) -> None:
    msg = JointState()
    msg.name = list(names)
    msg.position = [float(p) for p in positions]
    pub.publish(msg)


def test_publishes_simulator_state_with_names_and_units(position_site: Site) -> None:
    site = position_site
    js = site.joint_states[-1]
    assert list(js.name) == ["j1", "j2", "j3", "j4", "j5", "j6", "j7"]
    sim_q = site.sim_loop.run(_angles(site.sim))
    np.testing.assert_allclose(site.latest_q(), sim_q, atol=0.02)
    assert js.header.frame_id == "base_link"


async def _angles(sim: DexterSim) -> tuple[float, ...]:
    return sim.joint_angles()


def test_streamed_commands_move_the_arm_to_the_target(position_site: Site) -> None:
    site = position_site
    pub = _command_publisher(site)
    target = np.array([0.3, -0.2, 0.4, 0.1, -0.3])
    end = time.monotonic() + 3.0
    while time.monotonic() < end and not np.allclose(site.latest_q(), target, atol=0.005):
        _send(pub, target)
        time.sleep(0.02)
    np.testing.assert_allclose(site.latest_q(), target, atol=0.005)
    np.testing.assert_allclose(site.sim_loop.run(_angles(site.sim)), target, atol=0.005)


def test_arm_holds_where_it_is_when_commands_stop(position_site: Site) -> None:
    site = position_site
    pub = _command_publisher(site)
    # one command to a far target (J1 +2 rad takes > 1.3 s at the P speed cap), then silence
    for _ in range(3):
        _send(pub, [2.0, 0, 0, 0, 0])
        time.sleep(0.02)
    assert site.wait_for(lambda: site.diag_values().get("command_state") == "holding", 3.0)
    time.sleep(0.5)
    q1 = site.latest_q()[0]
    time.sleep(0.5)
    q2 = site.latest_q()[0]
    assert 0.05 < q1 < 1.5, f"arm should have stopped part way, not at {q1}"
    assert abs(q2 - q1) < 0.01, "the held position drifts"
    assert site.diag_values()["holds"] == "1"
    assert site.diagnostics[-1].status[0].level == b"\x01"  # WARN while holding
    # a fresh command resumes tracking
    target = [0.2, 0.1, 0, 0, 0]
    end = time.monotonic() + 3.0
    while time.monotonic() < end and not np.allclose(site.latest_q(), target, atol=0.01):
        _send(pub, target)
        time.sleep(0.02)
    np.testing.assert_allclose(site.latest_q(), target, atol=0.01)


def test_nan_and_unknown_joint_commands_never_reach_the_robot(position_site: Site) -> None:
    site = position_site
    pub = _command_publisher(site)
    start = site.latest_q().copy()
    for _ in range(5):
        _send(pub, [math.nan, 0.5, 0.5, 0.5, 0.5])
        _send(pub, [0.5, 0.5, 0.5, 0.5, 0.5], names=("j1", "j2", "j3", "j4", "elbow"))
        _send(pub, [math.inf, -math.inf, 0, 0, 0])
        time.sleep(0.05)
    time.sleep(0.5)
    np.testing.assert_allclose(site.latest_q(), start, atol=1e-3)
    assert site.wait_for(lambda: int(site.diag_values().get("commands_rejected", 0)) >= 1, 3.0)
    assert site.diag_values()["commands_accepted"] == "0"
    assert (
        "non-finite" in site.diag_values()["last_error"]
        or "unknown joint" in (site.diag_values()["last_error"])
    )


def test_out_of_limit_command_is_clamped_to_the_joint_limit(position_site: Site) -> None:
    site = position_site
    pub = _command_publisher(site)
    upper_j2 = math.radians(105)
    end = time.monotonic() + 4.0
    while time.monotonic() < end and site.latest_q()[1] < upper_j2 - 0.005:
        _send(pub, [0, 3.0, 0, 0, 0])
        time.sleep(0.02)
    time.sleep(0.2)
    assert site.latest_q()[1] == pytest.approx(upper_j2, abs=0.005)
    assert int(site.diag_values()["commands_clamped"]) > 0


def test_contact_force_is_reported_as_a_tool_wrench(position_site: Site) -> None:
    site = position_site
    pub = _command_publisher(site)
    q = np.array([0.2, 0.5, 0.6, 0.3, 0.1])  # away from the singular upright pose
    end = time.monotonic() + 3.0
    while time.monotonic() < end and not np.allclose(site.latest_q(), q, atol=0.003):
        _send(pub, q)
        time.sleep(0.02)
    force_base = np.array([4.0, -3.0, 5.0])

    async def push() -> None:
        site.sim.set_external_wrench(*force_base, 0.0, 0.0, 0.0)

    site.sim_loop.run(push())
    end = time.monotonic() + 2.0
    estimate = np.zeros(3)
    while time.monotonic() < end:
        _send(pub, q)  # keep commanding so the driver does not go to hold
        w = site.wrenches[-1]
        assert w.header.frame_id == "tool0"
        f_tool = np.array([w.wrench.force.x, w.wrench.force.y, w.wrench.force.z])
        estimate = kinematics.forward(site.latest_q())[:3, :3] @ f_tool
        if np.allclose(estimate, force_base, atol=0.5):
            break
        time.sleep(0.02)
    np.testing.assert_allclose(estimate, force_base, atol=0.5)


def test_follow_me_renders_force_feedback_and_zeroes_it_when_stale(follow_site: Site) -> None:
    site = follow_site
    pub = site.probe.create_publisher(JointState, "force_feedback", 10)
    torque = [0.5, -0.25, 0.0, 0.1, 5.0]  # the last one saturates at max_torque_nm = 1.0

    def units() -> list[float]:
        return list(site.sim.physics.force_units)

    expected = [0.5, -0.25, 0.0, 0.1, 1.0]
    expected_units = [round(t / SIM_FORCE_NM_PER_UNIT) for t in expected]
    end = time.monotonic() + 3.0
    while time.monotonic() < end and units() != expected_units:
        msg = JointState()
        msg.name = ["j1", "j2", "j3", "j4", "j5"]
        msg.effort = torque
        pub.publish(msg)
        time.sleep(0.02)
    assert units() == expected_units
    assert site.sim.physics.follow, "the driver put the arm in follow-me mode"
    # feedback stops: the rendered torques go back to zero within the timeout
    assert site.wait_for(lambda: units() == [0, 0, 0, 0, 0], 2.0)


def test_dead_robot_socket_is_reported_and_the_driver_reconnects(position_site: Site) -> None:
    site = position_site
    port = site.sim.port
    site.sim_loop.run(site.sim.stop())
    assert site.wait_for(lambda: site.diag_values().get("connected") == "False", 5.0)
    assert site.diagnostics[-1].status[0].level == b"\x02"  # ERROR
    count = len(site.joint_states)
    site.sim = DexterSim(SimConfig(port=port))
    site.sim_loop.run(site.sim.start())
    assert site.wait_for(lambda: len(site.joint_states) > count + 20, 10.0)
    assert site.wait_for(lambda: site.diag_values().get("connected") == "True", 5.0)
    pub = _command_publisher(site)
    target = [0.1, 0.1, 0.1, 0.1, 0.1]
    end = time.monotonic() + 3.0
    while time.monotonic() < end and not np.allclose(site.latest_q(), target, atol=0.01):
        _send(pub, target)
        time.sleep(0.02)
    np.testing.assert_allclose(site.latest_q(), target, atol=0.01)


def _shipped_parameters() -> dict[str, object]:
    import yaml

    path = Path(__file__).resolve().parents[1] / "config" / "dexter_driver.yaml"
    values = yaml.safe_load(path.read_text())["dexter_driver"]["ros__parameters"]
    return {k: v for k, v in values.items() if k not in ("host", "port", "mode", "rate_hz")}


@pytest.fixture
def shipped_site() -> Iterator[Site]:
    """The driver with config/dexter_driver.yaml, what the launch files pass."""
    yield from _make_site("position", **_shipped_parameters())


def test_the_shipped_parameter_file_models_the_simulator_servo(shipped_site: Site) -> None:
    """ROS ignores unknown names in a parameter file, and the effort estimate is only as good as
    its servo model: with a stiffness 25 % off the simulator's, a freely moving arm read as a
    velocity-proportional phantom force (and contact forces came out wrong)."""
    driver = shipped_site.driver
    values = _shipped_parameters()
    assert [k for k in values if not driver.has_parameter(k)] == []
    sim = SimConfig()
    critical = [2.0 * math.sqrt(k * i) for k, i in zip(sim.stiffness, sim.inertia)]
    assert list(driver.params.joint_stiffness) == list(sim.stiffness)
    assert np.allclose(driver.params.joint_damping, critical, atol=0.05)
    # a free move at the P speed cap: while it slews, the effort reads (almost) no torque and
    # does not jitter (the estimate's velocity comes from the robot's clock and angles)
    pub = _command_publisher(shipped_site)
    start = shipped_site.latest_q()
    goal = start + np.array([0.8, 0.0, 0.0, 0.0, 0.0])
    mark = len(shipped_site.joint_states)

    def arrived() -> bool:
        _send(pub, goal)
        return bool(np.allclose(shipped_site.latest_q(), goal, atol=0.01))

    assert shipped_site.wait_for(arrived, 5.0)
    cruise = 0.9 * sim.p_max_speed
    slewing = [m.effort[0] for m in shipped_site.joint_states[mark:] if m.velocity[0] > cruise]
    assert len(slewing) > 10
    p10, p50, p90 = np.percentile(slewing, [10, 50, 90])
    assert abs(p50) < 1.0 and p90 - p10 < 0.5, (p10, p50, p90)  # N·m, J1
