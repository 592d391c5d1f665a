"""Teleop nodes with real rclpy between two driver nodes and two simulated Dexters.

The two sites share one ROS context here (the transport that joins them in real use is tested
on its own): the leader site lives in namespace /site_a, the follower in /site_b, and each
teleop node reads the other site's topics under its ``peer_prefix``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (ROS wheels or a ROS 2 install)")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import WrenchStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from dexter_driver import kinematics  # noqa: E402
from dexter_driver.ros_node import DexterDriverNode  # noqa: E402
from dexter_driver.sim import DexterSim, SimConfig  # noqa: E402
from jitsi_teleop.loop_thread import LoopThread  # noqa: E402
from jitsi_teleop.ros.teleop_node import ESTOP_QOS, TeleopNode  # noqa: E402

pytestmark = pytest.mark.ros

Q0 = (0.0, 0.3, 1.2, 0.07, 0.0)  # tool pointing down, well away from singularities


@dataclass
class TwoSites:
    loop: LoopThread
    leader_sim: DexterSim
    follower_sim: DexterSim
    leader: TeleopNode
    follower: TeleopNode
    probe: rclpy.node.Node
    diagnostics: dict[str, DiagnosticArray] = field(default_factory=dict)

    def sim(self, sim: DexterSim, fn: Callable[[DexterSim], object]) -> object:
        async def run() -> object:
            return fn(sim)

        return self.loop.run(run())

    def angles(self, sim: DexterSim) -> np.ndarray:
        return np.asarray(self.sim(sim, lambda s: s.joint_angles()))

    def wait_for(self, pred: Callable[[], bool], timeout: float = 8.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.05)
        return pred()


def _state(node: TeleopNode) -> str:
    return {kv.key: kv.value for kv in node.diagnostic_status().values}["state"]


def _place(sim: DexterSim, q) -> None:
    """Put a simulated arm at ``q`` at rest (as if it had been moved there before)."""
    p = sim.physics
    p.q = np.asarray(q, float).copy()
    p.qd[:] = 0.0
    p.setpoint = p.q.copy()
    p.traj = p.q.copy()
    p.a_goal = p.q.copy()
    p.p_offset[:] = 0.0


@pytest.fixture
def sites() -> Iterator[TwoSites]:
    loop = LoopThread("sims")
    leader_sim, follower_sim = DexterSim(SimConfig(port=0)), DexterSim(SimConfig(port=0))
    loop.run(leader_sim.start())
    loop.run(follower_sim.start())

    async def place() -> None:
        _place(leader_sim, Q0)
        _place(follower_sim, Q0)
        leader_sim.set_hand()  # the operator holds the leader's tool where it is

    loop.run(place())
    context = rclpy.context.Context()
    rclpy.init(context=context)
    common = [Parameter("rate_hz", value=100.0), Parameter("diagnostics_period", value=0.2)]
    drivers = [
        DexterDriverNode(
            context=context,
            namespace=ns,
            parameter_overrides=[
                Parameter("port", value=sim.port),
                Parameter("mode", value=mode),
                Parameter("command_timeout", value=0.3),
                *common,
            ],
        )
        for ns, sim, mode in (
            ("site_a", leader_sim, "follow_me"),
            ("site_b", follower_sim, "position"),
        )
    ]
    leader = TeleopNode(
        context=context,
        namespace="site_a",
        parameter_overrides=[
            Parameter("role", value="leader"),
            Parameter("peer_prefix", value="/site_b"),
            *common,
        ],
    )
    follower = TeleopNode(
        context=context,
        namespace="site_b",
        parameter_overrides=[
            Parameter("role", value="follower"),
            Parameter("peer_prefix", value="/site_a"),
            # six nodes and two simulators share one Python process (one GIL) here, so
            # callbacks can be late by more than the 0.15 s default lease
            Parameter("command_timeout", value=0.5),
            Parameter("state_timeout", value=0.5),  # the driver's joint_states: same reason
            *common,
        ],
    )
    probe = rclpy.create_node("probe", context=context)
    # One executor per node, as each node has its own process in use: rclpy's executors rebuild
    # the wait set of all their nodes on every spin, and one MultiThreadedExecutor over all six
    # nodes ran the 100 Hz callbacks at about 15 Hz here (one GIL), enough to make the
    # force-feedback loop ring.
    executors = []
    for node in (*drivers, leader, follower, probe):
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executors.append(executor)
    stop = threading.Event()

    def spin(executor: SingleThreadedExecutor) -> None:
        while not stop.is_set():  # stopped before the executor is shut down: a clean exit
            executor.spin_once(timeout_sec=0.05)

    spinners = [threading.Thread(target=spin, args=(e,), daemon=True) for e in executors]
    for spinner in spinners:
        spinner.start()
    s = TwoSites(loop, leader_sim, follower_sim, leader, follower, probe)
    try:
        assert s.wait_for(lambda: _state(follower) == "tracking"), "follower never tracked"
        yield s
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join(5)
        for executor in executors:
            executor.shutdown()
        for node in (*drivers, leader, follower, probe):
            node.destroy_node()
        rclpy.shutdown(context=context)
        loop.run(leader_sim.stop())
        loop.run(follower_sim.stop())
        loop.stop()


def _tip(q) -> np.ndarray:
    return kinematics.tool_position(q)


def _move_hand(s: TwoSites, offset) -> np.ndarray:
    goal = _tip(Q0) + np.asarray(offset, dtype=float)
    s.sim(s.leader_sim, lambda sim: sim.set_hand(goal))
    return goal


def test_follower_tracks_the_leader_moved_by_hand(sites: TwoSites) -> None:
    s = sites
    goal = _move_hand(s, (0.06, 0.0, -0.04))  # the operator moves the leader's tool
    assert s.wait_for(lambda: np.linalg.norm(_tip(s.angles(s.leader_sim)) - goal) < 0.005)
    assert s.wait_for(
        lambda: np.allclose(s.angles(s.follower_sim), s.angles(s.leader_sim), atol=0.01)
    )
    assert s.wait_for(lambda: _state(s.follower) == "tracking")
    for node in (s.leader, s.follower):  # each reports its own control loop's timing

        def timing(node: TeleopNode = node) -> dict[str, str]:
            return {kv.key: kv.value for kv in node.diagnostic_status().values}

        assert s.wait_for(lambda: timing()["loop_hz"] != "n/a")  # after half a window
        values = timing()
        assert float(values["loop_hz"]) > 0 and float(values["loop_max_gap_ms"]) > 0
        assert int(values["late_ticks"]) >= 0
    # in free space, once the follower has caught up, (almost) nothing is rendered: the
    # deadband hides the servo's residual error; under 0.1 N·m on every joint
    assert s.wait_for(lambda: np.abs(np.asarray(s.leader_sim.physics.force_units)).max() < 100)


def test_contact_at_the_follower_is_felt_at_the_leader(sites: TwoSites) -> None:
    s = sites
    # a table 2 cm below the follower's tool; the operator pushes the leader 5 cm down
    table_z = _tip(Q0)[2] - 0.02
    s.sim(s.follower_sim, lambda sim: sim.set_wall((0, 0, 1), table_z, 20000.0, 200.0))
    feedback: list[WrenchStamped] = []
    s.probe.create_subscription(WrenchStamped, "/site_b/teleop/feedback", feedback.append, 10)
    goal = _move_hand(s, (0.0, 0.0, -0.05))

    def rendered() -> np.ndarray:
        return np.asarray(s.leader_sim.physics.force_units, dtype=float)

    assert s.wait_for(lambda: np.abs(rendered()).max() > 100)  # > 0.1 N·m on some joint
    time.sleep(1.0)  # let the contact settle
    # Averaged over a second (in this one-process harness the contact loop is noisy, and the
    # passivity controller's damping moves single samples; the rendered torque's direction is
    # checked in the pure tests): the follower senses the table and rests on it, the force
    # reaches the leader, and the operator's hand is held above where it is pushing.
    forces, lifts, follower_z = [], [], []
    for _ in range(50):
        f = feedback[-1].wrench.force
        forces.append((f.x, f.y, f.z))
        lifts.append(_tip(s.angles(s.leader_sim))[2] - goal[2])
        follower_z.append(_tip(s.angles(s.follower_sim))[2])
        time.sleep(0.02)
    assert np.mean(forces, axis=0)[2] > 3.0, "the follower should sense the table pushing up"
    assert np.mean(lifts) > 0.002, "the operator's hand should be held up by the feedback"
    assert min(follower_z) > table_z - 0.003, "the follower pressed through the table"
    _move_hand(s, (0.0, 0.0, 0.0))  # retreat: the follower leaves the table, no force sensed
    assert s.wait_for(lambda: _tip(s.angles(s.follower_sim))[2] > table_z + 0.01)
    assert s.wait_for(lambda: abs(feedback[-1].wrench.force.z) < 1.5)


def test_estop_latches_and_only_a_local_reset_clears_it(sites: TwoSites) -> None:
    s = sites
    client = s.probe.create_client(Trigger, "/site_b/teleop/estop")
    assert client.wait_for_service(5.0)
    future = client.call_async(Trigger.Request())
    assert s.wait_for(future.done)
    assert future.result().success
    assert _state(s.follower) == "estop"
    held = s.angles(s.follower_sim)
    # the leader moves: the follower stays where it was
    goal = _move_hand(s, (0.06, 0.0, -0.04))
    assert s.wait_for(lambda: np.linalg.norm(_tip(s.angles(s.leader_sim)) - goal) < 0.005)
    time.sleep(0.3)
    np.testing.assert_allclose(s.angles(s.follower_sim), held, atol=0.01)
    # a cleared e-stop published by the leader does not release the follower
    pub = s.probe.create_publisher(Bool, "/site_a/teleop/estop", ESTOP_QOS)
    pub.publish(Bool(data=False))
    time.sleep(0.3)
    assert _state(s.follower) == "estop"
    # the local reset does; then the follower catches up with the leader without a jump
    reset = s.probe.create_client(Trigger, "/site_b/teleop/reset")
    assert reset.wait_for_service(5.0)
    future = reset.call_async(Trigger.Request())
    assert s.wait_for(future.done) and future.result().success
    target = s.angles(s.leader_sim)
    assert s.wait_for(lambda: np.allclose(s.angles(s.follower_sim), target, atol=0.01), 10.0)


def test_estop_from_the_leader_site_crosses_to_the_follower(sites: TwoSites) -> None:
    s = sites
    client = s.probe.create_client(Trigger, "/site_a/teleop/estop")
    assert client.wait_for_service(5.0)
    future = client.call_async(Trigger.Request())
    assert s.wait_for(future.done) and future.result().success
    assert s.wait_for(lambda: _state(s.follower) == "estop")
    assert {kv.key: kv.value for kv in s.leader.diagnostic_status().values}["state"] == "estop"


def test_follower_holds_when_the_leader_goes_silent(sites: TwoSites) -> None:
    s = sites
    s.loop.run(s.leader_sim.stop())  # the leader's robot (hence its joint_states) goes away
    assert s.wait_for(lambda: _state(s.follower) == "holding")
    first = s.angles(s.follower_sim)
    time.sleep(0.5)
    np.testing.assert_allclose(s.angles(s.follower_sim), first, atol=0.002)


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_the_shipped_parameter_file_sets_declared_parameters_only(role: str) -> None:
    """ROS ignores a parameter file's unknown names silently: a misspelt key in
    config/teleop.yaml (what teleop.launch.py passes) would leave a limit at its default."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "config" / "teleop.yaml"
    values = yaml.safe_load(path.read_text())["teleop"]["ros__parameters"]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        node = TeleopNode(
            context=context, parameter_overrides=[*overrides, Parameter("role", value=role)]
        )
        try:
            undeclared = [k for k in values if not node.has_parameter(k)]
            assert not undeclared, f"{path.name} sets undeclared parameters {undeclared}"
            for k, v in values.items():
                assert node.get_parameter(k).value == v, k
            assert node.params.rate_hz == 100.0  # the driver's rate, not more
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def _values(node: TeleopNode) -> dict[str, str]:
    return {kv.key: kv.value for kv in node.diagnostic_status().values}


