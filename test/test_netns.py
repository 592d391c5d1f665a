"""The namespace primitives: isolation from the root namespace and teardown, also on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from jitsi_teleop.netlab import netns

REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


# A UDP echo that says who asked, and a client for it: proves packets cross the veth.
ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(100)
    s.sendto(data + b" from " + addr[0].encode(), addr)
"""
ASK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"hello", ("{addr}", 9999))
print(s.recv(100).decode())
"""


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_veth_between_namespaces_never_touches_root_and_is_torn_down():
    before = _root_links()
    a, b = netns.Netns("ta").create(), netns.Netns("tb").create()
    try:
        assert a.name != b.name and str(__import__("os").getpid()) in a.name
        netns.veth(a, "v0", b, "v1", "10.9.0.1/24", "10.9.0.2/24")
        assert _root_links() == before  # nothing appeared in the root namespace
        echo = b.popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline().strip() == "ready"
        out = a.run(sys.executable, "-c", ASK.format(addr="10.9.0.2"))
        assert out.strip() == "hello from 10.9.0.1"
        # The root namespace cannot reach it: the address is not routed here.
        assert (
            "10.9.0.2"
            not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        )
        sleeper = b.popen(["sleep", "60"])
    finally:
        a.delete()
        b.delete()
    assert sleeper.poll() is not None  # processes inside are stopped with their namespace
    assert a.name not in _namespaces() and b.name not in _namespaces()
    assert _root_links() == before


_FROM_MAIN = """
import sys, time
from jitsi_teleop.netlab import netns
ns = netns.Netns("sig").create()
ns.popen(["sleep", "60"])
print(ns.name, flush=True)
time.sleep(60)
"""
#: the namespace is made by a worker thread (as from an executor), where no signal handler can
#: be set; the program's main thread installs the hook afterwards
_FROM_THREAD = """
import sys, threading, time
from jitsi_teleop.netlab import netns
made = []
t = threading.Thread(target=lambda: made.append(netns.Netns("sig").create()))
t.start(); t.join()
assert netns.install_term_hook()
made[0].popen(["sleep", "60"])
print(made[0].name, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("script", [_FROM_MAIN, _FROM_THREAD], ids=["main", "thread"])
def test_sigterm_tears_down_namespaces_of_the_process(script: str):
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        name = p.stdout.readline().strip()
        assert name in _namespaces()
        p.terminate()
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    deadline = time.monotonic() + 5
    while name in _namespaces() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in _namespaces()


def test_failed_command_raises_with_stderr():
    with netns.Netns("err") as ns, pytest.raises(netns.NetnsError, match="nosuchdev"):
        ns.ip("link", "set", "nosuchdev", "up")
