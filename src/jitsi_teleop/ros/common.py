"""What every node of this package does the same way: spin until Ctrl-C, publish diagnostics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.publisher import Publisher


def spin_node(factory: Callable[[], Node], args: Sequence[str] | None = None) -> None:
    """``ros2 run`` entry point body: init, build the node, spin, and always clean up.
    SIGINT (Ctrl-C, ``ros2 launch``) and SIGTERM end the spin quietly."""
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        if rclpy.ok():  # a real error; otherwise rclpy tripping over its own shutdown (SIGINT)
            raise
    finally:
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
