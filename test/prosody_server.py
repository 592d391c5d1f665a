"""Test helpers around the Jitsi-like Prosody (the server itself is
:mod:`jitsi_teleop.local_prosody`, which the demo and the two-site launch use too)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from jitsi_teleop.local_prosody import PROSODY, ProsodyServer, free_port, prosody_available
from jitsi_teleop.room.config import RoomConfig

__all__ = [
    "PROSODY",
    "ProsodyServer",
    "eventually",
    "free_port",
    "prosody_available",
    "room_config",
    "run_doctor",
]


# ---- helpers for tests that use the server ------------------------------------------
def room_config(srv: ProsodyServer, room: str, transport: str = "ws", **kw: Any) -> RoomConfig:
    """A RoomConfig for this server with test-friendly (short) timers."""
    base: dict[str, Any] = dict(
        room=room,
        domain=srv.domain,
        ping_interval=2.0,
        ping_timeout=2.0,
        backoff_initial=0.2,
        backoff_max=1.0,
        connect_timeout=5.0,
    )
    if transport == "ws":
        base["websocket_url"] = srv.websocket_url
    elif transport == "bosh":
        base["bosh_url"] = srv.bosh_url
    else:
        base["tcp_host"] = "127.0.0.1"
        base["tcp_port"] = srv.c2s_port
    base.update(kw)
    return RoomConfig(**base)


async def eventually(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll until ``predicate()`` holds; fail the test (not a timing assert) otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.02)


if __name__ == "__main__":  # manual check: python test/prosody_server.py
    with ProsodyServer() as srv:
        print("websocket", srv.websocket_url, "c2s", srv.c2s_port)
        time.sleep(1)
        print(srv.tail())


async def run_doctor(*args: str) -> tuple[int, str, str]:
    """``jitsi-teleop doctor ARGS`` as a subprocess: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jitsi_teleop.cli",
        "doctor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()
