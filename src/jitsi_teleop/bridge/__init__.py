"""The transport between a site's ROS graph and the session: topic config and asyncio core
(rclpy-free; the ROS adapter is :mod:`jitsi_teleop.ros.transport_node`)."""
