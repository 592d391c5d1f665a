"""BOSH pieces without a server: body parsing, session parameters, conditions, URLs, settings,
and the per-request byte count the budget charges (checked against the bytes on a socket)."""

from __future__ import annotations

import asyncio

import pytest

from jitsi_teleop.room.config import RoomConfig
from jitsi_teleop.room.connect import bosh_url
from jitsi_teleop.room.discovery import discover, settings_from_config_js
from jitsi_teleop.room.transport_bosh import (
    NS_HTTPBIND,
    TERMINATE_CONDITIONS,
    BoshError,
    BoshSessionParams,
    BoshTerminated,
    _post,
    parse_body,
    request_overhead,
)


def test_parse_body_keeps_children_as_text():
    text = (
        f"<body xmlns='{NS_HTTPBIND}' xmlns:stream='http://etherx.jabber.org/streams' "
        "sid='s1' wait='60' requests='2' hold='1' xmlns:xmpp='urn:xmpp:xbosh' "
        "xmpp:version='1.0'><stream:features><x a='>'/></stream:features>"
        "<message xmlns='jabber:client'><body>a &amp; b</body></message></body>"
    )
    r = parse_body(text)
    assert r.attrs["sid"] == "s1" and r.attrs["xmpp:version"] == "1.0" and not r.terminate
    assert r.payload == (
        "<stream:features><x a='>'/></stream:features>"
        "<message xmlns='jabber:client'><body>a &amp; b</body></message>"
    )
    empty = parse_body(f"<?xml version='1.0'?>\n<body xmlns='{NS_HTTPBIND}' sid='s'/>")
    assert empty.payload == ""
    term = parse_body(f"<body xmlns='{NS_HTTPBIND}' type='terminate' condition='item-not-found'/>")
    assert term.terminate and term.attrs["condition"] == "item-not-found"


@pytest.mark.parametrize(
    "text, words",
    [
        ("<html><body>Sign in to the guest network</body></html>", "not a BOSH <body/>"),
        ("Service Unavailable", "not XML"),
        ("<body xmlns='jabber:client'/>", "not a BOSH <body/>"),
        (f"<body xmlns='{NS_HTTPBIND}'><message>", "not XML"),
    ],
)
def test_parse_body_refuses_what_is_not_bosh(text, words):
    with pytest.raises(BoshError, match=words.replace("<", ".").replace("/>", "..")):
        parse_body(text)


def test_session_params_defaults_and_polling_mode():
    p = BoshSessionParams.from_attrs({"sid": "x", "wait": "30", "hold": "1"}, 60, 1)
    assert (p.wait, p.hold, p.requests, p.polling_mode) == (30, 1, 2, False)
    p = BoshSessionParams.from_attrs({"sid": "x", "requests": "1", "polling": "5"}, 60, 1)
    assert p.wait == 60 and p.polling_mode and p.polling == 5.0
    p = BoshSessionParams.from_attrs({"sid": "x", "hold": "0", "inactivity": "x"}, 60, 1)
    assert p.polling_mode and p.inactivity == 60.0


def test_every_terminal_condition_has_a_meaning():
    # XEP-0124 section 17.2, table 3
    for cond in (
        "bad-request",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "item-not-found",
        "other-request",
        "policy-violation",
        "remote-connection-failed",
        "remote-stream-error",
        "see-other-uri",
        "system-shutdown",
        "undefined-condition",
    ):
        assert cond in TERMINATE_CONDITIONS
        e = BoshTerminated(cond)
        assert cond in str(e) and TERMINATE_CONDITIONS[cond][0] in str(e)
    assert not BoshTerminated("host-unknown").retryable
    assert BoshTerminated("item-not-found").retryable
    assert "unknown condition" in str(BoshTerminated("made-up"))


def test_bosh_url_and_config_validation():
    url = bosh_url("https://meet.example.org/http-bind?room=old&x=1", "lab", "jwt")
    assert url == "https://meet.example.org/http-bind?x=1&room=lab&token=jwt"
    with pytest.raises(ValueError):
        bosh_url("wss://meet.example.org/http-bind")
    cfg = RoomConfig(room="r", domain="d", bosh_url="http://127.0.0.1:1/http-bind")
    assert cfg.websocket_url is None and cfg.bosh_url
    with pytest.raises(ValueError, match="bosh_url"):
        RoomConfig(room="r", domain="d", bosh_url="ws://x/http-bind")
    with pytest.raises(ValueError):
        RoomConfig(room="r", domain="d", bosh_url="http://x/", tcp_host="x")
    with pytest.raises(ValueError, match="bosh_wait"):
        RoomConfig(room="r", domain="d", bosh_url="http://x/", bosh_wait=0)