def test_follower_holds_while_its_robot_is_down_and_resyncs_where_it_restarted(
    sites: TwoSites,
) -> None:
    """The follower's Dexter dies mid-teleoperation and comes back at another pose: the
    follower holds and sends nothing meanwhile, and once the driver has reconnected its first
    command is where the arm really is (no jump back to the old target), then it catches up."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    s = sites
    commands: list[tuple[float, np.ndarray]] = []
    s.probe.create_subscription(
        JointState,
        "/site_b/joint_command",
        lambda m: commands.append((time.monotonic(), np.asarray(m.position, float))),
        qos_profile_sensor_data,  # best effort, as the driver's input
    )
    port = s.follower_sim.port
    s.loop.run(s.follower_sim.stop())  # the robot loses power
    assert s.wait_for(lambda: _values(s.follower)["robot_down"] == "True")
    assert s.follower.diagnostic_status().level == DiagnosticStatus.ERROR
    down_at = time.monotonic()
    _move_hand(s, (0.05, 0.0, -0.03))  # the leader goes on meanwhile
    time.sleep(1.0)
    assert not [t for t, _ in commands if t > down_at + 0.1], "commanded a dead robot"
    rebooted = (0.15, 0.1, 1.0, 0.2, -0.1)
    new_sim = DexterSim(SimConfig(port=port, start_q=rebooted))
    s.loop.run(new_sim.start())
    try:
        back_at = time.monotonic()
        ok = s.wait_for(lambda: any(t > back_at for t, _ in commands), 15.0)
        assert ok, (len(commands), _values(s.follower), s.angles(new_sim))
        first = next(q for t, q in commands if t > back_at)
        assert np.max(np.abs(first - np.asarray(rebooted))) < 0.02  # where the arm is
        assert int(_values(s.follower)["resyncs"]) >= 1
        assert s.wait_for(
            lambda: np.allclose(s.angles(new_sim), s.angles(s.leader_sim), atol=0.02), 15.0
        )
        resumed = [q for t, q in commands if t > back_at]
        steps = [np.max(np.abs(b - a)) for a, b in itertools.pairwise(resumed)]
        assert max(steps) < 0.05  # 1 rad/s x the filter's 50 ms integration cap
    finally:
        s.loop.run(new_sim.stop())
