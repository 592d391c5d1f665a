"""The slixmpp client: one class, three transports (WebSocket per RFC 7395, BOSH per XEP-0206,
or plain TCP/STARTTLS; :mod:`.connect` chooses between the HTTP ones).

slixmpp decides how to connect in ``_attempt_connection``; we override it so that the rest of
slixmpp (SASL, bind, XEP-0198, handlers) runs unchanged over a WebSocket. Reconnect backoff is
ours too (slixmpp's grows to 300 s, far too slow to get a robot link back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable

from slixmpp import ClientXMPP

from . import account as acct
from .config import RoomConfig
from .connect import HttpConnector
from .stanzas import register_stanzas
from .transport_ws import WS_FRAME_OVERHEAD

log = logging.getLogger(__name__)


def make_ssl_context(insecure: bool) -> ssl.SSLContext:
    """Verification on by default; ``insecure`` only for self-signed test servers."""
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TeleopXMPP(ClientXMPP):
    """Anonymous (or token) XMPP client for one room config, or an account login when
    ``config.account`` is set (SASL policy in :mod:`.account`)."""

    def __init__(self, config: RoomConfig) -> None:
        register_stanzas()
        account = config.account
        if account is None:
            super().__init__(config.domain, None, sasl_mech="ANONYMOUS")
        else:
            super().__init__(account.jid, account.password)
            mechs = self.plugin["feature_mechanisms"]
            mechs.use_mechs = set(acct.ALLOWED_MECHANISMS)
            mechs.security_callback = self._sasl_security
            self.add_event_handler("no_auth", self._on_no_auth)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.config = config
        self.ssl_context = make_ssl_context(config.insecure)
        self.whitespace_keepalive = False
        self.last_error: str | None = None
        self.last_error_kind: str | None = None
        self._backoff = 0.0
        #: WebSocket/BOSH choice (None: TCP); ``on_wire`` gets BOSH's per-request bytes
        self.connector = HttpConnector(config, self.ssl_context) if not config.tcp_host else None
        self.on_wire: Callable[[int], None] | None = None
        if self.connector is not None:
            self.connector.on_request = lambda n: self.on_wire(n) if self.on_wire else None
            self.ws_url: str | None = self.connector.ws_url
            self.enable_direct_tls = False
            self.enable_starttls = False
            self.enable_plaintext = True
        else:
            self.ws_url = None
            self.enable_direct_tls = False
            self.enable_starttls = True
            self.enable_plaintext = True
        self.register_plugin("xep_0198", {"window": 5})
        self.register_plugin("xep_0199", {"keepalive": False})
        self.add_event_handler("ssl_invalid_chain", self._on_invalid_chain)
        self.add_event_handler("connection_failed", self._on_connection_failed)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("sm_enabled", self._on_sm_enabled)
        self.add_event_handler("sm_failed", self._on_sm_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self._sm_max: float | None = None
        self._cut_at: float | None = None
        self._resuming = False
        self._failed_connects = 0
        #: monotonic time of the last bytes from the server (any transport): the room's
        #: keepalive counts them as a sign of life, not only its ping's answer
        self.last_rx = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        super().data_received(data)

    def start(self) -> asyncio.Future:
        """Connect (or reconnect) with the configured transport."""
        if self.connector is not None:
            return self.connect("http", 1)  # placeholder address; the connector has the URLs
        return self.connect(self.config.tcp_host, self.config.tcp_port)

    async def _attempt_connection(
        self, host: str, port: int, tls: bool, server_hostname: str | None
    ) -> bool:
        if self._current_connection_attempt is None:
            return False
        self.event_when_connected = "connected"
        if self.connector is None:
            try:
                return await asyncio.wait_for(
                    super()._attempt_connection(host, port, tls, server_hostname),
                    self.config.connect_timeout,
                )
            except asyncio.TimeoutError:
                self.event("connection_failed", f"TCP connect to {host}:{port} timed out")
                return False
        sm = self.plugin["xep_0198"]
        # Jitsi's mod_jitsi_session reads previd so that an anonymous login gets its old
        # username back; without it a stream can never be resumed there.
        previd = sm.sm_id if sm.sm_id and sm.allow_resume else None
        try:
            transport = await self.connector.open(self, previd)
        except ConnectionError as e:  # WebSocketError, BoshError
            self.event("connection_failed", e)
            return False
        if self._current_connection_attempt is None:  # cancelled meanwhile
            transport.abort()
            return False
        self.connection_made(transport)
        transport.start_reading()
        return True

    def connection_made(self, transport, send_event: bool = True) -> None:
        # small stanzas at high rate: do not let Nagle hold them back (WebSocket via aiohttp
        # already sets TCP_NODELAY)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._backoff = 0.0  # the next outage starts with a short wait again
        super().connection_made(transport, send_event)

    def connection_lost(self, exception: BaseException | None) -> None:
        if isinstance(exception, ConnectionError) and str(exception):
            self.last_error_kind = "unreachable"  # e.g. BoshTerminated: say what ended it
            self.last_error = str(exception)
        super().connection_lost(exception)

    @property
    def stream_url(self) -> str | None:
        """The URL the current stream runs over (ws://, wss://, http://, https://); None on
        TCP. After a fallback it is the BOSH URL, not ``ws_url``."""
        choice = self.connector.choice if self.connector is not None else None
        return choice.url if choice is not None else None

    @property
    def frame_overhead(self) -> int:
        """Bytes the transport adds to each stanza (BOSH: none; its requests are charged
        through ``on_wire``)."""
        return getattr(self.transport, "frame_overhead", WS_FRAME_OVERHEAD)

    def reschedule_connection_attempt(self) -> asyncio.Future | None:
        if self._current_connection_attempt is None:
            return None
        cfg = self.config
        self._backoff = min(cfg.backoff_max, max(cfg.backoff_initial, self._backoff * 2))
        self._connect_loop_wait = self._backoff * random.uniform(0.8, 1.2)
        self._current_connection_attempt = asyncio.ensure_future(self._connect_loop())
        return self._current_connection_attempt

    def _on_connection_failed(self, err: object) -> None:
        text = str(err)
        if "certificate" in text.lower() or isinstance(err, ssl.SSLError):
            self.last_error_kind = "tls"
        else:
            self.last_error_kind = "unreachable"
        self.last_error = text
        self._failed_connects += 1
        log.debug("connection failed: %s", text)

    def _on_invalid_chain(self, err: object) -> None:
        self.last_error_kind = "tls"
        self.last_error = f"TLS certificate verification failed: {err}"
        self.abort()

    # -- account login (SASL) ---------------------------------------------------------------
    def _stream_encrypted(self) -> bool:
        return acct.stream_encrypted(self, self.stream_url)

    def _sasl_security(self, values: object) -> dict[str, object]:
        return acct.security_settings(values, self._stream_encrypted())  # type: ignore[arg-type]

    def _on_no_auth(self, _event: object) -> None:
        offered = self.plugin["feature_mechanisms"].mech_list
        jid = self.config.account.jid if self.config.account else self.config.domain
        self.last_error_kind = "auth"
        self.last_error = acct.no_mechanism_reason(offered, self._stream_encrypted(), jid)
        log.error("%s", self.last_error)

    def _on_failed_auth(self, stanza) -> None:
        account = self.config.account
        if account is None:
            self.last_error = "authentication failed (SASL ANONYMOUS or token refused)"
        else:
            self.last_error = acct.failure_reason(
                stanza["condition"] or "", stanza["text"] or "", account.jid
            )
        self.last_error_kind = "auth"

    def _on_stream_error(self, err) -> None:
        self.last_error_kind = "stream"
        self.last_error = f"stream error: {err['condition']} {err['text']}".strip()

    # -- XEP-0198 resumption policy ---------------------------------------------------------
    def _on_sm_enabled(self, stanza) -> None:
        try:
            self._sm_max = float(stanza["max"]) if stanza["max"] else None
        except (TypeError, ValueError):
            self._sm_max = None

    def _on_disconnected(self, _reason: object) -> None:
        self._cut_at = time.monotonic()
        self._failed_connects = 0
        self._resuming = bool(self.plugin["xep_0198"].sm_id)

    def _on_sm_failed(self, _stanza) -> None:
        """A resume that failed although we came back within the hibernation time means the
        server cannot resume our (anonymous) sessions: stock Prosody keys sessions by the
        random username. Stop asking for resumption, so that the server drops our session at
        once on the next cut instead of leaving a ghost occupant in the room for minutes."""
        if not self._resuming:
            return
        self._resuming = False
        # the server was reachable at once (no restart) and we were back in time
        within = (
            self._cut_at is not None
            and self._failed_connects == 0
            and (self._sm_max is None or time.monotonic() - self._cut_at < self._sm_max * 0.8)
        )
        sm = self.plugin["xep_0198"]
        if within and sm.allow_resume:
            log.info("server cannot resume sessions; disabling XEP-0198 resumption")
            sm.allow_resume = False
        sm.sm_id = None
