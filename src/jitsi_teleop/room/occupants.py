"""Typed view of the room's occupants and the events the room emits about them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TeleopInfo:
    """What a jitsi_teleop endpoint announces in its presence (unauthenticated!)."""

    role: str
    robot: str
    key_id: str
    version: str = "0"


@dataclass(frozen=True)
class Occupant:
    """One MUC occupant. ``teleop`` is set only for endpoints with a well-formed payload."""

    nick: str
    jid: str | None = None
    muc_role: str = "participant"
    affiliation: str = "none"
    teleop: TeleopInfo | None = None
    is_self: bool = False

    @property
    def is_endpoint(self) -> bool:
        return self.teleop is not None

    @property
    def is_focus(self) -> bool:
        return self.nick == "focus"


@dataclass(frozen=True)
class OccupantJoined:
    occupant: Occupant


@dataclass(frozen=True)
class OccupantLeft:
    occupant: Occupant


@dataclass(frozen=True)
class OccupantChanged:
    old: Occupant
    new: Occupant


@dataclass(frozen=True)
class RoomJoined:
    """We are (again) in the room; ``rejoin`` is True after a reconnect."""

    nick: str
    rejoin: bool


@dataclass(frozen=True)
class RoomLeft:
    """The connection dropped or we were removed; occupants are kept until reconciled.
    ``removed``: a moderator kicked us (or the room went away); the room rejoins by itself."""

    reason: str
    removed: bool = False


RoomEvent = OccupantJoined | OccupantLeft | OccupantChanged | RoomJoined | RoomLeft
