"""Driver for the Haddington Dynamics Dexter arm and a simulator that speaks its TCP protocol.

``protocol`` and ``kinematics`` are pure; ``client`` and ``sim`` are asyncio; ``ros_node`` is
the only module that imports rclpy.
"""
