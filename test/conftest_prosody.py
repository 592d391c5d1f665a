"""Pytest plugin: a real Prosody for room/link tests (register with ``pytest_plugins``)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.room.room import Room
from prosody_server import ProsodyServer, prosody_available

needs_prosody = pytest.mark.skipif(not prosody_available(), reason="prosody not installed")


def _running_prosody() -> Iterator[ProsodyServer]:
    if not prosody_available():
        pytest.skip("prosody not installed")
    srv = ProsodyServer()
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def prosody() -> Iterator[ProsodyServer]:
    """One Jitsi-like Prosody (mod_limits on) shared by a test module."""
    yield from _running_prosody()


@pytest.fixture
def fresh_prosody() -> Iterator[ProsodyServer]:
    """A Prosody of the test's own (for restarts)."""
    yield from _running_prosody()


@pytest.fixture
def room_name() -> str:
    return "room" + secrets.token_hex(4)


@pytest.fixture
async def rooms() -> AsyncIterator[Callable[..., Room]]:
    """Factory of Room objects that are closed at the end of the test."""
    made: list[Room] = []

    def make(config: RoomConfig) -> Room:
        room = Room(config)
        made.append(room)
        return room

    yield make
    for room in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.close(), 5)
