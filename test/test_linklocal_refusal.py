"""A refused link-local stream must reach the peer as a stream error, not as a reset.

The site refuses a stream (an oversized stanza, a wrong ``to``) while the peer is still
sending. Closing a socket with unread input makes the kernel send RST, which can destroy the
error on its way (a CI run once saw ``ConnectionResetError`` instead of ``policy-violation``);
the site now half-closes and drains for a bounded time and byte count first. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from jitsi_teleop.linklocal.stream import StreamError, StreamLimits, XmlStream, accept

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' from='mallory@x' to='{to}' version='1.0'>"
)


async def _site(limits: StreamLimits, results: list[str]) -> asyncio.AbstractServer:
    """A recipient that accepts anyone; ``results`` gets each refusal or close reason."""

    async def identify(claimed: str, source: str) -> bool:
        return True

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            s = await accept(reader, writer, "leader@lab", identify, limits)
        except StreamError as e:
            results.append(e.reason)
            return

        def closed(stream: XmlStream, reason: str) -> None:
            results.append(reason)

        s.on_close = closed
        s.start()

    return await asyncio.start_server(on_conn, "127.0.0.1", 0)


async def _peer_still_sending(port: int, first: bytes, total: int) -> tuple[bytes, str]:
    """Send ``first`` and then filler up to ``total`` bytes while reading everything the
    site says; returns (what was read, how the read side ended)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(first)
        sent = len(first)
        with contextlib.suppress(ConnectionError, OSError):
            while sent < total:
                n = min(16 * 1024, total - sent)
                writer.write(b"A" * n)
                sent += n
                await writer.drain()

    sender = asyncio.ensure_future(send())
    got = b""
    end = "eof"
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        end = "reset"
    except asyncio.TimeoutError:
        end = "still open"
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        writer.close()
    return got, end


@pytest.mark.parametrize(
    "first,condition,reason",
    [
        (
            HEADER.format(to="leader@lab").encode() + b"<message><body>",
            "policy-violation",
            "oversized",
        ),
        (HEADER.format(to="someone@else").encode(), "host-unknown", "wrong_to"),
    ],
    ids=["oversized_stanza", "wrong_to"],
)
def test_the_stream_error_reaches_a_peer_that_is_still_sending(first, condition, reason):
    """20 peers in a row each send 512 KB (the limit is 64 KB) without pausing to read: every
    one reads the stream error, the closing tag and an orderly end, never a reset."""

    async def main():
        results: list[str] = []
        limits = StreamLimits(open_timeout=5.0, max_stanza_bytes=64 * 1024)
        server = await _site(limits, results)
        port = server.sockets[0].getsockname()[1]
        try:
            outcomes = [await _peer_still_sending(port, first, 512 * 1024) for _ in range(20)]
        finally:
            server.close()
        deadline = time.monotonic() + 30
        while len(results) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return outcomes, results

    outcomes, results = asyncio.run(main())
    for got, end in outcomes:
        assert end == "eof", (end, got[-200:])
        assert condition.encode() in got and got.endswith(b"</stream:stream>"), got[-200:]
    assert results == [reason] * 20


def test_a_peer_that_never_stops_sending_is_cut_off_after_the_linger_bytes():
    """The drain is bounded: a peer that keeps sending after the error does not hold the
    socket open (the byte bound ends it long before the 120 s time bound)."""

    async def main():
        results: list[str] = []
        limits = StreamLimits(max_stanza_bytes=64 * 1024, linger=120.0, linger_bytes=256 * 1024)
        server = await _site(limits, results)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEADER.format(to="leader@lab").encode() + b"<message><body>")
        sent = 0
        ended = None
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 60:  # keep sending until the site hangs up
                writer.write(b"A" * 16384)
                sent += 16384
                await writer.drain()
        except (ConnectionError, OSError) as e:
            ended = type(e).__name__
        finally:
            writer.close()
            server.close()
        return ended, sent, results

    ended, sent, results = asyncio.run(main())
    assert ended is not None, "the site kept reading for 60 s"
    assert sent < 64 * 1024 * 1024, sent
    assert results == ["oversized"]
