"""ROS domain ids for test processes that run side by side on one machine.

Every pytest process (the Jazzy and Kilted legs, other checkouts' runs) takes a block of
``BLOCK`` consecutive ids from ``FIRST``..``LAST`` and holds it with an ``flock`` on a file
under the system temp folder: the kernel drops the lock when the process ends, even when it
crashes, so no stale reservation survives. The first id of the block is the process's own
``ROS_DOMAIN_ID`` (conftest); the others are handed out in pairs by ``ros_sites.site_domains``.
The range stays clear of the demo's 20..141 (``jitsi_teleop.demo.ros_run``) and inside Fast
DDS's 0..232 (with the default ports a domain id above 232 gives ports over 65535).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

FIRST, LAST = 142, 231
BLOCK = 10
LOCK_DIR = Path(tempfile.gettempdir()) / "jitsi_teleop-ros-domains"

_held: list[IO[bytes]] = []  # the open, locked file: kept for the life of the process
_base: int | None = None
_pairs = itertools.count()


def _reserve() -> int:
    """The first id of a block no other live process holds (a pid-derived block, shared,
    with a warning, when every block is taken)."""
    LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    blocks = list(range(FIRST, LAST - BLOCK + 2, BLOCK))
    start = os.getpid() % len(blocks)
    for base in blocks[start:] + blocks[:start]:
        f = open(LOCK_DIR / f"block-{base}.lock", "ab")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held.append(f)
        return base
    base = blocks[start]
    print(
        f"ros_domains: all {len(blocks)} blocks of ROS domain ids are held by other test "
        f"processes; sharing {base}..{base + BLOCK - 1} (runs may see each other)",
        file=sys.stderr,
    )
    return base


def block_base() -> int:
    """The first id of this process's block (reserved on first use)."""
    global _base
    if _base is None:
        _base = _reserve()
    return _base


def process_domain() -> int:
    """This process's own ROS domain id."""
    return block_base()


def site_pair() -> tuple[int, int]:
    """Two ids of this process's block, fresh on each call: the pairs cycle through the
    block (4 pairs), so a pair still in use by a module fixture is not handed out again
    before three newer ones."""
    n = (BLOCK - 2) // 2
    first = block_base() + 1 + 2 * (next(_pairs) % n)
    return first, first + 1
