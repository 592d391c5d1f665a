"""Raw UDP across the simulated internet: the floor the fast path is compared with.

Three roles, each a process in a namespace (``python -m jitsi_teleop.netlab.rawudp``):

- ``send`` / ``recv``: the two sites. Each sends hellos to the peer address it was given and
  switches its target to the source of the first datagram it hears (so hole punching works
  through cone NATs, and through a full cone facing a symmetric NAT, with no STUN at all);
  then the sender streams 276-byte datagrams stamped with CLOCK_MONOTONIC (shared by all
  namespaces of the machine, so one-way latency is exact) and the receiver reports latency.
- ``forward``: a bare UDP relay on the server (what TURN does, minus TURN): the first two
  sources it hears are joined to each other. The baseline for relayed paths.

Prints one JSON line: ``{"ready": port}`` on start, the receiver ``{"result": {...}}`` at the end.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

_HEAD = struct.Struct("<4sId")  # magic, seq, send time
_MAGIC = b"JTRU"
_HELLO = b"hello, peer"
SIZE = 276


def _say(**msg: object) -> None:
    print(json.dumps(msg), flush=True)


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def forward(port: int, duration: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    _say(ready=port)
    ends: list[tuple[str, int]] = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.5)
        if not r:
            continue
        data, src = s.recvfrom(2048)
        if src not in ends and len(ends) < 2:
            ends.append(src)
        if len(ends) == 2 and src in ends:
            s.sendto(data, ends[1] if src == ends[0] else ends[0])


def site(role: str, bind: int, peer: tuple[str, int], rate: float, duration: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", bind))
    _say(ready=bind)
    target = peer
    heard = False
    # Punch: hellos until the peer is heard (and a few more so that the peer hears us too).
    deadline = time.monotonic() + 15.0
    extra = 0
    while time.monotonic() < deadline and extra < 5:
        s.sendto(_HELLO, target)
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            data, src = s.recvfrom(2048)
            if data == _HELLO or data.startswith(_MAGIC):
                if not heard:
                    target = src  # the peer as the path shows it (its NAT's mapping)
                heard = True
            if data.startswith(_MAGIC):
                break  # the stream has begun
        if heard:
            extra += 1
    if not heard:
        _say(result={"error": "no datagram from the peer: no path"})
        return
    if role == "send":
        time.sleep(0.3)  # let the receiver leave its hello loop: no queue at the start
        pad = bytes(SIZE - _HEAD.size)
        period = 1.0 / rate
        t0 = time.monotonic()
        n = int(duration * rate)
        for seq in range(n):
            due = t0 + seq * period
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            s.sendto(_HEAD.pack(_MAGIC, seq, time.monotonic()) + pad, target)
        _say(result={"sent": n})
        return
    lat: list[float] = []
    seen: set[int] = set()
    last = time.monotonic()
    end = time.monotonic() + duration + 5.0
    while time.monotonic() < end and time.monotonic() - last < 1.5:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            continue
        data, _ = s.recvfrom(2048)
        if not data.startswith(_MAGIC) or len(data) < _HEAD.size:
            s.sendto(_HELLO, target)
            continue
        _, seq, sent = _HEAD.unpack_from(data)
        now = time.monotonic()
        if seq not in seen:
            seen.add(seq)
            lat.append((now - sent) * 1e3)
            last = now
    lat.sort()
    result: dict[str, object] = {"received": len(lat), "max_seq": max(seen) if seen else -1}
    if lat:
        result["p50_ms"] = lat[len(lat) // 2]
        result["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    _say(result=result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=("send", "recv", "forward"))
    ap.add_argument("--bind", type=int, default=40000)
    ap.add_argument("--peer", type=_addr)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.role == "forward":
        forward(args.bind, args.duration + 30.0)
    else:
        if args.peer is None:
            ap.error("--peer is required")
        site(args.role, args.bind, args.peer, args.rate, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
