"""The robot's console: one chat line in, at most one reply out, every command logged.

Pure logic (no XMPP, no rclpy, no asyncio): the chat adapter (:mod:`.chat`) feeds it lines
with their sender, and a :class:`SiteActions` of the ROS adapter does what a command asks
(publish an e-stop, a note, play a chime) and describes the site for ``status`` and ``who``.

Floods: a per-sender and a console-wide token bucket bound the replies and log writes a
sender can cause; over the limit a sender gets one "slow down" and then silence. An e-stop is
never dropped by the limiter (a stop costs nothing, a missed stop can cost a hand): it always
reaches the site, and repeated stops within ``estop_fold_s`` fold into one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..links.budget import TokenBucket
from .commands import (
    COMMANDS,
    LOG_DEFAULT,
    LOG_MAX,
    MAX_BODY_BYTES,
    Parsed,
    Permissions,
    Request,
    Sender,
    decode_body,
    fit,
    parse,
)
from .eventlog import EventLog


class SiteActions(Protocol):
    """What the console asks of the site (the ROS adapter implements it)."""

    def status_text(self) -> str: ...

    def who_text(self) -> str: ...

    def estop(self, actor: str) -> str: ...

    def note(self, actor: str, text: str) -> None: ...

    def chime(self, actor: str) -> str: ...


@dataclass
class ConsoleConfig:
    """``names``: what the console answers to in group chat; ``site``: how replies are
    labelled (e.g. ``follower``); ``max_reply_bytes``: a reply is cut to fit (the room
    path's byte budget is shared with the slow path's frames)."""

    names: tuple[str, ...]
    site: str
    permissions: Permissions = field(default_factory=Permissions)
    max_reply_bytes: int = 700
    per_sender_rate: float = 1.0  # commands/s sustained per sender
    per_sender_burst: float = 5.0
    total_rate: float = 4.0  # commands/s sustained over all senders
    total_burst: float = 12.0
    estop_fold_s: float = 0.5


@dataclass
class ConsoleCounters:
    lines: int = 0
    commands: int = 0
    not_addressed: int = 0
    bad: int = 0
    denied: int = 0
    limited: int = 0
    estops: int = 0
    estops_folded: int = 0


@dataclass(frozen=True)
class Reply:
    text: str
    sender: Sender
    #: an e-stop's acknowledgement: the one reply that does not wait for the room to be free
    #: of teleoperation frames (the person who pressed stop must see that it worked)
    urgent: bool = False


class Console:
    def __init__(
        self,
        config: ConsoleConfig,
        log: EventLog,
        actions: SiteActions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.log = log
        self.actions = actions
        self.counters = ConsoleCounters()
        self._clock = clock
        self._total = TokenBucket(config.total_rate, config.total_burst, clock)
        self._senders: dict[str, TokenBucket] = {}
        self._warned: set[str] = set()
        self._last_estop = float("-inf")

    # ------------------------------------------------------------------ entry point ------
    def handle(self, body: str | bytes | None, sender: Sender) -> Reply | None:
        """One line from ``sender``; the reply to send back (to the same channel), if any."""
        self.counters.lines += 1
        if body is None:  # markup only (XHTML-IM without a plain body), or no body at all
            if sender.channel == "groupchat":
                return None
            return self._bad(sender, "send plain text: try help")
        size = len(body) if isinstance(body, bytes) else len(body.encode("utf-8", "replace"))
        text = decode_body(body)
        if text is None:
            return self._bad(sender, "message is not UTF-8 text: ignored")
        if size > MAX_BODY_BYTES:
            # only answer in group chat when it looks addressed to us, to stay out of chatter
            if (
                sender.channel == "groupchat"
                and parse(text[:200], self.config.names, "groupchat") is None
            ):
                self.counters.not_addressed += 1
                return None
            return self._bad(sender, f"message too long ({size} bytes, at most {MAX_BODY_BYTES})")
        parsed = parse(text, self.config.names, sender.channel)
        if parsed is None:
            self.counters.not_addressed += 1
            return None
        return self._dispatch(parsed, sender)

    # ------------------------------------------------------------------ internals --------
    def _dispatch(self, parsed: Parsed, sender: Sender) -> Reply | None:
        req = parsed.request
        if req is not None and req.name == "estop":
            return self._estop(sender)  # before the limiter: never dropped
        if not self._admit(sender):
            return self._slow_down(sender)
        if req is None:  # already admitted: answer without charging the sender twice
            self.counters.bad += 1
            return self._reply(sender, parsed.error)
        self.counters.commands += 1
        if not self.config.permissions.allows(req.name, sender):
            self.counters.denied += 1
            who = self.config.permissions.describe(req.name)
            self.log.add(
                "refusal",
                f"{req.name}: not allowed",
                sender.label,
                {"command": req.name, "channel": sender.channel},
            )
            return self._reply(sender, f"{req.name}: not allowed for you (allowed: {who})")
        self.log.add(
            "command",
            req.name + (f" {req.arg}" if req.arg and req.name != "note" else ""),
            sender.label,
            {"channel": sender.channel},
        )
        return self._reply(sender, self._run(req, sender))

    def _run(self, req: Request, sender: Sender) -> str:
        a = self.actions
        if req.name == "help":
            allowed = [c for c in COMMANDS if self.config.permissions.allows(c, sender)]
            lines = [f"{c}: {COMMANDS[c]}" for c in allowed]
            return "commands (" + self.config.site + "): " + "; ".join(lines)
        if req.name == "status":
            return a.status_text()
        if req.name == "who":
            return a.who_text()
        if req.name == "note":
            stored = self.log.add("note", req.arg, sender.label, {"channel": sender.channel})
            a.note(sender.label, req.arg)
            return f"noted (#{stored})" if stored else "note published but NOT stored (log error)"
        if req.name == "log":
            n = min(LOG_MAX, int(req.arg)) if req.arg else LOG_DEFAULT
            events = self.log.last(n)
            if not events:
                return "log: empty"
            return self._newest_lines([e.line() for e in events])
        if req.name == "chime":
            result = a.chime(sender.label)
            self.log.add("chime", result, sender.label)
            return result
        raise AssertionError(req.name)  # parse() admits only COMMANDS

    def _newest_lines(self, lines: list[str]) -> str:
        """``log:`` and as many of the newest lines as fit the reply (oldest dropped first,
        and said so): the latest events are the ones a person asks for."""
        budget = self.config.max_reply_bytes - len(f"[{self.config.site}] ".encode()) - 40
        kept: list[str] = []
        used = 0
        for line in reversed(lines):
            size = len(line.encode("utf-8")) + 1
            if used + size > budget and kept:
                break
            kept.append(line)
            used += size
        head = "log:" if len(kept) == len(lines) else f"log (newest {len(kept)} of {len(lines)}):"
        return head + "\n" + "\n".join(reversed(kept))

    def _estop(self, sender: Sender) -> Reply | None:
        self.counters.commands += 1
        if not self.config.permissions.allows("estop", sender):
            self.counters.denied += 1
            self.log.add("refusal", "estop: not allowed", sender.label, {"command": "estop"})
            if not self._admit(sender):
                return None
            who = self.config.permissions.describe("estop")
            return self._reply(sender, f"estop: not allowed for you (allowed: {who})")
        now = self._clock()
        if now - self._last_estop < self.config.estop_fold_s:
            self.counters.estops_folded += 1
            return None  # the stop just sent covers it; no reply, no log row
        self._last_estop = now
        self.counters.estops += 1
        result = self.actions.estop(sender.label)
        self.log.add("estop", f"console estop: {result}", sender.label, {"channel": sender.channel})
        if not self._admit(sender):
            return None
        return dataclasses.replace(self._reply(sender, result), urgent=True)

    def _admit(self, sender: Sender) -> bool:
        bucket = self._senders.get(sender.key)
        if bucket is None:
            if len(self._senders) > 1000:  # bounded memory under a nick-rotating flood
                self._senders.clear()
            bucket = TokenBucket(
                self.config.per_sender_rate, self.config.per_sender_burst, self._clock
            )
            self._senders[sender.key] = bucket
        if bucket.tokens < 1 or self._total.tokens < 1:
            self.counters.limited += 1
            return False
        bucket.consume(1)
        self._total.consume(1)
        self._warned.discard(sender.key)
        return True

    def _slow_down(self, sender: Sender) -> Reply | None:
        if sender.key in self._warned:
            return None
        self._warned.add(sender.key)
        self.log.add("refusal", "commands rate-limited", sender.label)
        return self._reply(sender, "too many commands: ignoring you for a few seconds")

    def _bad(self, sender: Sender, text: str) -> Reply | None:
        self.counters.bad += 1
        if not self._admit(sender):
            return self._slow_down(sender)
        return self._reply(sender, text)

    def _reply(self, sender: Sender, text: str) -> Reply:
        return Reply(fit(f"[{self.config.site}] {text}", self.config.max_reply_bytes), sender)
