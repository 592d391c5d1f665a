"""The console's grammar and who may do what: pure functions and dataclasses, no I/O.

Why separate: parsing, addressing and permissions decide whether a chat line from a stranger
can touch the robot, so they are tested exhaustively on their own, away from XMPP and rclpy.

A line is addressed to a site in group chat as ``!cmd`` (every site answers), ``@name cmd``,
``name: cmd`` or ``name, cmd`` (``name`` is the site's console name, its role or its robot);
in a private or one-to-one chat the whole line is the command (a leading ``!`` or name is
accepted too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: what the console answers; each with a one-line help
COMMANDS: dict[str, str] = {
    "help": "this list",
    "status": "path, latency and age, pairing, robot, holding, e-stop, last refusals",
    "who": "the sites in the room: roles, robots, paths",
    "estop": "stop the follower now (latches; cleared only at the robot's site)",
    "note": "note TEXT: add a note to this site's event log (and its ROS topic)",
    "log": "log [N]: the last N events of this site's log (default 10)",
    "chime": "play an audible warning at this site",
}

#: commands people will try that do not exist on purpose, and why
REFUSED: dict[str, str] = {
    "resume": "no remote resume: a hold or e-stop is cleared only at the robot's site (~/reset)",
    "reset": "no remote reset: a hold or e-stop is cleared only at the robot's site (~/reset)",
    "exec": "no shell command here: the chat is not a remote shell",
    "exesys": "no shell command here: the chat is not a remote shell",
    "shell": "no shell command here: the chat is not a remote shell",
    "sh": "no shell command here: the chat is not a remote shell",
    "run": "no shell command here: the chat is not a remote shell",
}

MAX_BODY_BYTES = 1024
MAX_NOTE_CHARS = 500
LOG_DEFAULT = 10
LOG_MAX = 50

ANYONE = "anyone"
MODERATORS = "moderators"
#: estop, help and status are open to anyone (a stop costs nothing, a missed stop can cost a
#: hand); who repeats what presence already shows; the rest is for moderators
DEFAULT_PERMISSIONS: dict[str, frozenset[str]] = {
    "help": frozenset({ANYONE}),
    "status": frozenset({ANYONE}),
    "who": frozenset({ANYONE}),
    "estop": frozenset({ANYONE}),
    "note": frozenset({MODERATORS}),
    "log": frozenset({MODERATORS}),
    "chime": frozenset({MODERATORS}),
}

_JID_RE = re.compile(r"[^@/\s]+@[^@/\s]+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class PermissionError_(ValueError):
    """A permission setting is malformed."""


@dataclass(frozen=True)
class Sender:
    """Who sent a line. ``jid`` is the bare real JID when known ('' in anonymous rooms that
    hide it); ``channel`` is ``groupchat``, ``private`` (a MUC private message) or ``direct``
    (one-to-one to our own JID)."""

    nick: str
    jid: str = ""
    moderator: bool = False
    channel: str = "groupchat"

    @property
    def label(self) -> str:
        if self.jid and self.nick:
            return f"{self.nick} ({self.jid})"
        return self.jid or self.nick or "?"

    @property
    def key(self) -> str:
        """What the rate limiter keys on."""
        return self.jid or f"nick:{self.nick}"


@dataclass(frozen=True)
class Request:
    name: str
    arg: str = ""


@dataclass(frozen=True)
class Parsed:
    """Addressed to us: a request, or ``error`` (a clear answer for a bad line)."""

    request: Request | None = None
    error: str = ""


def decode_body(body: str | bytes) -> str | None:
    """Text of a body; None when it is not UTF-8 (bytes from a lossy gateway)."""
    if isinstance(body, bytes):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return body


def parse(body: str, names: tuple[str, ...], channel: str) -> Parsed | None:
    """None when the line is not for us (group chat chatter); else the request or an error."""
    line = body.strip()
    if not line:
        return None if channel == "groupchat" else Parsed(error="empty message: try help")
    rest = _strip_address(line, names)
    if rest is None:
        if channel == "groupchat":
            return None
        rest = line
    rest = rest.strip()
    if not rest:
        return Parsed(error="say a command after my name: try help")
    word, _, arg = rest.partition(" ")
    name = word.strip().lower()
    arg = arg.strip()
    if name in REFUSED:
        return Parsed(error=REFUSED[name])
    if name not in COMMANDS:
        shown = _shown(word)
        return Parsed(error=f"unknown command {shown}: try help ({', '.join(COMMANDS)})")
    if name == "note":
        if not arg:
            return Parsed(error="note needs text: note TEXT")
        if len(arg) > MAX_NOTE_CHARS:
            return Parsed(error=f"note too long ({len(arg)} characters, at most {MAX_NOTE_CHARS})")
        if _CONTROL_RE.search(arg):
            return Parsed(error="note has control characters")
    elif name == "log":
        if arg and not (arg.isascii() and arg.isdigit() and 1 <= int(arg) <= 10_000):
            return Parsed(error=f"log takes a number of entries, 1..{LOG_MAX}: log 20")
    elif arg:
        return Parsed(error=f"{name} takes no argument")
    return Parsed(request=Request(name, arg))


def _strip_address(line: str, names: tuple[str, ...]) -> str | None:
    """The line without its address, or None when it is not addressed to us."""
    if line.startswith("!"):
        return line[1:]
    lowered = line.lower()
    body = lowered[1:] if lowered.startswith("@") else lowered
    offset = len(line) - len(body)
    for n in sorted({n.lower() for n in names if n}, key=len, reverse=True):
        if body.startswith(n):
            after = body[len(n) : len(n) + 1]
            if after in (":", ","):
                return line[offset + len(n) + 1 :]
            if after == " " or (after == "" and offset):
                return line[offset + len(n) :]
    return None


def _shown(word: str) -> str:
    w = _CONTROL_RE.sub("?", word)
    return repr(w if len(w) <= 24 else w[:24] + "…")


@dataclass(frozen=True)
class Permissions:
    """Per command: a set of ``anyone``, ``moderators`` and bare JIDs."""

    rules: dict[str, frozenset[str]] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))

    def allows(self, command: str, sender: Sender) -> bool:
        rule = self.rules.get(command, frozenset())
        if ANYONE in rule:
            return True
        if MODERATORS in rule and sender.moderator:
            return True
        return bool(sender.jid) and sender.jid.lower() in rule

    def describe(self, command: str) -> str:
        rule = self.rules.get(command, frozenset())
        return ", ".join(sorted(rule)) or "nobody"

    @classmethod
    def parse(cls, text: str) -> Permissions:
        """``estop=anyone; note=moderators,alice@example.org`` over the defaults."""
        rules = dict(DEFAULT_PERMISSIONS)
        for part in text.replace("\n", ";").split(";"):
            part = part.strip()
            if not part:
                continue
            cmd, eq, who = part.partition("=")
            cmd = cmd.strip().lower()
            if not eq or cmd not in COMMANDS:
                raise PermissionError_(
                    f"permission {part!r}: want COMMAND=WHO, COMMAND one of {', '.join(COMMANDS)}"
                )
            tokens = frozenset(t.strip().lower() for t in who.split(",") if t.strip())
            for t in tokens:
                if t not in (ANYONE, MODERATORS, "nobody") and not _JID_RE.fullmatch(t):
                    raise PermissionError_(
                        f"permission {part!r}: {t!r} is not anyone, moderators, nobody or a "
                        "bare JID"
                    )
            rules[cmd] = tokens - {"nobody"}
        return cls(rules)


def fit(text: str, max_bytes: int) -> str:
    """``text`` cut (at a character boundary, marked with …) to at most ``max_bytes`` UTF-8."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = data[: max(0, max_bytes - 3)].decode("utf-8", errors="ignore")
    return cut + "…"
