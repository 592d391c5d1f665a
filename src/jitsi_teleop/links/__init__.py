"""Links that carry frames between the two sites (MUC slow path, P2P data channel).

``base`` is the interface every link implements, ``budget`` the pure send-shaping logic and
``muc`` the slow path through the room. ``MucLink`` is imported lazily because the room layer
itself uses ``budget``.
"""

from __future__ import annotations

from typing import Any

from .base import FrameTooLarge, Link, LinkBusy, LinkClosed, LinkError, LinkStats, ReceiveCallback
from .budget import BoundedQueue, LatestSlots, QueueFull, TokenBucket

__all__ = [
    "BoundedQueue",
    "FrameTooLarge",
    "LatestSlots",
    "Link",
    "LinkBusy",
    "LinkClosed",
    "LinkError",
    "LinkStats",
    "MucLink",
    "QueueFull",
    "ReceiveCallback",
    "TokenBucket",
]


def __getattr__(name: str) -> Any:
    if name == "MucLink":
        from .muc import MucLink

        return MucLink
    raise AttributeError(name)
