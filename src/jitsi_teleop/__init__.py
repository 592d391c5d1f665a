"""jitsi_teleop: ROS 2 teleoperation through a Jitsi Meet room.

Layers (imports point downward only, see docs/architecture.md):
pure logic (``wire``, ``clock``, ``teleop``) -> asyncio I/O (``room``, ``links``, ``session``)
-> ROS adapters (``ros``, the only rclpy users) -> entry points (``cli``).
"""

__version__ = "0.1.0"
