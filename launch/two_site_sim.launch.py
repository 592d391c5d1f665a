"""Both sites on one machine, for trying it out: a local Jitsi-like Prosody, and a leader and a
follower site (simulated Dexters), each in its own ROS domain so their graphs stay apart exactly
as at two real sites; only the room connects them.

    ros2 launch jitsi_teleop two_site_sim.launch.py
    ROS_DOMAIN_ID=21 ros2 topic echo /follower/teleop/feedback   # the leader site's view

Move the leader arm as an operator would through its simulator's control port (robot port
+ 10: 50011 for the leader, 50012 for the follower; JSON lines, base frame, metres):

    echo '{"op": "state"}' | nc -q1 127.0.0.1 50011     # tip at (0, 0.467, 0.499) to start
    echo '{"op": "wall", "normal": [0, 0, 1], "offset": 0.47}' | nc -q1 127.0.0.1 50012
    echo '{"op": "hand", "target": [0.05, 0.45, 0.44]}' | nc -q1 127.0.0.1 50011   # push down

or run ``jitsi-teleop demo`` for a scripted operator without ROS. The pairing key is generated
on first use (``key_file``); the server listens on loopback only.
"""

from __future__ import annotations

import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackagePrefix

PACKAGE = "jitsi_teleop"
DOMAIN = "meet.local"


def _sites(context: LaunchContext) -> list:
    from jitsi_teleop.pairing import generate_key_file

    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    key = os.path.expanduser(value("key_file"))
    if not os.path.exists(key):
        generate_key_file(key)
    share = get_package_share_directory(PACKAGE)
    websocket = f"ws://127.0.0.1:{value('http_port')}/xmpp-websocket"
    actions: list = [ExecuteProcess(
        cmd=[PathJoinSubstitution([FindPackagePrefix(PACKAGE), "lib", PACKAGE, "jitsi-teleop"]),
             "server", "--domain", DOMAIN, "--http-port", value("http_port"),
             "--c2s-port", value("c2s_port")],
        name="prosody", output="screen",
    )]
    sites = (
        ("leader", value("leader_domain_id"), value("leader_robot_port"), "true"),
        ("follower", value("follower_domain_id"), value("follower_robot_port"), "false"),
    )
    for role, domain_id, port, rviz in sites:
        control = str(int(port) + 10)  # 50011 / 50012: push the arms with JSON lines
        site = IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "teleop.launch.py")),
            launch_arguments={
                "role": role,
                "sim": "true",
                "robot_port": port,
                "sim_control_port": control,
                "domain": DOMAIN,
                "room_name": value("room_name"),
                "websocket_url": websocket,
                "secret_file": key,
                "loopback_only": "true",
                "stun_turn": "false",
                "rviz": rviz if value("rviz").lower() in ("true", "1") else "false",
            }.items(),
        )
        # scoped: the domain id applies to this site's processes only
        actions.append(GroupAction(
            [SetEnvironmentVariable("ROS_DOMAIN_ID", domain_id), site], scoped=True
        ))
    return actions


def generate_launch_description() -> LaunchDescription:
    def arg(name: str, default: str, description: str) -> DeclareLaunchArgument:
        return DeclareLaunchArgument(name, default_value=default, description=description)

    return LaunchDescription([
        arg("leader_domain_id", "21", "ROS domain of the leader site"),
        arg("follower_domain_id", "22", "ROS domain of the follower site"),
        arg("leader_robot_port", "50001", "TCP port of the leader's simulated Dexter"),
        arg("follower_robot_port", "50002", "TCP port of the follower's simulated Dexter"),
        arg("http_port", "5280", "local Prosody's HTTP/WebSocket port (loopback)"),
        arg("c2s_port", "5222", "local Prosody's XMPP client port (loopback)"),
        arg("room_name", "teleop", "room on the local server"),
        arg("key_file", os.path.join(tempfile.gettempdir(), "jitsi-teleop-two-site.key"),
            "pairing key (created when missing)"),
        arg("rviz", "true", "rviz2 at the leader site, showing both arms"),
        OpaqueFunction(function=_sites),
    ])
