"""One teleoperation site: driver (and simulator), transport, teleop node, both arms in rviz.

    ros2 launch jitsi_teleop teleop.launch.py role:=leader \\
        room:=https://meet.example.org/MyLab secret_file:=~/.config/jitsi-teleop/lab.key
    ros2 launch jitsi_teleop teleop.launch.py role:=follower robot_host:=192.168.1.142 \\
        room:=https://meet.example.org/MyLab secret_file:=~/.config/jitsi-teleop/lab.key

The leader's arm runs in follow-me mode (the operator moves it by hand and feels the contact
force); the follower's in position mode. The peer's topics appear under ``/leader`` or
``/follower``; robot_state_publisher draws the remote arm from them under the TF prefix
``remote/``, placed ``remote_offset`` metres beside the local one in the ``world`` frame.
With a plain XMPP server instead of a Jitsi deployment, give ``domain``, ``room_name`` and
``websocket_url`` instead of ``room`` (two_site_sim.launch.py does).
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackagePrefix

PACKAGE = "jitsi_teleop"


def _arguments(share: str) -> list[DeclareLaunchArgument]:
    def arg(name: str, default: str, description: str) -> DeclareLaunchArgument:
        return DeclareLaunchArgument(name, default_value=default, description=description)

    return [
        arg("role", "leader", "leader (the operator's arm) or follower (the remote arm)"),
        arg("sim", "false", "start a local Dexter simulator instead of talking to a robot"),
        arg("robot_host", "127.0.0.1", "the Dexter's address (ignored with sim:=true)"),
        arg("robot_port", "50000", "the Dexter's TCP port"),
        arg("sim_control_port", "", "with sim:=true: the simulator's force scripting port"),
        arg("room", "", "meeting URL (https://meet.example.org/MyLab), or lan:NAME: no server"),
        arg("room_name", "", "room name (plain XMPP server; default: from the meeting URL)"),
        arg("domain", "", "XMPP domain (plain XMPP server instead of a meeting URL)"),
        arg("websocket_url", "", "XMPP WebSocket URL (plain XMPP server)"),
        arg("bosh_url", "", "XMPP BOSH URL (https://HOST/http-bind): use BOSH, e.g. where "
            "a proxy blocks WebSockets (with a meeting URL, BOSH is already the fallback)"),
        arg("config", os.path.join(share, "config", "teleop_topics.yaml"), "topic YAML"),
        arg("secret_file", "", "pairing key file (jitsi-teleop keygen FILE); or set "
            "$JITSI_TELEOP_KEY_FILE / $JITSI_TELEOP_PASSPHRASE"),
        arg("peer_prefix", "", "where the peer's topics appear (default /<peer role>)"),
        arg("driver_config", os.path.join(share, "config", "dexter_driver.yaml"),
            "driver parameter file"),
        arg("teleop", "true", "start the teleop node (false: transport only)"),
        arg("teleop_config", os.path.join(share, "config", "teleop.yaml"),
            "teleop node parameter file (rate, follower limits, force feedback)"),
        arg("loopback_only", "false", "fast path on 127.0.0.1 only (one-machine simulation)"),
        arg("stun_turn", "true", "ask the server for STUN/TURN"),
        arg("remote_offset", "0.8", "y offset (m) of the remote arm in rviz's world frame"),
        arg("rviz", "true", "start rviz2 with both arms"),
        arg("jid", "", "log in with this XMPP account instead of anonymously (user@domain)"),
        arg("password_file", "", "file with the account's password (never the password itself)"),
        arg("peer_jid", "", "no room: pair one-to-one with this account (needs jid)"),
        arg("event_log", "", "the site's SQLite event log (default ~/.ros/jitsi_teleop/)"),
        arg("console_permissions", "", "chat console: who may use which command, e.g. "
            "'note=moderators,alice@example.org; chime=anyone'"),
    ]


def _site(context: LaunchContext) -> list:
    """Resolved at launch time: the role decides the nodes (jitsi_teleop.site_plan)."""
    from jitsi_teleop.site_plan import SiteArgs, site_processes

    values = {
        name: LaunchConfiguration(name).perform(context)
        for name in SiteArgs.__dataclass_fields__
        if name not in ("share", "extra")
    }
    plan = site_processes(SiteArgs(share=get_package_share_directory(PACKAGE), **values))
    actions: list = []
    for p in plan:
        if p.cmd:
            exe = PathJoinSubstitution([FindPackagePrefix(PACKAGE), "lib", PACKAGE, p.cmd[0]])
            actions.append(ExecuteProcess(cmd=[exe, *p.cmd[1:]], name=p.name, output="screen"))
            continue
        actions.append(Node(
            package=p.package,
            executable=p.executable,
            name=p.name,
            namespace=p.namespace or None,
            output="screen",
            parameters=list(p.parameters),
            remappings=list(p.remappings),
            arguments=list(p.arguments),
        ))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([*_arguments(share), OpaqueFunction(function=_site)])
