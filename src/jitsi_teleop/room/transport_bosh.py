"""XMPP over BOSH (XEP-0124 + XEP-0206) as an asyncio transport for slixmpp.

Some networks (proxies that strip ``Upgrade``, old reverse proxies, captive portals) pass plain
HTTP(S) but no WebSocket; every Jitsi deployment also serves BOSH at ``/http-bind``. This module
gives slixmpp the same byte-stream view it has over TCP or a WebSocket:

* out: stanzas are queued and sent in the next HTTP request (several per request when they
  pile up); the first stream header is the session creation request (made in ``open`` so that
  an unreachable BOSH service is found before slixmpp starts), later headers (after SASL) are
  XEP-0206 restarts, the stream footer is a ``terminate`` request;
* in: each response's children are fed to slixmpp, strictly in ``rid`` order whatever order the
  HTTP responses come back in; a synthetic ``<stream:stream>`` header precedes the answer to
  the creation and restart requests.

Pacing follows the session's ``hold``/``requests``: one request is always held by the server
(the long poll that brings its stanzas), data goes out at once while fewer than ``requests``
are open, and a request that was lost (connection reset, timeout, a proxy that ends long polls
early with an error) is sent again with the same ``rid`` and body, which a server answers from
its cache of recent responses or processes once. Terminal conditions end the stream with a
:class:`BoshTerminated` that says what happened and whether reconnecting can help.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import ssl
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .transport_ws import NS_STREAM, _attr, outgoing_frame

log = logging.getLogger(__name__)

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
_NS_XML = "http://www.w3.org/XML/1998/namespace"

#: Bytes of our POST's request line and headers (Content-Type, User-Agent, Content-Length with two
#: digits) besides the URL's host and path+query, as
#: measured by test_bosh_units.test_request_overhead_matches_the_wire.
HTTP_REQUEST_FIXED = 111


def request_overhead(url: str) -> int:
    """Bytes an HTTP POST to ``url`` costs beyond its body (request line and headers)."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HTTP_REQUEST_FIXED + len(parts.netloc) + len(target)


#: What each XEP-0124 terminal condition means for us, and whether a new session can help.
TERMINATE_CONDITIONS: dict[str, tuple[str, bool]] = {
    "bad-request": ("the server could not use our request (malformed, or bad rid/wait)", False),
    "host-gone": ("the server no longer serves this XMPP domain", False),
    "host-unknown": ("the server does not serve this XMPP domain", False),
    "improper-addressing": ("the server does not serve this XMPP domain ('to')", False),
    "internal-server-error": ("the connection manager failed internally", True),
    "item-not-found": (
        "the server does not know this BOSH session (it restarted, the session timed out, "
        "or a request id was lost)",
        True,
    ),
    "other-request": ("another request replaced this session", True),
    "policy-violation": (
        "the server refused our request pattern (too many or too frequent requests, or a body "
        "too large)",
        True,
    ),
    "remote-connection-failed": ("the connection manager could not reach the XMPP server", True),
    "remote-stream-error": ("the XMPP stream ended with a stream error", True),
    "see-other-uri": ("the server moved BOSH to another URL", False),
    "system-shutdown": ("the server is shutting down", True),
    "undefined-condition": ("the server ended the session (undefined-condition)", True),
}
#: legacy (XEP-0124 before 1.6) HTTP status codes for terminal conditions
_HTTP_CONDITIONS = {400: "bad-request", 403: "policy-violation", 404: "item-not-found"}

#: a failed request that had been open this long was held by the server, then cut (seconds)
HELD_FOR = 1.0

_SASL_SUCCESS = re.compile(r"<success\b[^>]*urn:ietf:params:xml:ns:xmpp-sasl")
_BODY_START = re.compile(
    r"""\A\s*(?:<\?xml[^>]*\?>\s*)?<body(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*(/?)>"""
)


class BoshError(ConnectionError):
    """BOSH could not be used: session creation failed, requests kept failing, or the server's
    answers were not BOSH (a captive portal page, an oversized body)."""


class BoshTerminated(BoshError):
    """The server ended the session with a terminal ``condition`` (XEP-0124 section 17.2)."""

    def __init__(self, condition: str, detail: str = "") -> None:
        meaning, self.retryable = TERMINATE_CONDITIONS.get(
            condition, (f"unknown condition {condition!r}", True)
        )
        text = f"BOSH session terminated by the server: {condition}: {meaning}"
        super().__init__(text + (f" ({detail})" if detail else ""))
        self.condition = condition


