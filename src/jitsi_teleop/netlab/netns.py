"""Network-namespace primitives: create/delete a namespace, a veth pair, run a process inside.

Why here and not under ``test/``: the tests, the benchmarks and the installed ``jitsi-teleop
demo --network`` all build the same simulated internet, so the harness ships with the package.

Rules these primitives enforce (see field-notes "Network rules for tests"):
- names are unique per process (``jt<pid>-<tag>``), so parallel test runs never collide;
- a veth pair is created *inside* a namespace with its peer moved straight into another one,
  so no interface ever appears in the root namespace and nothing is connected to it;
- everything created is registered and removed at exit, on an exception, and on SIGTERM
  (processes first, then namespaces: deleting a namespace drops its interfaces, addresses,
  routes, iptables rules and conntrack entries with it).

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; ``available()`` says why not.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

IP = shutil.which("ip") or "/usr/sbin/ip"
PREFIX = "jt"
_NAME_RE = re.compile(rf"^{PREFIX}(\d+)-[A-Za-z0-9_.-]+$")


class NetnsError(RuntimeError):
    """A namespace operation failed; the message carries the command and its stderr."""


def available() -> str | None:
    """None when namespaces can be made here, else the reason (for a clean test skip)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if not os.path.exists(IP):
        return "iproute2 ('ip') is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    r = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run([IP, "netns", "delete", probe], capture_output=True)
    return None


def run(args: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
    """Run a command in the *current* namespace; return stdout, raise NetnsError on failure."""
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


# --- registry: what this process created, torn down once -----------------------------------

_lock = threading.RLock()
_live: dict[str, Netns] = {}
_atexit_installed = False
_term_installed = False


def _install_hooks() -> None:
    """Tear down at exit, and on SIGTERM. A signal handler can only be set from the main
    thread: a namespace first made from another thread (an executor, a test's thread) leaves
    the SIGTERM hook to the next call from the main thread, or to :func:`install_term_hook`."""
    global _atexit_installed
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(teardown_all)
    install_term_hook()


def install_term_hook() -> bool:
    """Make SIGTERM tear down this process's namespaces first (then do what it did before).
    Call it from the main thread of a program that creates namespaces from other threads;
    returns whether the hook is in place."""
    global _term_installed
    with _lock:
        if _term_installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: object) -> None:
            teardown_all()
            if callable(previous):
                previous(signum, frame)
            else:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        _term_installed = True
        return True


def teardown_all() -> None:
    """Delete every namespace (and its processes) this process created; idempotent."""
    with _lock:
        spaces = list(_live.values())
    for ns in reversed(spaces):
        ns.delete()


def sweep_stale() -> list[str]:
    """Delete ``jt<pid>-*`` namespaces whose creating process is gone (a SIGKILLed run)."""
    removed = []
    for line in run([IP, "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _NAME_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        _kill_pids(name)
        run([IP, "netns", "delete", name], check=False)
        removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pids(name: str) -> None:
    pids = run([IP, "netns", "pids", name], check=False).split()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for p in pids:
            try:
                os.kill(int(p), sig)
                alive.append(p)
            except (ProcessLookupError, ValueError):
                pass
        if not alive:
            return
        for p in alive:
            _wait_gone(int(p), 2.0)
        pids = run([IP, "netns", "pids", name], check=False).split()


def _wait_gone(pid: int, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)


@dataclass
class Netns:
    """One network namespace owned by this process. ``tag`` becomes part of a unique name."""

    tag: str
    name: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    alive: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{PREFIX}{os.getpid()}-{self.tag}"

    def create(self) -> Netns:
        _install_hooks()
        run([IP, "netns", "add", self.name])
        with _lock:
            _live[self.name] = self
        self.alive = True
        self.ip("link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        if not self.alive:
            return
        self.alive = False
        for p in reversed(self.procs):
            _stop(p)
        self.procs.clear()
        _kill_pids(self.name)
        run([IP, "netns", "delete", self.name], check=False)
        with _lock:
            _live.pop(self.name, None)

    # --- commands inside -----------------------------------------------------------------
    def argv(self, args: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        return run(self.argv(args), check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> str:
        return run([IP, "-n", self.name, *args], check=check)

    def popen(self, args: Sequence[str], **kw: object) -> subprocess.Popen:
        """Start a process inside; it is stopped when the namespace is deleted."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.argv(args), **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def sysctl(self, key: str, value: str | int) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def forwarding(self, on: bool = True) -> None:
        self.sysctl("net.ipv4.ip_forward", 1 if on else 0)

    def iptables(self, *args: str, check: bool = True) -> str:
        return self.run("iptables", "-w", "5", *args, check=check)

    def addr(self, ifname: str, cidr: str) -> None:
        self.ip("addr", "add", cidr, "dev", ifname)

    def route(self, dest: str, via: str) -> None:
        self.ip("route", "replace", dest, "via", via)

    def link_up(self, ifname: str, up: bool = True) -> None:
        self.ip("link", "set", ifname, "up" if up else "down")

    def bridge(self, name: str, members: Sequence[str], cidr: str | None = None) -> None:
        """A Linux bridge inside this namespace joining ``members`` (a LAN segment)."""
        self.ip("link", "add", name, "type", "bridge")
        for m in members:
            self.ip("link", "set", m, "master", name)
        if cidr:
            self.addr(name, cidr)
        self.link_up(name)

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


def veth(
    a: Netns,
    a_if: str,
    b: Netns,
    b_if: str,
    a_cidr: str | None = None,
    b_cidr: str | None = None,
) -> None:
    """A veth pair made inside ``a`` with its peer moved into ``b``: never in the root ns."""
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    if a_cidr:
        a.addr(a_if, a_cidr)
    if b_cidr:
        b.addr(b_if, b_cidr)
    a.link_up(a_if)
    b.link_up(b_if)


def _stop(p: subprocess.Popen, timeout: float = 3.0) -> None:
    if p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout)
