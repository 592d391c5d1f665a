"""The link interface every path implements (MUC slow path now, P2P data channel next).

Small on purpose: frames are opaque bytes on numbered streams, either ``latest`` (newest wins,
may be thinned or dropped) or reliable (ordered, bounded queue, backpressure by exception).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, fields

#: ``callback(peer_nick, stream_id, payload)``
ReceiveCallback = Callable[[str, int, bytes], None]

MAX_STREAM_ID = 0xFFFF


class LinkError(Exception):
    """Base class of the errors ``Link.send`` raises; nothing is sent when raised."""


class FrameTooLarge(LinkError, ValueError):
    """The frame cannot go over this link at all (e.g. the server kills big stanzas)."""


class LinkBusy(LinkError):
    """Backpressure: the reliable queue is full; retry after ``await link.wait_writable()``."""


class LinkClosed(LinkError):
    """The link was closed."""


@dataclass
class LinkStats:
    """Counters; ``delivered`` counts frames handed to the receive callback on this side."""

    sent: int = 0
    delivered: int = 0
    thinned: int = 0
    refused: int = 0
    resent: int = 0
    expired: int = 0
    stale: int = 0
    invalid: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    signals_sent: int = 0
    signals_received: int = 0
    queued_reliable: int = 0
    pending_latest: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Link(abc.ABC):
    """A path to one peer."""

    @abc.abstractmethod
    def send(self, stream_id: int, payload: bytes, latest: bool) -> None:
        """Queue a frame. Latest-only frames replace an unsent older frame of the same
        stream. Raises FrameTooLarge, LinkBusy (reliable queue full) or LinkClosed."""

    @abc.abstractmethod
    def set_receive_callback(self, callback: ReceiveCallback | None) -> None:
        """Frames from the peer go to ``callback(peer_nick, stream_id, payload)``."""

    @property
    @abc.abstractmethod
    def stats(self) -> LinkStats: ...

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True when frames sent now can reach the peer."""

    @abc.abstractmethod
    async def wait_writable(self) -> None:
        """Return when the reliable queue has room again."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def check_stream_id(stream_id: int) -> None:
    if not isinstance(stream_id, int) or not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream_id must be an int in 0..{MAX_STREAM_ID}: {stream_id!r}")
