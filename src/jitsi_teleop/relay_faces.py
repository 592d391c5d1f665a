"""The impairment relay across processes: sites ask the parent which relay face stands for
each of their sockets (the demo's site processes, and transport nodes given
``impairment_relay``).

:class:`~jitsi_teleop.relay.UdpRelay` lives in the parent, but a site's ICE agent rewrites its
candidates (``P2PConfig.advertise``) synchronously while gathering, inside the site process.
So the site's ``advertise`` makes a small blocking request over a loopback TCP socket to a
:class:`FaceServer` in the parent: ``"side host port"`` → ``"host port"``. It happens a few
times per connection setup, never per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from jitsi_teleop.relay import HOST, UdpRelay

__all__ = ["FaceServer", "ipv4_loopback", "remote_advertise"]


def ipv4_loopback(address: str) -> bool:
    """ICE candidate filter for a relayed run: 127.0.0.1 only, so no traffic leaves the host
    and every candidate has a relay face (the relay listens on IPv4 loopback)."""
    return address == HOST


class FaceServer:
    """Answers face look-ups for ``relay`` on 127.0.0.1 (``port`` after ``start``)."""

    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)

    @property
    def port(self) -> int:
        assert self._server is not None, "face server not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    side, host, port = line.decode().split()
                    if side not in ("a", "b"):
                        raise ValueError(side)
                    fh, fp = self.relay.face_for(side, host, int(port))
                    writer.write(f"{fh} {fp}\n".encode())
                except (ValueError, RuntimeError) as exc:
                    writer.write(f"error {exc}\n".encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def remote_advertise(port: int, side: str) -> Callable[[str, int], tuple[str, int]]:
    """An ``advertise`` map for ``P2PConfig`` that asks the parent's :class:`FaceServer`."""
    conn: list[socket.socket] = []

    def ask(host: str, p: int) -> tuple[str, int]:
        if not conn:
            conn.append(socket.create_connection((HOST, port), timeout=5.0))
        s = conn[0]
        s.sendall(f"{side} {host} {p}\n".encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(256)
            if not chunk:
                with contextlib.suppress(OSError):
                    s.close()
                conn.clear()
                raise ConnectionError("relay face server closed the connection")
            buf += chunk
        a, b = buf.decode().strip().split(maxsplit=1)
        if a == "error":
            raise RuntimeError(f"relay face look-up failed: {b}")
        return a, int(b)

    return ask
