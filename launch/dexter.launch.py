"""One Dexter arm: the driver node, optionally a local simulator, robot_state_publisher and rviz.

    ros2 launch jitsi_teleop dexter.launch.py sim:=true rviz:=true
    ros2 launch jitsi_teleop dexter.launch.py robot_host:=192.168.1.142 mode:=follow_me
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackagePrefix

PACKAGE = "jitsi_teleop"


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    with open(os.path.join(share, "urdf", "dexter_hdi.urdf")) as f:
        robot_description = f.read()
    sim = LaunchConfiguration("sim")
    host = LaunchConfiguration("robot_host")
    port = LaunchConfiguration("port")
    args = [
        DeclareLaunchArgument("sim", default_value="false",
                              description="start a local Dexter simulator instead of a robot"),
        DeclareLaunchArgument("robot_host", default_value="127.0.0.1",
                              description="the robot's address (ignored with sim:=true)"),
        DeclareLaunchArgument("port", default_value="50000", description="Dexter TCP port"),
        DeclareLaunchArgument("mode", default_value="position",
                              description="position | follow_me | monitor"),
        DeclareLaunchArgument("rate_hz", default_value="100.0", description="status poll rate"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2"),
        DeclareLaunchArgument(
            "config", default_value=os.path.join(share, "config", "dexter_driver.yaml"),
            description="driver parameter file",
        ),
    ]
    simulator = ExecuteProcess(
        cmd=[PathJoinSubstitution([FindPackagePrefix(PACKAGE), "lib", PACKAGE, "dexter-sim"]),
             "--host", "127.0.0.1", "--port", port],
        name="dexter_sim", output="screen", condition=IfCondition(sim),
    )
    driver = Node(
        package=PACKAGE, executable="dexter_driver", name="dexter_driver", output="screen",
        parameters=[LaunchConfiguration("config"), {
            "host": host, "port": port, "mode": LaunchConfiguration("mode"),
            "rate_hz": LaunchConfiguration("rate_hz"),
        }],
    )
    state_publisher = Node(
        package="robot_state_publisher", executable="robot_state_publisher",
        parameters=[{"robot_description": robot_description}],
    )
    world = Node(  # rviz's fixed frame; the two-site launch places the remote arm beside it
        package="tf2_ros", executable="static_transform_publisher",
        arguments=["--frame-id", "world", "--child-frame-id", "base_link"],
    )
    rviz = Node(
        package="rviz2", executable="rviz2",
        arguments=["-d", os.path.join(share, "rviz", "teleop.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*args, simulator, driver, state_publisher, world, rviz])
