"""One-way delay and jitter for an iptables NFQUEUE: hold each packet, release it later.

Why userspace: this kernel has no ``netem``. A UDP relay would change addresses and so break
the NATs being tested; an NFQUEUE verdict given later keeps every packet as it was, in the
router's own forwarding path, so NAT mappings and conntrack behave exactly as without delay.

Each packet is released ``delay ± jitter`` (uniform) after it was queued, independently, so
jitter reorders packets as it does on the internet and with netem. Run inside the router
namespace by :meth:`jitsi_teleop.netlab.internet.Internet.impair`; prints ``ready`` once bound.
Needs ``netfilterqueue`` (PyPI; builds against ``libnetfilter-queue-dev``).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import select
import signal
import sys
import time
from typing import Any

QUEUE_NUM = 7  # queues are per network namespace: one router, one queue


def available() -> str | None:
    """None when the delay program can run, else why not."""
    try:
        import netfilterqueue  # noqa: F401
    except ImportError as e:
        return f"netfilterqueue is not installed ({e}): pip install netfilterqueue"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=int, default=QUEUE_NUM)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    if args.delay_ms < 0 or args.jitter_ms < 0 or args.jitter_ms > args.delay_ms:
        print("error: need 0 <= jitter <= delay", flush=True)
        return 2
    from netfilterqueue import NetfilterQueue

    rng = random.Random(args.seed)
    held: list[tuple[float, int, Any]] = []
    order = itertools.count()
    delay, jitter = args.delay_ms / 1e3, args.jitter_ms / 1e3

    def on_packet(pkt: Any) -> None:
        due = time.monotonic() + delay + (rng.uniform(-jitter, jitter) if jitter else 0.0)
        heapq.heappush(held, (due, next(order), pkt))

    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    nfq = NetfilterQueue()
    nfq.bind(args.queue, on_packet, max_len=20000)
    fd = nfq.get_fd()
    print("ready", flush=True)
    try:
        while running:
            now = time.monotonic()
            while held and held[0][0] <= now:
                heapq.heappop(held)[2].accept()
            timeout = max(0.0, held[0][0] - now) if held else 0.5
            try:
                readable, _, _ = select.select([fd], [], [], timeout)
            except InterruptedError:
                continue
            if readable:
                nfq.run(block=False)
    finally:
        for _, _, pkt in held:  # let what was in flight go rather than drop it
            pkt.accept()
        nfq.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
