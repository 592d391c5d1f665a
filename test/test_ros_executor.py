"""The executor every node of this package spins on: rclpy's EventsExecutor where the distro
has it, the SingleThreadedExecutor on request or where it does not; both must run timers,
raw subscriptions and services, and stop when the context shuts down (Ctrl-C)."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from jitsi_teleop.ros.common import executor_name, make_executor  # noqa: E402

HAS_EVENTS = importlib.util.find_spec("rclpy.experimental") is not None


def test_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        monkeypatch.setenv("JITSI_TELEOP_EXECUTOR", "single")
        assert isinstance(make_executor(ctx), SingleThreadedExecutor)
        monkeypatch.setenv("JITSI_TELEOP_EXECUTOR", "events")
        assert executor_name(make_executor(ctx)) == ("events" if HAS_EVENTS else "single")
        monkeypatch.setenv("JITSI_TELEOP_EXECUTOR", "fast please")
        with pytest.raises(ValueError, match="events or single"):
            make_executor(ctx)
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("kind", ["events", "single"])
def test_node_callbacks_run_and_spin_ends_on_shutdown(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("JITSI_TELEOP_EXECUTOR", kind)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("executor_probe", context=ctx)
    got = {"timer": 0, "raw": 0}
    pub = node.create_publisher(JointState, "probe", 10)

    def tick() -> None:
        got["timer"] += 1
        pub.publish(JointState())

    def on_raw(data: bytes) -> None:
        assert isinstance(data, bytes)
        got["raw"] += 1

    def on_trigger(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success, res.message = True, "ok"
        return res

    node.create_timer(0.01, tick)
    node.create_subscription(JointState, "probe", on_raw, 10, raw=True)
    node.create_service(Trigger, "~/probe", on_trigger)
    client = node.create_client(Trigger, "~/probe")
    executor = make_executor(ctx)
    executor.add_node(node)

    def spin() -> None:  # what spin_node does
        try:
            while executor.context.ok():
                executor.spin_once(timeout_sec=1.0)
        except Exception:  # shut down while waiting
            pass

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 20
        while not (future.done() and got["raw"] >= 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got["timer"] >= 20 and got["raw"] >= 20, got
        assert future.done() and future.result().success
    finally:
        rclpy.shutdown(context=ctx)
        t.join(10)
        assert not t.is_alive()  # the spin loop ended with the context
        executor.shutdown()
        node.destroy_node()
