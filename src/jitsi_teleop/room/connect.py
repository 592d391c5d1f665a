"""Which HTTP transport carries the XMPP stream: WebSocket, BOSH, or WebSocket falling back to BOSH.

A WebSocket is preferred (one TCP connection, no per-stanza HTTP headers). When it cannot be
opened (a proxy that strips ``Upgrade``, an old reverse proxy, a captive portal) and a BOSH URL
is known, BOSH is used instead, and kept for later reconnects: a network that refused the
upgrade once will refuse it again, and trying costs a connect timeout each time. A BOSH URL
alone (``bosh_url`` given, or config.js without a WebSocket) forces BOSH.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .config import RoomConfig
from .transport_bosh import BoshError, BoshTransport
from .transport_ws import WebSocketError, WebSocketTransport, websocket_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransportChoice:
    """The transport a connection used and why (for logs, diagnostics and ``doctor``)."""

    kind: str  # "websocket" or "bosh"
    url: str
    reason: str

    def describe(self) -> str:
        return f"{self.kind} {self.url} ({self.reason})"


def bosh_url(base: str, room: str | None = None, token: str | None = None) -> str:
    """Add ``room`` and ``token`` to a BOSH URL's query (Jitsi reads them as on WebSockets)."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not a BOSH URL (http:// or https://): {base!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("room", "token")]
    if room:
        query.append(("room", room))
    if token:
        query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


class HttpConnector:
    """Opens the configured HTTP transport for each (re)connect of one client."""

    def __init__(self, config: RoomConfig, ssl_context: ssl.SSLContext) -> None:
        self.config = config
        self.ssl_context = ssl_context
        self.ws_url = (
            websocket_url(config.websocket_url, config.room, config.token)
            if config.websocket_url
            else None
        )
        self.bosh_url = (
            bosh_url(config.bosh_url, config.room, config.token) if config.bosh_url else None
        )
        #: why the WebSocket was given up for this client's lifetime (None: not given up)
        self.ws_refused: str | None = None
        self.choice: TransportChoice | None = None
        #: called with the bytes each BOSH request adds beyond its stanzas (budget accounting)
        self.on_request: Callable[[int], None] | None = None

    async def open(
        self, protocol: asyncio.Protocol, previd: str | None = None
    ) -> WebSocketTransport | BoshTransport:
        """A transport ready for ``connection_made``; WebSocketError or BoshError if none."""
        ws_error: WebSocketError | None = None
        if self.ws_url and self.ws_refused is None:
            url = self.ws_url
            if previd:
                url = websocket_url(url, self.config.room, self.config.token, previd=previd)
            # with a fallback, a handshake that hangs (a proxy holding the upgrade) gets half
            # the connect time, so that BOSH still fits in the join's time limit
            timeout = self.config.connect_timeout / (2 if self.bosh_url else 1)
            try:
                ws = await WebSocketTransport.open(
                    url,
                    protocol,
                    self.config.domain,
                    ssl_context=self.ssl_context,
                    timeout=timeout,
                    probe=self.bosh_url is not None,  # a dead WebSocket must fail here
                )
            except WebSocketError as e:
                if not self.bosh_url:
                    raise
                ws_error = e
            else:
                self.choice = TransportChoice("websocket", self.ws_url, "WebSocket opened")
                return ws
        assert self.bosh_url is not None
        try:
            bosh = await BoshTransport.open(
                self.bosh_url,
                protocol,
                self.config.domain,
                ssl_context=self.ssl_context,
                timeout=self.config.connect_timeout,
                wait=self.config.bosh_wait,
                on_request=self._charge,
            )
        except BoshError as e:
            if ws_error is not None:
                raise BoshError(f"{ws_error}; BOSH fallback failed too: {e}") from e
            raise
        if ws_error is not None:
            self.ws_refused = str(ws_error)
            reason = f"WebSocket failed ({ws_error}); fell back to BOSH"
        elif self.ws_refused is not None:
            reason = f"WebSocket failed earlier ({self.ws_refused}); staying on BOSH"
        else:
            reason = "BOSH only (no WebSocket URL)"
        self.choice = TransportChoice("bosh", self.bosh_url, reason)
        if ws_error is not None:
            log.warning("XMPP over %s", self.choice.describe())
        else:
            log.info("XMPP over %s", self.choice.describe())
        return bosh

    def _charge(self, size: int) -> None:
        if self.on_request is not None:
            self.on_request(size)
