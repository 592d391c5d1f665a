"""Debian's coturn on loopback ports the test picks, configured like a Jitsi deployment's
(TURN REST credentials from a shared secret, ``use-auth-secret``), plus a UDP delay proxy that
stands for a TURN server that answers slowly.

Loopback peers must be allowed explicitly (coturn refuses to relay to 127.0.0.0/8 by default);
relay ports come from a random 200-port range so that parallel runs do not collide.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TURNSERVER = shutil.which("turnserver") or "/usr/sbin/turnserver"


def coturn_missing() -> str | None:
    return None if Path(TURNSERVER).exists() else "coturn is not installed (apt-get install coturn)"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackCoturn:
    secret: str
    realm: str = "meet.test"
    port: int = field(default_factory=free_udp_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="coturn-lo-")))
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "turn.log"

    def start(self, timeout: float = 15.0) -> LoopbackCoturn:
        lo = random.randrange(20000, 32000 - 200)
        args = [
            TURNSERVER, "-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay",
            "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
            "--listening-port", str(self.port), "--allow-loopback-peers",
            "--use-auth-secret", "--static-auth-secret", self.secret, "--realm", self.realm,
            "--fingerprint", "--no-multicast-peers",
            "--min-port", str(lo), "--max-port", str(lo + 199),
            "--pidfile", str(self.root / "turn.pid"), "--userdb", str(self.root / "turn.db"),
            "--log-file", "stdout", "--simple-log",
        ]  # fmt: skip
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.tail()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"turnserver did not answer in time: {self.tail()}")

    def _answers(self) -> bool:
        """A STUN binding request gets a response (coturn answers STUN on its TURN port)."""
        req = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + random.randbytes(12)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(req, ("127.0.0.1", self.port))
                data, _ = s.recvfrom(2048)
            except OSError:
                return False
        return data[8:20] == req[8:20]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._log.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def allocations(self) -> int:
        """Allocations coturn reports as created (from its log)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return text.count("ALLOCATE processed, success")


class DelayProxy(asyncio.DatagramProtocol):
    """UDP in front of a server, holding every datagram ``delay`` seconds each way."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.transport: asyncio.DatagramTransport | None = None
        self._upstream: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.get_running_loop().call_later(self.delay, self._forward, data, addr)

    def _forward(self, data: bytes, client: tuple[str, int]) -> None:
        up = self._upstream.get(client)
        if up is None:
            task = asyncio.ensure_future(self._open(client, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        up.sendto(data, self.target)

    async def _open(self, client: tuple[str, int], first: bytes) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                loop.call_later(proxy.delay, proxy._back, data, client)

        up, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        self._upstream[client] = up  # type: ignore[assignment]
        up.sendto(first, self.target)

    def _back(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def close(self) -> None:
        for up in self._upstream.values():
            up.close()
        if self.transport is not None:
            self.transport.close()


async def delay_proxy(target: tuple[str, int], delay: float) -> DelayProxy:
    loop = asyncio.get_running_loop()
    _, proxy = await loop.create_datagram_endpoint(
        lambda: DelayProxy(target, delay), local_addr=("127.0.0.1", 0)
    )
    return proxy
