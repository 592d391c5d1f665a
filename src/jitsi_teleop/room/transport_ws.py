"""XMPP over WebSocket (RFC 7395) as an asyncio transport for slixmpp.

slixmpp speaks TCP streams: it writes a ``<stream:stream>`` header, stanzas and a footer, and
feeds received bytes to an incremental parser. This module sits between it and an aiohttp
WebSocket, translating framing in both directions:

* out: stream header -> ``<open/>``, footer -> ``<close/>``, whitespace keepalives dropped,
  top-level ``iq``/``message``/``presence`` get ``xmlns="jabber:client"`` (Prosody parses
  every frame on its own and kills the stream without it);
* in: ``<open/>`` -> a synthetic ``<stream:stream>`` header, ``<close/>`` -> footer, every
  other frame passed through as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

log = logging.getLogger(__name__)

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_STREAM = "http://etherx.jabber.org/streams"
_TOP_STANZA = re.compile(r"^<(iq|message|presence)(?=[\s/>])")
_STREAM_PREFIX = re.compile(r"^<stream:(\w+)(?=[\s/>])")
#: Bytes a client WebSocket frame adds to the payload (2..4 header + 4 mask): for budgets.
WS_FRAME_OVERHEAD = 8


class WebSocketError(ConnectionError):
    """The WebSocket could not be opened (HTTP error, TLS failure, refused)."""


def websocket_url(
    base: str, room: str | None = None, token: str | None = None, previd: str | None = None
) -> str:
    """Add ``room``, ``token`` and ``previd`` to a WebSocket URL's query, keeping the rest.

    Jitsi's Prosody modules read ``?room=`` (session bookkeeping, message limits),
    ``?token=`` (JWT auth) and ``?previd=`` (resume an anonymous session), so a client should
    always send the room.
    """
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {base!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("room", "token", "previd")]
    if room:
        query.append(("room", room))
    if token:
        query.append(("token", token))
    if previd:
        query.append(("previd", previd))
    return urlunsplit(parts._replace(query=urlencode(query)))


def outgoing_frame(data: str, domain: str) -> str | None:
    """Translate one slixmpp write into one RFC 7395 text frame (None: send nothing)."""
    text = data.strip()
    if not text:
        return None  # whitespace keepalive: meaningless in WebSocket framing
    if text.startswith("<stream:stream"):
        return f'<open xmlns="{NS_FRAMING}" to="{_attr(domain)}" version="1.0"/>'
    if text == "</stream:stream>":
        return f'<close xmlns="{NS_FRAMING}"/>'
    m = _TOP_STANZA.match(text)
    if m and "xmlns=" not in text[: _tag_end(text)]:
        return text[: m.end()] + ' xmlns="jabber:client"' + text[m.end() :]
    m = _STREAM_PREFIX.match(text)
    if m and "xmlns:stream=" not in text[: _tag_end(text)]:
        return text[: m.end()] + f' xmlns:stream="{NS_STREAM}"' + text[m.end() :]
    return text


def incoming_frame(frame: str) -> str:
    """Translate one received text frame into bytes for slixmpp's stream parser."""
    text = frame.strip()
    if text.startswith("<open"):
        try:
            el = ET.fromstring(text)
        except ET.ParseError:
            return text  # let slixmpp's parser report it
        attrs = " ".join(
            f'{_local(k)}="{_attr(v)}"'
            for k, v in el.attrib.items()
            if _local(k) in ("from", "id", "version", "lang")
        ).replace('lang="', 'xml:lang="')
        return f'<stream:stream xmlns="jabber:client" xmlns:stream="{NS_STREAM}" {attrs}>'
    if text.startswith("<close"):
        return "</stream:stream>"
    return text


async def _probe(ws: aiohttp.ClientWebSocketResponse, domain: str) -> str:
    """Send the stream's <open/> and return the server's answering frame."""
    await ws.send_str(outgoing_frame("<stream:stream>", domain) or "")
    msg = await ws.receive()
    if msg.type != aiohttp.WSMsgType.TEXT or not msg.data.lstrip().startswith("<open"):
        raise WebSocketError(f"the server did not answer <open/> (got {msg.type.name})")
    return msg.data


def _tag_end(text: str) -> int:
    end = text.find(">")
    return len(text) if end < 0 else end


def _local(name: str) -> str:
    return name.split("}")[-1]


