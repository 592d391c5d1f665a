"""A LAN in network namespaces for the link-local tests, on netlab's primitives.

``lan_hosts(n)``: a namespace holding a bridge (the LAN segment) and ``n`` host namespaces,
each joined to it by a veth pair made inside the namespaces (nothing in the root namespace,
no route anywhere else), addresses 10.77.0.2.. /24, and a multicast route so mDNS stays on
that segment. ``in_netns(ns, coro_fn)`` runs an asyncio coroutine on a thread of its own that
has entered the host's namespace (``setns``), so one test process can hold several sites,
each seeing only its own namespace's interfaces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from jitsi_teleop.netlab.netns import Netns, available, veth

CLONE_NEWNET = 0x40000000
SUBNET = "10.77.0"
_libc = ctypes.CDLL(None, use_errno=True)


def skip_reason() -> str | None:
    return available()


class Lan:
    def __init__(self, n: int, tag: str) -> None:
        self.switch = Netns(f"{tag}sw").create()
        self.hosts: list[Netns] = []
        self.addresses: list[str] = []
        members = []
        try:
            for i in range(n):
                h = Netns(f"{tag}h{i}").create()
                self.hosts.append(h)
                addr = f"{SUBNET}.{i + 2}"
                veth(h, "eth0", self.switch, f"p{i}", a_cidr=f"{addr}/24")
                h.ip("route", "add", "224.0.0.0/4", "dev", "eth0")
                members.append(f"p{i}")
                self.addresses.append(addr)
            self.switch.bridge("br0", members)
        except Exception:
            self.delete()
            raise

    def delete(self) -> None:
        for h in self.hosts:
            h.delete()
        self.switch.delete()


def _enter(ns: Netns) -> None:
    fd = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns.name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def start_in_netns(
    ns: Netns, coro_fn: Callable[[], Awaitable[Any]]
) -> concurrent.futures.Future[Any]:
    """Run ``coro_fn()`` in a new event loop on a thread inside ``ns``; a Future of its result."""
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def main() -> None:
        try:
            _enter(ns)
            fut.set_result(asyncio.run(coro_fn()))
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=main, name=f"netns-{ns.name}", daemon=True).start()
    return fut


def in_netns(ns: Netns, coro_fn: Callable[[], Awaitable[Any]], timeout: float = 120.0) -> Any:
    return start_in_netns(ns, coro_fn).result(timeout)
