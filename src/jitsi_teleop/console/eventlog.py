"""A site's event log in SQLite: what happened to the link and the robot, and who asked what.

Why: people in a meeting want to know afterwards why the follower held or who stopped it,
and ``note TEXT`` / ``log N`` in the chat is this project's PUSH/PULL. One small table, one
row per event, readable with ``jitsi-teleop log FILE`` and any SQLite tool. Writes are a few
per second at most (commands are rate-limited, link events are edges, not samples).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: event kinds the log knows (anything else is refused, so a typo cannot hide events)
KINDS = frozenset(
    {
        "start",  # the site started (role, room)
        "pairing",  # paired / unpaired with a peer
        "path",  # path switch, with detection time
        "hold",  # the follower started or stopped holding
        "estop",  # an e-stop, and who/what caused it
        "refusal",  # something refused (a stream, a frame class, a login, a command)
        "note",  # a note from a person
        "command",  # a console command received, and from whom
        "chime",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    t REAL NOT NULL,            -- wall clock, seconds since the epoch (UTC)
    kind TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT '',   -- who: a JID or nick, or '' for the site itself
    text TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'  -- JSON object
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
"""

MAX_TEXT = 1000


class EventLogError(Exception):
    """The file is not an event log (or cannot be opened); the message says which."""


@dataclass(frozen=True)
class Event:
    id: int
    t: float
    kind: str
    actor: str
    text: str
    detail: dict[str, Any]

    def line(self) -> str:
        """One human line: ``2026-12-04 15:32:16Z estop [alice@x] text``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.t))
        who = f" [{self.actor}]" if self.actor else ""
        return f"{stamp} {self.kind}{who} {self.text}".rstrip()


class EventLog:
    """Append and read events. Thread-safe (the ROS thread and the asyncio thread both log)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(Path(self.path).expanduser()) if self.path != ":memory:" else self.path,
                check_same_thread=False,
                isolation_level=None,  # autocommit: every event is on disk when add returns
                timeout=0.5,  # never hold the caller (the asyncio thread) for long
            )
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise EventLogError(f"{self.path}: not an event log ({e})") from None
        self._lock = threading.Lock()
        #: writes that failed (disk full, locked by another writer for too long)
        self.errors = 0

    def add(
        self,
        kind: str,
        text: str = "",
        actor: str = "",
        detail: Mapping[str, Any] | None = None,
        t: float | None = None,
    ) -> int:
        """Append one event; returns its id, or 0 when it could not be written (counted in
        ``errors``: a full disk must not take the site down). Text longer than MAX_TEXT is
        cut (and marked)."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT - 1] + "…"
        row = (
            time.time() if t is None else t,
            kind,
            actor[:200],
            text,
            json.dumps(dict(detail or {}), default=str),
        )
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO events (t, kind, actor, text, detail) VALUES (?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.Error:
                self.errors += 1
                return 0
            return int(cur.lastrowid or 0)

    def last(self, n: int = 10, kind: str | None = None) -> list[Event]:
        """The newest ``n`` events (optionally of one kind), oldest first."""
        n = max(0, int(n))
        sql = "SELECT id, t, kind, actor, text, detail FROM events"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            try:
                rows = self._db.execute(sql, (*args, n)).fetchall()
            except sqlite3.DatabaseError as e:
                raise EventLogError(f"{self.path}: not an event log ({e})") from None
        return [_event(r) for r in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _event(row: tuple[Any, ...]) -> Event:
    try:
        detail = json.loads(row[5]) if row[5] else {}
    except ValueError:
        detail = {}
    return Event(int(row[0]), float(row[1]), str(row[2]), str(row[3]), str(row[4]), detail)


def open_existing(path: str | Path) -> EventLog:
    """Open a log that must already exist (``jitsi-teleop log FILE``): never creates one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EventLogError(f"{path}: no such file")
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise EventLogError(f"{path}: {e.strerror}") from None
    if head != b"SQLite format 3\x00":
        raise EventLogError(f"{path}: not an SQLite file")
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    if "events" not in names:
        raise EventLogError(f"{path}: an SQLite file without an events table")
    return EventLog(p)
