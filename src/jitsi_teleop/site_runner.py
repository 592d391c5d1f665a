"""Start a site's planned processes without ROS ``launch`` (which is not on PyPI).

``teleop.launch.py`` turns :func:`jitsi_teleop.site_plan.site_processes` into launch actions;
this module turns the same plan into plain subprocesses, the way ``ros2 launch`` would run
them (console scripts next to this interpreter, ``--ros-args`` with a parameter file per node,
remappings), each with the site's ``ROS_DOMAIN_ID``. The system test and ``jitsi-teleop demo
--ros`` use it; processes of packages that are not installed (robot_state_publisher, tf2_ros,
rviz2 without a ROS installation) are skipped and named.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .site_plan import PACKAGE, ProcessSpec

BIN = Path(sys.executable).parent


@dataclass
class SiteProcess:
    """One running process of a site, its output in ``log_path``."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT first (what ``ros2 launch`` sends), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def executable(spec: ProcessSpec) -> str | None:
    """Where the process's program is, or None when its package is not installed here."""
    name = spec.cmd[0] if spec.cmd else spec.executable
    if spec.package == PACKAGE:
        p = BIN / name
        return str(p) if p.exists() else shutil.which(name)
    return None  # other packages come from a ROS installation (use ros2 launch there)


def command(spec: ProcessSpec, exe: str, param_dir: Path) -> list[str]:
    """The command line ``ros2 launch`` would build for one planned process."""
    if spec.cmd:
        return [exe, *spec.cmd[1:]]
    args = [exe, *spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace.strip('/')}"]
    for p in spec.parameters:
        if isinstance(p, str):
            args += ["--params-file", p]
        else:
            f = param_dir / f"{spec.name}-{time.monotonic_ns()}.yaml"
            f.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(p)}}))
            args += ["--params-file", str(f)]
    for a, b in spec.remappings:
        args += ["-r", f"{a}:={b}"]
    return args


def start_site(
    role: str,
    specs: list[ProcessSpec],
    domain_id: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> tuple[list[SiteProcess], list[str]]:
    """Start what can run here; returns the processes and the names of those skipped."""
    full_env = dict(os.environ if env is None else env)
    full_env["ROS_DOMAIN_ID"] = str(domain_id)
    full_env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[SiteProcess] = []
    skipped: list[str] = []
    for spec in specs:
        exe = executable(spec)
        if exe is None:
            skipped.append(f"{spec.package}/{spec.executable or spec.name}")
            continue
        log_path = (
            log_dir / f"{role}-{spec.namespace + '-' if spec.namespace else ''}{spec.name}.log"
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command(spec, exe, log_dir), stdout=log, stderr=subprocess.STDOUT, env=full_env
            )
        started.append(SiteProcess(f"{role}:{spec.name}", proc, log_path))
    return started, skipped
