"""Account login against a real Prosody: the Jitsi secure-domain layout (internal_hashed on the
main domain, anonymous guests on a guest domain, only local users create rooms), a plain XMPP
server over STARTTLS, and what must be refused: a wrong password, and a server that offers
only PLAIN without TLS. Accounts are made with ``prosodyctl`` as an admin would."""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
import sys

import pytest

from jitsi_teleop.links.p2p import P2PConfig, loopback_only
from jitsi_teleop.pairing import Secret
from jitsi_teleop.room.account import Account
from jitsi_teleop.room.config import AuthError, JoinError
from jitsi_teleop.session import Session, SessionConfig
from jitsi_teleop.wire import StreamDescriptor
from prosody_server import ProsodyServer, eventually, prosody_available, room_config

pytest_plugins = ["conftest_prosody"]
pytestmark = [
    pytest.mark.prosody,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not prosody_available(), reason="prosody not installed"),
]

GUEST = "guest.meet.test"
PASSWORD = "correct horse " + secrets.token_hex(4)


@pytest.fixture(scope="module")
def secure():
    """A Jitsi secure-domain Prosody with one registered account."""
    srv = ProsodyServer(
        authentication="internal_hashed", guest_domain=GUEST, restrict_room_creation="local"
    )
    srv.start()
    srv.account = Account(srv.register("operator", PASSWORD), PASSWORD)
    yield srv
    srv.cleanup()


def guest_config(srv: ProsodyServer, room: str, **kw):
    return room_config(srv, room, domain=GUEST, muc_domain=srv.muc_domain, **kw)


def account_config(srv: ProsodyServer, room: str, account: Account, transport="ws", **kw):
    return room_config(srv, room, transport, domain="", account=account, **kw)


HASH = "RIHS01_" + "d" * 64
OUT = [StreamDescriptor(1, "/cmd", "std_msgs/msg/String", HASH, "reliable", 10, 5.0)]


async def test_account_login_over_bosh(secure, rooms, room_name):
    room = rooms(account_config(secure, room_name, secure.account, "bosh", teleop_role=None))
    me = await room.join()
    assert me.jid.startswith("operator@meet.test/")
    assert room.xmpp.plugin["feature_mechanisms"].mech.name.startswith("SCRAM-SHA-")


async def test_secure_domain_account_site_pairs_with_a_guest_site(secure, rooms, room_name):
    # a guest alone cannot create the room (only the domain's users can, as with Jitsi)
    lonely = rooms(guest_config(secure, room_name, teleop_role="follower", key_id="ab12"))
    with pytest.raises(JoinError) as refused:
        await lonely.join()
    assert refused.value.condition == "not-allowed"

    leader_room = rooms(
        account_config(secure, room_name, secure.account, teleop_role="leader", key_id="ab12")
    )
    me = await leader_room.join()
    assert me.jid.startswith("operator@meet.test/")
    assert leader_room.xmpp.plugin["feature_mechanisms"].mech.name.startswith("SCRAM-SHA-")
    follower_room = rooms(guest_config(secure, room_name, teleop_role="follower", key_id="ab12"))
    await follower_room.join()
    assert follower_room.xmpp.boundjid.domain == GUEST

    cfg = SessionConfig(p2p=P2PConfig(candidate_filter=loopback_only), discover_ice_servers=False)
    got: list[bytes] = []
    secret = Secret(bytes(range(32)))
    leader = Session(leader_room, cfg, secret, "leader", OUT, expected=[])
    follower = Session(
        follower_room,
        cfg,
        secret,
        "follower",
        [],
        expected=OUT,
        on_receive=lambda d, payload, info: got.append(payload),
    )
    try:
        await leader.start()
        await follower.start()
        await leader.wait_paired(30)
        await follower.wait_paired(30)
        for i in range(5):
            leader.publish(1, struct.pack("<I", i))
        await eventually(lambda: len(got) == 5, 20, "5 reliable frames at the guest site")
        assert [struct.unpack("<I", g)[0] for g in got] == list(range(5))
    finally:
        await leader.close()
        await follower.close()


async def test_wrong_password_is_refused_with_one_clear_line(secure, rooms, room_name):
    wrong = Account(secure.account.jid, "not the password")
    room = rooms(account_config(secure, room_name, wrong))
    with pytest.raises(AuthError) as e:
        await room.join()
    assert e.value.reason.startswith("login as operator@meet.test refused: wrong password")
    assert "\n" not in e.value.reason and "not the password" not in e.value.reason


async def test_unknown_account_on_the_guest_domain_layout_is_refused(secure, rooms, room_name):
    room = rooms(account_config(secure, room_name, Account("nobody@meet.test", "x")))
    with pytest.raises(AuthError, match="wrong password or unknown account"):
        await room.join()


async def test_doctor_reports_a_refused_login_in_one_line(secure, room_name, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("wrong\n")
    args = [
        "doctor",
        "--websocket",
        secure.websocket_url,
        "--room",
        room_name,
        "--no-focus",
        "--jid",
        secure.account.jid,
        "--password-file",
        str(pw),
        "--timeout",
        "20",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jitsi_teleop.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 5, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "jitsi-teleop doctor: auth: login as operator@meet.test refused: wrong password or "
        "unknown account (not-authorized)"
    ), lines
    # and with the right password (from the environment) it passes
    env = dict(os.environ, JITSI_TELEOP_XMPP_PASSWORD=PASSWORD)
    args2 = [a for a in args if a not in ("--password-file", str(pw))]
    ok = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jitsi_teleop.cli",
        *args2,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(ok.communicate(), 60)
    assert ok.returncode == 0, (out.decode(), err.decode())


@pytest.fixture
def plain_only():
    """A badly configured server: accounts, PLAIN only, no TLS, PLAIN allowed in the clear."""
    srv = ProsodyServer(
        authentication="internal_hashed",
        disable_sasl=("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "DIGEST-MD5"),
        allow_plain_in_clear=True,
    )
    srv.start()
    srv.account = Account(srv.register("bot", PASSWORD), PASSWORD)
    yield srv
    srv.cleanup()


@pytest.mark.parametrize("transport", ["tcp", "ws", "bosh"])
async def test_plain_without_tls_is_refused_before_the_password_leaves(
    plain_only, rooms, room_name, transport
):
    room = rooms(account_config(plain_only, room_name, plain_only.account, transport))
    with pytest.raises(AuthError) as e:
        await room.join()
    assert "offers only PLAIN on a connection without TLS" in e.value.reason
    # the server never saw a login attempt (nothing was sent)
    await asyncio.sleep(0.3)
    log = (plain_only.root / "prosody.log").read_text()
    assert "Authenticated as" not in log and "authentication failed" not in log.lower()


async def test_plain_xmpp_server_plain_inside_starttls(rooms, room_name):
    srv = ProsodyServer(
        authentication="internal_hashed",
        tls=True,
        disable_sasl=("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "DIGEST-MD5"),
    )
    srv.start()
    try:
        account = Account(srv.register("bot", PASSWORD), PASSWORD)
        room = rooms(account_config(srv, room_name, account, "tcp", insecure=True))
        me = await room.join()
        assert me.jid.startswith("bot@meet.test/")
        assert room.xmpp.plugin["feature_mechanisms"].mech.name == "PLAIN"
        assert "starttls" in room.xmpp.features
    finally:
        srv.cleanup()
