"""TLS is verified by default (wss:// and STARTTLS); ``insecure`` is an explicit opt-out."""

from __future__ import annotations

import pytest

from jitsi_teleop.room.config import TlsError
from prosody_server import ProsodyServer, prosody_available, room_config, run_doctor

pytest_plugins = ["conftest_prosody"]
pytestmark = [pytest.mark.prosody, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def tls_prosody():
    if not prosody_available():
        pytest.skip("prosody not installed")
    srv = ProsodyServer(tls=True)
    srv.start()
    yield srv
    srv.cleanup()


@pytest.mark.parametrize("transport", ["wss", "starttls", "https-bosh"])
async def test_self_signed_refused_unless_insecure(tls_prosody, rooms, room_name, transport):
    srv = tls_prosody
    kw = {
        "wss": {"websocket_url": srv.secure_websocket_url},
        "starttls": {"tcp_host": "127.0.0.1", "tcp_port": srv.c2s_port, "websocket_url": None},
        "https-bosh": {
            "websocket_url": None,
            "bosh_url": f"https://127.0.0.1:{srv.https_port}/http-bind",
        },
    }[transport]
    strict = rooms(room_config(srv, room_name, connect_timeout=5, **kw))
    with pytest.raises(TlsError) as info:
        await strict.join()
    assert "certificate" in info.value.reason.lower()
    relaxed = rooms(room_config(srv, room_name, insecure=True, **kw))
    await relaxed.join()
    assert relaxed.online
    if transport == "starttls":
        assert "starttls" in relaxed.xmpp.features  # really encrypted, not plaintext


async def test_doctor_tls_failure_exit_code(tls_prosody, room_name):
    srv = tls_prosody
    base = ["--websocket", srv.secure_websocket_url, "--domain", srv.domain, "--room", room_name]
    for extra, expected in (([], 4), (["--insecure"], 0)):
        code, _out, err = await run_doctor(*base, *extra)
        assert code == expected, err
        if expected:
            assert "tls" in err.lower()
