"""A userspace UDP impairment relay on 127.0.0.1: delay, jitter, loss and blackout between two
peers (this kernel has no netem).

Each real socket of a peer is represented by a *face* of the relay: its ICE candidates are
rewritten with :meth:`UdpRelay.advertise`, which hands out one face per real address. A
datagram from a peer's socket S arriving at the face that stands for the other peer's socket R
leaves through the face that stands for S and goes to R; so each peer only ever sees the
addresses it was told about, and several flows (a data channel and a datagram connection, or a
rebuilt connection) pass side by side without being mixed up.

Randomness is seeded: the same seed and the same traffic give the same drops.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass
class Impairment:
    """One-way delay (s), uniform jitter (± s) and loss probability, applied per datagram in
    each direction; ``blackout`` drops everything (a dead path)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    blackout: bool = False

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.jitter_s < 0:
            raise ValueError("delay and jitter must not be negative")
        if self.jitter_s > self.delay_s:
            raise ValueError("jitter must not exceed the delay (no negative delays)")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError("loss must be a probability")


@dataclass
class RelayStats:
    received: int = 0
    forwarded: int = 0
    lost: int = 0
    blackholed: int = 0
    unroutable: int = 0  # from or to an address no face stands for


class _Face(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, side: str) -> None:
        self.relay = relay
        self.side = side
        self.transport: asyncio.DatagramTransport | None = None
        self.real: tuple[str, int] | None = None  # the peer socket this face stands for

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay._forward(self, data, addr[:2])


class UdpRelay:
    """Start with ``await relay.start()``; change ``relay.impairment`` at any time.
    ``faces`` per side bounds how many sockets of each peer can be represented."""

    def __init__(
        self, impairment: Impairment | None = None, seed: int = 0, faces: int = 16
    ) -> None:
        self.impairment = impairment or Impairment()
        self.stats = RelayStats()
        self._rng = random.Random(seed)
        self._n = faces
        self._free: dict[str, list[_Face]] = {"a": [], "b": []}
        self._by_real: dict[tuple[str, int], _Face] = {}
        self._retired: list[_Face] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for side in ("a", "b"):
            for _ in range(self._n):
                _, face = await loop.create_datagram_endpoint(
                    lambda s=side: _Face(self, s), local_addr=(HOST, 0)
                )
                self._free[side].append(face)

    def face_for(self, side: str, host: str, port: int) -> tuple[str, int]:
        """The relay address that stands for peer ``side``'s socket ``(host, port)``."""
        face = self._by_real.get((host, port))
        if face is None:
            if not self._free[side]:
                raise RuntimeError(f"relay has no free face left for side {side}")
            face = self._free[side].pop(0)
            face.real = (host, port)
            self._by_real[(host, port)] = face
        return face.address

    def remap(self, side: str) -> int:
        """A NAT re-mapping on ``side``: each of its sockets moves to a fresh face (a new
        public port); the old faces stop forwarding. Returns how many moved."""
        moved = 0
        for real, face in list(self._by_real.items()):
            if face.side != side or not self._free[side]:
                continue
            new = self._free[side].pop(0)
            new.real, face.real = real, None
            self._by_real[real] = new
            self._retired.append(face)
            moved += 1
        return moved

    def advertise(self, side: str):
        """Candidate rewrite for peer ``side`` ("a" or "b"): each socket gets its own face."""
        return lambda host, port: self.face_for(side, host, port)

    def _forward(self, face: _Face, data: bytes, src: tuple[str, int]) -> None:
        self.stats.received += 1
        out = self._by_real.get(src)
        if face.real is None or out is None or out.side == face.side:
            self.stats.unroutable += 1
            return
        imp = self.impairment
        if imp.blackout:
            self.stats.blackholed += 1
            return
        if imp.loss and self._rng.random() < imp.loss:
            self.stats.lost += 1
            return
        delay = imp.delay_s
        if imp.jitter_s:
            delay += self._rng.uniform(-imp.jitter_s, imp.jitter_s)
        if delay <= 0:
            self._send(out, data, face.real)
        else:
            asyncio.get_running_loop().call_later(delay, self._send, out, data, face.real)

    def _send(self, out: _Face, data: bytes, to: tuple[str, int]) -> None:
        if out.transport is None or out.transport.is_closing():
            return
        out.transport.sendto(data, to)
        self.stats.forwarded += 1

    def close(self) -> None:
        for faces in self._free.values():
            for f in faces:
                if f.transport is not None:
                    f.transport.close()
        for f in [*self._by_real.values(), *self._retired]:
            if f.transport is not None:
                f.transport.close()
