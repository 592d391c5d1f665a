"""Teleop signals that no handler claimed yet, kept briefly for the channel that will want them.

Why: a peer's first handshake can arrive before the channel that answers it exists (the room
and the LAN carrier both hand messages to handlers as they come). Bounded per sender and in
senders, so one flooder cannot push out another's first message.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from slixmpp import Message

log = logging.getLogger(__name__)

PER_SENDER = 4
SENDERS = 128

Handler = Callable[[str, Message], bool]


class UnclaimedSignals:
    """The last :data:`PER_SENDER` unclaimed signals of at most :data:`SENDERS` senders."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[tuple[float, Message]]] = {}

    def keep(self, sender: str, msg: Message) -> None:
        queue = self._queues.pop(sender, None) or deque(maxlen=PER_SENDER)
        queue.append((time.monotonic(), msg))
        self._queues[sender] = queue  # most recent last
        while len(self._queues) > SENDERS:
            del self._queues[next(iter(self._queues))]

    def replay(self, handler: Handler, within: float) -> None:
        """Hand ``handler`` the signals kept in the last ``within`` s, in order; those it
        claims are forgotten."""
        since = time.monotonic() - within
        for sender, queue in list(self._queues.items()):
            kept: deque[tuple[float, Message]] = deque(maxlen=PER_SENDER)
            for t, msg in queue:
                claimed = False
                if t >= since:
                    try:
                        claimed = bool(handler(sender, msg))
                    except Exception:
                        log.exception("message handler failed")
                if not claimed and t >= since:
                    kept.append((t, msg))
            if kept:
                self._queues[sender] = kept
            else:
                self._queues.pop(sender, None)