def test_discovery_keeps_bosh_as_the_fallback_and_says_why():
    both = settings_from_config_js(
        "https://web.test/Lab",
        "var config = { hosts: { domain: 'x.test' }, bosh: '//web.test/http-bind', "
        "websocket: 'wss://web.test/xmpp-websocket' };",
    )
    cfg = both.room_config()
    assert cfg.websocket_url == "wss://web.test/xmpp-websocket"
    assert cfg.bosh_url == "https://web.test/http-bind"
    assert "bosh as fallback" in both.transport_reason
    bosh_only = settings_from_config_js(
        "https://web.test/Lab", "var config = { hosts: { domain: 'x.test' }, bosh: '/hb' };"
    )
    assert bosh_only.bosh_url == "https://web.test/hb" and bosh_only.websocket_guessed
    assert "bosh but no websocket" in bosh_only.transport_reason
    neither = settings_from_config_js(
        "https://web.test/t/Lab", "var config = { hosts: { domain: 'x.test' } };"
    )
    assert neither.bosh_url == "https://web.test/t/http-bind"
    assert "neither" in neither.transport_reason
    tcp = neither.room_config(tcp_host="127.0.0.1")
    assert tcp.websocket_url is None and tcp.bosh_url is None


async def test_explicit_bosh_url_forces_bosh():
    from aiohttp import web

    from conftest import free_tcp_port

    app = web.Application()
    text = "var config = { hosts: { domain: 'x.test' }, websocket: 'wss://w.test/ws' };"

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=text)

    app.router.add_get("/config.js", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        s = await discover(f"http://127.0.0.1:{port}/Lab", bosh_url="http://b.test/http-bind")
        assert s.websocket_url is None and s.bosh_url == "http://b.test/http-bind"
        assert "forced" in s.transport_reason
        both = await discover(
            f"http://127.0.0.1:{port}/Lab",
            bosh_url="http://b.test/http-bind",
            websocket_url="ws://w.test/ws",
        )
        assert both.websocket_url == "ws://w.test/ws" and "fallback" in both.transport_reason
    finally:
        await runner.cleanup()


async def test_request_overhead_matches_the_wire():
    """request_overhead (what the budget charges per request beyond the body) is what aiohttp
    really writes, within the Content-Length's extra digits."""
    import aiohttp

    from conftest import free_tcp_port

    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        got.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    port = free_tcp_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    body = f"<body rid='1' sid='s' xmlns='{NS_HTTPBIND}'/>"
    url = f"http://127.0.0.1:{port}/http-bind?room=lab"
    try:
        async with aiohttp.ClientSession() as session:
            await _post(session, url, body, False, 10)
    finally:
        server.close()
    overhead = len(got[0]) - len(body)
    assert request_overhead(url) == overhead and got[0].endswith(body.encode())


def _idle_transport(max_request_bytes: int = 64 * 1024):
    import asyncio as _asyncio

    from jitsi_teleop.room.transport_bosh import BoshResponse, BoshTransport

    return BoshTransport(
        None,  # type: ignore[arg-type]  # no request is made in these tests
        "http://127.0.0.1:1/http-bind",
        _asyncio.Protocol(),
        "meet.test",
        BoshSessionParams(sid="s1", wait=60),
        BoshResponse({}, ""),
        100,
        ssl_context=False,
        max_body_bytes=1024,
        max_request_bytes=max_request_bytes,
        retries=1,
        on_request=None,
    )


def test_outgoing_bodies_are_split_and_framed():
    """Stanzas that pile up share a request up to max_request_bytes; a bigger one goes alone;
    the stream header becomes nothing (creation), then a restart; the footer a terminate."""
    t = _idle_transport(max_request_bytes=1000)
    t.write(b"<stream:stream to='meet.test' version='1.0'>")  # absorbed: creation was it
    assert not t._out
    big = "<message><body>" + "x" * 1500 + "</body></message>"
    for text in ("<presence/>", "<iq type='get' id='1'/>", big, "<message/>"):
        t.write(text.encode())
    t.write(b" ")  # whitespace keepalive: dropped
    req = t._next_request()
    body = req.body
    assert (
        not req.empty and req.payload_bytes < 1000 and body.startswith("<body rid='100' sid='s1'")
    )
    assert '<presence xmlns="jabber:client"/><iq xmlns="jabber:client"' in body
    assert big[:20] not in body  # would exceed the limit: next request
    t._rid += 1
    body = t._next_request().body
    assert body.count("<message") == 1 and "x" * 1500 in body  # alone, although too big
    t._rid += 1
    body = t._next_request().body
    assert body.endswith('<message xmlns="jabber:client"/></body>')
    t.write(b"<stream:stream to='meet.test' version='1.0'>")  # after SASL: restart
    t._rid += 1
    req = t._next_request()
    assert req.restart and req.empty and "xmpp:restart='true'" in req.body
    assert "to='meet.test'" in req.body
    t.write(b"<presence type='unavailable'/>")
    t.write(b"</stream:stream>")
    t._rid += 1
    body = t._next_request().body
    assert "type='terminate'" in body and "unavailable" in body
    assert t.get_write_buffer_size() == 0
