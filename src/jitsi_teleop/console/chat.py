"""The console on XMPP: the meeting's group chat, private messages in the room, and
one-to-one chat to our own JID (when logged in with an account).

Why a layer of its own: it turns stanzas into (body, sender) for the pure
:class:`~.console.Console` and sends its replies back through the room's connection without
taking budget the slow path needs. A reply waits (bounded queue, at most 15 s, then dropped and
counted) while the room carries teleoperation frames or the byte budget is short, so it never
delays a frame; only an e-stop's acknowledgement goes as soon as the budget allows.

What is ignored (counted): our own echoes and the room's own messages (the Room does not pass
them), other jitsi_teleop endpoints (no bot loops), delayed history, errors and headlines,
messages from our own account's other resources. Only the plain ``<body>`` is read: XHTML-IM
markup is never interpreted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from slixmpp import JID, Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from ..room.room import Room
from .commands import Sender
from .console import Console, Reply

log = logging.getLogger(__name__)

NS_DELAY = "urn:xmpp:delay"


@dataclass
class ChatCounters:
    groupchat: int = 0
    private: int = 0
    direct: int = 0
    ignored: int = 0
    replies: int = 0
    replies_dropped: int = 0


class ChatConsole:
    """Attach a Console to a joined Room. ``room_busy()`` says the room is carrying
    teleoperation frames right now (the slow path): replies wait while it does."""

    def __init__(
        self,
        room: Room,
        console: Console,
        room_busy: Callable[[], bool] = lambda: False,
        max_queue: int = 8,
        max_wait_s: float = 15.0,
    ) -> None:
        self.room = room
        self.console = console
        self.room_busy = room_busy
        self.counters = ChatCounters()
        self.max_wait_s = max_wait_s
        self._queue: collections.deque[tuple[float, Message]] = collections.deque(maxlen=max_queue)
        self._wake = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self._task: asyncio.Task | None = None
        #: bare JID -> the full JID that last wrote to us one-to-one (replies go there)
        self._reply_to: collections.OrderedDict[str, str] = collections.OrderedDict()

    def start(self) -> None:
        room = self.room
        self._unsubscribe.append(room.add_groupchat_handler(self._on_groupchat))
        self._unsubscribe.append(room.add_message_handler(self._on_private))
        xmpp = room.xmpp
        # every message stanza, not slixmpp's "message" event (that one needs a <body>, and
        # a markup-only XHTML-IM message deserves an answer too)
        name = f"jitsi-teleop console {id(self)}"
        xmpp.register_handler(Callback(name, MatchXPath("{jabber:client}message"), self._on_direct))
        self._unsubscribe.append(lambda: xmpp.remove_handler(name))
        if room.config.account is not None:
            # available presence, so that one-to-one messages to our bare JID reach us
            xmpp.add_event_handler("session_start", self._announce)
            self._unsubscribe.append(
                lambda: xmpp.del_event_handler("session_start", self._announce)
            )
            self._announce(None)
        self._task = asyncio.ensure_future(self._sender())

    async def close(self) -> None:
        for u in self._unsubscribe:
            with contextlib.suppress(Exception):
                u()
        self._unsubscribe.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # ------------------------------------------------------------------ incoming ---------
    def _announce(self, _event: object) -> None:
        with contextlib.suppress(Exception):
            self.room.xmpp.send_presence(pstatus="jitsi-teleop console: say help", ppriority=0)

    def _occupant_sender(self, nick: str, channel: str) -> Sender | None:
        occ = self.room.occupants.get(nick)
        if occ is not None and (occ.is_self or occ.is_endpoint):
            return None  # ourselves, or another site: never a console user
        if nick == self.room.nick:
            return None
        jid = JID(occ.jid).bare.lower() if occ is not None and occ.jid else ""
        moderator = occ is not None and occ.muc_role == "moderator"
        return Sender(nick=nick, jid=jid, moderator=moderator, channel=channel)

    def _is_site(self, bare: str) -> bool:
        if bare in getattr(self.room, "allowed", ()):  # one-to-one: the peer accounts
            return True
        return any(
            o.is_endpoint and o.jid and JID(o.jid).bare.lower() == bare
            for o in self.room.occupants.values()
        )

    def _on_groupchat(self, nick: str, msg: Message) -> None:
        if _delayed(msg):
            self.counters.ignored += 1
            return
        sender = self._occupant_sender(nick, "groupchat")
        if sender is None:
            self.counters.ignored += 1
            return
        self.counters.groupchat += 1
        self._handle(msg, sender)

    def _on_private(self, nick: str, msg: Message) -> bool:
        if msg["type"] not in ("chat", "normal", ""):
            return False
        if not _has_text(msg):
            return False  # a link's frame, or something else: not ours
        sender = self._occupant_sender(nick, "private")
        if sender is None:
            return False
        self.counters.private += 1
        self._handle(msg, sender)
        return True

    def _on_direct(self, msg: Message) -> None:
        frm = msg["from"]
        if msg["type"] not in ("chat", "normal", "") or frm.bare == self.room.room_jid:
            return
        own = self.room.xmpp.boundjid.bare
        if not frm.bare or frm.bare == own or frm.bare == self.room.config.domain:
            self.counters.ignored += 1
            return
        if _delayed(msg) or not _has_text(msg):
            self.counters.ignored += 1
            return
        bare = frm.bare.lower()
        if self._is_site(bare):  # the other robot's account: never a console user (no loops)
            self.counters.ignored += 1
            return
        moderator = any(
            o.jid and JID(o.jid).bare.lower() == bare and o.muc_role == "moderator"
            for o in self.room.occupants.values()
        )
        self.counters.direct += 1
        self._reply_to[bare] = frm.full
        self._reply_to.move_to_end(bare)
        while len(self._reply_to) > 256:
            self._reply_to.popitem(last=False)
        self._handle(msg, Sender(nick="", jid=bare, moderator=moderator, channel="direct"))

    def _handle(self, msg: Message, sender: Sender) -> None:
        body = msg.xml.find("{jabber:client}body")
        text = (body.text or "") if body is not None else None
        reply = self.console.handle(text, sender)
        if reply is not None:
            self._enqueue(reply)

    # ------------------------------------------------------------------ replies ----------
    def _make(self, reply: Reply) -> Message | None:
        s = reply.sender
        xmpp = self.room.xmpp
        if s.channel == "groupchat":
            return xmpp.make_message(mto=self.room.room_jid, mbody=reply.text, mtype="groupchat")
        if s.channel == "private":
            msg = self.room.make_private_message(s.nick)
            msg["body"] = reply.text
            return msg
        to = self._reply_to.get(s.jid, s.jid)
        return xmpp.make_message(mto=to, mbody=reply.text, mtype="chat")

    def _enqueue(self, reply: Reply) -> None:
        msg = self._make(reply)
        if msg is None:
            return
        if len(self._queue) == self._queue.maxlen:
            self.counters.replies_dropped += 1  # the oldest falls out
        item = (time.monotonic(), msg, reply.urgent)
        if reply.urgent:
            self._queue.appendleft(item)  # ahead of replies waiting for a free room
        else:
            self._queue.append(item)
        self._wake.set()

    async def _sender(self) -> None:
        room = self.room
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            queued_at, msg, urgent = self._queue[0]
            if time.monotonic() - queued_at > self.max_wait_s:
                self._queue.popleft()
                self.counters.replies_dropped += 1
                continue
            size = room.stanza_size(msg)
            free = urgent or not self.room_busy()
            if room.online and free and room.budget.delay_for(size) == 0:
                self._queue.popleft()
                try:
                    room.send(msg, size)
                    self.counters.replies += 1
                except Exception as e:  # went offline meanwhile
                    log.debug("console reply not sent: %s", e)
                    self.counters.replies_dropped += 1
                continue
            await asyncio.sleep(0.1)


def _delayed(msg: Message) -> bool:
    return msg.xml.find(f"{{{NS_DELAY}}}delay") is not None


def _has_text(msg: Message) -> bool:
    """A plain body, or XHTML-IM markup (answered with "send plain text")."""
    if msg.xml.find("{jabber:client}body") is not None:
        return True
    return msg.xml.find("{http://jabber.org/protocol/xhtml-im}html") is not None
