"""Lock the rendezvous against newcomers while paired (``SessionConfig.lock_room``).

Why: anyone who knows a Jitsi room's name can join it, and whoever holds moderator rights can
kick. Where a site itself owns the room (first to join, or an authenticated deployment), it can
close the room for the time the two sites are paired: a random password, which goes to the
peer sealed (a CONTROL frame) so that the peer can still rejoin after a kick or a reconnect.
When the pairing ends the room is opened again, so that a restarted peer can come back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from .carrier import Carrier

log = logging.getLogger(__name__)

MAX_PASSWORD = 256


class RoomLock:
    """``send(password_bytes)`` delivers the password to the peer (sealed, reliable);
    ``count(name)`` counts what could not be done (``lock_unavailable``, ``lock_failed``,
    ``control_invalid``)."""

    def __init__(
        self,
        carrier: Carrier,
        enabled: bool,
        send: Callable[[bytes], None],
        count: Callable[[str], None],
        spawn: Callable[[Any], None],
    ) -> None:
        self.carrier = carrier
        self.enabled = enabled
        self._send = send
        self._count = count
        self._spawn = spawn
        self.password: str | None = None  #: ours, while the room is locked by us
        self._busy = False

    def on_paired(self) -> None:
        if self.password is not None:  # a new session with the peer: tell it again
            self._send(self.password.encode())
        elif self.enabled and not self._busy:
            self._spawn(self._lock())

    def on_unpaired(self) -> None:
        if self.password is not None:
            self.password = None
            self._spawn(self._set(None))

    def on_password(self, payload: bytes) -> None:
        """The peer locked the room: present its password when we rejoin."""
        try:
            password = payload.decode("utf-8")
        except UnicodeDecodeError:
            self._count("control_invalid")
            return
        if len(password) > MAX_PASSWORD:
            self._count("control_invalid")
            return
        self.carrier.use_password(password or None)

    async def close(self) -> None:
        if self.password is not None:
            self.password = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.carrier.set_locked(None), 3.0)

    async def _lock(self) -> None:
        if not self.carrier.can_lock:
            log.info("lock_room: not the room's owner here; the room stays open")
            self._count("lock_unavailable")
            return
        self._busy = True
        try:
            password = base64.urlsafe_b64encode(os.urandom(12)).decode()
            if await self._set(password):
                self.password = password
                self._send(password.encode())
                log.info("room locked while paired")
        finally:
            self._busy = False

    async def _set(self, password: str | None) -> bool:
        try:
            await self.carrier.set_locked(password)
            self.carrier.use_password(password)
            return True
        except Exception as e:
            log.warning("could not %s the room: %s", "lock" if password else "unlock", e)
            self._count("lock_failed")
            return False
