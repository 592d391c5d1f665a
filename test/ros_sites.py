"""Two ROS sites on one machine, for tests and benchmarks: two ROS domain ids, a transport
node process per site (``python -m jitsi_teleop.ros.transport_node``), and one rclpy context
per domain in the calling process to publish and record at each site.

Discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and the fast path on
127.0.0.1 (``loopback_only``); the room is a local Prosody.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile

from jitsi_teleop.local_prosody import ProsodyServer
from jitsi_teleop.pairing import generate_key_file
from jitsi_teleop.ros.site_graph import RawRecorder, SiteGraph
from ros_domains import site_pair


def site_domains() -> tuple[int, int]:
    """Two domain ids of this process's own, fresh on each call so that a pair of sites still
    running (a module fixture) never shares a graph with a new one; from this process's
    block, which no concurrent test process holds (``ros_domains``)."""
    return site_pair()


def make_key_file(directory: Path) -> Path:
    path = directory / f"teleop-{os.getpid()}-{time.monotonic_ns()}.key"
    generate_key_file(path)
    return path


Recorder = RawRecorder


class Site(SiteGraph):
    """One ROS domain seen from the test process (a node spun in a thread of its own)."""

    def __init__(self, domain_id: int, name: str) -> None:
        super().__init__(domain_id, f"test_site_{name}")

    def record(self, msg_type: Any, topic: str, qos: QoSProfile | int = 100) -> RawRecorder:
        return super().record(msg_type, topic, qos)

    def diagnostics(self) -> list[DiagnosticArray]:
        out: list[DiagnosticArray] = []
        self.subscribe(DiagnosticArray, "/diagnostics", out.append, 50)
        return out


@dataclass
class TransportProcess:
    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT, like ros2 launch
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_transport(
    role: str,
    domain_id: int,
    server: ProsodyServer,
    room: str,
    key_file: Path | str,
    *,
    config: Path | str | None = None,
    params: Sequence[str] = (),
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> TransportProcess:
    """One transport node in its own process and ROS domain, joined to ``room``."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="transport-"))
    log_path = log_dir / f"{role}-{domain_id}.log"
    args = [
        sys.executable,
        "-m",
        "jitsi_teleop.ros.transport_node",
        "--ros-args",
        "-p",
        f"role:={role}",
        "-p",
        f"domain:={server.domain}",
        "-p",
        f"room_name:={room}",
        "-p",
        f"websocket_url:={server.websocket_url}",
        "-p",
        "loopback_only:=true",
        "-p",
        "stun_turn:=false",
        "-p",
        "diagnostics_period:=0.5",
    ]
    if key_file:
        args += ["-p", f"secret_file:={key_file}"]
    if config is not None:
        args += ["-p", f"config:={config}"]
    for p in params:
        args += ["-p", p]
    full_env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    full_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    for name in ("JITSI_TELEOP_KEY_FILE", "JITSI_TELEOP_PASSPHRASE"):
        full_env.pop(name, None)  # only what the caller gives
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    return TransportProcess(role, proc, log_path)


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, procs: Sequence[TransportProcess] = ()
) -> None:
    """Poll until ``predicate()``; fail naming ``what`` (with the node logs) otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if p.proc.poll() is not None:
                raise AssertionError(f"{p.role} transport exited ({p.proc.returncode}):\n{p.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.role}\n{p.log()[-3000:]}" for p in procs)
            raise AssertionError(f"{what} did not happen within {timeout:g} s\n{logs}")
        time.sleep(0.02)


def link_status(arrays: list[DiagnosticArray]) -> dict[str, str] | None:
    """The newest transport link status as key -> value (plus ``level`` and ``message``)."""
    for arr in reversed(list(arrays)):
        for st in arr.status:
            if st.name == "jitsi_teleop transport: link":
                d = {kv.key: kv.value for kv in st.values}
                d["level"] = str(
                    int.from_bytes(st.level, "little")
                    if isinstance(st.level, bytes)
                    else int(st.level)
                )
                d["message"] = st.message
                return d
    return None


def topic_status(arrays: list[DiagnosticArray], name: str) -> dict[str, str] | None:
    """The newest per-topic status (``name`` like ``in /leader/joint_states``)."""
    for arr in reversed(list(arrays)):
        for st in arr.status:
            if st.name == f"jitsi_teleop transport: {name}":
                d = {kv.key: kv.value for kv in st.values}
                d["message"] = st.message
                return d
    return None