def _attr(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


class WebSocketTransport(asyncio.Transport):
    """An asyncio transport over an aiohttp WebSocket, for one slixmpp stream."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        protocol: asyncio.Protocol,
        domain: str,
    ) -> None:
        super().__init__()
        self._session = session
        self._ws = ws
        self._protocol = protocol
        self._domain = domain
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._closing = False
        self._lost = False
        self.buffered_bytes = 0
        self.bytes_sent = 0
        self._writer = asyncio.ensure_future(self._write_loop())
        self._reader: asyncio.Future[None] | None = None
        self._abort_task: asyncio.Future[None] | None = None
        self._opened: str | None = None  # the server's <open/> to a probe (see open())
        self._probe_absorbed = False

    @classmethod
    async def open(
        cls,
        url: str,
        protocol: asyncio.Protocol,
        domain: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        probe: bool = False,
    ) -> WebSocketTransport:
        """Open the WebSocket with subprotocol ``xmpp``; raise WebSocketError on failure.

        ``probe``: also send the stream's ``<open/>`` and wait (within the same ``timeout``)
        for the server's, so that a path that completes the upgrade but passes no frames (a
        buffering proxy) fails here, while a fallback can still be tried."""
        started = asyncio.get_running_loop().time()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    url,
                    protocols=("xmpp",),
                    ssl=ssl_context if url.startswith("wss:") else False,
                    autoping=True,
                    max_msg_size=1024 * 1024,
                    headers=headers,
                ),
                timeout,
            )
        except (aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError) as e:
            await session.close()
            cause = getattr(e, "certificate_error", e)
            detail = getattr(cause, "verify_message", None) or str(cause)
            raise WebSocketError(f"TLS certificate verification failed: {detail}") from e
        except aiohttp.WSServerHandshakeError as e:
            await session.close()
            raise WebSocketError(f"WebSocket handshake refused: HTTP {e.status} {e.message}") from e
        except asyncio.TimeoutError as e:
            await session.close()
            raise WebSocketError(f"WebSocket connect timed out after {timeout:g} s") from e
        except (aiohttp.ClientError, OSError) as e:
            await session.close()
            raise WebSocketError(f"WebSocket connect failed: {e}") from e
        if ws.protocol != "xmpp":
            await ws.close()
            await session.close()
            raise WebSocketError("server did not accept the 'xmpp' WebSocket subprotocol")
        opened: str | None = None
        if probe:
            left = max(1.0, timeout - (asyncio.get_running_loop().time() - started))
            try:
                opened = await asyncio.wait_for(_probe(ws, domain), left)
            except (asyncio.TimeoutError, WebSocketError, aiohttp.ClientError, OSError) as e:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
                await session.close()
                if isinstance(e, asyncio.TimeoutError):
                    raise WebSocketError(
                        f"WebSocket opened but no XMPP stream answered within {left:g} s"
                    ) from e
                raise WebSocketError(f"WebSocket opened but the XMPP stream failed: {e}") from e
        transport = cls(session, ws, protocol, domain)
        transport._opened = opened
        return transport

    def start_reading(self) -> None:
        """Begin delivering frames; call after the protocol's connection_made()."""
        if self._opened is not None:  # the probe's answer, before anything else
            self._protocol.data_received(incoming_frame(self._opened).encode("utf-8"))
        self._reader = asyncio.ensure_future(self._read_loop())

    # -- asyncio.Transport API used by slixmpp --------------------------------------------
    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if self._closing:
            return
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        frame = outgoing_frame(text, self._domain)
        if frame is None:
            return
        if self._opened is not None and not self._probe_absorbed and frame.startswith("<open"):
            self._probe_absorbed = True  # the probe sent this stream's <open/> already
            return
        self.buffered_bytes += len(frame)
        self._queue.put_nowait(frame)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._ws.get_extra_info("peername", default)
        return default

    def get_write_buffer_size(self) -> int:
        return self.buffered_bytes

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)

    def abort(self) -> None:
        """Drop the connection now. No WebSocket close handshake: abort is for a connection
        found dead (keepalive) or cut on purpose, where waiting for the peer's close frame
        would only delay the reconnect."""
        self._closing = True
        self._writer.cancel()
        self._abort_task = asyncio.ensure_future(self._shutdown(None, graceful=False))

    # -- internals -------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    break
                self.buffered_bytes -= len(frame)
                await self._ws.send_str(frame)
                self.bytes_sent += len(frame) + WS_FRAME_OVERHEAD
        except asyncio.CancelledError:
            return
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
            log.debug("websocket write failed: %s", e)
            await self._shutdown(e)
            return
        await self._shutdown(None)

    async def _read_loop(self) -> None:
        exc: BaseException | None = None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._protocol.data_received(incoming_frame(msg.data).encode("utf-8"))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    log.warning("ignoring a binary WebSocket frame (%d bytes)", len(msg.data))
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    exc = self._ws.exception()
                    break
        except asyncio.CancelledError:
            return
        except Exception as e:
            exc = e
        await self._shutdown(exc)

    async def _shutdown(self, exc: BaseException | None, graceful: bool = True) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if graceful:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
        with contextlib.suppress(Exception):
            await self._session.close()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        if not self._writer.done():
            self._writer.cancel()
        self._protocol.connection_lost(exc)
