"""What one teleoperation site runs, as plain data: the launch files turn it into actions.

Why not only a launch file: ROS ``launch`` is not on PyPI, so the role-dependent decisions
(driver mode, peer prefix, the remote arm's remapping and TF prefix, what the transport is told)
live here, where tests can check them without a ROS installation, and
``launch/teleop.launch.py`` only maps each :class:`ProcessSpec` onto a ``Node`` or
``ExecuteProcess``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bridge.topics import default_peer_prefix, peer_of

PACKAGE = "jitsi_teleop"
TRUE = ("true", "1", "yes", "on")


def flag(value: str | bool) -> bool:
    return value if isinstance(value, bool) else value.strip().lower() in TRUE


@dataclass(frozen=True)
class ProcessSpec:
    """One process: a ROS node (``package``/``executable``) or a plain command (``cmd``)."""

    name: str
    package: str = PACKAGE
    executable: str = ""
    namespace: str = ""
    parameters: tuple[Any, ...] = ()  # parameter files (str) and dicts
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()  # non-ROS process: executable name in lib/<package>, args


@dataclass(frozen=True)
class SiteArgs:
    """The launch arguments of teleop.launch.py, as strings like launch hands them over."""

    share: str
    role: str = "leader"
    sim: str = "false"
    robot_host: str = "127.0.0.1"
    robot_port: str = "50000"
    sim_control_port: str = ""  # the simulator's JSON-lines force scripting port (sim only)
    room: str = ""
    room_name: str = ""
    domain: str = ""
    websocket_url: str = ""
    bosh_url: str = ""
    config: str = ""
    secret_file: str = ""
    peer_prefix: str = ""
    driver_config: str = ""
    teleop: str = "true"
    teleop_config: str = ""
    loopback_only: str = "false"
    stun_turn: str = "true"
    remote_offset: str = "0.8"
    rviz: str = "true"
    jid: str = ""  # account login (the password from password_file, never an argument)
    password_file: str = ""
    peer_jid: str = ""  # one-to-one with this account instead of a MUC room
    event_log: str = ""
    console_permissions: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


def site_processes(a: SiteArgs) -> list[ProcessSpec]:
    """The processes of one site, in start order."""
    if a.role not in ("leader", "follower"):
        raise ValueError(f"role must be leader or follower, not {a.role!r}")
    share = Path(a.share)
    prefix = a.peer_prefix or default_peer_prefix(a.role)
    sim = flag(a.sim)
    urdf = (share / "urdf" / "dexter_hdi.urdf").read_text()
    out: list[ProcessSpec] = []
    if sim:
        # the simulated arm starts at the ready pose (tool down), not the singular home pose
        cmd = ("dexter-sim", "--host", "127.0.0.1", "--port", a.robot_port, "--start", "ready")
        if a.sim_control_port:
            cmd += ("--control-port", a.sim_control_port)
        out.append(ProcessSpec("dexter_sim", cmd=cmd))
    out.append(
        ProcessSpec(
            "dexter_driver",
            executable="dexter_driver",
            parameters=(
                a.driver_config or str(share / "config" / "dexter_driver.yaml"),
                {
                    "host": "127.0.0.1" if sim else a.robot_host,
                    "port": int(a.robot_port),
                    # the operator moves the leader by hand; the follower is position-servoed
                    "mode": "follow_me" if a.role == "leader" else "position",
                },
            ),
        )
    )
    out.append(
        ProcessSpec(
            "jitsi_teleop_transport",
            executable="transport",
            parameters=(
                {
                    "role": a.role,
                    "config": a.config or str(share / "config" / "teleop_topics.yaml"),
                    "peer_prefix": prefix,
                    "room": a.room,
                    "room_name": a.room_name,
                    "domain": a.domain,
                    "websocket_url": a.websocket_url,
                    "bosh_url": a.bosh_url,
                    "secret_file": str(Path(a.secret_file).expanduser()) if a.secret_file else "",
                    "loopback_only": flag(a.loopback_only),
                    "stun_turn": flag(a.stun_turn),
                    "jid": a.jid,
                    "password_file": str(Path(a.password_file).expanduser())
                    if a.password_file
                    else "",
                    "peer_jid": a.peer_jid,
                    "event_log": str(Path(a.event_log).expanduser()) if a.event_log else "",
                    "console_permissions": a.console_permissions,
                },
            ),
        )
    )
    if flag(a.teleop):
        out.append(
            ProcessSpec(
                "teleop",
                executable="teleop",
                parameters=(
                    a.teleop_config or str(share / "config" / "teleop.yaml"),
                    {"role": a.role, "peer_prefix": prefix},
                ),
            )
        )
    # the local arm, and the remote arm drawn from the peer's joint states under remote/
    out.append(
        ProcessSpec(
            "robot_state_publisher",
            package="robot_state_publisher",
            executable="robot_state_publisher",
            parameters=({"robot_description": urdf},),
        )
    )
    # named after the arm it draws: launch warns about two nodes of one fully qualified name in
    # a launch (two_site_sim.launch.py has both sites, even though their domains differ)
    out.append(
        ProcessSpec(
            f"{peer_of(a.role)}_state_publisher",
            package="robot_state_publisher",
            executable="robot_state_publisher",
            namespace="remote",
            parameters=({"robot_description": urdf, "frame_prefix": "remote/"},),
            remappings=(("joint_states", f"{prefix}/joint_states"),),
        )
    )
    out.append(
        ProcessSpec(
            "world_to_local",
            package="tf2_ros",
            executable="static_transform_publisher",
            arguments=("--frame-id", "world", "--child-frame-id", "base_link"),
        )
    )
    out.append(
        ProcessSpec(
            "world_to_remote",
            package="tf2_ros",
            executable="static_transform_publisher",
            arguments=(
                "--y",
                str(float(a.remote_offset)),
                "--frame-id",
                "world",
                "--child-frame-id",
                "remote/base_link",
            ),
        )
    )
    if flag(a.rviz):
        out.append(
            ProcessSpec(
                "rviz2",
                package="rviz2",
                executable="rviz2",
                arguments=("-d", str(share / "rviz" / "teleop.rviz")),
            )
        )
    return out
