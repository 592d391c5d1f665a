"""Debian's avahi-daemon inside one test namespace, touching nothing outside it.

It gets a private D-Bus system bus (a dbus-daemon on a socket in a temporary folder, named
by ``DBUS_SYSTEM_BUS_ADDRESS`` for the daemon and the avahi-browse/avahi-publish clients), a
private /run/avahi-daemon (a tmpfs in a mount namespace of its own, so its pid file never
meets a system avahi), a host name of its own, only the namespace's ``eth0``, no wide-area
DNS-SD and no reflector. Stopped with the namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

from jitsi_teleop.netlab.netns import Netns

DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
host-name={host}
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
[reflector]
enable-reflector=no
"""


def avahi_missing() -> str | None:
    for tool in ("avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon", "unshare"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return (
                f"{tool} is not installed (scripts/setup-dev.sh installs avahi-daemon, avahi-utils)"
            )
    return None


class Avahi:
    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        self.dir = tempfile.mkdtemp(prefix="jt-avahi-")
        sock = os.path.join(self.dir, "bus")
        with open(os.path.join(self.dir, "dbus.conf"), "w") as f:
            f.write(DBUS_CONF.format(sock=sock))
        with open(os.path.join(self.dir, "avahi.conf"), "w") as f:
            f.write(AVAHI_CONF.format(host=f"jtavahi{os.getpid()}"))
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={sock}"}
        self.log = open(os.path.join(self.dir, "log"), "w")  # noqa: SIM115 - lives with the daemon
        ns.popen(
            ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={self.dir}/dbus.conf"],
            stdout=self.log,
            stderr=self.log,
        )
        _wait(lambda: os.path.exists(sock), 10, "dbus-daemon")
        daemon = (
            "mount -t tmpfs tmpfs /run/avahi-daemon 2>/dev/null || "
            "{ mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon; }; "
            f"exec avahi-daemon -f {self.dir}/avahi.conf --no-drop-root --no-chroot --no-rlimits"
        )
        self.daemon = ns.popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", daemon],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        _wait(self._running, 15, "avahi-daemon")

    def _running(self) -> bool:
        if self.daemon.poll() is not None:
            raise RuntimeError(f"avahi-daemon exited: {self.tail()}")
        r = subprocess.run(
            self.ns.argv(["avahi-browse", "-apt"]), env=self.env, capture_output=True, text=True
        )
        return r.returncode == 0

    def browse(self, service: str = "_presence._tcp") -> list[list[str]]:
        """``avahi-browse -rpt SERVICE`` (``-k``: raw service types): the resolved (``=``)
        lines, split on ``;``, with avahi's ``\\DDD`` escapes in names undone."""
        r = subprocess.run(
            self.ns.argv(["avahi-browse", "-rptk", service]),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [ln.split(";") for ln in r.stdout.splitlines() if ln.startswith("=")]
        for row in rows:
            row[3] = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), row[3])
        return rows

    def publish(self, name: str, port: int, txt: list[str]) -> subprocess.Popen:
        return self.ns.popen(
            ["avahi-publish", "-s", name, "_presence._tcp", str(port), *txt],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )

    def tail(self) -> str:
        self.log.flush()
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()[-2000:]

    def close(self) -> None:
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.1)
