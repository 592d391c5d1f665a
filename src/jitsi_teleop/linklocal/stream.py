"""XEP-0174 XML streams over TCP, straight between two sites: no server, no SASL.

The initiator opens ``<stream:stream from='its-instance' to='peer-instance' version='1.0'>``;
the recipient checks ``to`` is itself and that ``from`` is a service it browsed *at the
address the connection comes from* (XEP-0174 §5), answers with its own header and empty
``<stream:features/>``, and from then on either side sends ``message``/``iq`` stanzas until
``</stream:stream>``.

Everything that arrives is untrusted: a stream must open within ``open_timeout``, a stanza
may not exceed ``max_stanza_bytes``, DTDs, entities and processing instructions are refused
(restricted XML, RFC 6120 §11.1), anything not well-formed ends the stream with a stream
error, and a peer that stays silent past ``idle_timeout`` (we send a whitespace keepalive
every ``keepalive`` seconds, as every XMPP entity may) is dropped. Each refusal has a reason
the caller counts. Memory stays bounded: finished stanzas leave the parse tree at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from jitsi_teleop.tasks import cancel_and_wait

log = logging.getLogger(__name__)

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STREAM_TAG = f"{{{NS_STREAM}}}stream"
FEATURES_TAG = f"{{{NS_STREAM}}}features"
ERROR_TAG = f"{{{NS_STREAM}}}error"
CLOSE = b"</stream:stream>"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
STARTTLS_TAG = f"{{{NS_TLS}}}starttls"
PROCEED_TAG = f"{{{NS_TLS}}}proceed"
FEATURES_TLS = f"<stream:features><starttls xmlns='{NS_TLS}'/></stream:features>".encode()
FEATURES_NONE = b"<stream:features/>"
#: markup XMPP forbids (RFC 6120 §11.1): DTDs and entity declarations (CDATA is allowed)
_RESTRICTED = re.compile(rb"<!(?!\[CDATA\[)")


class StreamError(Exception):
    """The stream failed or was refused; ``reason`` is the counter name and ``condition``
    the RFC 6120 stream error condition we sent (None when we sent none)."""

    def __init__(self, reason: str, detail: str, condition: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.condition = condition


@dataclass
class StreamLimits:
    open_timeout: float = 5.0
    idle_timeout: float = 60.0
    keepalive: float = 20.0
    max_stanza_bytes: int = 256 * 1024
    #: bytes waiting in the socket's send buffer before further stanzas are dropped
    max_send_buffer: int = 1024 * 1024
    #: STARTTLS (RFC 6120 §5) where both ends offer it: the server side offers it in its
    #: stream features, the client side takes the offer. None: plaintext only.
    tls_server: ssl.SSLContext | None = None
    tls_client: ssl.SSLContext | None = None
    #: after a stream error, how long and how many bytes we still read (and discard) before
    #: closing, so that the peer gets the error rather than a reset (see :func:`shutdown`)
    linger: float = 2.0
    linger_bytes: int = 1024 * 1024


def stream_header(local: str, peer: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{NS_STREAM}' from={quoteattr(local)} to={quoteattr(peer)} "
        "version='1.0'>"
    ).encode()


def stream_error(condition: str) -> bytes:
    return (
        f"<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/></stream:error>".encode() + CLOSE
    )


async def shutdown(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, goodbye: bytes, limits: StreamLimits
) -> None:
    """Send ``goodbye`` (a stream error), half-close, and read what the peer still sends,
    for at most ``limits.linger`` seconds and ``limits.linger_bytes`` bytes, before closing.

    Closing a TCP socket with unread input makes the kernel answer with a reset, and a reset
    can destroy the error on its way (the peer's read fails with ECONNRESET): a peer still
    sending an oversized stanza would never learn why it was refused.
    """
    try:
        writer.write(goodbye)
        if writer.can_write_eof():
            writer.write_eof()  # FIN after the error, once the send buffer has drained
        deadline = time.monotonic() + limits.linger
        drained = 0
        while drained <= limits.linger_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            drained += len(chunk)
    except (asyncio.TimeoutError, ConnectionError, OSError, RuntimeError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class _Parser:
    """Incremental parser of one side of a stream: the header, then stanzas (depth 2)."""

    def __init__(self, max_stanza_bytes: int) -> None:
        self._p = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._pending = 0
        self._max = max_stanza_bytes
        self._tail = b""
        self.header: ET.Element | None = None
        self.closed = False

    def feed(self, data: bytes) -> list[ET.Element]:
        scan = self._tail + data
        if _RESTRICTED.search(scan) or (b"<?" in scan and self.header is not None):
            raise StreamError("restricted_xml", "DTD, entity or PI", "restricted-xml")
        self._tail = data[-1:]
        self._pending += len(data)
        if self._pending > self._max:
            raise StreamError("oversized", f"stanza over {self._max} bytes", "policy-violation")
        try:
            self._p.feed(data)
            events = list(self._p.read_events())
        except ET.ParseError as e:
            raise StreamError("not_well_formed", str(e), "not-well-formed") from e
        out: list[ET.Element] = []
        for ev, el in events:
            if ev == "start":
                self._depth += 1
                if self._depth == 1:
                    if el.tag != STREAM_TAG:
                        raise StreamError("bad_header", f"root is {el.tag}", "invalid-namespace")
                    self.header = el
                    self._pending = 0
            else:
                self._depth -= 1
                if self._depth == 1:
                    assert self.header is not None
                    self.header.remove(el)  # keep memory bounded
                    self._pending = 0
                    out.append(el)
                elif self._depth == 0:
                    self.closed = True
        return out


class XmlStream:
    """An open stream to one peer (either direction). ``on_stanza(stream, element)`` gets
    each top-level stanza; ``on_close(stream, reason)`` runs once when it ends."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: _Parser,
        local: str,
        peer: str,
        limits: StreamLimits,
        *,
        outbound: bool,
        initial: list[ET.Element] | None = None,
    ) -> None:
        self.local = local
        self.peer = peer
        self.outbound = outbound
        self.address = (writer.get_extra_info("peername") or ("?", 0))[0]
        self.limits = limits
        self.opened_at = time.monotonic()
        self.stanzas_in = 0
        self.stanzas_out = 0
        self.dropped_out = 0
        #: the stream runs inside TLS (negotiated with STARTTLS)
        self.tls = False
        #: recipient side: we offered STARTTLS, and the initiator has not yet taken it (TLS
        #: up) nor declined it (a stanza in clear): nothing may be written meanwhile
        self.tls_offered = False
        self._settled = False
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._initial = initial or []
        self._closed = False
        self.close_reason: str | None = None
        self.on_stanza: Callable[[XmlStream, ET.Element], None] | None = None
        self.on_close: Callable[[XmlStream, str], None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return not self._closed

    @property
    def writable(self) -> bool:
        """Stanzas may be sent now (not in the middle of a STARTTLS negotiation)."""
        return not self._closed and (
            self.outbound or not self.tls_offered or self.tls or self._settled
        )

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def send(self, data: bytes) -> bool:
        """Queue one serialized stanza; False (counted) when closed or the peer reads too
        slowly (the layer above resends what must arrive)."""
        if not self.writable:
            return False
        transport = self._writer.transport
        if transport.get_write_buffer_size() > self.limits.max_send_buffer:
            self.dropped_out += 1
            return False
        self._writer.write(data)
        self.stanzas_out += 1
        return True

    async def _run(self) -> None:
        reason = "closed"
        goodbye = b""  # the stream error we still owe the peer
        try:
            for el in self._initial:
                self._dispatch(el)
            keep = asyncio.ensure_future(self._keepalive())
            try:
                while True:
                    data = await asyncio.wait_for(
                        self._reader.read(65536), self.limits.idle_timeout
                    )
                    if not data:
                        reason = "eof"
                        break
                    for el in self._parser.feed(data):
                        if el.tag == STARTTLS_TAG and not self.outbound:
                            await self._upgrade()
                            break
                        self._dispatch(el)
                    if self._parser.closed:
                        reason = "closed_by_peer"
                        break
            finally:
                keep.cancel()
        except asyncio.TimeoutError:
            reason = "idle"
            goodbye = stream_error("connection-timeout")
        except StreamError as e:
            reason = e.reason
            if e.condition:
                goodbye = stream_error(e.condition)
        except (ConnectionError, OSError):
            reason = "reset"
        except asyncio.CancelledError:
            reason = "closed"
        if goodbye and not self._closed:
            self._finish(reason, close=False)  # counted and unhooked now; the socket lingers
            await shutdown(self._reader, self._writer, goodbye, self.limits)
        else:
            self._finish(reason)

    async def _upgrade(self) -> None:
        """Recipient side of STARTTLS: proceed, TLS handshake, then the stream restarts
        (the initiator's new header must name the same two ends)."""
        ctx = self.limits.tls_server
        if ctx is None or self.tls:
            raise StreamError("tls_refused", "STARTTLS not offered", "policy-violation")
        self._writer.write(f"<proceed xmlns='{NS_TLS}'/>".encode())
        try:
            await asyncio.wait_for(self._writer.start_tls(ctx), self.limits.open_timeout)
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as e:
            raise StreamError("tls_failed", str(e)) from None
        self._parser = _Parser(self.limits.max_stanza_bytes)
        await _read_header(self._reader, self._parser, self.limits.open_timeout)
        assert self._parser.header is not None
        if (
            self._parser.header.get("from") != self.peer
            or self._parser.header.get("to") != self.local
        ):
            raise StreamError("from_mismatch", "restarted stream names other ends", "invalid-from")
        self._writer.write(stream_header(self.local, self.peer) + FEATURES_NONE)
        self.tls = True

    def _dispatch(self, el: ET.Element) -> None:
        if el.tag == ERROR_TAG:
            cond = next((c.tag.split("}")[-1] for c in el), "undefined")
            raise StreamError("peer_stream_error", cond)
        if el.tag == FEATURES_TAG:  # features are not stanzas
            return
        self._settled = True  # a stanza in clear: the initiator did not take STARTTLS
        self.stanzas_in += 1
        if self.on_stanza is not None:
            try:
                self.on_stanza(self, el)
            except StreamError:
                raise
            except Exception:
                log.exception("stanza handler failed")

    async def _keepalive(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.limits.keepalive)
            if not self._closed:
                self._writer.write(b" ")

    def _finish(self, reason: str, *, close: bool = True) -> None:
        """Mark the stream closed and tell the owner; ``close=False`` leaves the socket to
        :func:`shutdown` (which sends the closing tag with the stream error)."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        if close:
            with contextlib.suppress(Exception):
                self._writer.write(CLOSE)
            with contextlib.suppress(Exception):
                self._writer.close()
        if self.on_close is not None:
            try:
                self.on_close(self, reason)
            except Exception:
                log.exception("stream close handler failed")

    async def close(self) -> None:
        await cancel_and_wait(self._task)  # its read loop runs under wait_for
        self._finish("closed")


async def _read_header(
    reader: asyncio.StreamReader, parser: _Parser, timeout: float
) -> list[ET.Element]:
    """Read until the peer's stream header; return any stanzas that came with it."""
    deadline = time.monotonic() + timeout
    got: list[ET.Element] = []
    while parser.header is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StreamError("open_timeout", f"no stream header within {timeout:g} s")
        try:
            data = await asyncio.wait_for(reader.read(4096), left)
        except asyncio.TimeoutError as e:
            raise StreamError("open_timeout", f"no stream header within {timeout:g} s") from e
        if not data:
            raise StreamError("eof", "closed before the stream header")
        got += parser.feed(data)
    return got


#: ``identify(claimed_from, source_address) -> bool``: is this a peer we browsed there?
Identify = Callable[[str, str], Awaitable[bool]]


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: str,
    identify: Identify,
    limits: StreamLimits,
) -> XmlStream:
    """Recipient side of XEP-0174 §5. Raises StreamError (after sending a stream error and
    closing) when the initiator does not open properly or is not who it claims."""
    parser = _Parser(limits.max_stanza_bytes)
    source = (writer.get_extra_info("peername") or ("?", 0))[0]

    async def refuse(err: StreamError) -> StreamError:
        if not err.condition:
            with contextlib.suppress(Exception):
                writer.close()
            return err
        goodbye = stream_error(err.condition)
        if parser.header is not None:
            goodbye = stream_header(local, parser.header.get("from", "")) + goodbye
        await shutdown(reader, writer, goodbye, limits)
        return err

    try:
        early = await _read_header(reader, parser, limits.open_timeout)
    except StreamError as e:
        raise await refuse(e) from None
    assert parser.header is not None
    to = parser.header.get("to", "")
    frm = parser.header.get("from", "")
    if to != local:
        raise await refuse(StreamError("wrong_to", f"to={to[:80]!r}", "host-unknown"))
    if not frm or not await identify(frm, source):
        err = StreamError("from_mismatch", f"from={frm[:80]!r} at {source}", "invalid-from")
        raise await refuse(err)
    features = FEATURES_TLS if limits.tls_server is not None else FEATURES_NONE
    writer.write(stream_header(local, frm) + features)
    stream = XmlStream(reader, writer, parser, local, frm, limits, outbound=False, initial=early)
    stream.tls_offered = limits.tls_server is not None
    return stream


