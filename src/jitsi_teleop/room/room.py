"""One Jitsi (or plain Prosody) room: connect, focus, MUC join, occupants, keepalive, rejoin.

Everything from the room's JID is treated as untrusted input: it is parsed defensively, never
answered with a message error (Prosody kicks occupants that do), IQ replies to other occupants
are rate-limited so that a flood cannot eat our send budget, and all drops are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from slixmpp import JID, Iq, Message, Presence
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import StanzaBase

from ..links.budget import TokenBucket
from .client import TeleopXMPP
from .config import (
    AuthError,
    ConnectError,
    FocusError,
    JoinError,
    RoomConfig,
    RoomError,
    TlsError,
    new_nick,
)
from .extdisco import Discovery, ExternalService, IceServer, discover, discover_services
from .focus import FocusReply, request_conference
from .occupants import (
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    RoomEvent,
    RoomJoined,
    RoomLeft,
    TeleopInfo,
)
from .stanzas import NS_DISCO_INFO, NS_JINGLE, NS_PING, NS_TELEOP
from .transport_ws import WS_FRAME_OVERHEAD
from .unclaimed import UnclaimedSignals

log = logging.getLogger(__name__)

#: Features we announce to disco#info (Jicofo asks every occupant). No Jingle apps: we do
#: not take media from the bridge, and we decline any session that is offered anyway.
DISCO_FEATURES = (NS_DISCO_INFO, NS_PING, NS_TELEOP)

#: bytes a client sends to set up a stream (open, SASL ANONYMOUS, bind, SM enable), measured
#: on the WebSocket transport, rounded up
STREAM_SETUP_BYTES = 800

#: unclaimed teleop signals kept for replay: per occupant, and occupants

_JOIN_ERRORS = {
    "not-authorized": "wrong or missing room password",
    "not-allowed": "room creation refused by the server",
    "registration-required": "room is members-only",
    "forbidden": "banned from the room",
    "service-unavailable": "room is full or unavailable",
    "item-not-found": "room does not exist (and may not be created)",
    "conflict": "nick already in use",
    "jid-malformed": "invalid room JID or nick",
}


@dataclass
class RoomStats:
    """Counters of what the room did and what it dropped."""

    connects: int = 0
    resumes: int = 0
    rejoins: int = 0
    disconnects: int = 0
    pings_failed: int = 0
    #: connections the keepalive found dead and dropped
    keepalive_drops: int = 0
    ignored_messages: int = 0
    invalid_presences: int = 0
    key_conflicts: int = 0
    iq_answered: int = 0
    iq_dropped: int = 0
    jingle_declined: int = 0
    bytes_sent: int = 0
    kicked: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


MessageHandler = Callable[[str, Message], bool]
Listener = Callable[[RoomEvent], None]


class Room:
    """A membership in one MUC room that survives reconnects.

    Use ``await room.join()``, then ``room.peers`` / ``room.subscribe(listener)``; links
    register with ``add_message_handler`` and send with ``send``. ``await room.close()``.
    """

    def __init__(self, config: RoomConfig) -> None:
        self.config = config
        self.nick = config.nick
        self.stats = RoomStats()
        self.budget = TokenBucket(config.rate_bytes_per_s, config.burst_bytes)
        self._iq_bucket = TokenBucket(config.iq_replies_per_s, max(1.0, config.iq_replies_per_s))
        self._occupants: dict[str, Occupant] = {}
        self._listeners: list[Listener] = []
        self._handlers: list[MessageHandler] = []
        self._groupchat_handlers: list[MessageHandler] = []
        self._xmpp: TeleopXMPP | None = None
        self._online = asyncio.Event()
        self._session_ready: asyncio.Future[None] | None = None
        self._join_future: asyncio.Future[Occupant] | None = None
        #: the roster being received during a (re)join; ``_occupants`` keeps the last
        #: complete view meanwhile, so the peer list never goes empty while we rejoin
        self._building: dict[str, Occupant] | None = None
        #: occupants kept after a rejoin although the new roster lacks them: nick -> deadline
        self._grace: dict[str, float] = {}
        self._grace_task: asyncio.Task | None = None
        self._closing = False
        self._renaming = False
        self._ever_joined = False
        self._tasks: set[asyncio.Task] = set()
        self._ping_task: asyncio.Task | None = None
        #: the XMPP session is established on the current connection (keepalive runs)
        self._stream_up = False
        self._rejoin_task: asyncio.Task | None = None
        self.focus_reply: FocusReply | None = None
        self.rtt: float | None = None
        #: monotonic time of the last successful (re)join: sessions measure pairing from it
        self.joined_at: float | None = None
        #: recent teleop signals no handler claimed (a peer's first handshake can arrive
        #: before the session that answers it is started): replayed to new handlers. A few
        #: per occupant, so that a flood from one cannot push out another's
        self._unclaimed = UnclaimedSignals()

    # ---------------------------------------------------------------- public API -----------
    @property
    def room_jid(self) -> str:
        return self.config.room_jid

    @property
    def online(self) -> bool:
        """Connected, session up and in the room: stanzas sent now reach peers."""
        return self._online.is_set()

    @property
    def xmpp(self) -> TeleopXMPP:
        if self._xmpp is None:
            raise RoomError("not connected")
        return self._xmpp

    @property
    def occupants(self) -> dict[str, Occupant]:
        return dict(self._occupants)

    @property
    def peers(self) -> list[Occupant]:
        """Other jitsi_teleop endpoints in the room (humans and the focus excluded)."""
        return [o for o in self._occupants.values() if o.is_endpoint and not o.is_self]

    def occupant_jid(self, nick: str) -> str:
        return f"{self.room_jid}/{nick}"

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every RoomEvent; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def add_message_handler(
        self, handler: MessageHandler, *, replay: float = 0.0
    ) -> Callable[[], None]:
        """``handler(nick, message) -> bool`` sees private messages from occupants; returning
        True claims the message. Unclaimed messages are counted as ignored. ``replay``: first
        hand over teleop messages that nobody claimed in the last ``replay`` seconds."""
        self._handlers.append(handler)
        if replay > 0:
            self.replay_unclaimed(handler, replay)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def replay_unclaimed(self, handler: MessageHandler, within: float) -> None:
        """Hand ``handler`` the teleop signals nobody claimed in the last ``within`` s, in
        order; those it claims are forgotten."""
        self._unclaimed.replay(handler, within)

    def add_groupchat_handler(self, handler: MessageHandler) -> Callable[[], None]:
        """``handler(nick, message)`` sees the room's group chat (the console); returns an
        unsubscribe function. Our own echoes and the room's own messages are not passed."""
        self._groupchat_handlers.append(handler)
        hs = self._groupchat_handlers
        return lambda: hs.remove(handler) if handler in hs else None

    async def join(self) -> Occupant:
        """Connect, ask the focus (if configured), join; raise a RoomError subclass on failure.

        After the first success the room keeps itself joined (reconnect + rejoin) until
        ``close()``.
        """
        if self._xmpp is not None:
            raise RoomError("join() called twice")
        self._xmpp = xmpp = TeleopXMPP(self.config)
        xmpp.add_filter("in", self._in_filter)
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("session_resumed", self._on_session_resumed)
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        xmpp.add_event_handler("connection_failed", self._on_initial_failure)
        xmpp.on_wire = self._charge_transport  # BOSH: request headers and long polls
        loop = asyncio.get_running_loop()
        self._session_ready = loop.create_future()
        xmpp.start()
        try:
            await asyncio.wait_for(
                asyncio.shield(self._session_ready),
                self.config.connect_timeout + 5.0,
            )
        except asyncio.TimeoutError:
            await self._abort_initial()
            raise ConnectError(xmpp.last_error or "timed out connecting") from None
        except RoomError:
            await self._abort_initial()
            raise
        xmpp.del_event_handler("connection_failed", self._on_initial_failure)
        try:
            me = await self._enter(rejoin=False)
        except BaseException:
            await self._abort_initial()
            raise
        self._ever_joined = True
        self._ping_task = self._spawn(self._ping_loop())
        return me

    async def close(self) -> None:
        """Leave the room and disconnect; no reconnect afterwards."""
        self._closing = True
        self._online.clear()
        for task in list(self._tasks):
            task.cancel()
        xmpp = self._xmpp
        if xmpp is None:
            return
        if xmpp.transport is not None:
            with contextlib.suppress(Exception):
                pres = xmpp.make_presence(pto=self.occupant_jid(self.nick), ptype="unavailable")
                pres.send()
                await asyncio.sleep(0.05)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(xmpp.disconnect(wait=1.0), 3.0)
        xmpp.cancel_connection_attempt()
        with contextlib.suppress(Exception):
            xmpp.abort()
        sender = getattr(xmpp, "_run_out_filters", None)  # slixmpp's send loop
        if sender is not None:
            sender.cancel()

    async def wait_online(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._online.wait(), timeout)

    async def wait_for_peer(
        self,
        role: str | None = None,
        timeout: float = 10.0,
        predicate: Callable[[Occupant], bool] | None = None,
    ) -> Occupant:
        """Wait until a teleop endpoint (optionally of ``role``) is in the room."""

        def match(o: Occupant) -> bool:
            return (
                o.is_endpoint
                and not o.is_self
                and (role is None or (o.teleop is not None and o.teleop.role == role))
                and (predicate is None or predicate(o))
            )

        deadline = time.monotonic() + timeout
        while True:
            for o in self._occupants.values():
                if match(o):
                    return o
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(f"no peer with role {role!r} within {timeout:g} s")
            await asyncio.sleep(min(0.05, left))

    def stanza_size(self, stanza: StanzaBase) -> int:
        """Bytes this stanza costs against the server's limits (with framing overhead)."""
        text = str(stanza)
        ns = ' xmlns="jabber:client"'
        extra = 0 if ns in text[: text.find(">")] else len(ns)  # WS frames must carry it
        framing = self._xmpp.frame_overhead if self._xmpp is not None else WS_FRAME_OVERHEAD
        return len(text.encode("utf-8")) + extra + framing

    def make_private_message(self, nick: str) -> Message:
        return self.xmpp.make_message(mto=self.occupant_jid(nick), mtype="chat")

    def send(self, stanza: StanzaBase, size: int | None = None) -> int:
        """Send now (caller has checked the budget); charges the budget; returns the size."""
        if not self.online:
            raise RoomError("not in the room right now")
        size = self.stanza_size(stanza) if size is None else size
        self.budget.consume(size)
        self.stats.bytes_sent += size
        self.xmpp.send(stanza)
        return size

    async def ping(self, jid: str | None = None, timeout: float | None = None) -> float:
        """XEP-0199 round trip through the server (seconds)."""
        self.budget.consume(160)
        rtt = await self.xmpp.plugin["xep_0199"].ping(
            jid=JID(jid or self.config.domain), timeout=timeout or self.config.ping_timeout
        )
        self.rtt = rtt
        return rtt

    async def external_services(self, timeout: float = 5.0) -> list[ExternalService]:
        return await discover_services(self.xmpp, self.config.domain, timeout)

    async def ice_servers(self, timeout: float = 5.0) -> list[IceServer]:
        """STUN/TURN servers (XEP-0215, with credentials requests where needed) in a form
        usable for RTCIceServer; why others were not usable: ``ice_discovery.problems``."""
        self.ice_discovery: Discovery = await discover(self.xmpp, self.config.domain, timeout)
        return self.ice_discovery.ice_servers

    async def set_password(self, password: str | None, timeout: float = 5.0) -> None:
        """Room owners only: set (or clear with None) the room password via muc#owner."""
        from slixmpp.plugins.xep_0004.stanza import Form

        iq = self.xmpp.make_iq_set(ito=self.room_jid)
        query = iq.xml.makeelement("{http://jabber.org/protocol/muc#owner}query", {})
        form = Form()
        form["type"] = "submit"
        form.add_field(
            var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig"
        )
        form.add_field(
            var="muc#roomconfig_passwordprotectedroom", ftype="boolean", value=bool(password)
        )
        form.add_field(var="muc#roomconfig_roomsecret", ftype="text-private", value=password or "")
        query.append(form.xml)
        iq.xml.append(query)
        try:
            await iq.send(timeout=timeout)
        except IqError as e:
            raise RoomError(f"could not set room password: {e.iq['error']['condition']}") from e
        except IqTimeout as e:
            raise RoomError("could not set room password: no answer") from e
        self.config.password = password

    def change_nick(self, nick: str) -> None:
        """Take another nick in the room (XEP-0045 §7.6); listeners get ``RoomJoined`` with
        the new one (peers see our old occupant leave and a new one join)."""
        if not nick or "/" in nick:
            raise ValueError(f"invalid nick {nick!r}")
        pres = self._presence(initial=False)
        pres["to"] = self.occupant_jid(nick)
        self._send_charged(pres)

    def announce(self) -> None:
        """Re-send our presence (e.g. after changing robot/key): peers re-read it."""
        if self.online:
            self._send_charged(self._presence(initial=False))

    # ---------------------------------------------------------------- join / rejoin --------
    def _presence(self, initial: bool) -> Presence:
        cfg = self.config
        pres = self.xmpp.make_presence(pto=self.occupant_jid(self.nick))
        if initial:
            join = pres["muc_join"]
            join["history"]["maxstanzas"] = "0"
            if cfg.password:
                join["password"] = cfg.password
        return self._describe(pres)

    def _describe(self, pres: Presence) -> Presence:
        """Our teleop announcement and display name, the same in room and direct presence."""
        cfg = self.config
        if cfg.teleop_role is not None:
            tp = pres["teleop"]
            tp["v"] = "0"
            tp["role"] = cfg.teleop_role
            tp["robot"] = cfg.robot
            tp["key"] = cfg.key_id
        if cfg.display_name:
            pres["nick"]["nick"] = cfg.display_name
        return pres

    async def _enter(self, rejoin: bool) -> Occupant:
        """Focus IQ (if any) then MUC join; retries once per nick conflict."""
        cfg = self.config
        if cfg.focus:
            try:
                self.focus_reply = await request_conference(
                    self.xmpp,
                    cfg.focus,
                    self.room_jid,
                    token=cfg.token,
                    timeout=cfg.focus_timeout,
                )
            except FocusError as e:
                if cfg.focus_required or not e.focus_absent:
                    raise
                log.warning("no focus at %s (%s): joining without it", cfg.focus, e.condition)
                self.focus_reply = None
        for _attempt in range(3):
            loop = asyncio.get_running_loop()
            self._join_future = fut = loop.create_future()
            self._building = {}
            self._send_charged(self._presence(initial=True))
            try:
                me = await asyncio.wait_for(fut, cfg.join_timeout)
            except JoinError as e:
                self._building = None
                if e.condition == "conflict":
                    self.nick = new_nick()
                    continue
                raise
            except asyncio.TimeoutError:
                self._building = None
                raise JoinError(
                    f"no answer to the room join within {cfg.join_timeout:g} s", "timeout"
                ) from None
            except asyncio.CancelledError:
                if self._join_future is fut:
                    self._building = None
                raise
            finally:
                if self._join_future is fut:  # a newer attempt may have replaced it
                    self._join_future = None
            if rejoin:
                self.stats.rejoins += 1
            self.joined_at = time.monotonic()
            self._online.set()
            self._emit(RoomJoined(self.nick, rejoin))
            return me
        raise JoinError("nick conflicts on every attempt", "conflict")

    def _finish_join(self, me: Occupant) -> None:
        """Self-presence arrived (XEP-0045 sends it after all others): reconcile peers."""
        before = self._occupants
        self._occupants = self._building if self._building is not None else {}
        self._building = None
        deadline = time.monotonic() + self.config.rejoin_grace
        for nick in self._occupants:
            # back: a grace begun while we were away (the server said it left "for technical
            # reasons" just before our own stream ended) is over; left running, its expiry
            # would remove the occupant that came back
            self._grace.pop(nick, None)
        for nick, old in before.items():
            if old.is_self:
                continue
            new = self._occupants.get(nick)
            if new is None:
                if self.config.rejoin_grace > 0:
                    # maybe still reconnecting: keep it for a while, do not churn
                    self._occupants[nick] = old
                    self._grace.setdefault(nick, deadline)
                else:
                    self._emit(OccupantLeft(old))
            elif new != old:
                self._emit(OccupantChanged(old, new))
        self._start_grace_timer()
        for nick, new in self._occupants.items():
            if nick not in before and not new.is_self:
                self._emit(OccupantJoined(new))
        if self._join_future is not None and not self._join_future.done():
            self._join_future.set_result(me)

    def _start_grace_timer(self) -> None:
        if self._grace and (self._grace_task is None or self._grace_task.done()):
            self._grace_task = self._spawn(self._expire_grace())

    async def _expire_grace(self) -> None:
        while self._grace and not self._closing:
            now = time.monotonic()
            for nick, deadline in list(self._grace.items()):
                if deadline <= now:
                    del self._grace[nick]
                    old = self._occupants.pop(nick, None)
                    if old is not None:
                        self._emit(OccupantLeft(old))
            if self._grace:
                await asyncio.sleep(max(0.05, min(self._grace.values()) - now))

    async def _rejoin(self) -> None:
        delay = self.config.backoff_initial
        while not self._closing:
            try:
                await self._enter(rejoin=True)
                return
            except RoomError as e:
                log.warning("rejoin failed: %s; retrying in %.1f s", e.reason, delay)
            except Exception:
                log.exception("rejoin failed")
            await asyncio.sleep(delay)
            delay = min(self.config.backoff_max, delay * 2)

    # ---------------------------------------------------------------- session events -------
    def _on_session_start(self, _event: object) -> None:
        self.stats.connects += 1
        self._stream_up = True
        # the stream setup (open, SASL, bind, SM enable) was read by the server's rate
        # limiter too; without charging it, the first frames would queue behind it
        self.budget.consume(STREAM_SETUP_BYTES)
        if self._session_ready is not None and not self._session_ready.done():
            self._session_ready.set_result(None)
        if self._ever_joined and not self._closing:
            if self._rejoin_task is not None:
                self._rejoin_task.cancel()
            self._rejoin_task = self._spawn(self._rejoin())

    def _on_session_resumed(self, _event: object) -> None:
        self.stats.resumes += 1
        self._stream_up = True
        if self._ever_joined and not self._closing:
            self._online.set()
            self._emit(RoomJoined(self.nick, rejoin=True))

    def _on_failed_auth(self, _event: object) -> None:
        xmpp = self._xmpp
        text = xmpp.last_error if xmpp is not None and xmpp.last_error_kind == "auth" else None
        self._fail_initial(
            AuthError(text or "authentication failed (SASL ANONYMOUS or token refused)")
        )

    def _on_initial_failure(self, err: object) -> None:
        xmpp = self._xmpp
        text = xmpp.last_error if xmpp and xmpp.last_error else str(err)
        cls = TlsError if xmpp is not None and xmpp.last_error_kind == "tls" else ConnectError
        self._fail_initial(cls(text))

    def _fail_initial(self, error: RoomError) -> None:
        if self._session_ready is not None and not self._session_ready.done():
            self._session_ready.set_exception(error)

    async def _abort_initial(self) -> None:
        """The first join failed: tear everything down (a Room is joined once; make a new
        one to try again)."""
        await self.close()

    def _on_disconnected(self, reason: object) -> None:
        self._stream_up = False
        was_online = self.online
        self._online.clear()
        if not self._ever_joined:
            xmpp = self._xmpp
            if isinstance(reason, ssl.SSLError):
                text = f"TLS failed: {reason}"
            else:
                text = (
                    xmpp.last_error if xmpp and xmpp.last_error else None
                ) or f"disconnected: {reason or 'connection closed'}"
            tls = (
                (xmpp is not None and xmpp.last_error_kind == "tls")
                or isinstance(reason, ssl.SSLError)
                or "certificate" in text.lower()
            )
            if xmpp is not None and xmpp.last_error_kind == "auth":
                self._fail_initial(AuthError(text))  # refused login, or PLAIN in the clear
            else:
                self._fail_initial(TlsError(text) if tls else ConnectError(text))
            return
        if self._closing:
            return
        self.stats.disconnects += 1
        if was_online:
            self._emit(RoomLeft(str(reason or "disconnected")))
        if self.config.reconnect:
            self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        await asyncio.sleep(self.config.backoff_initial)
        xmpp = self._xmpp
        if self._closing or xmpp is None or xmpp.transport is not None or xmpp.is_connecting():
            return
        log.info("reconnecting to %s", self.config.domain)
        xmpp.start()

    async def _ping_loop(self) -> None:
        """Keepalive: find a connection that died without anyone saying so (a NAT that
        rebooted or forgot our mapping drops our packets silently: no FIN, no reset, and TCP
        would retry for many minutes), then drop it so that the room reconnects and rejoins.

        Pings the server every ``ping_interval`` while the stream is up (also while a rejoin
        is pending on it). A ping counts as failed when neither its answer nor any other byte
        from the server came within ``ping_timeout``; a server that is only slow keeps
        sending something (peers' messages, presence) and is not taken for dead."""
        failures = 0
        while not self._closing:
            await asyncio.sleep(self.config.ping_interval)
            xmpp = self._xmpp
            if xmpp is None or xmpp.transport is None or not self._stream_up:
                failures = 0
                continue
            sent = time.monotonic()
            try:
                await self.ping()
                failures = 0
                continue
            except IqError:  # an error answer is an answer: the stream is alive
                failures = 0
                continue
            except (IqTimeout, RoomError):
                pass
            if xmpp.last_rx > sent:
                failures = 0
                continue
            failures += 1
            self.stats.pings_failed += 1
            if failures >= self.config.ping_failures and xmpp is self._xmpp:
                log.warning(
                    "no answer from the server for %.1f s after a ping: connection dead; "
                    "reconnecting",
                    time.monotonic() - sent,
                )
                failures = 0
                self.stats.keepalive_drops += 1
                xmpp.abort()

    # ---------------------------------------------------------------- incoming -------------
    def _in_filter(self, stanza: StanzaBase) -> StanzaBase | None:
        """Take every stanza from the room's JID before slixmpp's default handling."""
        if not isinstance(stanza, (Presence, Message, Iq)):
            return stanza
        frm = stanza["from"]
        if not isinstance(frm, JID):
            return stanza
        if frm.bare != self.room_jid:
            if (
                isinstance(stanza, Iq)
                and stanza["type"] in ("get", "set")
                and frm.bare not in ("", self.config.domain, self.xmpp.boundjid.bare)
            ):
                # real JIDs are public in Jitsi rooms: IQs straight to our full JID get the
                # same budgeted treatment as those routed through the room
                try:
                    self._on_occupant_iq(stanza)
                except Exception:
                    log.exception("dropping an IQ we failed to handle")
                return None
            return stanza
        try:
            if isinstance(stanza, Presence):
                self._on_room_presence(stanza)
                return None
            if isinstance(stanza, Message):
                self._on_room_message(stanza)
                return None
            if isinstance(stanza, Iq):
                if stanza["type"] in ("result", "error"):
                    return stanza  # answers to our own IQs
                self._on_occupant_iq(stanza)
                return None
        except Exception:
            log.exception("dropping a stanza from the room that we failed to handle")
            self.stats.ignored_messages += 1
            return None
        return stanza

    def _on_room_presence(self, pres: Presence) -> None:
        nick = pres["from"].resource
        ptype = pres["type"]
        if ptype == "error":
            if self._join_future is not None and not self._join_future.done():
                cond = pres["error"]["condition"]
                text = pres["error"]["text"]
                reason = _JOIN_ERRORS.get(cond, f"join refused: {cond}")
                if text and cond not in ("not-authorized",):
                    reason += f" ({text})"
                self._join_future.set_exception(JoinError(reason, cond))
            return
        if not nick:
            return
        codes = _status_codes(pres)
        roster = self._building if self._building is not None else self._occupants
        if ptype == "unavailable":
            if (
                codes & {332, 333}
                and nick != self.nick
                and 110 not in codes
                and nick in self._occupants
                and self.config.rejoin_grace > 0
            ):
                # 332: the MUC service is shutting down (server restart); 333: the
                # occupant's session was lost for technical reasons. Either way it is
                # probably coming back: keep it for the grace period instead of churning.
                self._grace.setdefault(nick, time.monotonic() + self.config.rejoin_grace)
                self._start_grace_timer()
                return
            old = roster.pop(nick, None)
            if roster is self._occupants:
                self._grace.pop(nick, None)
            if 303 in codes and (110 in codes or nick == self.nick):
                # our own nick change (XEP-0045 §7.6): the new self-presence follows
                self._renaming = True
                return
            if 110 in codes or nick == self.nick:
                if self.online and not self._closing:
                    self._online.clear()
                    if codes & {332, 333}:
                        # the server is shutting down (332; Prosody 0.12 says 333, "lost for
                        # technical reasons", when it stops): not a kick (307, 301, 321, 322),
                        # so peers need no new handshake; the connection closes next and we
                        # come back as after any reconnect (or rejoin here if only the MUC
                        # restarted)
                        log.info("the room's server is shutting down; rejoining when it is back")
                        self._emit(RoomLeft("server shutting down"))
                    else:
                        # kicked or the room went away: rejoin like after a reconnect
                        self.stats.kicked += 1
                        log.warning("removed from the room (status %s); rejoining", sorted(codes))
                        self._emit(RoomLeft("removed from the room", removed=True))
                    if self._rejoin_task is None or self._rejoin_task.done():
                        self._rejoin_task = self._spawn(self._rejoin())
                return
            if old is not None and roster is self._occupants:
                self._emit(OccupantLeft(old))
            return
        if ptype not in ("", "available") and ptype is not None:
            return
        is_self = 110 in codes
        occ = self._parse_occupant(pres, nick, is_self)
        if is_self:
            renamed = self._renaming and nick != self.nick
            self._renaming = False
            self.nick = nick
            if renamed:
                roster[nick] = occ
                log.info("now %s in the room", nick)
                self._emit(RoomJoined(nick, rejoin=True))  # peers see a new occupant
                return
        old = roster.get(nick)
        roster[nick] = occ
        if roster is self._occupants:
            self._grace.pop(nick, None)  # back within the grace period
        if is_self and self._join_future is not None:
            self._finish_join(occ)
            return
        if roster is not self._occupants or is_self:
            return
        if old is None:
            self._emit(OccupantJoined(occ))
        elif old != occ:
            self._emit(OccupantChanged(old, occ))

    def _parse_occupant(self, pres: Presence, nick: str, is_self: bool) -> Occupant:
        item = pres.xml.find(
            "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
        )
        real_jid = item.get("jid") if item is not None else None
        muc_role = item.get("role", "participant") if item is not None else "participant"
        affiliation = item.get("affiliation", "none") if item is not None else "none"
        teleop: TeleopInfo | None = None
        if pres.xml.find(f"{{{NS_TELEOP}}}teleop") is not None:
            tp = pres["teleop"]
            problem = tp.validate()
            if problem is None:
                teleop = TeleopInfo(
                    role=tp["role"], robot=tp["robot"], key_id=tp["key"], version=tp["v"]
                )
                roster = self._building if self._building is not None else self._occupants
                if teleop.key_id and any(
                    o.teleop is not None
                    and o.teleop.key_id == teleop.key_id
                    and o.teleop.role == teleop.role
                    and o.nick != nick
                    for o in roster.values()
                ):
                    self.stats.key_conflicts += 1
                    log.warning("occupant %s claims role/key of another occupant", nick)
            else:
                self.stats.invalid_presences += 1
                log.info("ignoring teleop presence of %s: %s", nick, problem)
        return Occupant(
            nick=nick,
            jid=real_jid,
            muc_role=muc_role,
            affiliation=affiliation,
            teleop=teleop,
            is_self=is_self,
        )

    def _on_room_message(self, msg: Message) -> None:
        mtype = msg["type"]
        nick = msg["from"].resource
        if mtype == "groupchat" and nick and nick != self.nick:
            for handler in list(self._groupchat_handlers):
                try:
                    handler(nick, msg)
                except Exception:
                    log.exception("group chat handler failed")
            return
        if mtype in ("groupchat", "error") or not nick:
            return  # room chatter, subjects, echoes; errors are never answered
        self._deliver_private(nick, msg)

    def _deliver_private(self, nick: str, msg: Message) -> None:
        """A private message from ``nick`` to the handlers (room.direct reuses this)."""
        for handler in list(self._handlers):
            try:
                if handler(nick, msg):
                    return
            except Exception:
                log.exception("message handler failed")
                return
        self.stats.ignored_messages += 1
        if msg.xml.find(f"{{{NS_TELEOP}}}signal") is not None:
            self._unclaimed.keep(nick, msg)

    def _on_occupant_iq(self, iq: Iq) -> None:
        """Answer what a well-behaved Jitsi participant must answer, within a small budget."""
        sender = iq["from"]
        if not self._from_focus(sender) and (
            not self._iq_bucket.try_consume(1) or self.budget.tokens < 0
        ):
            self.stats.iq_dropped += 1
            return
        xml = iq.xml
        reply: Iq
        if iq["type"] == "get" and xml.find(f"{{{NS_DISCO_INFO}}}query") is not None:
            reply = iq.reply(clear=True)
            info = reply["disco_info"]
            node = iq["disco_info"]["node"]
            if node:
                info["node"] = node
            info.add_identity("client", "bot", name="jitsi-teleop")
            for feature in DISCO_FEATURES:
                info.add_feature(feature)
        elif iq["type"] == "get" and xml.find(f"{{{NS_PING}}}ping") is not None:
            reply = iq.reply(clear=True)
        elif iq["type"] == "set" and xml.find(f"{{{NS_JINGLE}}}jingle") is not None:
            reply = iq.reply(clear=True)
            action = iq["jingle"]["action"]
            if action == "session-initiate":
                self._send_budgeted(reply)
                self._decline_jingle(iq)
                return
        else:
            reply = iq.reply(clear=True)
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = "feature-not-implemented"
        self._send_budgeted(reply)

    def _from_focus(self, sender: JID) -> bool:
        """The deployment's real focus, never a nick: an address of the focus component we
        asked for the conference (the server stamps ``from``; only the component sends from
        its domain), the focus's real JID it named in its answer, or the room occupant whose
        server-set real JID is one of those. Any occupant can call itself "focus"."""
        cfg = self.config
        if not cfg.focus:
            return False
        domains = {JID(cfg.focus).domain}
        jids = set()
        if self.focus_reply is not None and self.focus_reply.focus_jid:
            jids.add(JID(self.focus_reply.focus_jid).bare)

        def is_focus(j: JID) -> bool:
            return j.domain in domains or j.bare in jids

        if sender.bare == self.room_jid:
            occ = self._occupants.get(sender.resource)
            return occ is not None and occ.jid is not None and is_focus(JID(occ.jid))
        return is_focus(sender)

    def _decline_jingle(self, iq: Iq) -> None:
        """Jicofo invites every occupant to a media session; we carry no media, so we decline
        (result first, then session-terminate) instead of leaving it half open."""
        term = self.xmpp.make_iq_set(ito=iq["from"])
        jingle = term["jingle"]
        jingle["action"] = "session-terminate"
        jingle["sid"] = iq["jingle"]["sid"]
        jingle["reason"]["condition"] = "decline"
        self.stats.jingle_declined += 1
        self._send_budgeted(term)

    def _send_charged(self, stanza: StanzaBase) -> None:
        """Send something of the room's own (presence) and charge it to the budget."""
        size = self.stanza_size(stanza)
        self.budget.consume(size)
        self.stats.bytes_sent += size
        stanza.send()

    def _charge_transport(self, size: int) -> None:
        """Bytes the transport sends beyond our stanzas (each BOSH request's HTTP headers and
        body wrapper, and the empty long polls that bring the server's stanzas)."""
        self.budget.consume(size)
        self.stats.bytes_sent += size

    def _send_budgeted(self, stanza: StanzaBase) -> None:
        size = self.stanza_size(stanza)
        self.budget.consume(size)
        self.stats.bytes_sent += size
        self.stats.iq_answered += 1
        stanza.send()

    # ---------------------------------------------------------------- helpers --------------
    def _emit(self, event: RoomEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("room listener failed on %r", event)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _status_codes(pres: Presence) -> set[int]:
    codes: set[int] = set()
    for st in pres.xml.findall(
        "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}status"
    ):
        with contextlib.suppress(TypeError, ValueError):
            codes.add(int(st.get("code")))
    return codes
