"""config.js parsing (Debian and docker styles) and the fetch, on loopback."""

from __future__ import annotations

import pytest
from aiohttp import web

from jitsi_teleop.room.discovery import (
    DiscoveryError,
    discover,
    parse_config_js,
    parse_meeting_url,
    settings_from_config_js,
)

# As served by a Debian jitsi-meet-web-config install (nginx SSI already expanded).
DEBIAN = """
/* eslint-disable comma-dangle, no-unused-vars, no-var, prefer-template, vars-on-top */

/*
 * NOTE: If you add a new option please remember to document it here:
 * https://jitsi.github.io/handbook/docs/dev-guide/dev-guide-configuration
 */

var subdir = '';
var subdomain = '';
if (subdomain) {
    subdomain = subdomain.substr(0, subdomain.length - 1).split('.')
        .join('_')
        .toLowerCase() + '.';
}

// In case of no ssi provided by the webserver, use empty strings
if (subdir.startsWith('<!--')) {
    subdir = '';
}
if (subdomain.startsWith('<!--')) {
    subdomain = '';
}

var enableJaaS = false;

var config = {
    // Connection
    //

    hosts: {
        // XMPP domain.
        domain: 'meet.example.org',

        // When using authentication, domain for guest users.
        // anonymousdomain: 'guest.example.com',

        // Domain for authenticated users. Defaults to <domain>.
        // authdomain: 'meet.example.org',

        // Focus component domain. Defaults to focus.<domain>.
        // focus: 'focus.meet.example.org',

        // XMPP MUC domain. FIXME: use XEP-0030 to discover it.
        muc: 'conference.' + subdomain + 'meet.example.org',
    },

    // BOSH URL. FIXME: use XEP-0156 to discover it.
    bosh: 'https://meet.example.org/' + subdir + 'http-bind',

    // Websocket URL (XMPP)
    websocket: 'wss://meet.example.org/' + subdir + 'xmpp-websocket',

    // Whether BOSH should be preferred over WebSocket if both are configured.
    // preferBosh: false,

    // websocketKeepAliveUrl: 'https://meet.example.org/' + subdir + '_unlock',
    hiddenDomain: 'recorder.meet.example.org',
    p2p: { enabled: true, stunServers: [ { urls: 'stun:meet-jit-si-turnrelay.jitsi.net:443' } ] },
};
"""

# As read from a docker-jitsi-meet web container (SSI directives still raw, assignments).
DOCKER = """
// Jitsi Meet configuration.
var config = {};

config.hosts = {};
config.hosts.domain = 'meet.jitsi';
config.focusUserJid = 'focus@auth.meet.jitsi';

var subdir = '<!--# echo var="subdir" default="" -->';
var subdomain = "<!--# echo var="subdomain" default="" -->";
if (subdir.startsWith('<!--')) {
    subdir = '';
}
if (subdomain) {
    subdomain = subdomain.substring(0,subdomain.length-1).split('.').join('_').toLowerCase() + '.';
}
config.hosts.muc = 'muc.' + subdomain + 'meet.jitsi';
config.bosh = 'https://localhost:8443/' + subdir + 'http-bind';
config.websocket = 'wss://localhost:8443/' + subdir + 'xmpp-websocket';

// Video configuration.
//

config.resolution = 720;
config.hosts.anonymousdomain = 'guest.meet.jitsi';
"""


def test_parse_debian_style():
    v = parse_config_js(DEBIAN)
    assert v["domain"] == "meet.example.org"
    assert v["muc"] == "conference.meet.example.org"
    assert v["bosh"] == "https://meet.example.org/http-bind"
    assert v["websocket"] == "wss://meet.example.org/xmpp-websocket"
    assert "focus" not in v and "anonymousdomain" not in v  # commented out


def test_parse_docker_style_with_raw_ssi_and_tenant():
    v = parse_config_js(DOCKER)
    assert v["domain"] == "meet.jitsi"
    assert v["muc"] == "muc.meet.jitsi"
    assert v["websocket"] == "wss://localhost:8443/xmpp-websocket"
    assert v["anonymousdomain"] == "guest.meet.jitsi"
    t = parse_config_js(DOCKER, tenant="acme")
    assert t["muc"] == "muc.acme.meet.jitsi"
    assert t["websocket"] == "wss://localhost:8443/acme/xmpp-websocket"


def test_settings_defaults_and_relative_urls():
    text = """var config = { hosts: { domain: "x.test" }, bosh: '//web.test/http-bind' };"""
    s = settings_from_config_js("https://web.test/Room1", text)
    assert (s.room, s.domain, s.muc_domain, s.focus) == (
        "room1",
        "x.test",
        "conference.x.test",
        "focus.x.test",
    )
    assert s.bosh_url == "https://web.test/http-bind"
    assert s.websocket_url == "wss://web.test/xmpp-websocket" and s.websocket_guessed
    cfg = s.room_config(teleop_role="follower")
    assert cfg.room_jid == "room1@conference.x.test" and cfg.focus == "focus.x.test"
    explicit = s.room_config(tcp_host="127.0.0.1", focus=None)
    assert explicit.websocket_url is None and explicit.tcp_host == "127.0.0.1"


def test_bad_inputs():
    for url in ("ftp://x/y", "https://meet.example.org/", "meet.example.org/room"):
        with pytest.raises(DiscoveryError):
            parse_meeting_url(url)
    with pytest.raises(DiscoveryError):
        settings_from_config_js("https://x.test/r", "var config = {};")
    # garbage does not crash the parser
    assert parse_config_js("domain: foo + + 'x'; muc: 'a' 'b'; websocket: ") == {}


async def test_fetch_from_a_web_server():
    from conftest import free_tcp_port

    app = web.Application()

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=DEBIAN, content_type="text/javascript")

    app.router.add_get("/config.js", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        s = await discover(f"http://127.0.0.1:{port}/MyRoom")
        assert s.domain == "meet.example.org" and s.room == "myroom"
        assert s.websocket_url == "wss://meet.example.org/xmpp-websocket"
        s2 = await discover(
            f"http://127.0.0.1:{port}/MyRoom", websocket_url="ws://127.0.0.1:1/xmpp-websocket"
        )
        assert s2.websocket_url == "ws://127.0.0.1:1/xmpp-websocket"
        with pytest.raises(DiscoveryError):
            await discover(f"http://127.0.0.1:{port}/tenant/MyRoom")  # 404
    finally:
        await runner.cleanup()
    with pytest.raises(DiscoveryError):
        await discover(f"http://127.0.0.1:{port}/MyRoom", timeout=3)  # nothing listens
