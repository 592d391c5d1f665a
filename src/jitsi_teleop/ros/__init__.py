"""ROS 2 adapters: the only jitsi_teleop modules that import rclpy."""