@dataclass(frozen=True)
class BoshResponse:
    """One parsed ``<body/>``: its attributes and its children as raw XML text."""

    attrs: dict[str, str]
    payload: str

    @property
    def terminate(self) -> bool:
        return self.attrs.get("type") == "terminate"


def parse_body(text: str) -> BoshResponse:
    """Parse a response body; BoshError when it is not a BOSH ``<body/>`` (pure)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        detail = f"({e}){_peek(text)}"
        raise BoshError(f"the BOSH URL answered something that is not XML {detail}") from None
    if root.tag != f"{{{NS_HTTPBIND}}}body":
        raise BoshError(f"the BOSH URL answered <{_local(root.tag)}>, not a BOSH <body/>")
    attrs = {_attr_name(k): v for k, v in root.attrib.items()}
    m = _BODY_START.match(text)
    if m is None:  # parsed by ElementTree, so this would be a bug in the pattern
        raise BoshError("could not find the BOSH <body> start tag")
    if m.group(1):
        return BoshResponse(attrs, "")
    inner = text[m.end() :].rstrip()
    if not inner.endswith("</body>"):
        raise BoshError("BOSH body does not end with </body>")
    return BoshResponse(attrs, inner[: -len("</body>")])


def _attr_name(name: str) -> str:
    if name.startswith(f"{{{NS_XBOSH}}}"):
        return "xmpp:" + _local(name)
    if name.startswith(f"{{{_NS_XML}}}"):
        return "xml:" + _local(name)
    return _local(name)


def _local(name: str) -> str:
    return name.split("}")[-1]


def _peek(text: str) -> str:
    head = " ".join(text[:80].split())
    return f": {head!r}" if head else ""


@dataclass
class BoshSessionParams:
    """What the server granted at session creation (XEP-0124 section 7.1)."""

    sid: str
    wait: int
    hold: int = 1
    requests: int = 2
    polling: float = 0.0
    inactivity: float = 60.0
    maxpause: float | None = None

    @classmethod
    def from_attrs(
        cls, attrs: dict[str, str], asked_wait: int, asked_hold: int
    ) -> BoshSessionParams:
        def num(key: str, default: float) -> float:
            try:
                v = float(attrs[key])
            except (KeyError, ValueError):
                return default
            return v if math.isfinite(v) else default  # int() of inf/nan raises

        hold = int(num("hold", asked_hold))
        return cls(
            sid=attrs["sid"],
            wait=int(num("wait", asked_wait)),
            hold=hold,
            # a server that omits 'requests' allows hold + 1 (section 7.1)
            requests=max(1, int(num("requests", hold + 1))),
            polling=num("polling", 0.0),
            inactivity=num("inactivity", 60.0),
            maxpause=num("maxpause", 0.0) or None,
        )

    @property
    def polling_mode(self) -> bool:
        """No long polls possible: empty requests must be ``polling`` seconds apart."""
        return self.hold == 0 or self.requests <= 1


_RESTART = object()
_TERMINATE = object()


@dataclass(frozen=True)
class _Request:
    """One request to send: its body, the stanza bytes in it, whether it is a restart."""

    body: str
    payload_bytes: int = 0
    restart: bool = False

    @property
    def empty(self) -> bool:
        return self.payload_bytes == 0


class BoshTransport(asyncio.Transport):
    """An asyncio transport over one BOSH session, for one slixmpp stream."""

    #: bytes each queued stanza adds beyond its text (none: stanzas are concatenated)
    frame_overhead = 0

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        protocol: asyncio.Protocol,
        domain: str,
        params: BoshSessionParams,
        first: BoshResponse,
        next_rid: int,
        *,
        ssl_context: ssl.SSLContext | bool,
        max_body_bytes: int,
        max_request_bytes: int,
        retries: int,
        on_request: Callable[[int], None] | None,
    ) -> None:
        super().__init__()
        self._http = session
        self.url = url
        self._http_overhead = request_overhead(url)
        self._protocol = protocol
        self._domain = domain
        self.params = params
        self._ssl = ssl_context
        self._max_body = max_body_bytes
        self._max_request = max_request_bytes
        self._retries = retries
        self.on_request = on_request
        self._first: BoshResponse | None = first
        self._header_absorbed = False
        self._rid = next_rid
        self._deliver_rid = next_rid
        #: slixmpp restarted its parser: the next payload starts a new stream (whichever
        #: response carries the new features: Prosody sends them on its oldest held request)
        self._header_due = False
        self._done: dict[int, BoshResponse | BaseException] = {}
        self._out: deque[object] = deque()
        self._open = 0  # requests sent and not yet answered (or given up)
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._last_empty = 0.0
        self._closing = False
        self._terminating = False
        #: SASL succeeded: no poll until slixmpp asks for the restart, or the server would
        #: send the new stream's features on that poll, before our restart (XEP-0206 5.)
        self._await_restart = False
        self._lost = False
        self._ended = False  # a terminal answer or error was delivered: nothing after it
        self._loop_task: asyncio.Task | None = None
        self.buffered_bytes = 0
        self.bytes_sent = 0
        self.requests_sent = 0
        self.requests_resent = 0
        self.responses_reordered = 0
        self.stale_resends = 0

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        url: str,
        protocol: asyncio.Protocol,
        domain: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        wait: int = 60,
        hold: int = 1,
        max_body_bytes: int = 1024 * 1024,
        max_request_bytes: int = 64 * 1024,
        retries: int = 4,
        on_request: Callable[[int], None] | None = None,
    ) -> BoshTransport:
        """Create the session (one POST); BoshError with a clear reason when that fails."""
        if not url.startswith(("http://", "https://")):
            raise BoshError(f"not a BOSH URL (http:// or https://): {url!r}")
        https = url.startswith("https:")
        ssl_arg: ssl.SSLContext | bool = (ssl_context or True) if https else False
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit_per_host=4, ssl=ssl_arg),
        )
        rid = secrets.randbelow(2**40) + 1  # room for many requests below 2**53 (section 14)
        body = (
            f"<body content='text/xml; charset=utf-8' hold='{hold}' rid='{rid}' "
            f"to='{_attr(domain)}' ver='1.6' wait='{wait}' xml:lang='en' "
            f"xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>"
        )
        try:
            text = await asyncio.wait_for(
                _post(session, url, body, ssl_arg, max_body_bytes), timeout
            )
            first = parse_body(text)
            if first.terminate:
                raise BoshTerminated(first.attrs.get("condition", "undefined-condition"))
            if not first.attrs.get("sid"):
                raise BoshError("the server's session creation response has no sid")
            params = BoshSessionParams.from_attrs(first.attrs, wait, hold)
        except (aiohttp.ClientConnectorCertificateError, ssl.SSLCertVerificationError) as e:
            await session.close()
            cause = getattr(e, "certificate_error", e)
            detail = getattr(cause, "verify_message", None) or str(cause)
            raise BoshError(f"TLS certificate verification failed: {detail}") from e
        except asyncio.TimeoutError as e:
            await session.close()
            raise BoshError(f"BOSH session creation timed out after {timeout:g} s") from e
        except _HttpStatus as e:
            await session.close()
            raise BoshError(f"BOSH session creation refused: {e}") from e
        except BoshError:
            await session.close()
            raise
        except (aiohttp.ClientError, OSError) as e:
            await session.close()
            raise BoshError(f"BOSH connect failed: {e}") from e
        return cls(
            session,
            url,
            protocol,
            domain,
            params,
            first,
            rid + 1,
            ssl_context=ssl_arg,
            max_body_bytes=max_body_bytes,
            max_request_bytes=max_request_bytes,
            retries=retries,
            on_request=on_request,
        )

    def start_reading(self) -> None:
        """Deliver the creation response and start polling; call after connection_made()."""
        first, self._first = self._first, None
        if first is not None:
            self._feed(self._stream_header(first.attrs) + first.payload)
        self._loop_task = asyncio.ensure_future(self._request_loop())

    # -- asyncio.Transport API used by slixmpp -----------------------------------------------
    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if self._closing or self._terminating:
            return
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        stripped = text.strip()
        if not stripped:
            return  # whitespace keepalive: the held request is our keepalive
        if stripped.startswith("<stream:stream"):
            if not self._header_absorbed:
                self._header_absorbed = True  # the session creation request was that header
                return
            self._await_restart = False
            self._header_due = True
            self._out.append(_RESTART)
        elif stripped == "</stream:stream>":
            self._terminating = True
            self._out.append(_TERMINATE)
        else:
            frame = outgoing_frame(stripped, self._domain)
            if frame is None:
                return
            self.buffered_bytes += len(frame)
            self._out.append(frame)
        self._wake.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.url
        return default

    def get_write_buffer_size(self) -> int:
        return self.buffered_bytes

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._spawn(self._shutdown(None))

    def abort(self) -> None:
        """Drop everything at once (no terminate request): like a cut cable."""
        self._closing = True
        self._spawn(self._shutdown(None))

    # -- the request engine ------------------------------------------------------------------
    async def _request_loop(self) -> None:
        try:
            while not self._closing:
                if self._out and self._open < self.params.requests:
                    self._send(self._next_request())
                    continue
                idle = not (self._terminating or self._await_restart)
                if not self._out and self._open == 0 and idle:
                    delay = self._poll_delay()
                    if delay <= 0:
                        self._send(_Request(self._wrap("")))
                        continue
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    self._wake.clear()
                    continue
                await self._wake.wait()
                self._wake.clear()
        except asyncio.CancelledError:
            return

    def _poll_delay(self) -> float:
        if not self.params.polling_mode:
            return 0.0
        return self._last_empty + self.params.polling - time.monotonic()

    def _next_request(self) -> _Request:
        """The next request from the queue: a restart, or the stanzas that fit in one body."""
        if self._out[0] is _RESTART:
            self._out.popleft()
            extra = f" to='{_attr(self._domain)}' xml:lang='en'"
            return _Request(self._wrap("", extra, restart=True), restart=True)
        parts: list[str] = []
        size = 0
        terminate = False
        while self._out:
            item = self._out[0]
            if item is _RESTART:
                break
            if item is _TERMINATE:
                self._out.popleft()
                terminate = True
                break
            assert isinstance(item, str)
            if parts and size + len(item) > self._max_request:
                break  # the rest goes in the next request
            self._out.popleft()
            self.buffered_bytes -= len(item)
            parts.append(item)
            size += len(item)
        extra = " type='terminate'" if terminate else ""
        payload = "".join(parts)
        return _Request(self._wrap(payload, extra), len(payload.encode("utf-8")))

    def _wrap(self, payload: str, extra: str = "", restart: bool = False) -> str:
        sid = _attr(self.params.sid)
        head = f"<body rid='{self._rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'{extra}"
        if restart:
            head += f" xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}'"
        return f"{head}/>" if not payload else f"{head}>{payload}</body>"

    def _send(self, request: _Request) -> None:
        rid = self._rid
        self._rid += 1
        self._open += 1
        if request.empty:
            self._last_empty = time.monotonic()
        self._spawn(self._request(rid, request.body, request.payload_bytes))

    async def _request(self, rid: int, body: str, payload_bytes: int) -> None:
        """POST until answered; the same rid and body again after a loss (section 14).

        Only quick failures in a row count towards giving up: a request the server held for a
        while before a proxy ended it shows the path works (proxies end long polls at their
        own read timeout, often shorter than our ``wait``).

        ``on_request`` is charged what the first attempt adds beyond the stanzas (which the
        room charged when it sent them), and every byte of a resend."""
        wire = len(body.encode("utf-8")) + self._http_overhead
        charge = wire - payload_bytes
        timeout = self.params.wait + 10.0
        patience = max(5.0, min(self.params.inactivity / 2, 30.0))
        give_up = time.monotonic() + patience
        attempt = 0  # failures in a row, each quicker than HELD_FOR
        resent = False
        result: BoshResponse | BaseException
        while True:
            started = time.monotonic()
            self.requests_sent += 1
            self.bytes_sent += wire
            if self.on_request is not None:
                self.on_request(charge)
            charge = wire
            try:
                text = await asyncio.wait_for(
                    _post(self._http, self.url, body, self._ssl, self._max_body), timeout
                )
                result = parse_body(text)
                if resent and self._stale_resend(rid, result):
                    self.stale_resends += 1
                    result = BoshResponse({}, "")
                break
            except asyncio.CancelledError:
                raise
            except _HttpStatus as e:
                if e.status in _HTTP_CONDITIONS:
                    result = BoshTerminated(_HTTP_CONDITIONS[e.status], f"HTTP {e.status}")
                    break
                error: BaseException = e  # a proxy's 5xx: the request may be lost
            except BoshError as e:
                result = e  # not BOSH, or oversized: retrying would get the same
                break
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
                error = e
            if time.monotonic() - started >= HELD_FOR:
                attempt, give_up = 0, time.monotonic() + patience
            attempt += 1
            resent = True
            if attempt > self._retries or time.monotonic() > give_up or self._closing:
                result = BoshError(
                    f"BOSH request lost {attempt} times, giving up: {_describe(error)}"
                )
                break
            self.requests_resent += 1
            log.debug("BOSH rid %d lost (%s); sending it again", rid, _describe(error))
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        self._open -= 1
        if rid > self._deliver_rid and self._deliver_rid not in self._done:
            self.responses_reordered += 1
        self._done[rid] = result
        self._deliver_ready()
        self._wake.set()

    def _stale_resend(self, rid: int, answer: BoshResponse) -> bool:
        """A resent request refused with item-not-found although later requests went out: the
        server had already processed it (a server takes rids in order) and kept no answer to
        replay (Prosody caches answers it sent, not requests a proxy cut off unanswered). The
        session is alive; the answer is an empty one."""
        return (
            answer.terminate
            and answer.attrs.get("condition") == "item-not-found"
            and self._rid - 1 > rid
        )

    def _deliver_ready(self) -> None:
        """Hand responses to slixmpp in rid order (section 9: the client must)."""
        while self._deliver_rid in self._done and not (self._lost or self._ended):
            rid = self._deliver_rid
            result = self._done.pop(rid)
            self._deliver_rid += 1
            if isinstance(result, BaseException):
                self._ended = True
                self._spawn(self._shutdown(result))
                return
            if _SASL_SUCCESS.search(result.payload):
                self._await_restart = True
            if result.payload:
                prefix = self._stream_header(result.attrs) if self._header_due else ""
                self._header_due = False
                self._feed(prefix + result.payload)
            if result.terminate:
                self._ended = True
                condition = result.attrs.get("condition")
                if condition is None and self._terminating:
                    self._feed("</stream:stream>")  # our own terminate was answered
                    self._spawn(self._shutdown(None))
                else:
                    self._spawn(self._shutdown(BoshTerminated(condition or "undefined-condition")))
                return

    def _stream_header(self, attrs: dict[str, str]) -> str:
        frm = attrs.get("from") or self._domain
        return (
            f"<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAM}' "
            f"from='{_attr(frm)}' id='{_attr(self.params.sid)}' version='1.0'>"
        )

    def _feed(self, text: str) -> None:
        if self._lost:
            return
        try:
            self._protocol.data_received(text.encode("utf-8"))
        except Exception:
            log.exception("slixmpp failed on BOSH payload")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if exc is not None:
            log.info("%s", exc)
        me = asyncio.current_task()
        for task in list(self._tasks):
            if task is not me:
                task.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
        with contextlib.suppress(Exception):
            await self._http.close()
        self._protocol.connection_lost(exc)


class _HttpStatus(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status


#: every byte of every request counts against the server's rate limit: only what BOSH needs,
#: and a short User-Agent (some proxies refuse requests without one)
_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "User-Agent": "jitsi-teleop"}


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: str,
    ssl_arg: ssl.SSLContext | bool,
    max_body: int,
) -> str:
    async with session.post(
        url,
        data=body.encode("utf-8"),
        headers=_HEADERS,
        skip_auto_headers=("Accept", "Accept-Encoding"),
        ssl=ssl_arg,
    ) as resp:
        if resp.status != 200:
            raise _HttpStatus(resp.status, resp.reason or "")
        if resp.content_length is not None and resp.content_length > max_body:
            raise BoshError(
                f"BOSH response of {resp.content_length} bytes is over the {max_body}-byte limit"
            )
        data = bytearray()
        while chunk := await resp.content.read(65536):
            data += chunk
            if len(data) > max_body:
                raise BoshError(f"BOSH response is over the {max_body}-byte limit")
        return data.decode(resp.charset or "utf-8", errors="replace")


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    return str(error) or type(error).__name__
