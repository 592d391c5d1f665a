"""What differs between the ROS 2 distributions this package runs on, decided where it is used.

- Type hashes in the graph (``TopicEndpointInfo.topic_type_hash``) came with Iron (REP 2016);
  Humble's endpoint info has no such field. The transport computes its hashes itself
  (:mod:`jitsi_teleop.ros.type_hash`) and only *cross-checks* them against the graph where the
  graph has them: :func:`endpoint_type_hash` returns None on Humble.
- When the middleware lists a node's own endpoints differs by RMW: Fast DDS at once, Cyclone
  DDS a moment later. Nothing at start-up waits for it; :class:`GraphHashCheck` polls.
- Kilted's ``rclpy.shutdown()`` destroys every node of the context, one whose constructor
  raised included: a node's ``destroy_node`` must cope with a half-built node.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_RIHS01 = re.compile(r"RIHS01_[0-9a-f]{64}")


def endpoint_type_hash(info: Any) -> str | None:
    """The RIHS01 string of a ``TopicEndpointInfo``; None where the graph has none (Humble:
    no field; an RMW that left it unset: ``INVALID``)."""
    value = getattr(info, "topic_type_hash", None)
    if value is None:
        return None
    text = str(value)
    return text if _RIHS01.fullmatch(text) else None


def graph_has_type_hashes(info_class: Any = None) -> bool:
    """Whether this rclpy's endpoint info carries type hashes (Iron and later)."""
    if info_class is None:
        from rclpy.topic_endpoint_info import TopicEndpointInfo as info_class
    return hasattr(info_class, "topic_type_hash")


@dataclass(frozen=True)
class Endpoint:
    """One of our own endpoints whose hash we announce to the peer."""

    topic: str  #: fully resolved
    publisher: bool
    expected: str  #: the computed RIHS01 hash


@dataclass
class GraphHashCheck:
    """Compares, once each, what the graph reports for our own endpoints with the computed
    hashes. Never blocks and never fails start-up: endpoints the graph has not listed yet stay
    pending until :attr:`deadline_polls` polls have passed, then are given up silently."""

    endpoints: Sequence[Endpoint]
    node_name: str
    node_namespace: str
    deadline_polls: int = 30
    mismatches: list[str] = field(default_factory=list)
    unavailable: bool = False  #: the graph has no hashes (Humble, or an RMW without them)
    polls: int = 0
    _pending: list[Endpoint] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._pending = list(self.endpoints)

    @property
    def done(self) -> bool:
        return not self._pending or self.polls >= self.deadline_polls

    def poll(
        self,
        publishers_info: Callable[[str], Iterable[Any]],
        subscriptions_info: Callable[[str], Iterable[Any]],
    ) -> list[str]:
        """One look at the graph; returns the new mismatches (each a sentence naming the topic)."""
        self.polls += 1
        new: list[str] = []
        still: list[Endpoint] = []
        for ep in self._pending:
            infos = (publishers_info if ep.publisher else subscriptions_info)(ep.topic)
            mine = [
                i
                for i in infos
                if i.node_name == self.node_name and i.node_namespace == self.node_namespace
            ]
            if not mine:
                still.append(ep)
                continue
            reported = endpoint_type_hash(mine[0])
            if reported is None:
                self.unavailable = True
            elif reported != ep.expected:
                new.append(
                    f"topic {ep.topic}: the middleware reports type hash {reported}, computed "
                    f"{ep.expected}; a peer on another ROS may refuse this topic"
                )
        self._pending = still
        self.mismatches += new
        return new
