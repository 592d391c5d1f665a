"""What every node of this package does the same way: spin until Ctrl-C, publish diagnostics."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher

#: ``$JITSI_TELEOP_EXECUTOR``: ``events`` (default where rclpy has it) or ``single``
EXECUTOR_ENV = "JITSI_TELEOP_EXECUTOR"


def make_executor(context: Context | None = None) -> Executor:
    """rclpy's EventsExecutor where the distro ships it (Jazzy's rclpy 7.1.6 does, as
    ``rclpy.experimental``): its wait loop is C++, where the SingleThreadedExecutor rebuilds
    a wait set in Python on every wake-up (measured: most of a node's CPU at 100 Hz).
    ``$JITSI_TELEOP_EXECUTOR=single`` picks the classic one (to compare, or as a fallback)."""
    choice = os.environ.get(EXECUTOR_ENV, "events").strip().lower()
    if choice not in ("events", "single"):
        raise ValueError(f"${EXECUTOR_ENV} must be events or single, not {choice!r}")
    if choice == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:  # older rclpy (Humble): the classic executor
            pass
        else:
            return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


def executor_name(executor: Executor) -> str:
    return "single" if isinstance(executor, SingleThreadedExecutor) else "events"


def spin_node(factory: Callable[[], Node], args: Sequence[str] | None = None) -> None:
    """``ros2 run`` entry point body: init, build the node, spin, and always clean up.
    SIGINT (Ctrl-C, ``ros2 launch``) and SIGTERM end the spin quietly."""
    rclpy.init(args=args)
    node = None
    executor = None
    try:
        executor = make_executor()
        node = factory()
        executor.add_node(node)
        # not executor.spin(): the Jazzy wheels' EventsExecutor.spin() busy-loops without
        # running a callback (rclpy 7.1.6); spin_once with a timeout works for both kinds
        while executor.context.ok():
            executor.spin_once(timeout_sec=1.0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if rclpy.ok():  # a real error; otherwise rclpy tripping over its own shutdown (SIGINT)
            raise
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def publish_diagnostics(node: Node, publisher: Publisher, status: DiagnosticStatus) -> None:
    """One DiagnosticArray with the node's status, stamped now."""
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    arr.status = [status]
    publisher.publish(arr)