async def connect(
    host: str,
    port: int,
    local: str,
    peer: str,
    limits: StreamLimits,
    *,
    timeout: float = 5.0,
) -> XmlStream:
    """Initiator side: open TCP, send our header, check the peer's header names it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise StreamError("connect_failed", f"{host}:{port}: {e}") from e
    parser = _Parser(limits.max_stanza_bytes)
    writer.write(stream_header(local, peer))
    tls = False
    try:
        early = await _read_header(reader, parser, limits.open_timeout)
        _check_answer(parser, peer)
        if limits.tls_client is not None:
            # the recipient sends its features right after its header: take a TLS offer
            features = await _read_until(reader, parser, FEATURES_TAG, early, limits)
            if features.find(STARTTLS_TAG) is not None:
                writer.write(f"<starttls xmlns='{NS_TLS}'/>".encode())
                answer = await _read_until(reader, parser, None, [], limits)
                if answer.tag != PROCEED_TAG:
                    raise StreamError("tls_failed", f"answer to starttls: {answer.tag}")
                try:
                    await asyncio.wait_for(writer.start_tls(limits.tls_client), limits.open_timeout)
                except (ssl.SSLError, OSError, asyncio.TimeoutError) as e:
                    raise StreamError("tls_failed", str(e)) from None
                parser = _Parser(limits.max_stanza_bytes)
                writer.write(stream_header(local, peer))
                early = await _read_header(reader, parser, limits.open_timeout)
                _check_answer(parser, peer)
                tls = True
    except StreamError as e:
        if e.condition:
            await shutdown(reader, writer, stream_error(e.condition), limits)
        else:
            with contextlib.suppress(Exception):
                writer.close()
        raise
    # stream features (we negotiate nothing more) are not stanzas
    early = [el for el in early if el.tag != FEATURES_TAG]
    stream = XmlStream(reader, writer, parser, local, peer, limits, outbound=True, initial=early)
    stream.tls = tls
    return stream


def _check_answer(parser: _Parser, peer: str) -> None:
    assert parser.header is not None
    frm = parser.header.get("from")
    if frm is not None and frm != peer:
        raise StreamError("from_mismatch", f"peer answered as {frm[:80]!r}", "invalid-from")


async def _read_until(
    reader: asyncio.StreamReader,
    parser: _Parser,
    tag: str | None,
    pending: list[ET.Element],
    limits: StreamLimits,
) -> ET.Element:
    """The first element with ``tag`` (any element when None), taken out of ``pending``
    (elements already parsed) or read from the stream within ``open_timeout``."""
    deadline = time.monotonic() + limits.open_timeout
    while True:
        for el in pending:
            if tag is None or el.tag == tag:
                pending.remove(el)
                return el
        left = deadline - time.monotonic()
        if left <= 0:
            raise StreamError("open_timeout", f"no {tag or 'answer'} within the open timeout")
        try:
            data = await asyncio.wait_for(reader.read(4096), left)
        except asyncio.TimeoutError:
            continue
        if not data:
            raise StreamError("eof", "closed during stream negotiation")
        pending += parser.feed(data)


def is_features(el: ET.Element) -> bool:
    return el.tag == FEATURES_TAG
